"""A real `lepton run` worker on the embedded broker: every event accounted for, outputs decrypt."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from gnn.graph import DynamicGraph
from gnn.synthetic import SyntheticConfig
from security.keys import KeyRing
from stream.demo import WorkerProcess
from stream.kafka import assigned_consumer, ensure_topics, partition_for
from stream.producer import MALFORMED, produce, synthetic_events
from stream.settings import Settings
from stream.subscriber import open_record

pytestmark = pytest.mark.integration


def _settings(tag: str) -> tuple[Settings, dict[str, str]]:
    names = {f"topic_{t}": f"{tag}.{t}" for t in ("edges", "nodes", "predictions", "alerts", "deadletter")}
    env = {f"LEPTON_{k.upper()}": v for k, v in names.items()} | {"LEPTON_APP_ID": tag}
    return Settings(app_id=tag, **names), env  # type: ignore[arg-type]


def _drain(settings: Settings, bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list:
    consumer = assigned_consumer(settings, bootstrap, [topic])
    out: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for msgs in consumer.poll(timeout_ms=300).values():
            out.extend(msgs)
        if len(out) >= expect and expect > 0:
            break
    consumer.close()
    return out


def test_2000_events_20_malformed(broker, tmp_path: Path) -> None:  # noqa: ANN001
    tag = f"t{uuid.uuid4().hex[:8]}"
    s, env = _settings(tag)
    ensure_topics(s, broker.bootstrap)
    ring = KeyRing.generate("itest")
    items = synthetic_events(SyntheticConfig(events=2200, seed=3))[:1980]
    produce(s, broker.bootstrap, items, inject_malformed=20, seed=3, progress=False)  # before the worker starts
    launched = time.monotonic()
    worker = WorkerProcess(bootstrap=broker.bootstrap, state_dir=tmp_path,  # small producer batches: several a
                           env=env | {"LEPTON_KEYS": ring.serialise().strip(),  # partition per micro-batch
                                      "LEPTON_PRODUCER_BATCH_BYTES": "16384"})
    try:
        worker.wait_ready()
        first = None
        deadline = time.monotonic() + 90
        m: dict[str, float] = {}
        while time.monotonic() < deadline:
            m = worker.metrics()
            if first is None and m.get("lepton_batches_total", 0) >= 1:
                first = time.monotonic() - launched
            if sum(v for k, v in m.items() if k.startswith("lepton_events_total")) >= 2000:
                break
            time.sleep(0.2)
    finally:
        assert worker.stop() in (0, -15, 143), worker.log_path.read_text()[-2000:]

    # every event accounted for: 1980 applied, 20 dead-lettered, nothing else
    assert m['lepton_events_total{outcome="applied"}'] == 1980
    assert m['lepton_events_total{outcome="deadlettered"}'] == 20
    assert m.get('lepton_events_total{outcome="duplicate"}', 0) == 0
    assert first is not None and first <= 20.0, f"first batch {first:.1f}s after launch"
    assert m['lepton_gc_collections_total{generation="0"}'] > 0 < m['lepton_gc_pause_seconds_total{generation="0"}']
    assert m["lepton_gc_frozen_objects"] > 50_000  # LEPTON_GC_FREEZE (default): startup's objects left out of walks

    # the worker's graph equals an offline replay of the valid events
    g = DynamicGraph()
    for _, value in items:
        e = json.loads(value)
        u, v = g.node_ids([e["src"], e["dst"]], create=e.get("op", "add") == "add")
        if e.get("op") == "remove":
            if u and v:
                g.remove_edges(np.array([u]), np.array([v]))
        else:
            g.add_edges(np.array([u]), np.array([v]))
    assert m["lepton_graph_edges"] == g.num_edges and m["lepton_graph_nodes"] == g.num_nodes
    # the new arcs wait in the graph's delta or were folded into its base by a compaction
    assert 0 < m["lepton_graph_delta_arcs"] <= 2 * g.num_edges or m["lepton_graph_compactions_total"] > 0

    # dead letters: reason + the original bytes, in produce order
    dead = _drain(s, broker.bootstrap, s.topic_deadletter, 20)
    assert len(dead) == 20
    records = sorted((json.loads(d.value) for d in dead), key=lambda r: (r["partition"], r["offset"]))
    wanted = {raw: reason for reason, raw in MALFORMED}
    for r in records:
        original = base64.b64decode(r["original_b64"])
        assert r["topic"] == s.topic_edges and wanted[original] == r["reason"] and r["detail"]

    # predictions: all open with the key, carry real partners; none opens on the wrong topic
    preds = _drain(s, broker.bootstrap, s.topic_predictions, int(m["lepton_predictions_total"]))
    assert len(preds) == m["lepton_predictions_total"] > 0
    nodes_with_partners = 0
    last: dict[int, tuple[float, int]] = {}
    for msg in sorted(preds, key=lambda x: (x.partition, x.offset)):
        obj = open_record(ring, s.topic_predictions, msg.key, msg.value)
        assert msg.partition == partition_for(msg.key, s.output_partitions)  # the partition ``send`` would pick
        assert last.get(msg.partition, (0.0, -1)) <= (obj["generated_at"], msg.offset)  # batch order kept
        last[msg.partition] = (obj["generated_at"], msg.offset)
        assert obj["node"] == msg.key.decode() and len(obj["predictions"]) <= 10
        assert all(0.0 <= p["p"] <= 1.0 and p["node"] != obj["node"] for p in obj["predictions"])
        nodes_with_partners += bool(obj["predictions"])
    assert nodes_with_partners > 0.9 * len(preds)
    with pytest.raises(Exception):
        open_record(ring, s.topic_alerts, preds[0].key, preds[0].value)
