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


def test_the_fill_window_counts_from_when_the_first_record_was_produced(broker) -> None:  # noqa: ANN001
    """Records produced 10 s ago (they waited out a slow batch) are taken at once, not after a
    fresh 3-s window; a record produced now still gets its window."""
    s, _ = _settings(f"src{uuid.uuid4().hex[:6]}")
    ensure_topics(s, broker.bootstrap)

    async def main() -> tuple[float, int, float, int]:
        import time

        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        source = Source(s, broker.bootstrap, [s.topic_edges])
        await source.start()
        try:
            old = int((time.time() - 10.0) * 1000)
            await asyncio.gather(*[await producer.send(s.topic_edges, value=b"{}", partition=0, timestamp_ms=old)
                                   for _ in range(5)])
            t0 = time.monotonic()
            stale = await source.batch(100, window=3.0, idle=5.0)
            t1 = time.monotonic()
            await asyncio.gather(await producer.send(s.topic_edges, value=b"{}", partition=0))
            fresh = await source.batch(100, window=1.0, idle=5.0)
            t2 = time.monotonic()
            assert stale is not None and fresh is not None
            return t1 - t0, len(stale.records), t2 - t1, len(fresh.records)
        finally:
            await producer.stop()
            await source.stop()

    stale_s, stale_n, fresh_s, fresh_n = asyncio.run(main())
    assert (stale_n, fresh_n) == (5, 1)
    assert stale_s < 1.5  # was 3 s: the window restarted when the worker took the records up
    assert 0.8 <= fresh_s < 2.5


def test_window_end_is_clamped_to_the_window() -> None:
    import time

    from stream.source import window_end

    now, wall = time.monotonic(), time.time()
    assert window_end(wall - 10.0, 0.5) - now < 0.05  # waited long enough already
    assert 0.45 < window_end(wall, 0.5) - now < 0.55
    assert 0.15 < window_end(wall - 0.3, 0.5) - now < 0.25  # the rest of its window (0.2 less the time since `wall`)
    assert window_end(wall + 60.0, 0.5) - now < 0.55  # a producer clock ahead: no longer than the window
