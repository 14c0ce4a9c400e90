"""`lepton bench e2e` at a small size: the real path, exact per-event latencies, JSON out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_bench_e2e_small_sweep(broker, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "e2e.json"
    r = subprocess.run([sys.executable, "-m", "stream.cli", "bench", "e2e", "--sweep", "200,400", "--duration", "3",
                        "--preload-edges", "20000", "--preload-nodes", "2000", "--warmup", "0.5", "--bootstrap", broker.bootstrap,
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [run["offered_rate"] for run in result["runs"]] == [200.0, 400.0]
    for run in result["runs"]:
        # every event's offset is its record batch's base offset + its place in it: all matched
        assert run["events"] == int(run["offered_rate"] * 3) and run["unmatched_events"] == 0
        assert 2.5 <= run["produce_seconds"] <= 3.5  # paced at the offered rate, in ticks
        assert run["producer_linger_ms"] == 5.0 and 0 < run["producer_batches"] <= run["events"]
        assert 0 < run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"] <= run["max_ms"] < 10_000
        assert 0 < run["generated_p50_ms"] <= run["p50_ms"] and run["generated_p99_ms"] <= run["p99_ms"]
        # no budget: every touched node is predicted in its own batch, so per node ~ per batch
        assert run["node_unanswered"] == 0 and 0 < run["node_p50_ms"] <= run["node_p99_ms"] < 10_000
        assert 0 < run["bench_cpu_percent"] < 200
        gc = run["gc"]  # young collections happen in any 3-s run; a full one may or may not
        assert gc["pause_ms"] > 0 and gc["full_collections"] >= 0 and gc["longest_pause_ms"] > 0
        assert run["throughput"] > 0.5 * run["offered_rate"] and run["rss_mb_max"] > 50
        # the 20k preloaded power-law edges merge to ~17k distinct; 1,800 streamed events alone cannot reach this
        assert run["graph_edges"] >= 15_000 and set(run["us_per_event"]) >= {"decode", "kernels", "predict", "seal"}
    assert result["sweep"]["rates_tried"] == [200.0, 400.0]


def test_bench_e2e_replays_a_dataset_after_preloading_its_head(broker, tmp_path: Path) -> None:  # noqa: ANN001
    pairs: set[tuple[int, int]] = set()
    rng = np.random.default_rng(0)
    while len(pairs) < 2_500:  # distinct undirected pairs, no self-loops
        a, b = sorted(rng.integers(0, 400, 2).tolist())
        if a != b:
            pairs.add((a, b))
    edges = sorted(pairs, key=lambda p: rng.random())
    data = tmp_path / "edges.txt"
    data.write_text("".join(f"u{a} u{b} {1_000_000 + 3 * i}\n" for i, (a, b) in enumerate(edges)))
    out = tmp_path / "e2e.json"
    r = subprocess.run([sys.executable, "-m", "stream.cli", "bench", "e2e", "--dataset", str(data), "--rate", "300",
                        "--duration", "2", "--preload-edges", "2000", "--warmup", "0.5", "--bootstrap", broker.bootstrap,
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads(out.read_text())["runs"][0]
    assert run["events"] == 600 and run["unmatched_events"] == 0
    # 2,000 preloaded + the other 500 streamed, then 100 of those again (wrapped): exactly the file's edges
    assert run["graph_edges"] == 2_500


def test_bench_e2e_runs_start_alike(broker, tmp_path: Path) -> None:  # noqa: ANN001
    """Each run of a sweep: a fresh worker on the pre-loaded graph, its own topics, the same
    replayed edges (a run used to inherit the graph and the broker log of the runs before it)."""
    data = tmp_path / "edges.txt"
    data.write_text("".join(f"u{i} v{i} {1_000_000 + i}\n" for i in range(3_000)))  # 3,000 distinct edges
    out = tmp_path / "e2e.json"
    r = subprocess.run([sys.executable, "-m", "stream.cli", "bench", "e2e", "--dataset", str(data), "--sweep", "300,300",
                        "--duration", "2", "--preload-edges", "2000", "--warmup", "0.5", "--bootstrap", broker.bootstrap,
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert [run["graph_edges"] for run in runs] == [2_600, 2_600]  # not 2,600 then 3,000
    assert all(run["unmatched_events"] == 0 and run["worker_ready_s"] > 0 for run in runs)
    assert all(run["predictions"] >= 600 for run in runs)  # ~2 fresh nodes per event, every one predicted


def test_bench_e2e_worker_settings_reach_a_restored_worker(broker, tmp_path: Path) -> None:  # noqa: ANN001
    """--set reaches the worker although it starts from the pre-loaded snapshot (whose settings
    used to win): a prediction budget of 0.01 per event caps a batch at 16 top-k."""
    data = tmp_path / "edges.txt"
    data.write_text("".join(f"u{i} v{i} {1_000_000 + i}\n" for i in range(3_000)))
    out = tmp_path / "e2e.json"
    r = subprocess.run([sys.executable, "-m", "stream.cli", "bench", "e2e", "--dataset", str(data), "--rate", "300",
                        "--duration", "2", "--preload-edges", "2000", "--warmup", "0.5", "--bootstrap", broker.bootstrap,
                        "--set", "PREDICTIONS_PER_EVENT=0.01", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run = json.loads(out.read_text())["runs"][0]
    assert run["unmatched_events"] == 0 and run["predictions"] <= 16 * run["batches"]
    assert run["node_unanswered"] > 0 or run["node_p99_ms"] > run["p99_ms"]  # a budget defers nodes past their batch
    assert run["predictions"] + run["predictions_waiting"] >= 1_000  # the rest wait their turn


def test_node_latency_is_the_first_prediction_for_that_node_at_or_after_the_event() -> None:
    from stream.bench_e2e import _node_latencies

    times = [10.0, 10.5, 11.0]
    values = [b'{"src":"a","dst":"b"}', b'{"src":1,"dst":"a"}', b'{"src":"a","dst":"c"}']
    answers = [("a", 10_000, 10.2), ("b", 10_000, 10.3), ("a", 10_600, 10.9),  # "a" touched at 10.0, then 10.5
               ("1", 10_500, 10.7), ("a", 10_400, 11.5)]  # a late, older answer does not undercut 10.9
    got = _node_latencies(times, values, answers)
    want = [0.2, 0.3, 0.2, 0.4, np.inf, np.inf]  # a@11.0 and c were never answered
    assert np.allclose(got[:4], want[:4]) and np.isinf(got[4:]).all()


def test_sweep_holds_a_rate_only_when_every_touched_node_is_answered_in_time() -> None:
    from stream.bench_e2e import sweep

    run = {"offered_rate": 5000.0, "p99_ms": 200.0, "node_p99_ms": 240.0, "node_unanswered": 0, "throughput": 4990.0}
    slow = {"offered_rate": 1000.0, "p99_ms": 90.0, "node_p99_ms": 100.0, "node_unanswered": 0, "throughput": 999.0}
    assert sweep([slow, run])["max_rate_held"] == 5000.0
    assert sweep([slow, run | {"node_p99_ms": 1600.0}])["max_rate_held"] == 1000.0  # deferred by a budget
    assert sweep([slow, run | {"node_unanswered": 3}])["max_rate_held"] == 1000.0
    assert sweep([slow, run | {"throughput": 4000.0}])["max_rate_held"] == 1000.0


def test_bench_events_go_to_the_partition_a_keyed_send_picks() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from stream.bench_e2e import _partitions

    events = [(f"k{i % 37}|{i}".encode(), b"{}") for i in range(300)]
    pick = DefaultPartitioner()
    want = [pick(k, list(range(6)), list(range(6))) for k, _ in events]
    assert _partitions(events, 6).tolist() == want


@pytest.mark.parametrize("linger_ms", [1.0, 40.0])
def test_bench_producer_lingers_and_stamps_each_event_with_its_due_time(broker, linger_ms: float) -> None:  # noqa: ANN001
    """Events go out every ``linger_ms`` as one batch per partition, and each carries the time it
    was due (start + i / rate), not the time it was sent: a lingering producer's wait is latency."""
    import asyncio
    import time

    from aiokafka import AIOKafkaProducer

    from stream.bench_e2e import _paced, _partitions

    rate, n, topic = 500.0, 400, f"paced-{int(linger_ms)}"
    events = [(f"k{i}".encode(), b"{}") for i in range(n)]

    async def main() -> tuple[int, float, list[tuple[object, str, list[float]]]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0)
        await producer.start()
        try:
            parts = len(await producer.partitions_for(topic))
            start = time.monotonic()
            wall0 = time.time()
            sent = await _paced(producer, topic, events, _partitions(events, parts), rate, start, linger_ms / 1000.0)
            await asyncio.gather(*(fut for fut, *_ in sent))
            return parts, wall0, sent
        finally:
            await producer.stop()

    parts, wall0, sent = asyncio.run(main())
    stamps = np.sort(np.concatenate([s for _, _, s, _ in sent]))
    assert len(stamps) == n
    js = np.concatenate([j for *_, j in sent])
    assert sorted(js.tolist()) == list(range(n))  # each record's event index, for per-node latencies
    assert all(abs(t - (wall0 + j / rate)) < 0.005 for _, _, ts, jj in sent for t, j in zip(ts, jj))
    due = wall0 + np.arange(n) / rate
    assert np.abs(stamps - due).max() < 0.005  # the schedule, whatever the send times
    seconds = n / rate  # 0.8 s of sending
    if linger_ms >= 10:  # one batch per partition per linger at most
        assert len(sent) <= parts * (seconds / (linger_ms / 1000.0) + 2)
    else:  # sent as they fall due: far more, smaller batches
        assert len(sent) > parts * (seconds / 0.040 + 2)
