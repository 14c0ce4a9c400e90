"""Dynamic link prediction evaluation with the DyGLib protocol (transductive, random negatives).

Protocol (Yu et al., NeurIPS 2023, as used for the published UCI table):
``val_time, test_time = quantile(ts, [0.70, 0.85])``; the test set is the edges with
``ts > test_time``, taken in chronological batches of 200. Each positive ``(u, v)`` gets one
negative ``(u, v')`` with ``v'`` drawn uniformly from the unique destinations of the whole
data. A scorer may use every edge before the current batch: after a batch is scored it is
revealed to every scorer. AP and AUC are computed per batch and averaged over batches; MRR
ranks each positive against ``mrr_negatives`` random destinations (TGB-style; 0 skips it).

Scorers implement :class:`PairScorer`; :class:`EdgeBank` (unlimited memory) is the
memorisation baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from gnn.metrics import average_precision, mrr, roc_auc

__all__ = ["PairScorer", "EdgeBank", "EmbeddingScorer", "TrainedScorer", "LinkPredConfig", "evaluate_linkpred"]


class PairScorer(Protocol):
    def observe(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray) -> None:
        """Reveal true edges (in time order)."""

    def score(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Likelihood of each pair, from what was observed so far."""


class EdgeBank:
    """1 for a (src, dst) pair seen before, else 0 (unlimited memory, directed)."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def observe(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray) -> None:
        self._seen.update(_pair(src, dst).tolist())

    def score(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray) -> np.ndarray:
        seen = self._seen
        return np.fromiter((k in seen for k in _pair(src, dst).tolist()), np.float64, len(src))


class EmbeddingScorer:
    """The live service path: a :class:`gnn.processor.Processor` fed the revealed edges, scored
    with its link decoder (the untrained cosine decoder until a trained one replaces it)."""

    def __init__(self, processor: object) -> None:
        from gnn.events import EdgeEvent  # noqa: PLC0415

        self._event = EdgeEvent
        self.p = processor

    def observe(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray) -> None:
        events = [self._event(src=str(u), dst=str(v), ts=float(t)) for u, v, t in zip(src, dst, ts)]
        self.p.process(events, now=float(ts[-1]) if len(ts) else 0.0)  # type: ignore[attr-defined]

    def score(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray) -> np.ndarray:
        g = self.p.graph  # type: ignore[attr-defined]
        u = g.node_ids([str(x) for x in src])
        v = g.node_ids([str(x) for x in dst])
        return self.p.scorer.score_pairs(self.p.engine.embeddings, u, v).astype(np.float64)  # type: ignore[attr-defined]


class TrainedScorer(EmbeddingScorer):
    """The service's own link model (:class:`gnn.linkpred.LinkModel` inside the processor).

    While the history streams in, the processor featurises every edge before inserting it
    (against a random pair of the same source), exactly as it does live; when scoring starts
    the decoder is fitted once on those samples and the pairs are scored by the link model.
    """

    def score(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray) -> np.ndarray:
        p = self.p
        if p.link.decoder is None:  # type: ignore[attr-defined]
            job = p.training_job()  # type: ignore[attr-defined]
            if job is not None:
                p.install(job())  # type: ignore[attr-defined]
        g = p.graph  # type: ignore[attr-defined]
        u, v = g.node_ids([str(x) for x in src]), g.node_ids([str(x) for x in dst])
        return p.link.score(u, v, ts, p.engine.embeddings)[0]  # type: ignore[attr-defined]


@dataclass(frozen=True)
class LinkPredConfig:
    batch_size: int = 200
    mrr_negatives: int = 100
    val_quantile: float = 0.70
    test_quantile: float = 0.85
    history_chunk: int = 2000
    seed: int = 0


def evaluate_linkpred(table: pd.DataFrame, scorers: dict[str, PairScorer], *, config: LinkPredConfig | None = None,
                      progress: Callable[[int, int], None] | None = None) -> dict[str, dict[str, float]]:
    """Run the protocol for every scorer on the same split and negatives; ``{name: {ap, auc, mrr}}``."""
    c = config or LinkPredConfig()
    src = table["src"].to_numpy()
    dst = table["dst"].to_numpy()
    ts = table["ts"].to_numpy(np.float64)
    _, test_time = np.quantile(ts, [c.val_quantile, c.test_quantile])
    first_test = int(np.searchsorted(ts, test_time, side="right"))
    unique_dst = np.unique(dst)
    neg_rng = np.random.RandomState(c.seed)  # DyGLib's sampler: one randint draw per batch
    mrr_rng = np.random.default_rng(c.seed + 1)  # separate, so MRR does not shift the AP/AUC negatives
    for lo in range(0, first_test, c.history_chunk):  # history: everything up to the test period
        hi = min(lo + c.history_chunk, first_test)
        for s in scorers.values():
            s.observe(src[lo:hi], dst[lo:hi], ts[lo:hi])
    per: dict[str, dict[str, list[float]]] = {name: {"ap": [], "auc": [], "mrr": []} for name in scorers}
    n_batches = (len(ts) - first_test + c.batch_size - 1) // c.batch_size
    for b, lo in enumerate(range(first_test, len(ts), c.batch_size)):
        hi = min(lo + c.batch_size, len(ts))
        bs, bd, bt = src[lo:hi], dst[lo:hi], ts[lo:hi]
        neg = unique_dst[neg_rng.randint(0, len(unique_dst), hi - lo)]
        many = unique_dst[mrr_rng.integers(0, len(unique_dst), (hi - lo, c.mrr_negatives))]
        y = np.r_[np.ones(hi - lo), np.zeros(hi - lo)]
        for name, s in scorers.items():
            pos, negs = s.score(bs, bd, bt), s.score(bs, neg, bt)
            per[name]["ap"].append(average_precision(y, np.r_[pos, negs]))
            per[name]["auc"].append(roc_auc(y, np.r_[pos, negs]))
            if c.mrr_negatives:
                rank_neg = s.score(np.repeat(bs, c.mrr_negatives), many.ravel(), np.repeat(bt, c.mrr_negatives))
                per[name]["mrr"].append(mrr(pos, rank_neg.reshape(hi - lo, c.mrr_negatives)))
        for s in scorers.values():
            s.observe(bs, bd, bt)
        if progress:
            progress(b + 1, n_batches)
    return {name: {k: round(float(np.mean(v)), 4) for k, v in m.items() if v} | {"batches": n_batches}
            for name, m in per.items()}


def _pair(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """One hashable key per pair of ids (ints or strings)."""
    return pd.Series(list(zip(src.tolist(), dst.tolist()))).map(hash).to_numpy() if src.dtype == object \
        else (np.asarray(src, np.int64) << 32) ^ np.asarray(dst, np.int64)
