"""The worker: consume the input topics in micro-batches, call the core, publish outputs.

One batch: journal its offsets → decode → ``Processor.process`` → (while the next batch is
processed) seal and hand every output to the producer, after the previous batch's → await every
ack → commit the owned partitions' offsets, batch after batch → (every N events or T seconds,
with no batch in flight) snapshot the state.
:class:`Pipeline` holds the byte-level work; :class:`Worker` owns the loop, the Kafka clients,
recovery (newest snapshot + journal replay) and graceful shutdown.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import time
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

from gnn.errors import EventError
from gnn.events import EdgeEvent, parse_edge, parse_node
from gnn.jit import set_split_threads
from gnn.kernels import set_threads
from gnn.processor import Alert, Processor
from gnn.snapshot import latest_snapshot, load_snapshot, save_snapshot
from security.envelope import seal
from security.errors import SecurityError
from security.keys import KeyRing
from security.recipients import load_recipients, seal_for
from stream.batching import BatchController
from stream.children import background_child, fit_child_init
from stream.gc_pauses import GcPauses
from stream.journal import Journal
from stream.kafka import partition_for
from stream.metrics import SIZE_BUCKETS, Metrics
from stream.outputs import alert_record, deadletter_record, prediction_record
from stream.producer import edge_key
from stream.settings import Settings
from stream.source import Batch, Ownership, Record, Source
from stream.status import LiveStats
from stream.webhooks import WebhookDelivery, parse_endpoints

__all__ = ["Pipeline", "Worker", "load_keyring", "run_worker", "prediction_id"]

log = logging.getLogger("lepton.worker")

# (topic, key, value) -> hands the record to the producer (in call order) and gives its ack awaitable
Send = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[Any]]]
# (topic, [(key, value), ...]) -> hands the records to the producer in order, gives ack awaitables for them all
SendMany = Callable[[str, list[tuple[bytes, bytes]]], Awaitable[list[Awaitable[Any]]]]


@dataclass
class Pipeline:
    """Byte-level batch handling around :class:`Processor`; ``send`` returns an awaitable ack."""

    settings: Settings
    processor: Processor
    keyring: KeyRing
    send: Send
    send_many: SendMany | None = None  # None: one ``send`` per record
    metrics: Metrics = field(default_factory=Metrics)
    live: LiveStats = field(default_factory=LiveStats)  # rolling figures for /ui
    batches: int = 0
    trainer: Executor | None = None  # online decoder fits run here, off the event loop (the worker: a process)
    webhooks: WebhookDelivery | None = None  # operator endpoints; delivery never blocks a batch
    key_file: Path | None = None  # reloaded when it changes, or on SIGHUP
    recipients: dict[str, Any] | None = None  # X25519 public keys: per-subscriber sealing
    _key_mtime: int = 0
    _training: Future | None = None
    _tasks: set = field(default_factory=set)
    _publishing: asyncio.Future | None = None  # the latest batch's sealing-and-sending task

    async def send_records(self, topic: str, records: list[tuple[bytes, bytes]]) -> list[Awaitable[Any]]:
        """Hand ``records`` to the producer in order: as partition batches where the producer
        builds them (``send_many``), else one ``send`` each."""
        if self.send_many is not None:
            return await self.send_many(topic, records)
        return [await self.send(topic, key, value) for key, value in records]

    def seal(self, plain: bytes, topic: str, key: bytes | None) -> bytes:
        """Seal with the active symmetric key, or for each configured subscriber's public key."""
        if self.recipients:
            return seal_for(plain, recipients=self.recipients, topic=topic, key=key)
        return seal(plain, keyring=self.keyring, topic=topic, key=key)

    def reload_keys(self) -> None:
        """Re-read the key file (rotation): later batches seal with its active key."""
        if self.key_file is None:
            return
        try:
            ring = KeyRing.from_file(self.key_file)
        except SecurityError as err:  # keep the old ring: never stop sealing
            log.error("key reload failed, keeping key %r: %s", self.keyring.active, err)
            self.metrics.inc("key_reload_failures_total", help="key file reloads that failed")
            return
        if ring.active != self.keyring.active:
            log.warning("key rotation: sealing with %r (was %r)", ring.active, self.keyring.active)
        self.keyring = ring
        self.metrics.inc("key_reloads_total", help="key file reloads")

    async def handle(self, batch: Batch, owns: Callable[[bytes], bool] = lambda _: True) -> int:
        """Validate, process and publish one micro-batch; returns once every send is acknowledged.

        Node records are applied before edge records. Outputs are published only for keys
        ``owns`` accepts (scale-out); every worker applies every event. Returns events applied.
        """
        return await (await self.start(batch, owns))

    async def start(self, batch: Batch, owns: Callable[[bytes], bool] = lambda _: True) -> Awaitable[int]:
        """:meth:`handle` up to the outputs: returns once the batch is processed. Its outputs are
        sealed and handed to the producer by a task — after the previous batch's, so they keep
        batch order — while the caller processes the next batch; the returned awaitable waits for
        them and their acks, records the batch's metrics and gives the events applied."""
        s = self.settings
        self._maybe_reload()
        await self._swap_model()
        t0 = time.perf_counter()
        now = time.time()
        acks: list[Awaitable[Any]] = []
        nodes = [r for r in batch.records if r.topic == s.topic_nodes]
        edges = [r for r in batch.records if r.topic != s.topic_nodes]
        if nodes:
            acks += self._apply_nodes(nodes, now)
        valid: list[EdgeEvent] = []
        stamps: list[int] = []
        for r in edges:
            try:
                valid.append(parse_edge(r.value, record_ts=r.timestamp))  # type: ignore[arg-type]
                stamps.append(int(r.timestamp * 1000))
            except EventError as err:
                acks.append(self._deadletter(r, err, now))
        t1 = time.perf_counter()
        # scored as of the batch's newest event, not the wall clock: the result is a function of
        # the batch's offsets, so a replay or another worker publishes the same content per id
        at = max((e.ts for e in valid), default=now)
        # in a thread: the event loop keeps heartbeating the group and serving /healthz meanwhile
        result = await asyncio.to_thread(self.processor.process, valid, at, stamps)
        t2 = time.perf_counter()
        self.batches += 1
        version = self.processor.model_version
        previous = self._publishing

        async def publish() -> tuple[list[Awaitable[Any]], int, list[Alert], float, float]:
            if previous is not None:
                await previous  # the batch before is with the producer first (and did not fail)
            t_start = time.perf_counter()
            published = 0
            futs = [_quiet(await dead) for dead in acks]  # dead letters first
            ranges = {k: [batch.start.get(k, 0), e] for k, e in batch.end.items() if e > batch.start.get(k, 0)}
            bid = batch.id
            records = []
            for pred in result.predictions:
                key = pred.node.encode()
                if not owns(key):
                    continue
                plain = prediction_record(pred, pid=prediction_id(bid, pred.node), model_version=version,
                                          batch=bid, offsets=ranges, now=time.time())
                records.append((key, self.seal(plain, s.topic_predictions, key)))
            futs += [_quiet(f) for f in await self.send_records(s.topic_predictions, records)]
            published = len(records)
            alerts = [a for a in result.alerts if owns(edge_key(a.src, a.dst) if a.node is None else a.node.encode())]
            for alert in alerts:
                key = alert.id.encode()
                plain = alert_record(alert)
                value = self.seal(plain, s.topic_alerts, key) if s.encrypt_alerts else plain
                futs.append(_quiet(await self.send(s.topic_alerts, key, value)))
            if self.webhooks is not None and alerts:
                self._queue_webhooks([a.to_dict() for a in alerts])
            t_end = time.perf_counter()
            return futs, published, alerts, t_end - t_start, t_end

        publishing = self._publishing = _quiet(publish())

        async def acknowledged() -> int:  # the rest of the batch, once every output is acknowledged
            futs, published, alerts, seal_secs, t3 = await publishing
            await asyncio.gather(*futs)
            done = time.time()
            m = self.metrics
            m.inc("events_total", result.applied, help="input events by outcome", outcome="applied")
            m.inc("events_total", result.duplicates, outcome="duplicate")
            m.inc("events_total", len(edges) - len(valid), outcome="deadlettered")
            m.inc("removes_missing_total", result.missing_removes, help="removes of edges that did not exist")
            m.inc("batches_total", help="micro-batches processed")
            m.inc("predictions_total", published, help="prediction messages published")
            m.set("predictions_waiting", self.processor.waiting, help="touched nodes whose top-k the budget deferred")
            m.inc("alerts_total", len(alerts), help="alert messages published")
            m.inc("rows_reembedded_total", result.update.rows_recomputed, help="embedding rows recomputed")
            m.set("graph_nodes", self.processor.graph.num_nodes, help="nodes in the live graph")
            m.set("graph_edges", self.processor.graph.num_edges, help="edges in the live graph")
            graph = self.processor.graph
            m.set("graph_delta_arcs", graph.delta_arcs, help="arcs added since the graph's last compaction")
            m.inc("graph_compactions_total", graph.compactions - m.counter("graph_compactions_total"),
                  help="times the graph folded its delta into its base (a stall that grows with the graph)")
            m.set("batch_size", len(batch.records), help="size of the last micro-batch")
            m.observe("batch_records", len(batch.records), help="records per micro-batch", buckets=SIZE_BUCKETS)
            m.set("model_info", 1, help="model version in use", version=version)
            m.observe("batch_latency_seconds", done - now, help="batch received -> outputs acknowledged")
            if edges:
                m.observe("receive_delay_seconds", now - edges[-1].timestamp,
                          help="newest record of a batch: produced -> received by the worker")
            latencies = done - np.asarray(stamps, np.float64) / 1000.0
            m.observe_many("event_latency_seconds", latencies, help="event produced -> outputs acknowledged")
            self.live.batch(len(batch.records), latencies, done)
            self.live.alerts.extend({k: a.to_dict()[k] for k in ("id", "kind", "severity", "score", "src", "dst", "ts")}
                                    for a in alerts)
            for pred in result.predictions[:3]:
                if owns(pred.node.encode()):
                    self.live.predictions.append({"id": prediction_id(batch.id, pred.node), "batch": batch.id,
                                                  "model_version": version, "partners": len(pred.partners),
                                                  "node": pred.node, "top": pred.partners[:3]})
            stages = {"decode": t1 - t0, "process": t2 - t1, "seal": seal_secs, "produce": time.perf_counter() - t3}
            for stage, secs in stages.items():  # seal and produce overlap the next batch's processing
                m.inc("stage_seconds_total", secs, help="time spent per pipeline stage", stage=stage)
            for stage, secs in result.timings.items():
                m.inc("stage_seconds_total", secs, stage=stage)
            return result.applied

        return acknowledged()

    async def webhook_dead(self, alert: dict, endpoint: str, reason: str) -> None:
        """An alert a webhook could not take: to the dead-letter topic (it also stays spooled)."""
        value = deadletter_record(reason="webhook_failed", detail=f"{endpoint}: {reason}", topic=f"webhook:{endpoint}",
                                  partition=-1, offset=-1, original=json.dumps(alert).encode(), now=time.time())
        await (await self.send(self.settings.topic_deadletter, str(alert.get("id", "")).encode(), value))

    def webhook_metrics(self) -> None:
        if self.webhooks is not None:
            for k, v in self.webhooks.stats.items():
                self.metrics.set("webhook_deliveries", v, help="webhook deliveries by outcome", outcome=k)

    async def _notify(self, alerts: list[dict]) -> None:
        hooks = self.webhooks
        for alert in alerts if hooks is not None else []:
            await hooks.deliver(alert)

    def _queue_webhooks(self, alerts: list[dict]) -> None:
        """Deliver in the background; beyond ``webhook_inflight`` tasks, spool instead (bounded memory)."""
        if len(self._tasks) < self.settings.webhook_inflight:
            self._background(self._notify(alerts))
        else:
            self.metrics.inc("webhook_deferred_total", len(alerts), help="alerts spooled because delivery was saturated")
            self._background(self._defer(alerts))

    async def _defer(self, alerts: list[dict]) -> None:
        for alert in alerts:
            await self.webhooks.defer(alert, "delivery saturated")  # type: ignore[union-attr]

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def install_pending(self) -> None:
        """Wait for the background fit in flight, if any, and stage it in the processor.

        A fit handed out before batch N is installed before the first batch at which the
        processor says so (:meth:`Processor.install_due`: when the next fit is due), waiting for
        it only if it is slower than that: which batch first uses a new decoder is a function of
        the offsets, like everything else a batch publishes. A snapshot calls this first, so no
        fit is lost in flight, and the staged fit is in the snapshot: a replay from it, and every
        scaled-out worker, installs it at the same batch."""
        fut, self._training = self._training, None
        if fut is None:
            return
        try:
            self.processor.stage(fut.result())
        except Exception as err:  # noqa: BLE001 - a failed fit keeps the current model
            log.error("online training failed, keeping %s: %s", self.processor.model_version, err)
            self.metrics.inc("training_failures_total", help="online fits that failed")

    async def _swap_model(self) -> None:
        """Install the fit handed out earlier once the processor says it is due, then hand out
        the next. Waiting for each fit before the very next batch held that batch up to a fit's
        length (~90 ms on 100k samples) once per refit period (DARPA, 500-event batches in
        process: batch p99 155 vs 103 ms)."""
        if (self._training is not None or self.processor.staged) and not self.processor.install_due():
            return
        if self._training is not None:
            try:
                await asyncio.wrap_future(self._training)  # the loop keeps serving meanwhile
            except Exception:  # noqa: BLE001 - install_pending reports it
                pass
            self.install_pending()
        version = self.processor.install_staged()
        if version is not None:
            self.metrics.inc("model_swaps_total", help="decoder hot swaps")
            log.info("model swapped: %s", version)
        if self.trainer is not None:
            job = self.processor.training_job()
            if job is not None:
                try:
                    self._training = self.trainer.submit(job)
                except BrokenExecutor as err:  # the fit process died (killed, out of memory): start another
                    log.error("online training process lost (%s): starting a new one", err)
                    self.metrics.inc("training_failures_total", help="online fits that failed")
                    self.trainer.shutdown(wait=False)
                    self.trainer = fit_pool()
                    self._training = self.trainer.submit(job)

    def _maybe_reload(self) -> None:
        if self.key_file is None:
            return
        try:
            mtime = self.key_file.stat().st_mtime_ns
        except OSError:
            return
        if self._key_mtime and mtime != self._key_mtime:
            self.reload_keys()
        self._key_mtime = mtime

    def _apply_nodes(self, records: list[Record], now: float) -> list[Awaitable[Any]]:
        """Apply ``lepton.nodes`` feature updates; malformed ones go to the dead-letter topic."""
        events, acks = [], []
        for r in records:
            try:
                events.append(parse_node(r.value, dim=self.settings.feature_dim, record_ts=r.timestamp))  # type: ignore[arg-type]
            except EventError as err:
                acks.append(self._deadletter(r, err, now))
        self.processor.set_node_features(events)
        self.metrics.inc("node_events_total", len(events), help="node feature events applied")
        self.metrics.inc("events_total", len(acks), outcome="deadlettered")
        return acks

    def _deadletter(self, r: Record, err: EventError, now: float) -> Awaitable[Any]:
        log.info("dead-letter %s[%d]@%d: %s", r.topic, r.partition, r.offset, err)
        value = deadletter_record(reason=err.reason, detail=err.detail, topic=r.topic, partition=r.partition,
                                  offset=r.offset, original=r.value, now=now)
        return self.send(self.settings.topic_deadletter, r.key, value)


