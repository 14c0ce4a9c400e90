"""The input event contract (version 1): parse raw bytes into typed events or a reasoned error.

``lepton.edges`` value (JSON object, UTF-8)::

    {"src": "alice", "dst": 42, "ts": 1700000000.5, "weight": 1.0, "op": "add", "id": "e-1"}

- ``src``, ``dst``: string or integer ids, 1..256 characters (integers become decimal strings);
- ``ts``: float seconds, optional (default: the Kafka record timestamp);
- ``weight``: finite float, default 1.0; ``op``: ``"add"`` | ``"remove"``, default ``"add"``;
- ``id``: optional string (1..256 characters) for idempotency; ``v``: optional, must be 1.
Unknown fields are refused (``unknown_field``) so that a typo never silently becomes a default.

``lepton.nodes`` value: ``{"node": id, "features": [floats], "ts": optional}`` with exactly the
configured feature dimension.

Every failure raises :class:`EventError` with a stable ``reason`` code (see ``REASONS``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Optional, Union

import msgspec

from gnn.errors import EventError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EdgeEvent", "NodeEvent", "parse_edge", "parse_node", "table_events", "REASONS", "MAX_ID_LEN",
           "MAX_EVENT_BYTES", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
MAX_ID_LEN = 256
MAX_EVENT_BYTES = 64 * 1024
REASONS = ("too_large", "not_utf8", "not_json", "not_object", "bad_version", "unknown_field", "missing_field",
           "bad_id", "id_too_long", "bad_ts", "bad_weight", "bad_op", "bad_event_id", "bad_features")

_EDGE_FIELDS = frozenset({"src", "dst", "ts", "weight", "op", "id", "v"})
_NODE_FIELDS = frozenset({"node", "features", "ts", "v"})


class EdgeEvent(NamedTuple):
    """One edge event. A named tuple: immutable like a frozen dataclass, 4x cheaper to make
    (the decode stage builds one per input record)."""

    src: str
    dst: str
    ts: float
    weight: float = 1.0
    op: Literal["add", "remove"] = "add"
    id: str | None = None


@dataclass(frozen=True, slots=True)
class NodeEvent:
    node: str
    features: tuple[float, ...]
    ts: float


def parse_edge(raw: bytes, *, record_ts: float) -> EdgeEvent:
    """Validate one ``lepton.edges`` value; ``record_ts`` (seconds) is the default ``ts``.

    The decode stage of the worker. A well-formed event is decoded and type-checked in C by
    msgspec (~0.5 µs; the stdlib path below takes ~4.5); whatever that refuses goes through the
    stdlib path, which names the reason. Both accept exactly the same events (property test)."""
    if raw is not None and len(raw) <= MAX_EVENT_BYTES:
        try:
            e = _FAST.decode(raw)
        except _FAST_REFUSED:
            pass
        else:
            ts = float(record_ts) if e.ts is None else e.ts
            src, dst = e.src, e.dst
            if ((e.ts is None or 0.0 <= ts < _INF) and -_F32_MAX <= e.weight <= _F32_MAX
                    and (type(src) is str or -_ID_INT < src < 10 * _ID_INT)  # an integer id's digits fit
                    and (type(dst) is str or -_ID_INT < dst < 10 * _ID_INT)):
                return EdgeEvent(src if type(src) is str else str(src), dst if type(dst) is str else str(dst),
                                 ts, e.weight, e.op, e.id)
    return _guarded(_parse_edge_stdlib, raw, record_ts=record_ts)


def parse_node(raw: bytes, *, dim: int, record_ts: float) -> NodeEvent:
    """Validate one ``lepton.nodes`` value with a feature vector of length ``dim``."""
    return _guarded(_parse_node, raw, dim=dim, record_ts=record_ts)


# ---- helpers -----------------------------------------------------------------------------------
def table_events(table: "pd.DataFrame") -> list[EdgeEvent]:
    """The rows of an edge table (``gnn.io.read_edges``: src, dst, ts[, weight][, op]) as events,
    in order: what the evaluations replay through a processor."""
    import numpy as np  # noqa: PLC0415

    weight = table["weight"].to_numpy(np.float64) if "weight" in table else np.ones(len(table))
    op = table["op"].to_numpy() if "op" in table else np.full(len(table), "add")
    return [EdgeEvent(a, b, float(t), float(w), str(o)) for a, b, t, w, o in  # type: ignore[arg-type]
            zip(table["src"].astype(str), table["dst"].astype(str), table["ts"], weight, op)]


def _guarded(parse: Callable[..., Any], raw: bytes, **kw: Any) -> Any:
    """``parse(raw, **kw)``, raising nothing but :class:`EventError`: the worker dead-letters
    those and keeps going, while any other exception would fail the batch on every replay.
    (Session 12 found two: a number beyond a float's range, and one of 4,300+ digits.)"""
    try:
        return parse(raw, **kw)
    except EventError:
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not become a poison pill
        raise EventError("not_json", f"value could not be decoded ({type(exc).__name__}: {exc})") from None


def _parse_node(raw: bytes, *, dim: int, record_ts: float) -> NodeEvent:
    obj = _object(raw, _NODE_FIELDS)
    if "node" not in obj or "features" not in obj:
        raise EventError("missing_field", "fields 'node' and 'features' are required")
    feats = obj["features"]
    if not isinstance(feats, list) or len(feats) != dim:
        raise EventError("bad_features", f"features must be a list of exactly {dim} numbers")
    values = [_finite(f) for f in feats]
    if any(v is None for v in values):
        raise EventError("bad_features", "features must be finite numbers")
    return NodeEvent(node=_node_id(obj["node"], "node"), features=tuple(values), ts=_ts(obj.get("ts"), record_ts))


_Id = Union[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN)], int]


