"""Input side of the worker: every partition of the input topics, read in micro-batches.

Every worker keeps the whole topology, so :class:`Source` is *assigned* all partitions of
``lepton.edges`` and ``lepton.nodes`` (no consumer group) and starts where the state's snapshot
left off. :class:`Ownership` is the worker's membership in the consumer group: Kafka assigns
each member a share of the edge partitions, and a worker publishes outputs only for keys that
hash to its share. Offsets committed through the group mark "outputs published up to here".

A batch is described by its per-partition ``[start, end)`` offsets (:class:`Batch`), which is
what the journal records so that a replay after a crash cuts exactly the same batches.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from stream.kafka import aiokafka_config, partition_for
from stream.settings import Settings

__all__ = ["Record", "Batch", "Source", "Ownership", "tp_key", "window_end"]

log = logging.getLogger("lepton.source")


class Record(NamedTuple):
    """One consumed Kafka record, reduced to what the pipeline needs (a named tuple: one is
    built per record fetched, 4x cheaper than a frozen dataclass)."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # seconds (record CreateTime)
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Batch:
    """A micro-batch: its records and the ``[start, end)`` offsets it covers per partition."""

    records: list[Record]
    start: dict[str, int]  # "topic:partition" -> first offset
    end: dict[str, int]  # "topic:partition" -> offset after the batch

    @cached_property
    def id(self) -> str:
        """Deterministic batch id: the same offsets give the same id, in any process (computed
        once: every output record of the batch carries it)."""
        body = json.dumps([self.start, self.end], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def tp_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def window_end(produced: float, window: float) -> float:
    """Monotonic time at which a batch's fill window ends: ``window`` s after its first record
    was produced (its Kafka timestamp, wall clock), not after the worker took it up. Records that
    arrived while the previous batch was processing have waited already: a window counted from
    the fetch made them wait a second time (the window, ~60 ms at 5,000/s, after a batch's
    processing). Clamped to [now, now + window]: a producer's clock skew can only shorten or
    restore the window, never stretch it."""
    left = window - (time.time() - produced)
    return time.monotonic() + min(window, max(0.0, left))


@dataclass
class Source:
    """All partitions of ``topics``, with a replay-exact batching API."""

    settings: Settings
    bootstrap: str
    topics: list[str]
    drain_wait: float = 0.005  # after the window: a fetch that brings nothing within this ends the batch
    _consumer: Any = None
    _tps: dict[str, Any] = field(default_factory=dict)  # "topic:partition" -> TopicPartition
    _held: list[Record] = field(default_factory=list)  # fetched, not yet handed out (in order)
    _next: dict[str, int] = field(default_factory=dict)  # offset after the last record handed out
    _pulled: dict[str, int] = field(default_factory=dict)  # offset after the last record fetched
    _ends: dict[str, int] = field(default_factory=dict)  # log end offsets (for lag), refreshed
    _ends_at: float = 0.0

    async def start(self, offsets: dict[str, int] | None = None) -> None:
        """Assign every partition and seek to ``offsets`` (missing partitions: the beginning)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: PLC0415

        s = self.settings
        self._consumer = AIOKafkaConsumer(
            **aiokafka_config(s, self.bootstrap), group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=s.fetch_max_wait_ms, max_partition_fetch_bytes=s.fetch_partition_bytes,
            fetch_max_bytes=s.fetch_partition_bytes * 8, auto_offset_reset="earliest",
            client_id=f"{s.app_id}-source")
        await self._consumer.start()
        for topic in self.topics:
            parts = self._consumer.partitions_for_topic(topic) or set()
            for p in sorted(parts):
                self._tps[tp_key(topic, p)] = TopicPartition(topic, p)
        self._consumer.assign(list(self._tps.values()))
        offsets = offsets or {}
        for key, tp in self._tps.items():
            if key in offsets:
                self._consumer.seek(tp, offsets[key])
                self._next[key] = self._pulled[key] = offsets[key]
        rest = [tp for k, tp in self._tps.items() if k not in offsets]
        if rest:
            await self._consumer.seek_to_beginning(*rest)
            for k, tp in self._tps.items():
                if k not in offsets:
                    self._next[k] = self._pulled[k] = await self._consumer.position(tp)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def positions(self) -> dict[str, int]:
        """Offset after the last record handed out, per partition (what a snapshot stores)."""
        return dict(self._next)

    async def batch(self, max_records: int, window: float, idle: float = 0.1) -> Batch | None:
        """Up to ``max_records`` records, waiting at most ``window`` s after the first was produced
        (:func:`window_end`); None when nothing arrived within ``idle`` s (the caller checks for
        shutdown)."""
        out = self._held[:max_records]
        self._held = self._held[max_records:]
        deadline = window_end(out[0].timestamp, window) if out else None
        while len(out) < max_records:
            wait = idle if deadline is None else deadline - time.monotonic()
            if wait <= 0:  # window over: keep taking while records are flowing (a backlog), briefly
                got = await self._fetch(self.drain_wait, max_records - len(out))
                if not got:
                    break
                out += got
                continue
            got = await self._fetch(wait, max_records - len(out))
            if not got and deadline is None:
                return None
            out += got
            if deadline is None and out:
                deadline = window_end(out[0].timestamp, window)
        return self._cut(out)

    async def take_until(self, end: dict[str, int], timeout: float = 60.0) -> Batch:
        """Exactly the records before ``end`` (a journaled batch), fetching as needed."""
        out = [r for r in self._held if r.offset < end.get(tp_key(r.topic, r.partition), 0)]
        self._held = [r for r in self._held if r.offset >= end.get(tp_key(r.topic, r.partition), 0)]
        deadline = time.monotonic() + timeout
        while any(self._pulled.get(k, 0) < e for k, e in end.items() if e > self._next.get(k, 0)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"journaled batch {end} not readable within {timeout}s")
            for r in await self._fetch(0.5, 10_000):
                (out if r.offset < end.get(tp_key(r.topic, r.partition), 0) else self._held).append(r)
        return self._cut(out)

    @property
    def produced(self) -> tuple[float, int]:
        """(monotonic time of the last end-offset refresh, sum of log end offsets): arrivals."""
        return self._ends_at, sum(self._ends.values())

    async def lag(self) -> dict[str, int]:
        """Records not yet handed out, per partition (log end offset - position)."""
        now = time.monotonic()
        if now - self._ends_at > 1.0 and self._consumer is not None:
            ends = await self._consumer.end_offsets(list(self._tps.values()))
            # Tansu answers a "latest" ListOffsets with the last record batch's first offset + 1,
            # short of the log end by that batch; the high watermark of our fetches is right
            self._ends = {tp_key(tp.topic, tp.partition): max(off, self._consumer.highwater(tp) or 0)
                          for tp, off in ends.items()}
            self._ends_at = now
        # between refreshes, every fetch's high watermark: the controller reads the lag before each
        # batch, and a lag a second old hid the backlog (the fill window then made waiting records
        # wait longer: DARPA at 5,000/s, p99 749-1,029 -> 341-519 ms)
        high = {k: self._consumer.highwater(tp) or 0 for k, tp in self._tps.items()} if self._consumer else {}
        return {k: max(0, max(self._ends.get(k, 0), high.get(k, 0)) - self._next.get(k, 0)) for k in self._tps}

    # ---- helpers ------------------------------------------------------------------------------
    async def _fetch(self, wait: float, max_records: int) -> list[Record]:
        got = await self._consumer.getmany(timeout_ms=max(0, int(wait * 1000)), max_records=max_records)
        out: list[Record] = []
        new = tuple.__new__  # Record's fields, positionally: 0.27 vs 1.24 µs a record through its keywords
        for tp, msgs in got.items():
            topic, part = tp.topic, tp.partition
            out += [new(Record, (topic, part, m.offset, m.timestamp / 1000.0, m.key, m.value)) for m in msgs]
            if msgs:
                self._pulled[tp_key(tp.topic, tp.partition)] = msgs[-1].offset + 1
        return out

    def _cut(self, records: list[Record]) -> Batch:
        """The batch in canonical order: partitions merged by timestamp, each keeping its own order.

        Fetches interleave partitions differently in every process; a canonical order makes a
        batch's result depend only on its offsets (replays and other workers compute the same).
        """
        start = dict(self._next)
        parts: dict[tuple[str, int], list[Record]] = {}
        for r in records:
            parts.setdefault((r.topic, r.partition), []).append(r)
        for (topic, part), rs in parts.items():  # records of a partition arrive in offset order
            self._next[tp_key(topic, part)] = rs[-1].offset + 1
        ordered = list(heapq.merge(*(parts[k] for k in sorted(parts)), key=attrgetter("timestamp")))
        return Batch(records=ordered, start=start, end=dict(self._next))


@dataclass
class Ownership:
    """Membership in the consumer group on the edges topic: which key partitions this worker owns.

    The member's partitions stay paused (the :class:`Source` reads the data); a keep-alive loop
    polls so the group sees the member as live. Ownership changes only when a new assignment
    arrives: a revoked partition stays owned until then, so outputs are not skipped mid-rebalance.

    Each assignment is saved to ``memory``; a restarted worker adopts the saved one at once
    (the group would otherwise keep it waiting for the dead member's session to expire, ~11 s on
    Tansu) and takes the group's answer when it arrives.
    """

    settings: Settings
    bootstrap: str
    topic: str
    partitions: int
    memory: Path | None = None  # where the last assignment is kept across restarts
    owned: frozenset[int] = frozenset()
    generation: int = 0
    _consumer: Any = None
    _task: asyncio.Task | None = None
    _assigned: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, timeout: float = 30.0) -> None:
        """Join the group; returns once the first assignment arrived."""
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener  # noqa: PLC0415

        s, me = self.settings, self

        class _Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            async def on_partitions_assigned(self, assigned: Any) -> None:
                me.owned = frozenset(tp.partition for tp in assigned if tp.topic == me.topic)
                me.generation += 1
                me._consumer.pause(*assigned)
                log.warning("owning partitions %s of %s", sorted(me.owned), me.topic)
                if me.memory is not None:
                    me.memory.write_text(json.dumps({"topic": me.topic, "owned": sorted(me.owned)}))
                me._assigned.set()

        self._consumer = AIOKafkaConsumer(
            **aiokafka_config(s, self.bootstrap), group_id=s.app_id, enable_auto_commit=False,
            session_timeout_ms=int(s.session_timeout * 1000), heartbeat_interval_ms=int(s.heartbeat_interval * 1000),
            rebalance_timeout_ms=int(s.rebalance_timeout * 1000), max_poll_interval_ms=60_000,
            client_id=f"{s.app_id}-owner")
        await self._consumer.start()
        self._consumer.subscribe([self.topic], listener=_Listener())
        self._task = asyncio.ensure_future(self._keepalive())
        saved = self._remembered()
        if saved is not None:
            self.owned = saved
            log.warning("owning partitions %s of %s (until the group confirms)", sorted(saved), self.topic)
            return
        await asyncio.wait_for(self._assigned.wait(), timeout)

    def owns(self, key: bytes) -> bool:
        """Whether this worker publishes outputs for ``key`` (a node id or an edge key)."""
        return len(self.owned) >= self.partitions or partition_for(key, self.partitions) in self.owned

    async def commit(self, positions: dict[str, int]) -> None:
        """Commit ``positions`` of the owned edge partitions (after their outputs were acked)."""
        from aiokafka import TopicPartition  # noqa: PLC0415
        from aiokafka.errors import KafkaError  # noqa: PLC0415

        mine = {TopicPartition(self.topic, p): positions[tp_key(self.topic, p)] for p in self.owned
                if tp_key(self.topic, p) in positions and p in self._current()}
        if not mine:
            return
        try:
            await self._consumer.commit(mine)
        except KafkaError as err:  # a rebalance is in progress: the next batch commits again
            log.info("offset commit skipped: %s", err)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()

    def _remembered(self) -> frozenset[int] | None:
        try:
            saved = json.loads(self.memory.read_text()) if self.memory is not None else None
        except (OSError, ValueError):
            return None
        if not saved or saved.get("topic") != self.topic:
            return None
        return frozenset(int(p) for p in saved["owned"] if 0 <= int(p) < self.partitions)

    def _current(self) -> set[int]:
        return {tp.partition for tp in self._consumer.assignment()}

    async def _keepalive(self) -> None:
        while True:
            try:
                assigned = self._consumer.assignment()
                if assigned:
                    self._consumer.pause(*assigned)
                await self._consumer.getmany(timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - keep the membership alive through broker hiccups
                log.warning("group keep-alive: %s", err)
                await asyncio.sleep(1.0)
