"""Link prediction from the live graph: pair features + embeddings, a trained logistic decoder.

What temporal-graph methods learned matters for the next interaction is mostly about the
*pair*: have u and v interacted, how often, how recently, do they share neighbours. This
module computes those features from the live graph (before the pair is inserted), adds the
embedding similarity, and learns the weights by logistic regression on true edges vs random
negatives, so the model subsumes the memorisation baseline (EdgeBank) instead of losing to it.

Features (``PairFeatures.NAMES``): ``seen`` (pair interacted before), ``log_count``,
``recency`` (exp(-Δt / τ) since the pair's last interaction), ``log_deg_u``, ``log_deg_v``,
``log_cn`` (common neighbours), ``adamic_adar``, ``cos`` (embedding cosine), the
interaction ``seen × recency``, and each endpoint's activity: ``log_age_u`` / ``log_age_v``
(log1p of seconds since the node's last interaction), ``new_u`` / ``new_v`` (it has none; its
age is then 0) and ``log_act_u`` / ``log_act_v`` (log1p of its edge count decayed on an edge
clock, :class:`gnn.anomaly.NodeActivity`): real interactions come from nodes active now,
random pairs mostly do not.

:attr:`PairFeatures.fresh` also counts each node's first-time partners, decayed over the last
~``FRESH_WINDOW`` first-time pairs: the nodes gaining new partners now are who the next new
pairs go to, so the served lists take them as candidates (:meth:`gnn.processor.Processor._topk`).
As two more features they left the served lists as they were and cost 0.3 points of DyGLib AP
on UCI (session 16), so they are not features.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

from gnn.anomaly import NodeActivity
from gnn.arrays import grown
from gnn.decoder import LogisticDecoder, fit_decoder
from gnn.graph import DynamicGraph, lower_bound, mark_row
from gnn.jit import compiled, in_threads, split
from gnn.pair_times import PairTimes

__all__ = ["PairFeatures", "LogisticDecoder", "LinkModel", "FRESH_WINDOW"]

FRESH_WINDOW = 500.0  # first-time pairs: the memory of a node's count of new partners (half-life ~350)


class PairFeatures:
    """Pair features from a :class:`DynamicGraph` plus a per-pair last-seen time."""

    CHUNK = 65_536  # pairs per slice in ``compute`` (keeps peak memory independent of batch size)
    NAMES = ("seen", "log_count", "recency", "log_deg_u", "log_deg_v", "log_cn", "adamic_adar", "cos",
             "seen_x_recency", "log_age_u", "log_age_v", "new_u", "new_v", "log_act_u", "log_act_v")

    def __init__(self, graph: DynamicGraph, *, tau: float = 86_400.0 * 7, activity_window: float = 1000.0) -> None:
        self.graph = graph
        self.tau = tau
        self._last = PairTimes()  # per pair (``_key``): time of its last interaction
        self._node_last = np.full(0, np.nan)  # per dense node id: time of its last interaction
        self.activity = NodeActivity(window=activity_window)  # recent edges per node, on an edge clock
        self.fresh = NodeActivity(window=FRESH_WINDOW)  # recent first-time partners per node, on a new-pair clock

    def observe(self, u: np.ndarray, v: np.ndarray, ts: np.ndarray) -> None:
        """Remember the time of each interaction (dense ids, after the graph applied them)."""
        u, v, ts = np.asarray(u, np.int64), np.asarray(v, np.int64), np.asarray(ts, np.float64)
        keys = _key(u, v)
        _, first = np.unique(keys, return_index=True)  # a pair repeated within the batch is new once
        first = np.sort(first[np.isnan(self._last.get(keys[first]))])
        self.fresh.score(u[first], v[first])
        self._last.set(keys, ts)
        nodes, times = np.r_[u, v], np.r_[ts, ts]
        if len(nodes):
            self._node_last = grown(self._node_last, int(nodes.max()) + 1, np.nan)
        touched, inv = np.unique(nodes, return_inverse=True)
        latest = np.full(len(touched), -np.inf)
        np.maximum.at(latest, inv, times)  # each node's newest time in this batch: O(batch), not O(nodes)
        self._node_last[touched] = np.fmax(self._node_last[touched], latest)
        self.activity.score(u, v)

    def compute(self, u: np.ndarray, v: np.ndarray, ts: np.ndarray, emb: torch.Tensor,
                mean: torch.Tensor | None = None) -> np.ndarray:
        """``[n, len(NAMES)]`` features of pairs (u[i], v[i]) at time ts[i]; 0 ids = unknown nodes.

        Vectorised: common neighbours come from one sort of (pair, neighbour) keys of both
        sides, so the cost is the neighbour lists gathered, not a Python loop per pair.
        ``mean``: the embeddings' mean row (``emb[1:].mean(0)``, computed when not given).
        """
        g = self.graph
        u = np.asarray(u, np.int64)
        v = np.asarray(v, np.int64)
        mean = emb[1:].mean(0, keepdim=True) if mean is None else mean
        if len(u) > self.CHUNK:  # bounded memory: neighbour lists are gathered per slice
            ts = np.broadcast_to(np.asarray(ts, np.float64), u.shape)
            return np.concatenate([self.compute(u[i:i + self.CHUNK], v[i:i + self.CHUNK], ts[i:i + self.CHUNK], emb,
                                                mean) for i in range(0, len(u), self.CHUNK)])
        out = np.zeros((len(u), len(self.NAMES)), np.float64)
        known = np.flatnonzero((u > 0) & (v > 0))
        if len(known) == 0:
            return out
        a, b, t = u[known], v[known], np.asarray(ts, np.float64)[known]
        deg = g.in_degree()  # a view: converting it would copy every node's degree per call
        seen, w = g.edge_lookup(a, b)
        t_last = self._last.get(_key(a, b))
        age = np.maximum(t - np.nan_to_num(t_last, nan=-np.inf), 0.0)  # never seen: infinitely old
        rec = np.exp(-age / self.tau)
        cn, aa = _common_neighbours(g, a, b, deg, emb.device)
        f = out[known]
        f[:, 0], f[:, 1], f[:, 2] = seen, np.log1p(np.abs(w)), rec
        f[:, 3], f[:, 4], f[:, 5], f[:, 6] = np.log1p(deg[a]), np.log1p(deg[b]), np.log1p(cn), aa
        f[:, 8] = f[:, 0] * rec
        (f[:, 9], f[:, 11]), (f[:, 10], f[:, 12]) = self._age(a, t), self._age(b, t)
        f[:, 13], f[:, 14] = np.log1p(self.activity.level(a)), np.log1p(self.activity.level(b))
        f[:, 7] = _centred_cos(emb, a, b, mean)
        out[known] = f
        return out

    def __setstate__(self, state: dict) -> None:
        state.setdefault("fresh", NodeActivity(window=FRESH_WINDOW))  # snapshots from before it: counts start now
        last = state.get("_last")
        if isinstance(last, dict):  # snapshots before PairTimes held a dict
            state["_last"] = PairTimes()
            state["_last"].set(np.fromiter(last.keys(), np.int64, len(last)),
                               np.fromiter(last.values(), np.float64, len(last)))
        self.__dict__.update(state)

    def _age(self, nodes: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log1p seconds since the node's last interaction, 1 if it never interacted)."""
        known = nodes < len(self._node_last)
        last = np.full(len(nodes), np.nan)
        last[known] = self._node_last[nodes[known]]
        new = np.isnan(last)
        return np.where(new, 0.0, np.log1p(np.maximum(t - np.nan_to_num(last), 0.0))), new.astype(np.float64)