class _Edge(msgspec.Struct, forbid_unknown_fields=True):
    """The common shape of an edge event, for the C decoder (explicit ``null`` only where the
    stdlib path takes it too: ``ts`` and ``id``)."""

    src: _Id
    dst: _Id
    ts: Optional[float] = None  # noqa: UP007 - msgspec reads the annotation
    weight: float = 1.0
    op: Literal["add", "remove"] = "add"
    id: Optional[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN)]] = None  # noqa: UP007
    v: Literal[1] = 1


_FAST = msgspec.json.Decoder(_Edge)
_ID_INT = 10 ** (MAX_ID_LEN - 1)  # integer ids of at most MAX_ID_LEN characters: -_ID_INT < id < 10 * _ID_INT
_FAST_REFUSED = (msgspec.DecodeError, UnicodeDecodeError)  # ValidationError is a DecodeError


def _parse_edge_stdlib(raw: bytes, *, record_ts: float) -> EdgeEvent:
    """:func:`parse_edge` through the stdlib's JSON scanner, with a reason for every refusal."""
    obj = _object(raw, _EDGE_FIELDS)
    get = obj.get
    for name in ("src", "dst"):
        if name not in obj:
            raise EventError("missing_field", f"field {name!r} is required")
    src, dst = obj["src"], obj["dst"]
    op = get("op", "add")
    if op not in ("add", "remove"):
        raise EventError("bad_op", f"op must be 'add' or 'remove', got {op!r}")
    eid = get("id")
    if eid is not None and (type(eid) is not str or not 0 < len(eid) <= MAX_ID_LEN):
        raise EventError("bad_event_id", f"id must be a string of 1..{MAX_ID_LEN} characters")
    ts = get("ts")
    ts = float(ts) if type(ts) is float and 0.0 <= ts < _INF else _ts(ts, record_ts)
    w = get("weight", 1.0)
    w = w if type(w) is float and -_F32_MAX <= w <= _F32_MAX else _weight(w)
    return EdgeEvent(src if type(src) is str and 0 < len(src) <= MAX_ID_LEN else _node_id(src, "src"),
                     dst if type(dst) is str and 0 < len(dst) <= MAX_ID_LEN else _node_id(dst, "dst"),
                     ts, w, op, eid)


def _object(raw: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    if raw is None:
        raise EventError("not_json", "empty record value")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError("too_large", f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError("not_utf8", f"value is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = _loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise EventError("not_json", f"value is not JSON: {exc}") from None
    except ValueError as exc:  # an integer of more digits than Python converts (4,300): was a crash
        raise EventError("not_json", f"value has a number we cannot read: {exc}") from None
    if type(obj) is not dict:
        raise EventError("not_object", f"value must be a JSON object, got {type(obj).__name__}")
    if not obj.keys() <= allowed:
        extra = set(obj) - allowed
        raise EventError("unknown_field", f"unknown field(s) {sorted(extra)}; allowed: {sorted(allowed)}")
    if "v" in obj and obj["v"] != SCHEMA_VERSION:
        raise EventError("bad_version", f"schema version {obj.get('v')!r} is not supported (expected 1)")
    return obj


_SCAN = json.JSONDecoder().scan_once  # the C scanner: json.loads without its Python wrappers (~2 µs)
_SPACE = json.decoder.WHITESPACE.match
_INF = float("inf")
_F32_MAX = 3.4e38


def _loads(text: str) -> Any:
    """``json.loads(text)``, same result and errors."""
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        obj, end = _SCAN(text, _SPACE(text, 0).end())
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None
    end = _SPACE(text, end).end()
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return obj


def _node_id(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise EventError("bad_id", f"{name} must be a string or an integer, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise EventError("bad_id", f"{name} must not be empty")
    if len(text) > MAX_ID_LEN:
        raise EventError("id_too_long", f"{name} has {len(text)} characters; the limit is {MAX_ID_LEN}")
    return text


def _ts(value: Any, default: float) -> float:
    if value is None:
        return float(default)
    ts = _finite(value)
    if ts is None or ts < 0:
        raise EventError("bad_ts", f"ts must be a finite, non-negative number of seconds, got {_short(value)}")
    return ts


def _weight(value: Any) -> float:
    w = _finite(value)
    if w is None:
        raise EventError("bad_weight", f"weight must be a finite number, got {_short(value)}")
    if abs(w) > _F32_MAX:
        raise EventError("bad_weight", "weight does not fit a float32")
    return w


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None: not a number (bools are not), or not finite, or an
    integer beyond a float's range (JSON allows ``1000…0`` of any length; ``float()`` overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
