"""Key rotation while the worker runs, and per-subscriber (X25519) sealing, on the real broker."""

from __future__ import annotations

import base64
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from gnn.synthetic import SyntheticConfig
from security.keys import KeyRing
from security.recipients import generate_private, public_bytes
from stream.demo import WorkerProcess
from stream.kafka import ensure_topics
from stream.producer import produce, synthetic_events
from stream.subscriber import Opener, subscribe
from tests.integration.test_worker_e2e import _drain, _settings

pytestmark = pytest.mark.integration


APPLIED = 'lepton_events_total{outcome="applied"}'


def _wait_applied(worker: WorkerProcess, n: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    m: dict = {}
    while time.monotonic() < deadline:
        m = worker.metrics()
        if m.get(APPLIED, 0) >= n:
            return m
        time.sleep(0.2)
    raise AssertionError(f"worker applied {m.get(APPLIED)} of {n}")


def _read_all(s, bootstrap: str, opener: Opener, expect: int) -> tuple[list, object]:  # noqa: ANN001
    got: list = []
    stats = subscribe(s, bootstrap, opener, topics=[s.topic_predictions], idle_timeout=5,
                      on_record=lambda t, o: got.append(o), stop=lambda st: sum(st.received.values()) >= expect)
    return got, stats


def test_rotation_without_losing_a_message(broker, tmp_path: Path) -> None:  # noqa: ANN001
    tag = f"r{uuid.uuid4().hex[:8]}"
    s, env = _settings(tag)
    ensure_topics(s, broker.bootstrap)
    key_file = tmp_path / "keys"
    KeyRing.generate("old").write(key_file)
    items = synthetic_events(SyntheticConfig(events=800, seed=5))
    worker = WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path, env=env | {"LEPTON_KEY_FILE": str(key_file)})
    try:
        worker.wait_ready()
        produce(s, broker.bootstrap, items[:300], progress=False)
        _wait_applied(worker, 300)
        KeyRing.from_file(key_file).rotated("new").write(key_file)  # rotate while it runs
        os.kill(worker.proc.pid, signal.SIGHUP)
        time.sleep(0.5)
        produce(s, broker.bootstrap, items[300:], progress=False)
        m = _wait_applied(worker, len(items))
    finally:
        worker.stop()
    total = int(m["lepton_predictions_total"])
    opener = Opener(keyring=KeyRing.from_file(key_file))
    got, stats = _read_all(s, broker.bootstrap, opener, total)
    assert len(got) == total and not stats.failed  # every message opens, old key or new
    assert m.get("lepton_key_reloads_total", 0) >= 1
    raw = _drain(s, broker.bootstrap, s.topic_predictions, total)
    kids = [bytes(r.value[3:3 + r.value[2]]).decode() for r in raw]
    assert set(kids) == {"old", "new"} and kids.count("new") > 0 and kids.count("old") > 0


def test_per_subscriber_public_keys(broker, tmp_path: Path) -> None:  # noqa: ANN001
    tag = f"x{uuid.uuid4().hex[:8]}"
    s, env = _settings(tag)
    ensure_topics(s, broker.bootstrap)
    alice, mallory = generate_private(), generate_private()
    recipients = f"alice:{base64.b64encode(public_bytes(alice.public_key())).decode()}"
    worker = WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path, env=env | {"LEPTON_RECIPIENTS": recipients})
    try:
        worker.wait_ready()
        items = synthetic_events(SyntheticConfig(events=300, seed=6))
        produce(s, broker.bootstrap, items, progress=False)
        m = _wait_applied(worker, len(items))  # all of them: predictions after this read would not be counted
    finally:
        worker.stop()
    total = int(m["lepton_predictions_total"])
    got, stats = _read_all(s, broker.bootstrap, Opener(rid="alice", private_key=alice), total)
    assert len(got) == total > 0 and not stats.failed
    _, bad = _read_all(s, broker.bootstrap, Opener(rid="alice", private_key=mallory), total)
    assert bad.failed["InvalidTagError"] == total  # counted and skipped, never a crash