def _centred_cos(emb: torch.Tensor, a: np.ndarray, b: np.ndarray, mean: torch.Tensor) -> np.ndarray:
    """Per pair, the cosine of ``emb[a] - mean`` and ``emb[b] - mean``. On a CPU a compiled loop
    reads each pair's two rows once, split over threads (65k serving pairs over 100k
    nodes: ~14 → ~8 ms); torch gathers and normalises both sides otherwise."""
    if _cos_compiled is not None and emb.device.type == "cpu" and emb.dtype == torch.float32 and emb.shape[1] % 2 == 0:
        h, m = emb.contiguous().numpy(), mean.reshape(-1).float().contiguous().numpy()
        parts = split(len(a), _THREADED_PAIRS)
        return np.concatenate(in_threads(lambda lo, hi: _cos_compiled(h, a[lo:hi], b[lo:hi], m), len(a), parts))
    ha = torch.nn.functional.normalize(emb[torch.from_numpy(a).to(emb.device)] - mean, dim=1)
    hb = torch.nn.functional.normalize(emb[torch.from_numpy(b).to(emb.device)] - mean, dim=1)
    return (ha * hb).sum(1).cpu().numpy()


@compiled("float64[::1](float32[:, ::1], int64[::1], int64[::1], float32[::1])")
def _cos_compiled(h: np.ndarray, a: np.ndarray, b: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """:func:`_centred_cos`' loop: float32 differences from the mean, float64 sums (two
    interleaved partial sums each: one chain waits on its adds), each norm floored at 1e-12 (as
    torch's ``normalize``). Needs an even width."""
    out = np.empty(len(a))
    for i in range(len(a)):
        x, y = h[a[i]], h[b[i]]
        xy0 = xy1 = xx0 = xx1 = yy0 = yy1 = 0.0
        for j in range(0, len(mean), 2):
            p0, q0 = np.float64(x[j] - mean[j]), np.float64(y[j] - mean[j])
            p1, q1 = np.float64(x[j + 1] - mean[j + 1]), np.float64(y[j + 1] - mean[j + 1])
            xy0 += p0 * q0
            xy1 += p1 * q1
            xx0 += p0 * p0
            xx1 += p1 * p1
            yy0 += q0 * q0
            yy1 += q1 * q1
        out[i] = (xy0 + xy1) / (max(np.sqrt(xx0 + xx1), 1e-12) * max(np.sqrt(yy0 + yy1), 1e-12))
    return out


_THREADED_PAIRS = 16_384  # pairs from which the compiled cosine is split over threads
_CN_BUDGET = 4_000_000  # neighbour entries gathered per slice in ``_common_neighbours``
_CN_BITMAP = 1 << 24  # (big nodes x rows) marks at most, for the bitmap lookup (16 MiB)


def _common_neighbours(g: DynamicGraph, a: np.ndarray, b: np.ndarray, deg: np.ndarray,
                       device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Per pair: |N(a) ∩ N(b)| and the Adamic-Adar sum over the common neighbours.

    Each pair's smaller neighbour list is looked up in its larger one; the larger lists are
    indexed once per distinct node. Serving scores many candidates against one touched node
    (often a hub), so the cost is the sum of the *smaller* degrees, not of both. With numba a
    compiled loop reads the lists where the graph keeps them, host memory, whatever ``device``
    (on an H100 host the GPU's sort and lookups, behind copies of the lists, cost more); without
    it the sort and the lookups (millions of random reads) run on ``device``.
    """
    m = len(a)
    if _cn_compiled is not None:
        a, b, deg = np.asarray(a, np.int64), np.asarray(b, np.int64), np.ascontiguousarray(deg, np.int32)
        store = g.storage()
        groups = _by_larger_node(a, b, deg, split(m, _THREADED_PAIRS))

        def run(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            sel = np.concatenate(groups[lo:hi])
            cn, pair, nbr = _cn_compiled(*store, a[sel], b[sel], deg)
            return sel, cn, sel[pair], nbr  # a pair's hits stay in one slice, in order: equal sums

        parts = in_threads(run, len(groups), len(groups))
        cn = np.zeros(m)
        for sel, c, _, _ in parts:
            cn[sel] = c
        return cn, _adamic_adar(np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]), deg, m)
    cost = np.cumsum(np.minimum(deg[a], deg[b]))
    if m > 1 and cost[-1] > _CN_BUDGET:  # hub-hub pairs gather long lists: bound the memory per slice
        cut = np.unique(np.searchsorted(cost, np.arange(_CN_BUDGET, cost[-1], _CN_BUDGET)).clip(1, m - 1))
        parts = [_common_neighbours(g, x, y, deg, device) for x, y in zip(np.split(a, cut), np.split(b, cut))]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    swap = deg[a] > deg[b]
    small, big = np.where(swap, b, a), np.where(swap, a, b)
    order = np.argsort(big, kind="stable")  # one big node's lookups together: they hit one stretch of the index
    small, big = small[order], big[order]
    ubig, big_idx = np.unique(big, return_inverse=True)
    cb = g.in_rows(ubig)
    owner = np.repeat(np.arange(len(ubig), dtype=np.int64), np.diff(cb.indptr))
    cs = g.in_rows(small)
    pair = np.repeat(np.arange(m, dtype=np.int64), np.diff(cs.indptr))
    nbr = cs.indices.astype(np.int64)
    if torch.device(device).type == "cpu" and len(ubig) * g.n_rows <= _CN_BITMAP:
        # few big nodes x few rows (small graphs, e.g. hubs of a network trace): one row of marks
        # per big node, so a lookup is a read, not a binary search (DARPA: lookups ~4x, the call ~1.6x faster)
        mark = np.zeros((len(ubig), g.n_rows), np.bool_)
        mark[owner, cb.indices] = True
        hit = mark[big_idx[pair], nbr]
    else:
        keys = (owner << 32) | cb.indices.astype(np.int64)
        index = torch.sort(torch.from_numpy(keys).to(device)).values  # torch on a CPU: ~3x NumPy's sort here
        query = torch.from_numpy((big_idx.astype(np.int64)[pair] << 32) | nbr).to(device)
        if len(index):  # torch's searchsorted: ~2.5x NumPy's on millions of unsorted queries
            hit = (index[torch.searchsorted(index, query).clamp_(max=len(index) - 1)] == query).cpu().numpy()
        else:
            hit = np.zeros(len(query), np.bool_)
    pair, nbr = order[pair[hit]], nbr[hit]
    cn = np.bincount(pair, minlength=m).astype(np.float64)
    return cn, _adamic_adar(pair, nbr, deg, m)


def _by_larger_node(a: np.ndarray, b: np.ndarray, deg: np.ndarray, parts: int) -> list[np.ndarray]:
    """Pair positions in ``parts`` slices, each pair with every other pair of its larger-degree
    node (the compiled loop stamps a node's neighbours once per slice): node id modulo ``parts``."""
    if parts <= 1:
        return [np.arange(len(a), dtype=np.int64)]
    part = np.where(deg[a] > deg[b], a, b) % parts
    return [np.flatnonzero(part == i) for i in range(parts)]


def _adamic_adar(pair: np.ndarray, nbr: np.ndarray, deg: np.ndarray, m: int) -> np.ndarray:
    """Per pair, the sum of 1 / log(degree) over its common neighbours ``nbr`` (listed with
    their ``pair``), in the order listed. NumPy's own ``log`` for both paths: on CPUs with
    AVX-512 its vectorised ``log`` differs from the C library's (numba's) in the last bit of
    ~20 % of values (session 14), so the compiled path returns the pairs it found, not sums."""
    return np.bincount(pair, weights=1.0 / np.log(np.maximum(deg[nbr], 2.0)), minlength=m)


@compiled("Tuple((float64[::1], int64[::1], int64[::1]))(int64[::1], int32[::1], boolean[::1], int64[::1], "
          "int32[::1], int64[::1], int64[::1], int32[::1])")
def _cn_compiled(indptr: np.ndarray, idx: np.ndarray, alive: np.ndarray, d_keys: np.ndarray, d_deg: np.ndarray,
                 a: np.ndarray, b: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_common_neighbours`' intersections as one loop over the adjacency's storage
    (``DynamicGraph.storage``): pairs grouped by their larger-degree node, whose neighbours are
    stamped once per group; each pair's smaller list is then read against the stamps (DARPA's
    ~600 serving pairs a batch: ~1.9 → ~0.3 ms). Returns the common-neighbour counts and every
    (pair, common neighbour) found, in the NumPy path's order, so the Adamic-Adar sums equal."""
    m = len(a)
    small, big = a.copy(), b.copy()
    for i in range(m):
        if deg[a[i]] > deg[b[i]]:
            small[i], big[i] = b[i], a[i]
    n_base = len(indptr) - 1
    cap = 0  # every arc of the smaller lists: a bound on the common neighbours found
    for i in range(m):
        u = small[i]
        cap += (indptr[u + 1] - indptr[u] if u < n_base else 0) + d_deg[u]
    pair, nbr = np.empty(cap, np.int64), np.empty(cap, np.int64)
    stamp = np.zeros(len(deg), np.int32)
    cn = np.zeros(m)
    group, prev, k = 0, -1, 0
    for p in np.argsort(big, kind="mergesort"):
        if big[p] != prev:  # a new group: stamp its big node's neighbours
            group, prev = group + 1, big[p]
            mark_row(indptr, idx, alive, d_keys, d_deg, prev, stamp, group)
        u = small[p]
        if u < n_base:
            for q in range(indptr[u], indptr[u + 1]):
                if alive[q] and stamp[idx[q]] == group:
                    cn[p] += 1.0
                    pair[k], nbr[k] = p, idx[q]
                    k += 1
        first = lower_bound(d_keys, u << 32, 0, len(d_keys)) if d_deg[u] else 0
        for q in range(first, first + d_deg[u]):
            v = d_keys[q] & 0xFFFFFFFF
            if stamp[v] == group:
                cn[p] += 1.0
                pair[k], nbr[k] = p, v
                k += 1
    return cn, pair[:k], nbr[:k]


_REVERSED = [PairFeatures.NAMES.index(n[:-2] + {"_u": "_v", "_v": "_u"}.get(n[-2:], n[-2:]))
             for n in PairFeatures.NAMES]  # column order of the features of (v, u): *_u and *_v swap


def _key(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    a, b = np.minimum(u, v).astype(np.int64), np.maximum(u, v).astype(np.int64)
    return (a << 32) | b


class LinkModel:
    """Pair features + a versioned decoder, trained online on the stream's own edges.

    Every inserted edge is featurised *before* insertion (a positive) together with one random
    pair of the same source (a negative); the latest ``buffer`` samples form the training set.
    :meth:`training_job` hands out a self-contained fitting closure (run it anywhere, e.g. a
    background thread); :meth:`install` swaps the fitted decoder in atomically between batches.
    Until the first fit, pairs are scored by embedding cosine (the untrained decoder).
    """

    def __init__(self, graph: DynamicGraph, *, buffer: int = 50_000, refit_every: int = 5_000,
                 min_samples: int = 1_000, temperature: float = 5.0) -> None:
        self.features = PairFeatures(graph)
        self.decoder: LogisticDecoder | None = None
        self.version = "untrained"
        self.buffer, self.refit_every, self.min_samples = buffer, refit_every, min_samples
        self.temperature = temperature
        self._x: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self._held = 0
        self._since = 0
        self._jobs = 0  # fitting closures handed out
        self._fits = 0

    def score(self, u: np.ndarray, v: np.ndarray, ts: np.ndarray, emb: torch.Tensor,
              mean: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, features) of pairs; features are returned for reuse as training samples."""
        x = self.features.compute(u, v, ts, emb, mean)
        if self.decoder is None:
            return 1.0 / (1.0 + np.exp(-self.temperature * x[:, 7])), x
        return self.decoder.predict(x), x

    def score_reversed(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of the reversed pairs (v, u) from the features of (u, v): only the
        per-endpoint columns swap (undirected graphs), so this costs no feature work."""
        if self.decoder is None:
            return 1.0 / (1.0 + np.exp(-self.temperature * x[:, 7]))
        return self.decoder.predict(x[:, _REVERSED])

    def remember(self, x_pos: np.ndarray, x_neg: np.ndarray) -> None:
        """Add positive / negative samples (features computed before the edges were inserted)."""
        self._x += [x_pos, x_neg]
        self._y += [np.ones(len(x_pos)), np.zeros(len(x_neg))]
        self._held += len(x_pos) + len(x_neg)
        self._since += len(x_pos)
        while self._held - len(self._x[0]) >= self.buffer:
            self._held -= len(self._x.pop(0))
            self._y.pop(0)

    def training_due(self) -> bool:
        """Whether :meth:`training_job` would hand out a fit now (enough samples; the first fit,
        or ``refit_every`` positives since the last one was handed out)."""
        return self._held >= self.min_samples and (not (self._jobs or self.decoder is not None)
                                                   or self._since >= self.refit_every)

    def training_job(self) -> Callable[[], LogisticDecoder] | None:
        """A picklable callable that fits a new decoder on a snapshot of the buffer, or None if
        not due."""
        if not self.training_due():
            return None
        x, y, start = np.concatenate(self._x), np.concatenate(self._y), self.decoder
        self._since = 0
        self._jobs += 1
        return functools.partial(fit_decoder, x, y, start)  # picklable: the worker fits in a child process

    def install(self, decoder: LogisticDecoder, version: str | None = None) -> str:
        """Swap in a fitted decoder (``version`` names a loaded one); returns the new version."""
        if version is None:
            self._fits += 1
            version = f"lr-{self._fits}"
        self.decoder, self.version = decoder, version
        return self.version