def load_keyring(settings: Settings) -> tuple[KeyRing, Path | None, str]:
    """Keys from ``LEPTON_KEYS``, else the key file (created, mode 600, when missing).

    Returns the ring, the file to watch for rotation (None for ``LEPTON_KEYS``) and a
    description of the source for the start-up message.
    """
    if settings.keys is not None:
        return KeyRing.parse(settings.keys.get_secret_value()), None, "LEPTON_KEYS"
    path = Path(settings.key_file or settings.state_dir / "keys")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        KeyRing.generate().write(path)
        return KeyRing.from_file(path), path, f"{path} (new key generated)"
    return KeyRing.from_file(path), path, str(path)


@dataclass
class Worker:
    """The service loop around :class:`Pipeline`: recovery, batching, commits, snapshots, shutdown."""

    settings: Settings
    bootstrap: str
    pipeline: Pipeline
    source: Source | None = None
    ownership: Ownership | None = None
    journal: Journal | None = None
    ready: bool = False
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    totals: dict[str, int] = field(default_factory=lambda: {"applied": 0, "batches": 0, "records": 0})
    snapshot_info: dict[str, Any] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)  # per input partition, refreshed each loop
    controller: BatchController = field(default_factory=BatchController)
    _arrivals: tuple[float, int] | None = None  # (time, sum of log end offsets) at the last refresh
    _chosen: tuple[int, float] = (0, 0.0)  # the adaptive controller's last (size, window)
    _since_snapshot: int = 0
    _snapshot_at: float = field(default_factory=time.monotonic)
    _child: tuple[int, float, dict[str, int]] | None = None  # background snapshot: pid, start, offsets
    _producer: Any = None
    gc_pauses: GcPauses = field(default_factory=GcPauses)  # observed while run() runs

    @property
    def snapshots(self) -> Path:
        return self.settings.state_dir / "snapshots"

    async def run(self) -> None:
        """Recover, then process batches until :attr:`stopping` is set; then drain and snapshot."""
        s = self.settings
        offsets = self._recover()
        await self._start_producer()
        self.source = Source(s, self.bootstrap, [s.topic_edges, s.topic_nodes])
        await self.source.start(offsets)
        self.ownership = Ownership(s, self.bootstrap, s.topic_edges, s.edges_partitions,
                                   memory=s.state_dir / "ownership.json")
        await self.ownership.start(timeout=max(30.0, 5 * s.rebalance_timeout))
        self.journal = Journal(s.state_dir / "journal.jsonl")
        inflight: asyncio.Task | None = None  # the previous batch, awaiting its acks and commit
        clean = False  # after a failure no shutdown snapshot: restart replays from the last good one
        self.gc_pauses.install()  # removed by _shutdown
        try:
            replayed = 0
            for end in self.journal.pending(offsets):  # batches cut before the crash, re-cut identically
                await self._process(await self.source.take_until(end), journal=False)
                replayed += 1
            if replayed:
                log.warning("replayed %d journaled batches after the snapshot", replayed)
            if s.gc_freeze:  # startup's objects (model, graph, libraries) leave the collector's walks
                self.gc_pauses.freeze()
            await self._gauges()  # lag and ownership are on /metrics before /readyz says ready
            self.ready = True
            self.controller = BatchController(target=s.latency_target, max_batch=s.batch_limit)
            while not self.stopping.is_set():
                size, window = self._batching()
                batch = await self.source.batch(size, window)
                if inflight is not None and inflight.done():
                    inflight = await self._settle(inflight)  # a failed send or commit stops the loop here
                if batch is not None and batch.records:
                    t0 = time.perf_counter()
                    inflight = await self._begin(batch, after=inflight)  # its acks overlap the next batch
                    self.controller.observe(len(batch.records), time.perf_counter() - t0)
                if self._snapshot_due():  # a snapshot never runs ahead of acknowledged outputs
                    inflight = await self._settle(inflight)
                    self._snapshot()
                await self._gauges()
            inflight = await self._settle(inflight)
            clean = True
        finally:
            self.ready = False
            if inflight is not None and not inflight.done():
                inflight.cancel()
            await self._shutdown(snapshot=clean)

    def status(self, plaintext: bool = False) -> dict[str, Any]:
        """What ``/api/status`` and the dashboard show; prediction partners only with ``plaintext``."""
        p, s = self.pipeline, self.settings
        preds = [{k: v for k, v in x.items() if plaintext or k not in ("node", "top")} for x in p.live.predictions]
        edges_lag = {k: v for k, v in self.lag.items() if k.startswith(s.topic_edges + ":")}
        return {"app_id": s.app_id, "ready": self.ready, "model_version": p.processor.model_version,
                "graph": {"nodes": p.processor.graph.num_nodes, "edges": p.processor.graph.num_edges},
                "lag": {"total": sum(self.lag.values()), "edges_partitions": edges_lag},
                "owned_partitions": sorted(self.ownership.owned) if self.ownership else [],
                "live": p.live.snapshot(), "totals": dict(self.totals),
                "batching": self._batching_status(),
                "deadlettered": int(p.metrics.counter("events_total", outcome="deadlettered")),
                "webhooks": dict(p.webhooks.stats) if p.webhooks else None,
                "snapshot": self.snapshot_info, "alerts": list(p.live.alerts)[::-1], "predictions": preds[::-1],
                "plaintext": plaintext}

    def _batching_status(self) -> dict[str, Any]:
        s, c = self.settings, self.controller
        if s.batch_mode == "fixed":
            return {"mode": "fixed", "max_batch": s.max_batch, "window_s": s.batch_window}
        size, window = self._chosen  # what the loop chose; asking the controller again would advance its dither
        return {"mode": "adaptive", "max_batch": size, "window_s": round(window, 4), "arrival_rate": round(c.rate, 1),
                "per_batch_ms": round(c.a * 1000, 2), "per_record_us": round(c.b * 1e6, 1),
                "expected_latency_ms": round(c.expected_latency(size) * 1000, 1)}

    def stop(self) -> None:
        """Graceful stop (SIGTERM / SIGINT): finish the batch in hand, publish, snapshot, commit."""
        log.warning("stopping: finishing the current batch")
        self.stopping.set()

    def snapshot(self) -> Path:
        """Write a snapshot of the state at the current input positions, here and now (shutdown,
        or where a background one cannot run); empties the journal."""
        assert self.source is not None
        self._reap_snapshot(wait=True)  # one writer at a time
        self.pipeline.install_pending()  # no fit is lost in flight
        t0 = time.perf_counter()
        path = save_snapshot(self.pipeline.processor, self.snapshots,
                             meta={"offsets": self.source.positions, "totals": dict(self.totals)},
                             keep=self.settings.snapshot_keep)
        if self.journal is not None:
            self.journal.reset()
        self._snapshot_done(path, time.perf_counter() - t0, background=False)
        self._since_snapshot, self._snapshot_at = 0, time.monotonic()
        return path

    def snapshot_in_background(self) -> bool:
        """Fork a child that writes the snapshot from its copy-on-write image of the state while
        this process keeps streaming; False where that cannot run (no fork, state on a GPU,
        one already running). The journal is trimmed once the child has succeeded."""
        assert self.source is not None
        if self._child is not None or not hasattr(os, "fork") or self.pipeline.processor.engine.device.type != "cpu":
            return False
        self.pipeline.install_pending()  # no fit is lost in flight
        offsets, meta = dict(self.source.positions), {"totals": dict(self.totals)}
        t0, parent = time.perf_counter(), os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: write and leave at once (no finalizers, no logging, no sockets)
            code = 1
            try:
                background_child(parent)  # dies with the worker, 10 nice levels below it
                save_snapshot(self.pipeline.processor, self.snapshots, meta={"offsets": offsets, **meta},
                              keep=self.settings.snapshot_keep)
                code = 0
            except BaseException as err:  # noqa: BLE001 - reported raw: other threads' locks are not ours
                os.write(2, f"background snapshot failed: {err!r}\n".encode())
            finally:
                os._exit(code)
        self._child = (pid, t0, offsets)
        self._since_snapshot, self._snapshot_at = 0, time.monotonic()
        self.pipeline.metrics.set("snapshot_fork_seconds", time.perf_counter() - t0,
                                  help="time the loop paused to fork the last background snapshot")
        return True

    def _reap_snapshot(self, wait: bool = False) -> None:
        """Collect a finished background snapshot: trim the journal, or count the failure."""
        if self._child is None:
            return
        pid, t0, offsets = self._child
        done, status = os.waitpid(pid, 0 if wait else os.WNOHANG)
        if done == 0:
            return
        self._child = None
        if os.waitstatus_to_exitcode(status) != 0:
            log.error("background snapshot (pid %d) failed with %s; the journal is kept", pid, status)
            self.pipeline.metrics.inc("snapshot_failures_total", help="background snapshots that failed")
            return
        if self.journal is not None:
            self.journal.trim(offsets)
        latest = latest_snapshot(self.snapshots)
        if latest is not None:
            self._snapshot_done(latest, time.perf_counter() - t0, background=True)

    def _snapshot_done(self, path: Path, secs: float, *, background: bool) -> None:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        self.snapshot_info = {"path": str(path), "seconds": round(secs, 3), "bytes": size, "background": background}
        m = self.pipeline.metrics
        m.inc("snapshots_total", help="state snapshots written")
        m.set("snapshot_seconds", secs, help="duration of the last snapshot")
        m.set("snapshot_bytes", size, help="size of the last snapshot")

    # ---- helpers ------------------------------------------------------------------------------
    def _recover(self) -> dict[str, int]:
        """Load the newest snapshot into the pipeline; returns its input offsets ({} = from the start)."""
        for stale in self.snapshots.glob(".tmp-*"):  # a background writer killed mid-way
            shutil.rmtree(stale, ignore_errors=True)
        latest = latest_snapshot(self.snapshots)
        if latest is None:
            return {}
        t0 = time.perf_counter()
        processor, meta = load_snapshot(latest, device=self.settings.resolved_device())
        changed, kept = processor.reconfigure(self.settings.processor_config())
        for name, (was, now) in changed.items():
            print(f"setting {name}: {now!r} (the snapshot had {was!r})", flush=True)
        for name, (was, now) in kept.items():
            log.warning("setting %s=%r ignored: the snapshot's model and state were built with %r", name, now, was)
        self.pipeline.processor = processor
        self.totals.update(meta.get("totals", {}))
        log.warning("restored %s in %.2fs: %s", latest, time.perf_counter() - t0, meta["summary"])
        print(f"restored snapshot {latest.name}: {meta['summary']['nodes']} nodes, {meta['summary']['edges']} edges",
              flush=True)
        return {k: int(v) for k, v in meta.get("offsets", {}).items()}

    async def _process(self, batch: Batch, journal: bool = True) -> None:
        """One batch from journal to commit (recovery replays them one at a time)."""
        await (await self._begin(batch, journal=journal))

    async def _begin(self, batch: Batch, journal: bool = True, after: asyncio.Task | None = None) -> asyncio.Task:
        """Journal, process and queue the outputs of ``batch``; returns the task that waits for
        its acks and commits its offsets — after ``after`` has, so commits stay in batch order."""
        assert self.ownership is not None and self.journal is not None
        if journal:
            self.journal.append(batch)
        acknowledged = await self.pipeline.start(batch, owns=self.ownership.owns)
        self._since_snapshot += len(batch.records)
        return asyncio.ensure_future(self._commit(batch, acknowledged, after))

    async def _commit(self, batch: Batch, acknowledged: Any, after: asyncio.Task | None) -> None:
        if after is not None:
            try:
                await after
            except BaseException:
                acknowledged.close()  # the coroutine is never awaited: this batch fails with the one before
                raise
        applied = await acknowledged
        await self.ownership.commit(batch.end)  # type: ignore[union-attr]  # outputs acknowledged: done
        self.totals["applied"] += applied
        self.totals["batches"] += 1
        self.totals["records"] += len(batch.records)

    @staticmethod
    async def _settle(inflight: asyncio.Task | None) -> None:
        """Wait for the batch in flight (its errors surface here)."""
        if inflight is not None:
            await inflight

    def _snapshot_due(self) -> bool:
        s = self.settings
        self._reap_snapshot()
        due = self._since_snapshot >= s.snapshot_events or time.monotonic() - self._snapshot_at >= s.snapshot_seconds
        return self._child is None and bool(self._since_snapshot) and due

    def _snapshot(self) -> None:
        if not (self.settings.snapshot_background and self.snapshot_in_background()):
            self.snapshot()

    def _batching(self) -> tuple[int, float]:
        s = self.settings
        if s.batch_mode == "fixed":
            return s.max_batch, s.batch_window
        size, window = self._chosen = self.controller.next(backlog=sum(self.lag.values()))
        m = self.pipeline.metrics
        m.set("batch_target_records", size, help="batch size the adaptive controller chose")
        m.set("batch_target_window_seconds", window, help="fill window the adaptive controller chose")
        return size, window

    async def _gauges(self) -> None:
        assert self.source is not None and self.ownership is not None
        m = self.pipeline.metrics
        self.lag = await self.source.lag()
        at, produced = self.source.produced
        if self._arrivals is not None and at > self._arrivals[0]:  # arrivals: growth of the log end offsets
            self.controller.arrivals((produced - self._arrivals[1]) / (at - self._arrivals[0]))
            m.set("arrival_rate", self.controller.rate, help="input records per second (EWMA)")
        if self._arrivals is None or at > self._arrivals[0]:
            self._arrivals = (at, produced)
        for key, lag in self.lag.items():
            topic, _, part = key.rpartition(":")
            m.set("consumer_lag", lag, help="records not yet processed, per input partition", topic=topic,
                  partition=part)
        m.set("owned_partitions", len(self.ownership.owned), help="edge partitions this worker publishes for")
        gcp = self.gc_pauses
        for gen, label in enumerate("012"):  # counters: advanced to the hook's running totals
            m.inc("gc_collections_total", gcp.count[gen] - m.counter("gc_collections_total", generation=label),
                  help="garbage collections by generation", generation=label)
            m.inc("gc_pause_seconds_total", gcp.seconds[gen] - m.counter("gc_pause_seconds_total", generation=label),
                  help="time spent in garbage collections", generation=label)
            m.set("gc_pause_max_seconds", gcp.longest[gen], help="longest garbage collection since start", generation=label)
        m.set("gc_frozen_objects", gcp.frozen, help="objects frozen out of garbage collection at start (LEPTON_GC_FREEZE)")
        self.pipeline.webhook_metrics()

    async def _start_producer(self) -> None:
        from aiokafka import AIOKafkaProducer  # noqa: PLC0415

        from stream.kafka import aiokafka_config  # noqa: PLC0415

        s = self.settings
        self._producer = AIOKafkaProducer(**aiokafka_config(s, self.bootstrap), acks="all", linger_ms=s.linger_ms,
                                          max_batch_size=s.producer_batch_bytes,
                                          client_id=f"{s.app_id}-producer")
        await self._producer.start()

        async def send(topic: str, key: bytes | None, value: bytes) -> Any:
            return await self._producer.send(topic, value=value, key=key)  # queued; gives the ack future

        async def send_many(topic: str, records: list[tuple[bytes, bytes]]) -> list[Any]:
            """Records grouped into one batch per partition (full ones sent as they fill), in order
            within each partition; the partition is the one ``send`` picks (murmur2 of the key).
            A future per batch instead of per record: at ~7,000 predictions/s the per-record
            futures and ``send`` calls were ~15 % of the event loop's time (py-spy)."""
            producer = self._producer
            parts = sorted(await producer.partitions_for(topic))
            open_: dict[int, Any] = {}
            acks = []
            for key, value in records:
                q = parts[partition_for(key, len(parts))]
                b = open_.get(q)
                if b is None:
                    b = open_[q] = producer.create_batch()
                if b.append(key=key, value=value, timestamp=None) is None:  # full (it closed itself): send it
                    acks.append(await producer.send_batch(b, topic, partition=q))
                    b = open_[q] = producer.create_batch()
                    b.append(key=key, value=value, timestamp=None)  # an empty batch takes any first record
            for q, b in open_.items():
                b.close()  # closed: no record from ``send`` can join it after this batch's
                acks.append(await producer.send_batch(b, topic, partition=q))
            return acks

        self.pipeline.send = send
        self.pipeline.send_many = send_many

    async def _shutdown(self, snapshot: bool = True) -> None:
        """Publish what is in flight, snapshot (unless the loop failed), close the clients."""
        p = self.pipeline
        if p._tasks:
            await asyncio.wait(list(p._tasks), timeout=3.0)
        if snapshot and self.source is not None and self._since_snapshot:
            self.snapshot()
        for closer in (self.ownership, self.source):
            if closer is not None:
                await closer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if p.webhooks is not None:
            await p.webhooks.close()
        if self.journal is not None:
            self.journal.close()
        self.gc_pauses.uninstall()  # and unfreeze


