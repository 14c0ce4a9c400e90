"""Crash recovery: SIGKILL the worker twice mid-stream; the state is exactly an offline replay."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn.events import parse_edge
from gnn.processor import Processor, ProcessorConfig
from gnn.snapshot import summary
from gnn.synthetic import SyntheticConfig
from security.keys import KeyRing
from stream.demo import WorkerProcess
from stream.kafka import ensure_topics
from stream.producer import produce, synthetic_events
from stream.subscriber import open_record
from tests.integration.test_worker_e2e import _settings

pytestmark = pytest.mark.integration


def _read_to_end(s, bootstrap: str, topic: str, timeout: float = 90.0) -> list:  # noqa: ANN001
    """Every record of ``topic`` up to its current end (not time-bounded like ``_drain``).

    The end is the fetch high watermark: Tansu's ListOffsets ("latest") stops short of the
    last record batch, which made this miss a worker's last predictions."""
    from stream.kafka import assigned_consumer

    consumer = assigned_consumer(s, bootstrap, [topic])
    try:
        parts = list(consumer.assignment())
        ends = consumer.end_offsets(parts)
        out: list = []
        deadline = time.monotonic() + timeout
        while True:
            for msgs in consumer.poll(timeout_ms=300).values():
                out.extend(msgs)
            marks = {tp: consumer.highwater(tp) for tp in parts}  # None until a fetch answered
            if all(h is not None and consumer.position(tp) >= max(h, ends[tp]) for tp, h in marks.items()):
                return out
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
    finally:
        consumer.close()


def _wait_drained(worker: WorkerProcess, timeout: float = 90.0) -> None:
    """Until the lag gauges read zero for 2.5 s (they refresh end offsets once a second)."""
    deadline = time.monotonic() + timeout
    zero_since = None
    while time.monotonic() < deadline:
        m = worker.metrics()
        lags = [v for k, v in m.items() if k.startswith("lepton_consumer_lag")]
        if lags and sum(lags) == 0:
            zero_since = zero_since or time.monotonic()
            if time.monotonic() - zero_since >= 2.5:
                return
        else:
            zero_since = None
        time.sleep(0.3)
    raise AssertionError(f"worker did not drain its input; log: {worker.log_path.read_text()[-2000:]}")


def _assert_every_event_predicted(s, bootstrap: str, ring: KeyRing, records: int) -> tuple[list, dict]:  # noqa: ANN001
    """Both endpoints of every valid input event got a prediction from a batch covering its
    offset (at least once), and records sharing an id are true duplicates (same node and range)."""
    preds = [open_record(ring, s.topic_predictions, m.key, m.value)
             for m in _read_to_end(s, bootstrap, s.topic_predictions)]
    by_id: dict[str, set] = defaultdict(set)
    covered: dict[str, list] = defaultdict(list)
    for p in preds:
        by_id[p["id"]].add((p["node"], json.dumps(p["offsets"], sort_keys=True)))
        for tp, (a, b) in p["offsets"].items():
            covered[p["node"]].append((tp, a, b))
    assert all(len(v) == 1 for v in by_id.values())
    edges = _read_to_end(s, bootstrap, s.topic_edges)
    assert len(edges) == records
    missing = 0
    for m in edges:
        try:
            e = json.loads(m.value)
        except ValueError:
            continue
        if not isinstance(e, dict) or "id" not in e:
            continue
        tp = f"{m.topic}:{m.partition}"
        for node in (e["src"], e["dst"]):
            missing += not any(t == tp and a <= m.offset < b for t, a, b in covered[node])
    assert missing == 0
    return preds, by_id


