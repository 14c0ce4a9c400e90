"""The one entry point from the stream into the core: ``Processor.process(batch, now)``.

For a micro-batch of validated edge events, in order:

1. drop events whose ``id`` was seen recently (idempotency; counted as ``duplicates``);
2. create unseen nodes and embed them inductively (so each new edge can be scored);
3. score every ``add`` *before* inserting it: prior link probability and anomaly score;
4. apply the events to the graph, in order (consecutive runs of one ``op`` at a time);
5. refresh exactly the embeddings the batch changed (:class:`gnn.incremental.Engine`);
6. top-k new partners for every touched node; alerts for edges above the alert threshold.

Pure and synchronous: ``now`` is passed in; no Kafka, no clock, no I/O.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from gnn.anomaly import AnomalyDetector
from gnn.events import EdgeEvent, NodeEvent
from gnn.features import NodeFeatures
from gnn.graph import Applied, DynamicGraph
from gnn.incremental import Engine, UpdateStats
from gnn.kernels import Backend
from gnn.model import GraphSAGE, ModelConfig
from gnn.predict import LinkScorer

__all__ = ["ProcessorConfig", "Processor", "BatchResult", "Prediction", "Alert"]


@dataclass(frozen=True)
class ProcessorConfig:
    directed: bool = False
    hashed_dim: int = 16
    feature_dim: int = 0
    degree_features: Literal["log", "bucket", "none"] = "bucket"
    hidden: int = 64
    out: int = 64
    layers: int = 2
    aggregator: Literal["sum", "mean", "wmean"] = "mean"
    backend: Backend = "auto"
    device: str = "cpu"
    full_fraction: float = 0.1
    prune_eps: float | None = None
    top_k: int = 10
    alert_rate: float = 0.002
    alert_warmup: int = 500
    tick_seconds: float = 60.0
    dedupe_window: int = 1_000_000
    seed: int = 0


@dataclass(frozen=True)
class Prediction:
    """Top-k likely new partners of ``node`` after a batch."""

    node: str
    partners: list[tuple[str, float]]
    trigger_ts_ms: int  # produce time of the latest event in the batch touching ``node``


@dataclass(frozen=True)
class Alert:
    id: str
    kind: str
    severity: str
    score: float
    src: str
    dst: str
    node: str | None
    ts: float
    components: dict[str, float]
    model_version: str

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "severity": self.severity, "score": self.score, "src": self.src,
                "dst": self.dst, "node": self.node, "ts": self.ts, "components": self.components,
                "model_version": self.model_version}


@dataclass
class BatchResult:
    predictions: list[Prediction]
    alerts: list[Alert]
    applied: int = 0
    duplicates: int = 0
    missing_removes: int = 0
    priors: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    update: UpdateStats = field(default_factory=UpdateStats)
    timings: dict[str, float] = field(default_factory=dict)


class Processor:
    """Live graph + incremental embeddings + scoring, driven one micro-batch at a time."""

    def __init__(self, config: ProcessorConfig | None = None) -> None:
        self.config = c = config or ProcessorConfig()
        self.graph = DynamicGraph(directed=c.directed)
        self.features = NodeFeatures(hashed_dim=c.hashed_dim, supplied_dim=c.feature_dim, degree=c.degree_features)
        model = GraphSAGE(ModelConfig(in_dim=self.features.dim, hidden=c.hidden, out=c.out, layers=c.layers,
                                      aggregator=c.aggregator, seed=c.seed))
        self.engine = Engine(graph=self.graph, features=self.features, model=model, backend=c.backend,
                             device=c.device, full_fraction=c.full_fraction, prune_eps=c.prune_eps)
        self.scorer = LinkScorer(version=f"untrained-{c.seed}")
        self.detector = AnomalyDetector(tick=c.tick_seconds, seed=c.seed)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.scored = 0

    @property
    def model_version(self) -> str:
        return self.scorer.version

    def process(self, batch: list[EdgeEvent], now: float, produced_ms: list[int] | None = None) -> BatchResult:
        """Apply one micro-batch; ``produced_ms[i]`` is event i's record timestamp (for latency)."""
        t0 = time.perf_counter()
        produced_ms = produced_ms if produced_ms is not None else [int(now * 1000)] * len(batch)
        events, stamps, dups = self._dedupe(batch, produced_ms)
        g = self.graph
        adds = [i for i, e in enumerate(events) if e.op == "add"]
        g.node_ids([k for i in adds for k in (events[i].src, events[i].dst)], create=True)  # adds create nodes
        # looked up after creation: a remove may follow the add that created its nodes in this batch
        src = g.node_ids([e.src for e in events])
        dst = g.node_ids([e.dst for e in events])
        t1 = time.perf_counter()
        self.engine.update([])  # embed new nodes before scoring their edges
        h = self.engine.embeddings
        a = np.asarray(adds, np.int64)
        priors = self.scorer.score_pairs(h, src[a], dst[a])
        ts = np.array([events[i].ts for i in adds], np.float64)
        anomaly = self.detector.score(src[a], dst[a], ts, priors)
        t2 = time.perf_counter()
        changes, missing = self._apply(events, src, dst)
        t3 = time.perf_counter()
        stats = self.engine.update(changes)
        t4 = time.perf_counter()
        known = (src > 0) & (dst > 0)
        touched_ts: dict[int, int] = {}
        for i in np.flatnonzero(known):
            for node in (int(src[i]), int(dst[i])):
                touched_ts[node] = max(touched_ts.get(node, 0), stamps[i])
        nodes = np.fromiter(touched_ts, np.int64, len(touched_ts))
        top = self.scorer.topk(self.engine.embeddings, g, nodes, self.config.top_k)
        predictions = []
        for row, node in enumerate(nodes):
            keep = top.partners[row] > 0
            names = g.keys(top.partners[row][keep])
            predictions.append(Prediction(node=g.key(int(node)), trigger_ts_ms=touched_ts[int(node)],
                                          partners=[(n, round(float(p), 6)) for n, p in zip(names, top.probs[row][keep])]))
        t5 = time.perf_counter()
        alerts = self._alerts([events[i] for i in adds], anomaly.score, anomaly.components)
        self.scored += len(adds)
        t6 = time.perf_counter()
        return BatchResult(predictions=predictions, alerts=alerts, applied=len(events), duplicates=dups,
                           missing_removes=missing, priors=priors, update=stats,
                           timings={"graph": (t1 - t0) + (t3 - t2), "score": t2 - t1, "kernels": t4 - t3,
                                    "predict": t5 - t4, "anomaly": t6 - t5})

    def set_node_features(self, events: list[NodeEvent]) -> int:
        """Store supplied features (``lepton.nodes``) and refresh the affected embeddings."""
        if not events:
            return 0
        ids = self.graph.node_ids([e.node for e in events], create=True)
        self.features.sync(self.graph)
        self.features.set_supplied(ids, np.array([e.features for e in events], np.float32))
        self.engine.update([], feature_nodes=ids)
        return len(events)

    # ---- helpers ------------------------------------------------------------------------------
    def _dedupe(self, batch: list[EdgeEvent], stamps: list[int]) -> tuple[list[EdgeEvent], list[int], int]:
        out, out_ts, dups = [], [], 0
        seen = self._seen
        for e, s in zip(batch, stamps):
            if e.id is not None:
                if e.id in seen:
                    dups += 1
                    continue
                seen[e.id] = None
                if len(seen) > self.config.dedupe_window:
                    seen.popitem(last=False)
            out.append(e)
            out_ts.append(s)
        return out, out_ts, dups

    def _apply(self, events: list[EdgeEvent], src: np.ndarray, dst: np.ndarray) -> tuple[list[Applied], int]:
        changes: list[Applied] = []
        missing = 0
        i = 0
        while i < len(events):
            j = i
            while j < len(events) and events[j].op == events[i].op:
                j += 1
            s, d = src[i:j], dst[i:j]
            if events[i].op == "add":
                w = np.array([e.weight for e in events[i:j]], np.float32)
                changes.append(self.graph.add_edges(s, d, w))
            else:
                known = (s > 0) & (d > 0)
                missing += int((~known).sum())
                applied = self.graph.remove_edges(s[known], d[known])
                missing += applied.missing_removes
                changes.append(applied)
            i = j
        return changes, missing

    def _alerts(self, adds: list[EdgeEvent], score: np.ndarray, comps: dict[str, np.ndarray]) -> list[Alert]:
        if self.scored < self.config.alert_warmup:
            return []
        hit = np.flatnonzero(score >= 1.0 - self.config.alert_rate)
        out = []
        for i in hit:
            e = adds[int(i)]
            key = e.id or f"{e.src}|{e.dst}|{e.ts}"
            aid = hashlib.sha256(f"edge_anomaly|{key}".encode()).hexdigest()[:24]
            s = float(score[i])
            out.append(Alert(id=aid, kind="edge_anomaly", severity="high" if s >= 1.0 - self.config.alert_rate / 5
                             else "medium", score=round(s, 6), src=e.src, dst=e.dst, node=None, ts=e.ts,
                             components={k: round(float(v[i]), 6) for k, v in comps.items()},
                             model_version=self.model_version))
        return out
