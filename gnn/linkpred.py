"""Link prediction from the live graph: pair features + embeddings, a trained logistic decoder.

What temporal-graph methods learned matters for the next interaction is mostly about the
*pair*: have u and v interacted, how often, how recently, do they share neighbours. This
module computes those features from the live graph (before the pair is inserted), adds the
embedding similarity, and learns the weights by logistic regression on true edges vs random
negatives, so the model subsumes the memorisation baseline (EdgeBank) instead of losing to it.

Features (``PairFeatures.NAMES``): ``seen`` (pair interacted before), ``log_count``,
``recency`` (exp(-Δt / τ) since the pair's last interaction), ``log_deg_u``, ``log_deg_v``,
``log_cn`` (common neighbours), ``adamic_adar``, ``cos`` (embedding cosine), and the
interaction ``seen × recency``.
"""

from __future__ import annotations

import numpy as np
import torch

from gnn.graph import DynamicGraph

__all__ = ["PairFeatures", "LogisticDecoder"]


class PairFeatures:
    """Pair features from a :class:`DynamicGraph` plus a per-pair last-seen time."""

    NAMES = ("seen", "log_count", "recency", "log_deg_u", "log_deg_v", "log_cn", "adamic_adar", "cos",
             "seen_x_recency")

    def __init__(self, graph: DynamicGraph, *, tau: float = 86_400.0 * 7) -> None:
        self.graph = graph
        self.tau = tau
        self._last: dict[int, float] = {}

    def observe(self, u: np.ndarray, v: np.ndarray, ts: np.ndarray) -> None:
        """Remember the time of each interaction (dense ids, after the graph applied them)."""
        for k, t in zip(_key(u, v).tolist(), np.asarray(ts, np.float64).tolist()):
            self._last[k] = t

    def compute(self, u: np.ndarray, v: np.ndarray, ts: np.ndarray, emb: torch.Tensor) -> np.ndarray:
        """``[n, len(NAMES)]`` features of pairs (u[i], v[i]) at time ts[i]; 0 ids = unknown nodes."""
        g = self.graph
        n = len(u)
        out = np.zeros((n, len(self.NAMES)), np.float64)
        deg = g.in_degree().astype(np.float64)
        last = self._last
        keys = _key(u, v).tolist()
        cache: dict[int, np.ndarray] = {}

        def nbrs(x: int) -> np.ndarray:
            got = cache.get(x)
            if got is None:
                got = cache[x] = g.in_neighbors(x)[0] if x > 0 else np.zeros(0, np.int64)
            return got

        for i in range(n):
            a, b = int(u[i]), int(v[i])
            if a == 0 or b == 0:
                continue
            w = g.edge_weight(b, a) if g.has_edge(b, a) else 0.0
            t_last = last.get(keys[i])
            rec = float(np.exp(-(ts[i] - t_last) / self.tau)) if t_last is not None else 0.0
            common = np.intersect1d(nbrs(a), nbrs(b), assume_unique=True)
            aa = float(np.sum(1.0 / np.log(np.maximum(deg[common], 2.0)))) if len(common) else 0.0
            out[i, :7] = (w != 0.0, np.log1p(abs(w)), rec, np.log1p(deg[a]), np.log1p(deg[b]),
                          np.log1p(len(common)), aa)
            out[i, 8] = out[i, 0] * rec
        hn = torch.nn.functional.normalize(emb - emb[1:].mean(0, keepdim=True), dim=1)
        ui, vi = torch.from_numpy(np.asarray(u, np.int64)), torch.from_numpy(np.asarray(v, np.int64))
        out[:, 7] = (hn[ui] * hn[vi]).sum(1).cpu().numpy()
        out[(np.asarray(u) == 0) | (np.asarray(v) == 0), 7] = 0.0
        return out


class LogisticDecoder:
    """Standardised logistic regression (L2, full-batch L-BFGS): p = σ(w·z + b)."""

    def __init__(self, *, l2: float = 1e-3) -> None:
        self.l2 = l2
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.w: np.ndarray | None = None
        self.b = 0.0

    @property
    def fitted(self) -> bool:
        return self.w is not None

    def fit(self, x: np.ndarray, y: np.ndarray, *, iters: int = 200) -> "LogisticDecoder":
        self.mean, self.std = x.mean(0), x.std(0) + 1e-9
        z = torch.from_numpy((x - self.mean) / self.std)
        t = torch.from_numpy(np.asarray(y, np.float64))
        w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, t) + self.l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.w, self.b = w.detach().numpy(), float(b.detach())
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.w is None:
            raise RuntimeError("decoder is not fitted")
        return 1.0 / (1.0 + np.exp(-(((x - self.mean) / self.std) @ self.w + self.b)))


def _key(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    a, b = np.minimum(u, v).astype(np.int64), np.maximum(u, v).astype(np.int64)
    return (a << 32) | b