def fit_pool() -> ProcessPoolExecutor:
    """The online decoder fits' executor: one child process (spawned: no copy of the stream's
    threads) that dies with the worker, 10 nice levels lower, one BLAS thread, started now so
    the first fit does not wait for it. In a thread of the worker a fit held a quarter of the
    GIL at 20,000 events/s."""
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=fit_child_init,
                               initargs=(os.getpid(),))
    pool.submit(int).result()
    return pool


def _quiet(aw: Awaitable[Any]) -> asyncio.Future:
    """``aw`` as a future whose error counts as seen once it is done. A failed batch stops the
    worker with its first error (through the chain of commits); without this every later ack
    and batch would also log "exception was never retrieved" — hundreds of lines per outage."""
    fut = asyncio.ensure_future(aw)
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    return fut


def prediction_id(batch_id: str, node: str) -> str:
    """Deterministic id of a prediction: the batch's offsets and the node (replays repeat it)."""
    return hashlib.sha256(f"{batch_id}|{node}".encode()).hexdigest()[:24]


def run_worker(settings: Settings) -> None:
    """``lepton run``: start the embedded broker if none is configured, create topics, run the loop."""
    from stream.broker import EmbeddedBroker  # noqa: PLC0415
    from stream.kafka import ensure_topics  # noqa: PLC0415

    s = settings
    s.state_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=s.log_level.upper().replace("WARN", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    broker = None
    bootstrap = s.bootstrap
    if bootstrap is None:
        broker = EmbeddedBroker(log_dir=s.state_dir / "logs").start()
        bootstrap = broker.bootstrap
        print(f"no LEPTON_BOOTSTRAP set: started the embedded Tansu broker at {bootstrap}", flush=True)
    try:
        ensure_topics(s, bootstrap)
        keyring, key_file, source = load_keyring(s)
        recipients = load_recipients(s.recipients) if s.recipients else None
        if recipients:
            print(f"sealing for {len(recipients)} subscriber public keys: {sorted(recipients)}", flush=True)
        else:
            print(f"keys: {len(keyring.ids)} loaded from {source}; sealing with key id {keyring.active!r}"
                  + ("; reloaded when the file changes or on SIGHUP" if key_file else ""), flush=True)

        async def _unbound(topic: str, key: bytes | None, value: bytes) -> Any:  # replaced when the producer starts
            raise RuntimeError("pipeline used before the producer started")

        threads = set_threads(s.resolved_threads())
        print(f"kernel threads: {threads} (LEPTON_THREADS; the event loop keeps a core); serving loops split over "
              f"{set_split_threads(s.split_threads)} (LEPTON_SPLIT_THREADS)", flush=True)
        pipeline = Pipeline(settings=s, processor=Processor(s.processor_config()), keyring=keyring, send=_unbound,
                            key_file=key_file, recipients=recipients,
                            trainer=fit_pool())
        if s.webhooks is not None:
            endpoints = parse_endpoints(s.webhooks.get_secret_value())
            pipeline.webhooks = WebhookDelivery(endpoints, spool_dir=s.state_dir / "webhook-spool",
                                                on_dead=pipeline.webhook_dead)
            print(f"webhooks: {[e.name for e in endpoints]} (spool: {s.state_dir / 'webhook-spool'})", flush=True)
        print(f"worker {s.app_id}: consuming {s.topic_edges} on {bootstrap}; web on http://{s.web_host}:{s.web_port}",
              flush=True)
        asyncio.run(_serve(Worker(settings=s, bootstrap=bootstrap, pipeline=pipeline)))
    finally:
        if broker is not None:
            broker.stop()


async def _serve(worker: Worker) -> None:
    """Run the worker with its web server, signal handlers and timers until it stops."""
    from stream.web import start_web  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    loop.add_signal_handler(signal.SIGHUP, worker.pipeline.reload_keys)
    runner = await start_web(worker)
    spool = asyncio.ensure_future(_flush_spool(worker.pipeline)) if worker.pipeline.webhooks else None
    try:
        await worker.run()
    finally:
        if spool is not None:
            spool.cancel()
        await runner.cleanup()
        if worker.pipeline.trainer is not None:
            worker.pipeline.trainer.shutdown(wait=False, cancel_futures=True)
    print("worker stopped cleanly", flush=True)


async def _flush_spool(pipeline: Pipeline) -> None:
    while True:
        await asyncio.sleep(5.0)
        await pipeline.webhooks.flush_spool()  # type: ignore[union-attr]
