"""Subscriber decoding: sealed records open to dicts; bad ones are counted by kind, never raised."""

from __future__ import annotations

from types import SimpleNamespace

from security.envelope import seal
from security.keys import KeyRing
from stream.subscriber import Opener, SubscribeStats, _decode

RING = KeyRing({"k1": bytes(range(32))}, active="k1")
TOPIC = "lepton.predictions"


def _record(value: bytes, key: bytes = b"n1") -> SimpleNamespace:
    return SimpleNamespace(value=value, key=key, timestamp=1_700_000_000_500)


def test_records_open_or_are_counted_by_what_is_wrong_with_them() -> None:
    stats, opener = SubscribeStats(), Opener(keyring=RING)
    plain = b'{"type":"prediction","node":"n1","trigger_produced_ms":1700000000000,"p":0.5}'
    good = seal(plain, keyring=RING, topic=TOPIC, key=b"n1")
    assert _decode(_record(good), TOPIC, {TOPIC}, opener, stats) == {
        "type": "prediction", "node": "n1", "trigger_produced_ms": 1700000000000, "p": 0.5}
    assert stats.opened[TOPIC] == 1 and stats.latencies_ms == [500]
    not_json = seal(b'{"type": "prediction", ', keyring=RING, topic=TOPIC, key=b"n1")
    assert _decode(_record(not_json), TOPIC, {TOPIC}, opener, stats) is None
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    assert _decode(_record(tampered), TOPIC, {TOPIC}, opener, stats) is None
    assert _decode(_record(b"\xff{"), "lepton.deadletter", {TOPIC}, opener, stats) is None  # a plain topic
    assert dict(stats.failed) == {"BadPlaintext": 1, "InvalidTagError": 1, "BadJson": 1}