def test_sigkill_twice_state_equals_offline_replay(broker, tmp_path: Path) -> None:  # noqa: ANN001
    tag = f"crash{uuid.uuid4().hex[:6]}"
    s, env = _settings(tag)
    ensure_topics(s, broker.bootstrap)
    ring = KeyRing.generate("crash")
    env |= {"LEPTON_KEYS": ring.serialise().strip(), "LEPTON_SNAPSHOT_EVENTS": "3000", "LEPTON_MAX_BATCH": "400"}
    items = synthetic_events(SyntheticConfig(events=20_000, seed=11))
    assert len(items) >= 19_000 and all(b'"id"' in v for _, v in items)
    producer = threading.Thread(target=produce, args=(s, broker.bootstrap, items),
                                kwargs={"rate": 2500.0, "inject_malformed": 20, "seed": 1, "progress": False})
    rng = np.random.default_rng(7)
    restart_ready = []
    worker = WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path, env=env)
    try:
        worker.wait_ready()
        producer.start()
        for _ in range(2):  # kill at random points while events stream in, each life having snapshotted
            deadline = time.monotonic() + 30
            while worker.metrics().get("lepton_snapshots_total", 0) < 1:  # written in the background
                assert time.monotonic() < deadline, "no snapshot was collected"
                time.sleep(0.1)
            time.sleep(float(rng.uniform(0.0, 1.5)))
            assert worker.kill() == -9
            worker = WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path, env=env)
            restart_ready.append(worker.wait_ready())
        producer.join()
        _wait_drained(worker)
    finally:
        assert worker.stop() == 0, worker.log_path.read_text()[-3000:]  # graceful: final snapshot
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("worker-*.log"))
    assert logs.count("restored snapshot") >= 2, logs[-3000:]
    print(f"restart-to-ready: {[round(r, 2) for r in restart_ready]} s")

    # the state: every input record consumed once, every valid event applied once, same edge set
    r = subprocess.run([sys.executable, "-m", "stream.cli", "state", "inspect", "--state-dir", str(tmp_path),
                        "--json", "--verify"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout)
    valid = [parse_edge(v, record_ts=0.0) for _, v in items]
    assert state["totals"]["records"] == len(items) + 20
    assert state["totals"]["applied"] == len(valid)
    offline = Processor(ProcessorConfig(top_k=0))
    offline.process(valid, now=0.0)
    expect = summary(offline)
    assert {k: state[k] for k in ("nodes", "edges", "total_weight", "edge_set_sha256")} == \
        {k: expect[k] for k in ("nodes", "edges", "total_weight", "edge_set_sha256")}
    assert sum(state["offsets"][k] for k in state["offsets"] if k.startswith(s.topic_edges)) == len(items) + 20

    preds, by_id = _assert_every_event_predicted(s, broker.bootstrap, ring, len(items) + 20)
    print(f"predictions: {len(preds)} published, {len(by_id)} distinct ids")


def test_sigterm_publishes_snapshots_commits_and_exits_fast(broker, tmp_path: Path) -> None:  # noqa: ANN001
    from kafka.admin import KafkaAdminClient

    tag = f"term{uuid.uuid4().hex[:6]}"
    s, env = _settings(tag)
    ensure_topics(s, broker.bootstrap)
    env |= {"LEPTON_KEYS": KeyRing.generate("t").serialise().strip(), "LEPTON_SNAPSHOT_EVENTS": "1000"}
    items = synthetic_events(SyntheticConfig(events=3000, seed=2))
    worker = WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path, env=env)
    try:
        worker.wait_ready()
        produce(s, broker.bootstrap, items, progress=False)
        _wait_drained(worker)
        m = worker.metrics()  # periodic snapshots were written by forked children, and collected
        forks = not torch.cuda.is_available()  # the worker's default device; CUDA state cannot fork: in process
        assert m.get("lepton_snapshots_total", 0) >= 1 and ("lepton_snapshot_fork_seconds" in m) == forks, m
        assert not list((tmp_path / "snapshots").glob(".tmp-*"))
    finally:
        t0 = time.monotonic()
        rc = worker.stop(timeout=20.0)
        took = time.monotonic() - t0
    assert rc == 0 and took < 10.0, (rc, took)
    assert "worker stopped cleanly" in worker.log_path.read_text()
    assert (tmp_path / "journal.jsonl").read_text() == ""  # the final snapshot covers every batch
    state = json.loads(subprocess.run([sys.executable, "-m", "stream.cli", "state", "inspect", "--state-dir",
                                       str(tmp_path), "--json"], capture_output=True, text=True).stdout)
    assert state["totals"]["records"] == len(items)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        committed = admin.list_group_offsets(tag)[tag]
    finally:
        admin.close()
    edges = {f"{tp.topic}:{tp.partition}": meta.offset for tp, meta in committed.items()}
    assert edges == {k: v for k, v in state["offsets"].items() if k.startswith(s.topic_edges)}
    assert sum(edges.values()) == len(items)
    print(f"SIGTERM -> exit {took:.2f} s")



