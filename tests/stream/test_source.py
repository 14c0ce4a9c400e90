"""The worker's input side against the embedded broker: batches and lag."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from stream.kafka import ensure_topics
from stream.source import Source, tp_key
from tests.integration.test_worker_e2e import _settings

pytestmark = pytest.mark.integration


def test_lag_counts_the_last_record_batch(broker) -> None:  # noqa: ANN001
    """Ten records in one producer batch, three handed out: the lag is seven.

    Tansu's "latest" ListOffsets answers 1 here (the batch's first offset + 1); taken alone it
    made the lag read 0 while records waited, and let a reader stop before a topic's end."""
    s, _ = _settings(f"src{uuid.uuid4().hex[:6]}")
    ensure_topics(s, broker.bootstrap)

    async def main() -> tuple[dict[str, int], int]:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=200)
        await producer.start()
        try:
            acks = [await producer.send(s.topic_edges, value=b"{}", partition=0) for _ in range(10)]
            await asyncio.gather(*acks)  # one batch: linger holds them together
        finally:
            await producer.stop()
        source = Source(s, broker.bootstrap, [s.topic_edges])
        await source.start()
        try:
            batch = await source.batch(3, window=0.5, idle=5.0)
            assert batch is not None
            return await source.lag(), len(batch.records)
        finally:
            await source.stop()

    lag, taken = asyncio.run(main())
    assert taken == 3
    assert lag[tp_key(s.topic_edges, 0)] == 7
    assert sum(lag.values()) == 7


def test_lag_follows_the_fetches_between_end_offset_refreshes(broker) -> None:  # noqa: ANN001
    """Records produced after the last end-offset refresh (once a second) count as soon as a
    fetch has seen them: the batching controller reads the lag before every batch."""
    s, _ = _settings(f"src{uuid.uuid4().hex[:6]}")
    ensure_topics(s, broker.bootstrap)

    async def main() -> tuple[int, int]:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        source = Source(s, broker.bootstrap, [s.topic_edges])
        await source.start()
        try:
            await asyncio.gather(*[await producer.send(s.topic_edges, value=b"{}", partition=0) for _ in range(10)])
            assert (await source.batch(10, window=0.5, idle=5.0)) is not None
            before = sum((await source.lag()).values())  # refreshes the end offsets: 0 left
            await asyncio.gather(*[await producer.send(s.topic_edges, value=b"{}", partition=0) for _ in range(50)])
            assert (await source.batch(5, window=0.5, idle=5.0)) is not None  # a fetch: its high watermark says 60
            return before, sum((await source.lag()).values())  # within the second: no refresh
        finally:
            await producer.stop()
            await source.stop()

    before, after = asyncio.run(main())
    assert before == 0
    assert after == 45
