"""The one entry point from the stream into the core: ``Processor.process(batch, now)``.

For a micro-batch of validated edge events, in order:

1. drop events whose ``id`` was seen recently (idempotency; counted as ``duplicates``);
2. create unseen nodes and embed them inductively (so each new edge can be scored);
3. score every ``add`` *before* inserting it: prior link probability (also an online training
   sample for the link model) and anomaly score;
4. apply the events to the graph, in order (consecutive runs of one ``op`` at a time);
5. refresh exactly the embeddings the batch changed (:class:`gnn.incremental.Engine`);
6. top-k new partners for every touched node; alerts for edges above the alert threshold.

Decoder fits are handed out by :meth:`Processor.training_job` and installed with
:meth:`Processor.install`, so the caller decides where they run (the worker: a thread).

Pure and synchronous: ``now`` is passed in; no Kafka, no clock, no I/O.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from gnn.ann import IVFIndex
from gnn.anomaly import AnomalyDetector, EdgeScores
from gnn.checkpoint import load_checkpoint, save_checkpoint
from gnn.events import EdgeEvent, NodeEvent
from gnn.features import NodeFeatures
from gnn.graph import CSR, Applied, DynamicGraph
from gnn.incremental import Engine, UpdateStats
from gnn.jit import compiled
from gnn.kernels import Backend
from gnn.model import GraphSAGE, ModelConfig
from gnn.linkpred import LinkModel, LogisticDecoder
from gnn.predict import LinkScorer

if TYPE_CHECKING:
    import pandas as pd

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
    full_fraction: float = 0.15  # a layer's scatter beyond this share of a full pass's work: one SpMM instead
    prune_eps: float | None = None
    top_k: int = 10  # 0 = no predictions (scoring-only runs)
    candidates: int = 10  # nearest neighbours by embedding, and 2-hop nodes, per touched node
    ann: Literal["auto", "exact", "ivf"] = "auto"  # neighbour search; auto: IVF from ann_min_nodes (CUDA: 2M)
    ann_min_nodes: int = 50_000
    ann_min_work: int = 2_000_000  # auto: IVF also for a batch whose exact search would take queries x rows >= this
    ann_nprobe: int = 8
    hop_fanout: int = 5  # neighbours expanded for the 2-hop candidates
    hubs: int = 20  # the nodes with the most new partners lately, also candidates of every touched node
    predictions_per_event: float = 0.0  # top-k budget per batch (x events, at least PREDICTION_FLOOR); 0: every touched node
    refit_every: int = 5_000  # new positive samples between online decoder fits
    train_per_batch: int = 512  # online training pairs a batch adds at most: a seeded sample of its adds
    train_buffer: int = 50_000  # most recent training samples kept
    alert_rate: float = 0.002
    anomaly_weights: dict[str, float] | None = None  # None: gnn.anomaly.DEFAULT_WEIGHTS
    activity_window: float = 1000.0  # edges: the dormancy component's memory
    alert_warmup: int = 500
    storm_max: int = 50  # more alerting edges than this in one batch: one summary alert instead
    tick_seconds: float = 60.0
    dedupe_window: int = 1_000_000
    seed: int = 0
    model_path: str | None = None  # checkpoint to start from (its encoder, features and decoder win)


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
    anomaly: EdgeScores | None = None  # per ``add`` event, in batch order: score and components
    timings: dict[str, float] = field(default_factory=dict)
    training: tuple[np.ndarray, np.ndarray] | None = None  # pair features the batch added to training: (edges, negatives)


# Serving policy: a restored processor takes these from the current settings (restart with a new
# LEPTON_TOP_K, say); every other field shapes the model or its state and stays the snapshot's.
SERVING = ("top_k", "candidates", "hubs", "ann", "ann_min_nodes", "ann_min_work", "ann_nprobe", "hop_fanout",
           "predictions_per_event", "alert_rate", "alert_warmup", "storm_max", "refit_every", "train_per_batch",
           "full_fraction")
# auto search on CUDA: exact below this many rows (an H100, batches of 2,000 events: predict 281 ->
# 223 µs an event at 100k nodes, 727 -> 543 at 1M, over the IVF index); a chunk's products take 512 x rows floats
CUDA_EXACT_ROWS = 2_000_000
PREDICTION_FLOOR = 16  # a budgeted batch still publishes this many: waiting nodes drain while batches flow


class Processor:
    """Live graph + incremental embeddings + scoring, driven one micro-batch at a time."""

    def __init__(self, config: ProcessorConfig | None = None) -> None:
        self.config = c = config or ProcessorConfig()
        self.graph = DynamicGraph(directed=c.directed)
        ckpt = load_checkpoint(c.model_path) if c.model_path else None
        feats = ckpt["features"] if ckpt else {"hashed_dim": c.hashed_dim, "supplied_dim": c.feature_dim,
                                                "degree": c.degree_features}
        self.features = NodeFeatures(**feats)
        model = GraphSAGE(ckpt.model_config() if ckpt else ModelConfig(
            in_dim=self.features.dim, hidden=c.hidden, out=c.out, layers=c.layers, aggregator=c.aggregator, seed=c.seed))
        if ckpt:  # transfer: the checkpoint's encoder weights and decoder
            model.load_state_dict(ckpt["encoder"]["state"])
        self.base_version = ckpt.version if ckpt else f"sage-{c.seed}"
        self.engine = Engine(graph=self.graph, features=self.features, model=model, backend=c.backend,
                             device=c.device, full_fraction=c.full_fraction, prune_eps=c.prune_eps)
        self.scorer = LinkScorer()
        self.link = LinkModel(self.graph, buffer=c.train_buffer, refit_every=c.refit_every)
        decoder = ckpt.decoder() if ckpt else None
        if decoder is not None:
            self.link.install(decoder, version="ckpt")
        self._rng = np.random.default_rng(c.seed)
        self.detector = AnomalyDetector(tick=c.tick_seconds, seed=c.seed, weights=c.anomaly_weights,
                                        activity_window=c.activity_window)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._waiting: OrderedDict[int, int] = OrderedDict()  # budgeted top-k: node -> newest trigger (ms), oldest first
        self.scored = 0
        self._index: IVFIndex | None = None  # built lazily; not part of a snapshot (rebuilt after a load)
        self._staged: LogisticDecoder | None = None  # a finished fit waiting for install_due
        self._hubs: np.ndarray | None = None  # the ``hubs`` nodes with the most new partners lately

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_index"} | {"_index": None}

    def __setstate__(self, state: dict) -> None:
        state.setdefault("_waiting", OrderedDict())  # snapshots from before the prediction budget
        state.setdefault("_staged", None)  # snapshots from before staged fits
        state.setdefault("_hubs", None)  # snapshots from before hub candidates
        self.__dict__.update(state)

    def reconfigure(self, config: ProcessorConfig) -> tuple[dict[str, tuple], dict[str, tuple]]:
        """Take ``config``'s serving policy (:data:`SERVING`) on a restored processor.

        Returns ``(changed, kept)``, each ``{field: (snapshot's value, config's value)}``: the
        serving fields now changed, and the model-shaping fields that differ but stay the
        snapshot's (the caller warns about those)."""
        old = self.config
        diff = {f.name: (getattr(old, f.name), getattr(config, f.name)) for f in fields(ProcessorConfig)
                if f.name not in ("device", "model_path") and getattr(old, f.name) != getattr(config, f.name)}
        changed = {k: v for k, v in diff.items() if k in SERVING}
        self.config = replace(old, **{k: new for k, (_, new) in changed.items()})
        self.link.refit_every, self.engine.full_fraction = self.config.refit_every, self.config.full_fraction
        if any(k.startswith("ann") for k in changed):
            self._index = None  # rebuilt with the new search settings on first use
        if "hubs" in changed:
            self._hubs = None
        return changed, {k: v for k, v in diff.items() if k not in SERVING}

    @property
    def waiting(self) -> int:
        """Touched nodes whose top-k a prediction budget has deferred to a later batch."""
        return len(self._waiting)

    @property
    def model_version(self) -> str:
        """Encoder and decoder versions; every output carries it."""
        return f"{self.base_version}/{self.link.version}"

    def training_job(self) -> Callable[[], LogisticDecoder] | None:
        """A decoder-fitting closure when one is due (run it off the hot path), else None."""
        return self.link.training_job()

    def install_due(self) -> bool:
        """Whether a fit handed out earlier should be installed before the next batch: when the
        next fit is due (a fit gets a whole refit period to run beside the stream), or at once
        while no decoder is installed yet. A function of the events seen, not of time."""
        return self.link.decoder is None or self.link.training_due()

    def stage(self, decoder: LogisticDecoder) -> None:
        """Hold a finished fit until :meth:`install_due` (it is part of a snapshot, so a replay
        installs it at the same batch as the run that wrote the snapshot)."""
        self._staged = decoder

    @property
    def staged(self) -> bool:
        return self._staged is not None

    def install_staged(self) -> str | None:
        """Install the staged fit, if any; the new model version, or None."""
        decoder, self._staged = self._staged, None
        return None if decoder is None else self.install(decoder)

    def refit_in_line(self) -> bool:
        """The worker's model schedule with every fit done at once (evaluations, which have no fit
        process): install the staged fit when due, then stage the next one if one is due.
        Returns whether a fit ran."""
        if self.staged and not self.install_due():
            return False
        self.install_staged()
        job = self.training_job()
        if job is None:
            return False
        self.stage(job())
        return True

    def install(self, decoder: LogisticDecoder) -> str:
        """Hot-swap a fitted decoder between batches. Embeddings do not depend on the decoder,
        so the engine's caches stay valid; returns the new model version."""
        self.link.install(decoder)
        return self.model_version

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
        ts = np.array([events[i].ts for i in adds], np.float64)
        train = self._training_sample(len(a))  # the adds that become training samples
        neg = self._rng.integers(1, g.n_rows, len(train)) if len(train) else np.zeros(0, np.int64)
        probs, x = self.link.score(np.r_[src[a], src[a][train]], np.r_[dst[a], neg], np.r_[ts, ts[train]], h,
                                   self.engine.mean_embedding())  # one feature pass
        priors, x_pos, x_neg = probs[: len(a)], x[: len(a)], x[len(a):]  # prior probability, before insertion
        if not self.config.directed:  # an undirected pair: both orientations (the decoder learns p(dst | src))
            priors = 0.5 * (priors + self.link.score_reversed(x_pos))
        training = (x_pos[train], x_neg) if len(train) else None
        if training is not None:
            self.link.remember(*training)  # online training samples: an edge and a random pair of its source
        anomaly = self.detector.score(src[a], dst[a], ts, priors)
        t2 = time.perf_counter()
        changes, missing = self._apply(events, src, dst)
        self.link.features.observe(src[a], dst[a], ts)
        self._hubs = self._rising(np.r_[src[a], dst[a]])
        t3 = time.perf_counter()
        stats = self.engine.update(changes)
        if self._index is not None:
            self._index.refresh(self.engine.embeddings, g.n_rows, stats.moved)
        t4 = time.perf_counter()
        nodes, latest = self._due(*_touched(src, dst, np.asarray(stamps, np.int64)), len(batch))
        partners, probs, bounds = self._topk(nodes, now)
        pairs = list(zip(g.keys(partners), np.round(probs, 6).tolist()))  # every partner at once: ~2 -> ~1 µs a list
        predictions = [Prediction(node=key, trigger_ts_ms=trigger, partners=pairs[i:j])
                       for key, trigger, i, j in zip(g.keys(nodes), latest.tolist(), bounds[:-1].tolist(),
                                                     bounds[1:].tolist())] if self.config.top_k else []
        t5 = time.perf_counter()
        alerts = self._alerts([events[i] for i in adds], anomaly.score, anomaly.components)
        self.scored += len(adds)
        t6 = time.perf_counter()
        return BatchResult(predictions=predictions, alerts=alerts, applied=len(events), duplicates=dups,
                           missing_removes=missing, priors=priors, update=stats, anomaly=anomaly, training=training,
                           timings={"graph": (t1 - t0) + (t3 - t2), "score": t2 - t1, "kernels": t4 - t3,
                                    "predict": t5 - t4, "anomaly": t6 - t5})

    def preload(self, table: "pd.DataFrame") -> int:
        """Bulk-load an initial graph (columns src, dst[, weight][, op]: :func:`gnn.io.bulk_load`)
        and embed it from scratch.

        For start-up and benchmarks: the edges are not scored, and pair recency starts empty.
        """
        from gnn.io import bulk_load  # noqa: PLC0415

        added = bulk_load(self.graph, table.assign(weight=table["weight"]) if "weight" in table
                          else table.assign(weight=1.0))
        self.features.sync(self.graph)
        self.engine.full_refresh()
        self._hubs = None
        return added

    def save(self, path: str, meta: dict | None = None) -> str:
        """Write the encoder and the current decoder as a versioned checkpoint; returns its version."""
        f = self.features
        return save_checkpoint(path, config=self.engine.model.config, encoder=self.engine.model,
                               features={"hashed_dim": f.hashed_dim, "supplied_dim": f.supplied_dim,
                                         "degree": f.degree}, decoder=self.link.decoder, meta=meta)

    def set_node_features(self, events: list[NodeEvent]) -> int:
        """Store supplied features (``lepton.nodes``) and refresh the affected embeddings."""
        if not events:
            return 0
        ids = self.graph.node_ids([e.node for e in events], create=True)
        self.features.sync(self.graph)
        self.features.set_supplied(ids, np.array([e.features for e in events], np.float32))
        stats = self.engine.update([], feature_nodes=ids)
        if self._index is not None:  # the rows they moved, as a batch's
            self._index.refresh(self.engine.embeddings, self.graph.n_rows, stats.moved)
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

    def _training_sample(self, adds: int) -> np.ndarray:
        """Which of a batch's ``adds`` become training samples (positions, ascending): all of them
        up to ``train_per_batch``, else a seeded random subset of that size. Each costs a
        negative pair's features now and its share of every later fit; at 20,000 events/s
        (10k-event batches) training on every edge meant a fit every 0.25 s, ~20 % of a core."""
        cap = self.config.train_per_batch
        if adds <= cap:
            return np.arange(adds, dtype=np.int64)
        return np.sort(self._rng.choice(adds, cap, replace=False))

    def _due(self, nodes: np.ndarray, latest: np.ndarray, events: int) -> tuple[np.ndarray, np.ndarray]:
        """The touched nodes whose top-k this batch publishes, with their newest trigger times:
        all of them; or, under a budget, the longest-waiting ones up to the budget. A node touched
        again while it waits keeps its place and takes the newer trigger (one prediction, fresh)."""
        budget = self.config.predictions_per_event
        if budget <= 0 or self.config.top_k == 0:
            return nodes, latest
        wait = self._waiting
        for node, ms in zip(nodes.tolist(), latest.tolist()):
            if wait.get(node, ms) <= ms:  # new, or touched again: the newest trigger, same place in line
                wait[node] = ms
        take = min(len(wait), max(PREDICTION_FLOOR, math.ceil(budget * events)))
        due = [wait.popitem(last=False) for _ in range(take)]
        return np.array([n for n, _ in due], np.int64), np.array([t for _, t in due], np.int64)

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

    def _rising(self, gained: np.ndarray) -> np.ndarray | None:
        """The ``hubs`` nodes with the most first-time partners lately (the pair features'
        ``fresh`` counts), most first. Their decay is the same for every node, so the order
        changes only where a node gains: the new top lies among the last one and ``gained``
        (this batch's endpoints); without a last one, every node is ranked. As a list of their
        own, these nodes catch 1.3–1.9× the next new partners that the most linked ones do
        (UCI, Bitcoin-Alpha, DARPA; README)."""
        m = self.config.hubs
        if not m:
            return None
        pool = (np.arange(1, self.graph.n_rows, dtype=np.int64) if self._hubs is None  # a start, a load, new settings
                else np.unique(np.concatenate([self._hubs, gained])))
        pool = pool[pool > 0]
        level = self.link.features.fresh.level(pool)
        pool, level = pool[level > 0], level[level > 0]
        if len(pool) > m:
            keep = np.argpartition(-level, m - 1)[:m]
            pool, level = pool[keep], level[keep]
        return pool[np.argsort(-level, kind="stable")]

    def _storm(self, events: list[EdgeEvent], scores: np.ndarray) -> Alert:
        """One summary alert for a batch with more than ``storm_max`` alerting edges."""
        counts = Counter(n for e in events for n in (e.src, e.dst))  # was max(set, key=list.count): O(n·distinct)
        (top, top_edges), = counts.most_common(1)  # ties: the node seen first (a set's order varies by process)
        ids = "|".join(e.id or f"{e.src}|{e.dst}|{e.ts}" for e in events)
        return Alert(id=hashlib.sha256(f"alert_storm|{ids}".encode()).hexdigest()[:24], kind="alert_storm",
                     severity="high", score=round(float(scores.max()), 6), src="*", dst="*", node=top,
                     ts=max(e.ts for e in events),
                     components={"count": float(len(events)), "distinct_nodes": float(len(counts)),
                                 "top_node_edges": float(top_edges), "mean_score": round(float(scores.mean()), 6)},
                     model_version=self.model_version)

    def _topk(self, nodes: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k new partners per node: candidates = embedding nearest neighbours ∪ 2-hop
        neighbourhood (capped) ∪ the nodes with the most new partners lately (``hubs``: the
        served lists' hits@10 on UCI, Bitcoin-Alpha and DARPA rose ~2×, ~2× and ~70×; README),
        ranked by the link model; current neighbours are excluded.
        Returns (partners, probabilities, bounds): node i's best first at ``bounds[i]:bounds[i + 1]``."""
        g, k, c, h = self.graph, self.config.top_k, self.config.candidates, self.engine.embeddings
        if len(nodes) == 0 or k == 0:  # top_k = 0: scoring only (evaluations)
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(len(nodes) + 1, np.int64)
        near = self._nearest(nodes, c)
        valid = near > 0  # -1 pads rows with fewer candidates than asked for
        own = [np.repeat(np.arange(len(nodes), dtype=np.int64), near.shape[1])[valid.ravel()]]
        cand = [near[valid]]
        fan, second = self.config.hop_fanout, max(1, c // max(1, self.config.hop_fanout))
        f_own, f_node = _first_per_row(g.in_rows(nodes, cap=fan), fan)  # a hub's whole list is not read
        s_row, s_node = _first_per_row(g.in_rows(f_node, cap=second), second)
        hubs = np.zeros(0, np.int64) if self._hubs is None else self._hubs  # gaining new partners fastest
        more_own = np.r_[f_own[s_row], np.repeat(np.arange(len(nodes), dtype=np.int64), len(hubs))]
        more = np.r_[s_node, np.tile(hubs, len(nodes))]  # 2-hop nodes, and the hubs for every touched node
        fresh = ~g.edge_lookup(nodes[more_own], more)[0]  # _nearest already left current neighbours out
        own.append(more_own[fresh])
        cand.append(more[fresh])
        keys = np.unique((np.concatenate(own) << 32) | np.concatenate(cand).astype(np.int64))
        own_all, c_all = keys >> 32, keys & 0xFFFFFFFF
        keep = (c_all > 0) & (c_all != nodes[own_all])
        own_all, c_all = own_all[keep], c_all[keep]
        probs, _ = self.link.score(nodes[own_all], c_all, np.full(len(own_all), now), h, self.engine.mean_embedding())
        take, bounds = _best_per_node(own_all, probs, len(nodes), k)
        return c_all[take], probs[take], bounds

    def _nearest(self, nodes: np.ndarray, c: int) -> np.ndarray:
        """``c`` embedding neighbours per node that are not current neighbours (-1 pads): exact
        on small graphs and small batches (on CUDA below ``CUDA_EXACT_ROWS``), an IVF index on
        large graphs, and on batches of many touched nodes (a burst: the products grow with
        queries × rows) once ``ann_min_work`` is reached (2c fetched, current neighbours dropped)."""
        cfg, g, h = self.config, self.graph, self.engine.embeddings
        if exact_search(cfg, g.n_rows, len(nodes), h.device.type):
            return self.scorer.topk(h, g, nodes, c, self.engine.mean_embedding()).partners
        if self._index is None:
            self._index = IVFIndex(nprobe=cfg.ann_nprobe, seed=cfg.seed)
            self._index.refresh(h, g.n_rows)
        return g.first_unlinked(nodes, self._index.search(h, nodes, 2 * c, g.n_rows), c)  # the best c left, in order

    def _alerts(self, adds: list[EdgeEvent], score: np.ndarray, comps: dict[str, np.ndarray]) -> list[Alert]:
        if self.scored < self.config.alert_warmup:
            return []
        hit = np.flatnonzero(score >= 1.0 - self.config.alert_rate)
        if len(hit) > self.config.storm_max:
            return [self._storm([adds[int(i)] for i in hit], score[hit])]
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


def exact_search(cfg: ProcessorConfig, rows: int, queries: int, device: str) -> bool:
    """Whether a batch's embedding neighbours come from exact search (else the IVF index):
    ``ann`` exact, or ``auto`` on a graph below ``ann_min_nodes`` whose batch stays under
    ``ann_min_work`` (queries × rows), or ``auto`` on CUDA below ``CUDA_EXACT_ROWS``."""
    if cfg.ann != "auto":
        return cfg.ann == "exact"
    if device == "cuda" and rows < CUDA_EXACT_ROWS:
        return True
    return rows < cfg.ann_min_nodes and (not cfg.ann_min_work or queries * rows < cfg.ann_min_work)


def _touched(src: np.ndarray, dst: np.ndarray, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes of the batch's known edges in order of first appearance (src, then dst, event by
    event), and each one's newest record time (ms)."""
    known = (src > 0) & (dst > 0)
    seq = np.column_stack([src[known], dst[known]]).ravel()
    if len(seq) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    st = np.repeat(stamps[known], 2)
    nodes, first, inv = np.unique(seq, return_index=True, return_inverse=True)
    latest = np.full(len(nodes), np.iinfo(np.int64).min)
    np.maximum.at(latest, inv, st)
    order = np.argsort(first)
    return nodes[order], latest[order]


def _best_per_node(owner: np.ndarray, probs: np.ndarray, nodes: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of each node's ``k`` most probable candidates, best first (equal probabilities:
    the earlier position first), node by node; and the bounds of each node's run. ``owner`` is
    sorted. Compiled: one pass per node (65k candidates: lexsort ~6.5 ms → ~0.5 ms)."""
    if _best_per_node_compiled is not None:
        return _best_per_node_compiled(np.ascontiguousarray(owner, np.int64), np.ascontiguousarray(probs, np.float64),
                                       nodes, k)
    order = np.lexsort((-probs, owner))
    first = np.searchsorted(owner[order], np.arange(nodes + 1))
    rank = np.arange(len(order)) - np.repeat(first[:-1], np.diff(first))
    counts = np.minimum(np.diff(first), k)
    return order[rank < k], np.r_[0, np.cumsum(counts)].astype(np.int64)


@compiled("Tuple((int64[::1], int64[::1]))(int64[::1], float64[::1], int64, int64)")
def _best_per_node_compiled(owner: np.ndarray, probs: np.ndarray, nodes: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_best_per_node` as one insertion pass per node's run of ``owner``."""
    take = np.empty(min(len(owner), nodes * k), np.int64)
    bounds = np.zeros(nodes + 1, np.int64)
    lo, out = 0, 0
    for node in range(nodes):
        hi = lo
        while hi < len(owner) and owner[hi] == node:
            hi += 1
        held = 0
        for i in range(lo, hi):
            p = probs[i]
            if held == k and not p > probs[take[out + k - 1]]:
                continue
            at = held if held < k else k - 1
            while at > 0 and probs[take[out + at - 1]] < p:
                take[out + at] = take[out + at - 1]
                at -= 1
            take[out + at] = i
            held = min(held + 1, k)
        out += held
        bounds[node + 1] = out
        lo = hi
    return take[:out], bounds


def _first_per_row(csr: CSR, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """(row index, column) of at most ``cap`` leading entries of every CSR row."""
    lens = np.minimum(np.diff(csr.indptr), cap)
    rows = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
    offs = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
    return rows, csr.indices[csr.indptr[:-1][rows] + offs].astype(np.int64)
