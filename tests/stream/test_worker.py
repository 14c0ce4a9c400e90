"""Pipeline: a batch's outputs are queued in order before the next batch may start; its
metrics wait for every ack (the worker overlaps those acks with the next batch)."""

from __future__ import annotations

import asyncio
import json

from gnn.processor import Processor, ProcessorConfig
from security.keys import KeyRing
from stream.settings import Settings
from stream.source import Batch, Record
from stream.worker import Pipeline


def _batch(first: int, n: int) -> Batch:
    records = [Record("t.edges", 0, first + i, 0.0, None, json.dumps({"src": f"n{i % 7}", "dst": f"n{i % 5 + 7}"}).encode())
               for i in range(n)]
    records.append(Record("t.edges", 0, first + n, 0.0, None, b"not json"))  # a dead letter
    return Batch(records=records, start={"t.edges:0": first}, end={"t.edges:0": first + n + 1})


def test_outputs_are_queued_in_order_and_metrics_wait_for_acks() -> None:
    queued: list[tuple[str, int]] = []
    acks: list[asyncio.Future] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> asyncio.Future:
        queued.append((topic, len(acks)))
        acks.append(asyncio.get_running_loop().create_future())
        return acks[-1]

    settings = Settings(app_id="t", topic_edges="t.edges", topic_nodes="t.nodes", topic_predictions="t.predictions",
                        topic_alerts="t.alerts", topic_deadletter="t.deadletter")
    p = Pipeline(settings=settings, processor=Processor(ProcessorConfig(hidden=8, out=8, hashed_dim=4, top_k=3)),
                 keyring=KeyRing.generate("k"), send=send)

    async def scenario() -> None:
        first = await asyncio.wait_for(p.start(_batch(0, 40)), 10)  # returns without any ack
        n_first = len(queued)  # every output of the batch is with the producer when start returns
        assert n_first > 2 and queued[0][0] == "t.deadletter"
        assert all(topic == "t.predictions" for topic, _ in queued[1:])
        second = await asyncio.wait_for(p.start(_batch(41, 40)), 10)  # while the first's acks are out
        assert len(queued) > n_first and [i for _, i in queued] == list(range(len(queued)))
        done = asyncio.ensure_future(first)
        await asyncio.sleep(0.01)
        assert not done.done() and "lepton_batches_total" not in p.metrics.render()
        for fut in acks[:n_first]:
            fut.set_result(None)
        assert await done == 40  # applied, counted once its acks are in
        assert "lepton_batches_total 1" in p.metrics.render()
        for fut in acks[n_first:]:
            fut.set_result(None)
        assert await second == 40 and "lepton_batches_total 2" in p.metrics.render()

    asyncio.run(scenario())