def test_failed_ack_stops_without_snapshot_of_the_unacknowledged(broker, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    """Acks overlap the next batch: when one fails, the loop stops and no snapshot covers the
    unacknowledged batch (not even the shutdown one), so a restart replays it and every event
    gets a prediction from the batch that applied it."""
    import asyncio

    from gnn.snapshot import latest_snapshot, read_meta
    from stream.settings import Settings
    from stream.worker import Pipeline, Worker

    tag = f"fail{uuid.uuid4().hex[:6]}"
    s, env = _settings(tag)
    ensure_topics(s, broker.bootstrap)
    ring = KeyRing.generate("fail")
    items = synthetic_events(SyntheticConfig(events=3000, seed=5))
    produce(s, broker.bootstrap, items, progress=False)
    cfg = Settings(**{**s.model_dump(), "state_dir": tmp_path, "snapshot_events": 600, "batch_mode": "fixed",
                      "max_batch": 200, "snapshot_background": False})

    class FailingAcks(Worker):  # the real producer, until the 1,200th output's ack fails (one by one or batched)
        async def _start_producer(self) -> None:
            await super()._start_producer()
            real, sent = self.pipeline.send, [0]

            async def send(topic: str, key: bytes | None, value: bytes) -> asyncio.Future:
                sent[0] += 1
                if sent[0] < 1200:
                    return await real(topic, key, value)
                fut = asyncio.get_running_loop().create_future()
                fut.set_exception(ConnectionError("injected ack failure"))
                return fut

            real_many = self.pipeline.send_many
            assert real_many is not None  # predictions go out as partition batches

            async def send_many(topic: str, records: list) -> list:
                sent[0] += len(records)
                if sent[0] < 1200:
                    return await real_many(topic, records)
                fut = asyncio.get_running_loop().create_future()
                fut.set_exception(ConnectionError("injected ack failure"))
                return [fut]

            self.pipeline.send, self.pipeline.send_many = send, send_many

    async def unbound(topic: str, key: bytes | None, value: bytes) -> None:
        raise RuntimeError("before the producer")

    worker = FailingAcks(settings=cfg, bootstrap=broker.bootstrap,
                         pipeline=Pipeline(settings=cfg, processor=Processor(cfg.processor_config()), keyring=ring,
                                           send=unbound))
    with pytest.raises(ConnectionError, match="injected"):
        asyncio.run(worker.run())
    acked = worker.totals["records"]  # batches whose every output was acknowledged
    del worker
    gc.collect()  # asyncio reports an unretrieved error when its future is collected
    assert "never retrieved" not in caplog.text  # one error stops the worker, not a log line per failed ack
    assert 0 < acked < len(items)
    latest = latest_snapshot(tmp_path / "snapshots")
    assert latest is not None  # earlier batches were snapshotted...
    covered = sum(v for k, v in read_meta(latest)["offsets"].items() if k.startswith(s.topic_edges))
    assert covered <= acked  # ...but none beyond what was acknowledged

    env |= {"LEPTON_KEYS": ring.serialise().strip(), "LEPTON_SNAPSHOT_EVENTS": "600", "LEPTON_BATCH_MODE": "fixed",
            "LEPTON_MAX_BATCH": "200", "LEPTON_SNAPSHOT_BACKGROUND": "false"}
    restarted = WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path, env=env)
    try:
        restarted.wait_ready()
        _wait_drained(restarted)
    finally:
        assert restarted.stop() == 0, restarted.log_path.read_text()[-3000:]
    _assert_every_event_predicted(s, broker.bootstrap, ring, len(items))
