"""The Faust worker: consume ``lepton.edges`` in micro-batches, call the core, publish outputs.

The agent body stays short — decode → process → seal → send → (offsets acked by Faust).
:class:`Pipeline` holds the byte-level work so it is testable without Faust.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from gnn.errors import EventError
from gnn.events import EdgeEvent, parse_edge, parse_node
from gnn.processor import Processor
from security.envelope import seal
from security.errors import SecurityError
from security.keys import KeyRing
from security.recipients import load_recipients, seal_for
from stream.metrics import Metrics
from stream.outputs import alert_record, deadletter_record, prediction_record
from stream.settings import Settings
from stream.webhooks import WebhookDelivery, parse_endpoints

__all__ = ["Pipeline", "Record", "build_app", "load_keyring", "run_worker"]

log = logging.getLogger("lepton.worker")

Send = Callable[[str, bytes | None, bytes], Awaitable[Any]]  # (topic, key, value) -> awaitable ack


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, reduced to what the pipeline needs."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # seconds (record CreateTime)
    key: bytes | None
    value: bytes | None


@dataclass
class Pipeline:
    """Byte-level batch handling around :class:`Processor`; ``send`` returns an awaitable ack."""

    settings: Settings
    processor: Processor
    keyring: KeyRing
    send: Send
    metrics: Metrics = field(default_factory=Metrics)
    batches: int = 0
    trainer: ThreadPoolExecutor | None = None  # online decoder fits run here, off the event loop
    webhooks: WebhookDelivery | None = None  # operator endpoints; delivery never blocks a batch
    key_file: Path | None = None  # reloaded when it changes, or on SIGHUP
    recipients: dict[str, Any] | None = None  # X25519 public keys: per-subscriber sealing
    _key_mtime: int = 0
    _training: Future | None = None
    _tasks: set = field(default_factory=set)

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

    async def handle_edges(self, records: list[Record]) -> None:
        """Validate, process and publish one micro-batch; returns once every send is acknowledged."""
        s = self.settings
        self._maybe_reload()
        self._swap_model()
        t0 = time.perf_counter()
        now = time.time()
        valid: list[EdgeEvent] = []
        stamps: list[int] = []
        acks: list[Awaitable[Any]] = []
        for r in records:
            try:
                valid.append(parse_edge(r.value, record_ts=r.timestamp))  # type: ignore[arg-type]
                stamps.append(int(r.timestamp * 1000))
            except EventError as err:
                acks.append(self._deadletter(r, err, now))
        t1 = time.perf_counter()
        result = self.processor.process(valid, now=now, produced_ms=stamps)
        t2 = time.perf_counter()
        self.batches += 1
        version = self.processor.model_version
        for pred in result.predictions:
            key = pred.node.encode()
            plain = prediction_record(pred, model_version=version, batch=self.batches, now=time.time())
            acks.append(self.send(s.topic_predictions, key, self.seal(plain, s.topic_predictions, key)))
        for alert in result.alerts:
            key = alert.id.encode()
            plain = alert_record(alert)
            value = self.seal(plain, s.topic_alerts, key) if s.encrypt_alerts else plain
            acks.append(self.send(s.topic_alerts, key, value))
        t3 = time.perf_counter()
        if self.webhooks is not None and result.alerts:
            self._background(self._notify([a.to_dict() for a in result.alerts]))
        await asyncio.gather(*acks)
        done = time.time()
        m = self.metrics
        m.inc("events_total", result.applied, help="input events by outcome", outcome="applied")
        m.inc("events_total", result.duplicates, outcome="duplicate")
        m.inc("events_total", len(records) - len(valid), outcome="deadlettered")
        m.inc("removes_missing_total", result.missing_removes, help="removes of edges that did not exist")
        m.inc("batches_total", help="micro-batches processed")
        m.inc("predictions_total", len(result.predictions), help="prediction messages published")
        m.inc("alerts_total", len(result.alerts), help="alert messages published")
        m.inc("rows_reembedded_total", result.update.rows_recomputed, help="embedding rows recomputed")
        m.set("graph_nodes", self.processor.graph.num_nodes, help="nodes in the live graph")
        m.set("graph_edges", self.processor.graph.num_edges, help="edges in the live graph")
        m.set("batch_size", len(records), help="size of the last micro-batch")
        m.set("model_info", 1, help="model version in use", version=version)
        m.observe("batch_latency_seconds", done - now, help="batch received -> outputs acknowledged")
        if records:
            m.observe("receive_delay_seconds", now - records[-1].timestamp,
                      help="newest record of a batch: produced -> received by the worker")
        for ts_ms in stamps:
            m.observe("event_latency_seconds", done - ts_ms / 1000.0, help="event produced -> outputs acknowledged")
        for stage, secs in {"decode": t1 - t0, "process": t2 - t1, "seal": t3 - t2, "produce": done - now - (t3 - t0)}.items():
            m.inc("stage_seconds_total", secs, help="time spent per pipeline stage", stage=stage)
        for stage, secs in result.timings.items():
            m.inc("stage_seconds_total", secs, stage=stage)

    async def webhook_dead(self, alert: dict, endpoint: str, reason: str) -> None:
        """An alert a webhook could not take: to the dead-letter topic (it also stays spooled)."""
        value = deadletter_record(reason="webhook_failed", detail=f"{endpoint}: {reason}", topic=f"webhook:{endpoint}",
                                  partition=-1, offset=-1, original=json.dumps(alert).encode(), now=time.time())
        await self.send(self.settings.topic_deadletter, str(alert.get("id", "")).encode(), value)

    def webhook_metrics(self) -> None:
        if self.webhooks is not None:
            for k, v in self.webhooks.stats.items():
                self.metrics.set("webhook_deliveries", v, help="webhook deliveries by outcome", outcome=k)

    async def handle_nodes(self, records: list[Record]) -> None:
        """Apply ``lepton.nodes`` feature updates; malformed ones go to the dead-letter topic."""
        events, acks = [], []
        now = time.time()
        for r in records:
            try:
                events.append(parse_node(r.value, dim=self.settings.feature_dim, record_ts=r.timestamp))  # type: ignore[arg-type]
            except EventError as err:
                acks.append(self._deadletter(r, err, now))
        self.processor.set_node_features(events)
        await asyncio.gather(*acks)
        self.metrics.inc("node_events_total", len(events), help="node feature events applied")
        self.metrics.inc("events_total", len(acks), outcome="deadlettered")

    async def _notify(self, alerts: list[dict]) -> None:
        hooks = self.webhooks
        for alert in alerts if hooks is not None else []:
            await hooks.deliver(alert)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _swap_model(self) -> None:
        """Install a finished background fit (between batches) and start the next one if due."""
        fut = self._training
        if fut is not None and fut.done():
            self._training = None
            try:
                version = self.processor.install(fut.result())
                self.metrics.inc("model_swaps_total", help="decoder hot swaps")
                log.info("model swapped: %s", version)
            except Exception as err:  # noqa: BLE001 - a failed fit keeps the current model
                log.error("online training failed, keeping %s: %s", self.processor.model_version, err)
                self.metrics.inc("training_failures_total", help="online fits that failed")
        if self._training is None and self.trainer is not None:
            job = self.processor.training_job()
            if job is not None:
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


def build_app(settings: Settings, bootstrap: str, pipeline: Pipeline) -> Any:
    """The Faust application: two agents, the web pages, tuned consumer-group timing."""
    import faust  # noqa: PLC0415 - keep faust out of the core's import graph

    from stream.kafka import faust_credentials  # noqa: PLC0415
    from stream.transport import SCHEME, set_fetch_max_wait_ms  # noqa: PLC0415

    s = settings
    set_fetch_max_wait_ms(s.fetch_max_wait_ms)
    app = faust.App(
        s.app_id, broker=f"{SCHEME}://{bootstrap}", store="memory://", datadir=str(s.state_dir / "faust"),
        web_enabled=True, web_bind=s.web_host, web_port=s.web_port, web_host=s.web_host,
        topic_replication_factor=s.replication, topic_partitions=s.edges_partitions, topic_disable_leader=True,
        topic_allow_declare=False, consumer_auto_offset_reset="earliest", broker_credentials=faust_credentials(s),
        broker_session_timeout=s.session_timeout, broker_heartbeat_interval=s.heartbeat_interval,
        broker_rebalance_timeout=s.rebalance_timeout, producer_acks=-1, stream_wait_empty=False,
    )
    state = {"ready": False}
    out_topics = {name: app.topic(name, key_serializer="raw", value_serializer="raw")
                  for name in (s.topic_predictions, s.topic_alerts, s.topic_deadletter)}

    async def send(topic: str, key: bytes | None, value: bytes) -> Any:
        fut = await out_topics[topic].send(key=key, value=value)
        return await fut

    pipeline.send = send
    edges = app.topic(s.topic_edges, key_serializer="raw", value_serializer="raw")
    nodes = app.topic(s.topic_nodes, key_serializer="raw", value_serializer="raw")

    @app.agent(edges)
    async def edge_agent(stream: Any) -> None:
        async for events in stream.take_events(s.max_batch, within=s.batch_window):
            await pipeline.handle_edges([_record(e) for e in events])

    @app.agent(nodes)
    async def node_agent(stream: Any) -> None:
        async for events in stream.take_events(s.max_batch, within=s.batch_window):
            await pipeline.handle_nodes([_record(e) for e in events])

    @app.task
    async def _on_sighup() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, pipeline.reload_keys)

    if pipeline.webhooks is not None:
        @app.timer(5.0)
        async def _flush_webhook_spool() -> None:
            await pipeline.webhooks.flush_spool()  # type: ignore[union-attr]
            pipeline.webhook_metrics()

    @app.on_rebalance_complete.connect
    async def _ready(sender: Any, **_: Any) -> None:
        state["ready"] = True

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.text(pipeline.metrics.render(), content_type="text/plain; version=0.0.4")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        return web.json({"ready": state["ready"]}, status=200 if state["ready"] else 503)

    return app


def run_worker(settings: Settings) -> None:
    """``lepton run``: start the embedded broker if none is configured, create topics, run Faust."""
    import faust  # noqa: PLC0415

    from stream.broker import EmbeddedBroker  # noqa: PLC0415
    from stream.kafka import ensure_topics  # noqa: PLC0415

    s = settings
    s.state_dir.mkdir(parents=True, exist_ok=True)
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
        processor = Processor(s.processor_config())

        async def _unbound(topic: str, key: bytes | None, value: bytes) -> Any:  # replaced by build_app
            raise RuntimeError("pipeline used before the Faust app was built")

        pipeline = Pipeline(settings=s, processor=processor, keyring=keyring, send=_unbound, key_file=key_file,
                            recipients=recipients, trainer=ThreadPoolExecutor(1, thread_name_prefix="lepton-train"))
        if s.webhooks is not None:
            endpoints = parse_endpoints(s.webhooks.get_secret_value())
            pipeline.webhooks = WebhookDelivery(endpoints, spool_dir=s.state_dir / "webhook-spool",
                                                on_dead=pipeline.webhook_dead)
            print(f"webhooks: {[e.name for e in endpoints]} (spool: {s.state_dir / 'webhook-spool'})", flush=True)
        app = build_app(s, bootstrap, pipeline)
        print(f"worker {s.app_id}: consuming {s.topic_edges} on {bootstrap}; web on http://{s.web_host}:{s.web_port}",
              flush=True)
        faust.Worker(app, loglevel=s.log_level, quiet=True).execute_from_commandline()
    finally:
        if broker is not None:
            broker.stop()


def _record(event: Any) -> Record:
    m = event.message
    return Record(topic=m.topic, partition=m.partition, offset=m.offset, timestamp=float(m.timestamp),
                  key=m.key, value=m.value)
