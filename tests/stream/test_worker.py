"""Pipeline: a batch's outputs reach the producer in batch order while the next batch is being
processed; its metrics wait for every ack (the worker overlaps sealing, sending and acks with
the next batch)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np

from gnn.linkpred import LogisticDecoder, PairFeatures
from gnn.processor import Processor, ProcessorConfig
from security.envelope import open_envelope
from security.keys import KeyRing
from stream.settings import Settings
from stream.source import Batch, Record
from stream.worker import Pipeline


_SETTINGS = Settings(app_id="t", topic_edges="t.edges", topic_nodes="t.nodes", topic_predictions="t.predictions",
                     topic_alerts="t.alerts", topic_deadletter="t.deadletter")


def _opening_send(ring: KeyRing, out: list[dict]):  # noqa: ANN202
    """A producer that acknowledges at once and keeps every sealed record, opened."""

    async def send(topic: str, key: bytes | None, value: bytes) -> asyncio.Future:
        if topic != "t.deadletter":
            out.append(json.loads(open_envelope(value, keyring=ring, topic=topic, key=key)))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    return send


def _batch(first: int, n: int) -> Batch:
    records = [Record("t.edges", 0, first + i, 0.0, None, json.dumps({"src": f"n{i % 7}", "dst": f"n{i % 5 + 7}"}).encode())
               for i in range(n)]
    records.append(Record("t.edges", 0, first + n, 0.0, None, b"not json"))  # a dead letter
    return Batch(records=records, start={"t.edges:0": first}, end={"t.edges:0": first + n + 1})


def test_outputs_keep_batch_order_and_metrics_wait_for_acks() -> None:
    ring = KeyRing.generate("k")
    queued: list[tuple[str, str]] = []  # (topic, batch id) in the order the producer got them
    acks: list[asyncio.Future] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> asyncio.Future:
        await asyncio.sleep(0.003)  # a slow producer: the first batch is still sending when the second is ready
        batch = "" if topic == "t.deadletter" else json.loads(open_envelope(value, keyring=ring, topic=topic,
                                                                            key=key))["batch"]
        queued.append((topic, batch))
        acks.append(asyncio.get_running_loop().create_future())
        return acks[-1]

    p = Pipeline(settings=_SETTINGS, processor=Processor(ProcessorConfig(hidden=8, out=8, hashed_dim=4, top_k=3)),
                 keyring=ring, send=send)
    one, two = _batch(0, 40), _batch(41, 40)

    async def scenario() -> None:
        first = await asyncio.wait_for(p.start(one), 10)  # returns without any ack
        second = await asyncio.wait_for(p.start(two), 10)  # the first's outputs go out meanwhile
        done = asyncio.ensure_future(first)
        await asyncio.wait_for(asyncio.shield(p._publishing), 10)  # both batches are with the producer
        batches = [b for t, b in queued if t == "t.predictions"]
        n_first = batches.count(one.id)
        assert n_first > 2 and batches == [one.id] * n_first + [two.id] * (len(batches) - n_first)  # batch order
        assert [t for t, _ in queued].count("t.deadletter") == 2
        assert not done.done() and "lepton_batches_total" not in p.metrics.render()
        cut = queued.index(("t.deadletter", ""), 1)  # the second batch starts with its dead letter
        for fut in acks[:cut]:
            fut.set_result(None)
        assert await done == 40  # applied, counted once its acks are in
        assert "lepton_batches_total 1" in p.metrics.render()
        for fut in acks[cut:]:
            fut.set_result(None)
        assert await second == 40 and "lepton_batches_total 2" in p.metrics.render()

    asyncio.run(scenario())


def test_a_batch_predicts_the_same_whenever_it_is_processed() -> None:
    """Predictions depend on the batch's offsets only, not on the wall clock at processing:
    a replay after a crash, or another worker, republishes the same id with the same content."""
    ring = KeyRing.generate("k")
    t0 = time.time()  # events stamped "now": node ages are seconds, where a clock would show
    records = [Record("t.edges", 0, i, t0 - 5 + i * 0.1, None,
                      json.dumps({"src": f"n{i % 9}", "dst": f"n{(i * 4) % 13 + 9}"}).encode()) for i in range(40)]
    batch = Batch(records=records, start={"t.edges:0": 0}, end={"t.edges:0": 40})
    x = np.random.default_rng(0).normal(size=(400, len(PairFeatures.NAMES)))
    age = PairFeatures.NAMES.index("log_age_u")
    decoder = LogisticDecoder().fit(x, (x[:, age] + 0.3 * x[:, 7] > 0).astype(float))  # a fitted model reads node ages

    def run() -> list[dict]:
        out: list[dict] = []
        p = Pipeline(settings=_SETTINGS, processor=Processor(ProcessorConfig(hidden=8, out=8, hashed_dim=4, top_k=3)),
                     keyring=ring, send=_opening_send(ring, out))
        p.processor.install(decoder)
        asyncio.run(p.handle(batch))
        return [{k: r[k] for k in ("id", "node", "predictions")} for r in out]

    first = run()
    time.sleep(1.5)  # a worker processing the same offsets later
    assert len(first) > 10 and run() == first


def test_a_fit_started_before_a_batch_is_installed_before_the_next() -> None:
    """Which batch first uses a new decoder depends on the offsets, not on how fast the fit ran:
    here the trainer's one thread is busy for 2 s, and batch 4 still waits for the fit that
    batch 3 started (1,000 samples = 500 edges: due at batch 3's start)."""
    from concurrent.futures import ThreadPoolExecutor

    ring = KeyRing.generate("k")
    out: list[dict] = []
    trainer = ThreadPoolExecutor(1)
    p = Pipeline(settings=_SETTINGS, processor=Processor(ProcessorConfig(hidden=8, out=8, hashed_dim=4, top_k=2)),
                 keyring=ring, send=_opening_send(ring, out), trainer=trainer)
    rng = np.random.default_rng(1)
    batches = []
    for b in range(4):
        ends = rng.integers(0, 400, (300, 2))
        records = [Record("t.edges", 0, b * 300 + i, 0.0, None, json.dumps({"src": f"n{u}", "dst": f"n{v}"}).encode())
                   for i, (u, v) in enumerate(ends)]
        batches.append(Batch(records=records, start={"t.edges:0": b * 300}, end={"t.edges:0": (b + 1) * 300}))
    try:
        trainer.submit(time.sleep, 2.0)  # a slow fit: the first one queues behind this

        async def scenario() -> None:
            for batch in batches:
                await p.handle(batch)

        asyncio.run(scenario())
    finally:
        trainer.shutdown()
    versions = [(r["batch"], r["model_version"]) for r in out if r["type"] == "prediction"]
    by_batch = {b.id: {v for bid, v in versions if bid == b.id} for b in batches}
    assert [by_batch[b.id] for b in batches[:3]] == [{"sage-0/untrained"}] * 3
    assert by_batch[batches[3].id] == {"sage-0/lr-1"}


def _edge_batches(n: int, size: int, seed: int) -> list[Batch]:
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n):
        ends = rng.integers(0, 400, (size, 2))
        records = [Record("t.edges", 0, b * size + i, 0.0, None, json.dumps({"src": f"n{u}", "dst": f"n{v}"}).encode())
                   for i, (u, v) in enumerate(ends)]
        out.append(Batch(records=records, start={"t.edges:0": b * size}, end={"t.edges:0": (b + 1) * size}))
    return out


