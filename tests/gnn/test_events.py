"""Each malformed edge / node event is refused with its own reason code."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings, strategies as st

from gnn.errors import EventError
from gnn.events import REASONS, EdgeEvent, _loads, _parse_edge_stdlib, parse_edge, parse_node
from stream.producer import MALFORMED


def test_valid_event_with_defaults_and_int_ids() -> None:
    e = parse_edge(b'{"src": 5, "dst": "b"}', record_ts=12.5)
    assert e == EdgeEvent(src="5", dst="b", ts=12.5, weight=1.0, op="add", id=None)
    e = parse_edge(b'{"src":"a","dst":"b","ts":3,"weight":-2.5,"op":"remove","id":"x","v":1}', record_ts=0)
    assert (e.ts, e.weight, e.op, e.id) == (3.0, -2.5, "remove", "x")
    e = parse_edge(b'{"src":"a","dst":"b","ts":null,"weight":2,"id":null}', record_ts=4.0)  # null ts: the record's
    assert (e.ts, e.weight, e.id) == (4.0, 2.0, None) and type(e.weight) is float


CASES = [
    (b"\x00" * (64 * 1024 + 1), "too_large"),
    (b"\xff\xfe", "not_utf8"),
    (b"{nope", "not_json"),
    (b"[1,2]", "not_object"),
    (b'{"src":"a","dst":"b","v":2}', "bad_version"),
    (b'{"src":"a","dst":"b","wieght":2}', "unknown_field"),
    (b'{"src":"a"}', "missing_field"),
    (b'{"src":true,"dst":"b"}', "bad_id"),
    (b'{"src":"","dst":"b"}', "bad_id"),
    (b'{"src":1.5,"dst":"b"}', "bad_id"),
    (json.dumps({"src": "x" * 257, "dst": "b"}).encode(), "id_too_long"),
    (b'{"src":"a","dst":"b","ts":-1}', "bad_ts"),
    (b'{"src":"a","dst":"b","ts":"soon"}', "bad_ts"),
    (b'{"src":"a","dst":"b","weight":NaN}', "bad_weight"),
    (b'{"src":"a","dst":"b","weight":Infinity}', "bad_weight"),
    (b'{"src":"a","dst":"b","weight":"1"}', "bad_weight"),
    (b'{"src":"a","dst":"b","op":"upsert"}', "bad_op"),
    (b'{"src":"a","dst":"b","id":7}', "bad_event_id"),
    (b'{"src":"a","dst":null}', "bad_id"),  # present but null: not "missing"
    (b'{"src":"a","dst":"b","weight":null}', "bad_weight"),
    (b'{"src":"a","dst":"b","weight":1e39}', "bad_weight"),
    (b'{"src":"a","dst":"b","op":null}', "bad_op"),
    (b'{"src":"a","dst":"b","v":null}', "bad_version"),
    (b'{"src":"a","dst":"b"} {}', "not_json"),
    (b'{"src":"a","dst":"b","ts":1' + b"0" * 400 + b"}", "bad_ts"),  # beyond a float: was an OverflowError
    (b'{"src":"a","dst":"b","weight":-1' + b"0" * 400 + b"}", "bad_weight"),
    (b'{"src":"a","dst":"b","ts":1' + b"0" * 5000 + b"}", "not_json"),  # more digits than int() reads: a crash
    (b'{"src":1' + b"0" * 256 + b',"dst":"b"}', "id_too_long"),
    (b" ", "not_json"),
]


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, "x", null, true]}', '  {"a":1}  \n', "[]", '"s"', "NaN", "{nope",
                                  '{"a":1} x', "", "   ", "\ufeff{}", '{"a":1}{"b":2}'])
def test_loads_is_json_loads(text: str) -> None:
    try:
        expect: object = json.loads(text)
    except json.JSONDecodeError as err:
        expect = (err.msg, err.pos)
    try:
        got: object = _loads(text)
    except json.JSONDecodeError as err:
        got = (err.msg, err.pos)
    assert got == expect or (got != got and expect != expect)  # NaN


@pytest.mark.parametrize("raw,reason", CASES)
def test_malformed_edge_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(EventError) as info:
        parse_edge(raw, record_ts=0)
    assert info.value.reason == reason
    assert reason in REASONS


def test_every_reason_is_covered_and_demo_payloads_fail() -> None:
    covered = {r for _, r in CASES} | {"bad_features"}
    assert covered == set(REASONS)
    for reason, raw in MALFORMED:
        with pytest.raises(EventError) as info:
            parse_edge(raw, record_ts=0)
        assert info.value.reason == reason


def test_node_events() -> None:
    e = parse_node(b'{"node": 3, "features": [1, 2.5]}', dim=2, record_ts=1.0)
    assert (e.node, e.features) == ("3", (1.0, 2.5))
    for raw in (b'{"node": 3, "features": [1]}', b'{"node": 3, "features": [1, NaN]}',
                b'{"node": 3, "features": "x"}', b'{"node": 3, "features": [1, 1' + b"0" * 400 + b"]}"):
        with pytest.raises(EventError, match="bad_features"):
            parse_node(raw, dim=2, record_ts=0)


def _outcome(raw: bytes) -> tuple[str, object, object]:
    """What each decode path makes of ``raw``: an event, or a reason (anything else raises)."""
    def run(parse) -> object:  # noqa: ANN001
        try:
            return parse(raw, record_ts=7.25)
        except EventError as err:
            return err.reason
    return raw.decode("utf-8", "replace"), run(parse_edge), run(_parse_edge_stdlib)


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(10**40), 10**40), st.just(10**400),
                    st.floats(), st.text(max_size=3), st.text(min_size=250, max_size=260), st.just(""),
                    st.sampled_from(["add", "remove", "Add", 1, 1.0, "1"]), st.lists(st.integers(), max_size=2),
                    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["src", "dst", "ts", "weight", "op", "id", "v", "w", "SRC"]), _VALUES,
                       max_size=7), st.booleans(), st.sampled_from(["", " ", "\n", "\ufeff", "x"]))
@example({"src": "a", "dst": "b", "ts": 2**53 + 1, "weight": 2**64 + 3}, False, "")
@example({"src": 2**64 + 1, "dst": -5, "id": None, "v": 1}, False, " ")
@example({"src": 10**255, "dst": -(10**254), "ts": 0}, False, "")  # 256 characters each: the limit
@example({"src": 10**256, "dst": -(10**255)}, False, "")
def test_fast_decoder_and_stdlib_path_agree(obj: dict, endpoints: bool, pad: str) -> None:
    """msgspec takes the common shapes; every event must come out exactly as the stdlib path
    makes it, and every refusal with the stdlib path's reason."""
    if endpoints:  # mostly well-formed events: the fast path's whole domain
        obj = {"src": "a", "dst": 1, **obj}
    raw = json.dumps(obj).encode()  # NaN and Infinity literals too (Python's json reads them)
    for variant in (raw, (pad + json.dumps(obj) + pad[:1]).encode(), raw.replace(b'"a"', b'"\\ud800"')):
        text, fast, slow = _outcome(variant)
        assert fast == slow, text


@given(st.binary(max_size=40))
def test_fast_decoder_and_stdlib_path_agree_on_any_bytes(raw: bytes) -> None:
    _, fast, slow = _outcome(raw)
    assert fast == slow


def test_a_decoder_bug_is_refused_as_an_event_error_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker dead-letters EventErrors and keeps going; anything else would fail the batch
    on every replay (a poison pill)."""
    import gnn.events as events

    def broken(raw: bytes, **_: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(events, "_parse_edge_stdlib", broken)
    monkeypatch.setattr(events, "_parse_node", broken)
    for parse in (lambda raw: events.parse_edge(raw, record_ts=0), lambda raw: events.parse_node(raw, dim=2, record_ts=0)):
        with pytest.raises(EventError) as info:
            parse(b'{"src": "a"}')  # the C decoder refuses it: the (broken) stdlib path runs
        assert info.value.reason == "not_json" and "ZeroDivisionError: a bug" in info.value.detail
    assert events.parse_edge(b'{"src": "a", "dst": "b"}', record_ts=0).dst == "b"  # the C path is untouched