def test_a_refit_runs_beside_the_stream_until_the_next_one_is_due() -> None:
    """Later fits are installed when the next one is due, not before the very next batch, so no
    batch waits for a fit that had a whole refit period to run. refit_every = 600 positives,
    batches of 300 edges: the first fit (handed out at batch 3, 1,200 samples) is installed at
    once (no decoder yet); the second is handed out at batch 5 and installed at batch 7, not 6.
    A snapshot between them keeps the finished fit staged, so a replay installs it at batch 7 too."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    ring = KeyRing.generate("k")
    trainer = ThreadPoolExecutor(1)
    batches = _edge_batches(8, 300, seed=2)

    def run(snapshot_after: int | None) -> dict[str, set[str]]:
        out: list[dict] = []
        p = Pipeline(settings=_SETTINGS, processor=Processor(ProcessorConfig(hidden=8, out=8, hashed_dim=4, top_k=2,
                                                                             refit_every=600)),
                     keyring=ring, send=_opening_send(ring, out), trainer=trainer)

        async def scenario() -> None:
            for i, batch in enumerate(batches):
                await p.handle(batch)
                if i + 1 == snapshot_after:  # what Worker.snapshot does, then a restart from it
                    p.install_pending()
                    assert p.processor.staged
                    p.processor = pickle.loads(pickle.dumps(p.processor))

        asyncio.run(scenario())
        versions = [(r["batch"], r["model_version"]) for r in out if r["type"] == "prediction"]
        return {b.id: {v for bid, v in versions if bid == b.id} for b in batches}

    try:
        plain, restored = run(None), run(5)
    finally:
        trainer.shutdown()
    want = ["untrained"] * 3 + ["lr-1"] * 3 + ["lr-2"] * 2
    assert [plain[b.id] for b in batches] == [{f"sage-0/{v}"} for v in want]
    assert restored == plain


def test_the_worker_fits_in_a_lower_priority_child_process_with_the_same_result() -> None:
    """A fit in the worker's pool (a spawned child, 10 nice levels lower) equals one in process:
    the job is picklable and the model installed does not depend on where it was fitted."""
    import os

    from gnn.decoder import fit_decoder
    from stream.worker import fit_pool

    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 6))
    y = (x[:, 0] - 0.5 * x[:, 3] + rng.normal(size=4000) > 0).astype(np.float64)
    start = fit_decoder(x[:2000], y[:2000])
    pool = fit_pool()
    try:
        got = pool.submit(fit_decoder, x, y, start).result()
        child, nice = pool.submit(os.getpid).result(), pool.submit(os.getpriority, os.PRIO_PROCESS, 0).result()
    finally:
        pool.shutdown()
    want = fit_decoder(x, y, start)
    assert np.allclose(got.w, want.w, rtol=0, atol=1e-12) and abs(got.b - want.b) < 1e-12 and got.steps == want.steps
    assert child != os.getpid()
    assert nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)


def test_a_lost_fit_process_is_replaced_and_training_goes_on() -> None:
    """The fit process killed mid-stream: that fit is reported lost, the next one starts a new
    process, and later batches carry a newer decoder."""
    import os
    import signal

    from stream.worker import fit_pool

    ring = KeyRing.generate("k")
    out: list[dict] = []
    p = Pipeline(settings=_SETTINGS, processor=Processor(ProcessorConfig(hidden=8, out=8, hashed_dim=4, top_k=2,
                                                                         refit_every=300)),
                 keyring=ring, send=_opening_send(ring, out), trainer=fit_pool())
    batches = _edge_batches(10, 300, seed=5)
    try:
        async def scenario() -> None:
            for i, batch in enumerate(batches):
                await p.handle(batch)
                if i == 3:
                    for child in list(p.trainer._processes.values()):  # type: ignore[union-attr]
                        os.kill(child.pid, signal.SIGKILL)
                    await asyncio.sleep(0.5)

        asyncio.run(scenario())
    finally:
        p.trainer.shutdown()  # type: ignore[union-attr]
    assert p.metrics.counter("training_failures_total") >= 1
    last = {r["model_version"] for r in out if r["type"] == "prediction" and r["batch"] == batches[-1].id}
    versions = {r["model_version"] for r in out if r["type"] == "prediction"}
    assert last and all(v.startswith("sage-0/lr-") for v in last)
    assert len(versions) >= 4  # untrained, fits before the kill, and fits after it
