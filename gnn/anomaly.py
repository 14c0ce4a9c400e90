"""Streaming edge anomaly scores: a MIDAS-R sketch, model surprise, and quantile calibration.

Pure and synchronous: every call takes the event times it scores; nothing reads a clock.

- :class:`MidasR` (Bhatia et al., AAAI 2020): count-min sketches of the current tick's and of
  all-time counts for the edge, its source and its destination; the current counts decay by
  ``decay`` per tick. Score = max of the three chi-squared statistics
  :math:`(a - s/t)^2 \\, t^2 / (s (t-1))`. Constant memory, O(1) per edge, vectorised per batch.
- :class:`QuantileCalibrator`: maps a raw score to its empirical CDF over a sliding window of
  recent scores, so a threshold on the calibrated value is an alert *rate* that holds as
  traffic changes.
- :class:`NodeBurst`: per-node EWMA of edges per tick and a z-score of the current tick.
- :class:`NodeActivity`: how dormant an edge's endpoints were, on a clock of edges: an edge
  between nodes that were not active recently (a node suddenly contacting a stranger) scores high.
- :class:`AnomalyDetector`: combines calibrated components (``midas``, ``surprise`` = 1 - prior
  link probability, ``burst``, ``dormancy``) and returns per-edge scores with their components
  (the explanation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gnn.arrays import grown

__all__ = ["MidasR", "NodeBurst", "NodeActivity", "QuantileCalibrator", "AnomalyDetector", "EdgeScores",
           "DEFAULT_WEIGHTS", "parse_weights"]

_MASK32 = np.uint64(0xFFFFFFFF)


class MidasR:
    """MIDAS-R relational core with ``rows`` hash functions of ``buckets`` buckets."""

    def __init__(self, *, rows: int = 2, buckets: int = 2719, decay: float = 0.5, tick: float = 60.0,
                 seed: int = 0) -> None:
        if rows < 1 or buckets < 2 or not 0 <= decay < 1 or tick <= 0:
            raise ValueError("MidasR needs rows >= 1, buckets >= 2, 0 <= decay < 1, tick > 0")
        rng = np.random.default_rng(seed)
        self.rows, self.buckets, self.decay, self.tick = rows, buckets, decay, tick
        self._mul = rng.integers(1, 2**62, size=(3, rows), dtype=np.uint64) | np.uint64(1)
        self._cur = np.zeros((3, rows, buckets), np.float64)  # edge, src, dst
        self._tot = np.zeros((3, rows, buckets), np.float64)
        self._t: int | None = None
        self._t0: int | None = None

    def score(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Score a batch of edges in order (each sees the counts of the ones before it).

        Vectorised across ticks: an edge's current count is the decayed state plus
        :math:`\\sum_{j \\le i} decay^{t_i - t_j}` over earlier edges of its bucket — one cumulative
        sum over a span of ticks for all hash rows, instead of a Python loop per tick and row (a
        batch of DARPA's per-minute records spans ~160 ticks). The sum runs over weights
        :math:`decay^{-(t_j - t_0)}` across all buckets, so a span is cut where the weights could
        add up past 2^24: the rounding then stays below ~1e-9 of a count."""
        src = np.asarray(src, np.uint64)
        dst = np.asarray(dst, np.uint64)
        ticks = np.floor(np.asarray(ts, np.float64) / self.tick).astype(np.int64)
        out = np.zeros(len(src), np.float64)
        if len(src) == 0:
            return out
        if self._t is None:
            self._t = self._t0 = int(ticks[0])
        ticks = np.maximum.accumulate(np.maximum(ticks, self._t))  # late events join the current tick
        keys = np.stack([(src << np.uint64(32)) | dst, src, dst])
        span = self._span(3 * self.rows * len(ticks))  # one cumulative sum runs over every hash row
        a = 0
        while a < len(ticks):  # usually one span: the whole batch
            b = int(np.searchsorted(ticks, ticks[a] + span, side="left"))
            out[a:b] = self._score_span(keys[:, a:b], ticks[a:b])
            a = b
        return out

    def _span(self, n: int) -> int:
        """Ticks per vectorised span: n edges of weight up to decay^-(span - 1) sum below 2^24.
        One tick (weights all 1: exact integer sums) when that bound allows no more, or decay is 0."""
        if self.decay == 0:
            return 1
        return max(1, 1 + int((24 - np.log2(max(n, 1))) / np.log2(1.0 / self.decay)))

    def _score_span(self, keys: np.ndarray, ticks: np.ndarray) -> np.ndarray:
        """All three sketches' hash rows at once: row (part, r) owns the bucket ids
        ``[(part * rows + r) * buckets, ...)``, so one sort and one cumulative sum serve them all."""
        n, first, last = keys.shape[1], int(ticks[0]), int(ticks[-1])
        rows = 3 * self.rows
        rel = (ticks - first).astype(np.float64)
        grow = np.tile((1.0 / self.decay) ** rel if self.decay > 0 else np.ones(n), rows)  # decay^-(t_j - t_0)
        shrink = np.tile(self.decay ** rel, rows)  # decay^(t_i - t_0); decay^0 = 1
        carry = self.decay ** (first - self._t)  # the state's counts, decayed to the span's first tick
        with np.errstate(over="ignore"):
            h = ((keys[:, None, :] * self._mul[:, :, None]) >> np.uint64(29)) % np.uint64(self.buckets)
        b = (h.astype(np.int64) + (np.arange(rows).reshape(3, self.rows, 1) * self.buckets)).ravel()
        order = np.argsort(b, kind="stable")  # by bucket, in time order within a bucket
        sb = b[order]
        start = np.r_[True, sb[1:] != sb[:-1]]
        head = np.maximum.accumulate(np.where(start, np.arange(len(b)), 0))
        cw = np.cumsum(grow[order])
        within = cw - np.where(head > 0, cw[head - 1], 0.0)  # Σ over the bucket's edges so far
        cur_state, tot_state = self._cur.reshape(-1), self._tot.reshape(-1)
        cur = np.empty(len(b))
        cur[order] = (cur_state[sb] * carry + within) * shrink[order]
        seen = np.empty(len(b))
        seen[order] = np.arange(len(b)) - head + 1
        cur_est = cur.reshape(3, self.rows, n).min(1)  # count-min: the smallest row, per sketch
        tot_est = (tot_state[b] + seen).reshape(3, self.rows, n).min(1)
        last_of = np.r_[np.flatnonzero(start[1:]), len(b) - 1]  # each bucket's last edge (sorted order)
        cur_state *= self.decay ** (last - self._t)
        cur_state[sb[last_of]] += within[last_of] * self.decay ** (last - first)
        tot_state += np.bincount(b, minlength=len(tot_state))
        self._cur, self._tot = cur_state.reshape(self._cur.shape), tot_state.reshape(self._tot.shape)  # views or copies
        self._t = last
        return _chi2(cur_est, tot_est, (ticks - self._t0 + 1).astype(np.float64)).max(0)


class NodeBurst:
    """Node-level burst score: how far a node's edge count in the current tick is above its
    exponentially weighted history, in standard deviations (max over the two endpoints).

    Per-node state (mean, variance, current count, last tick) lives in arrays indexed by the
    dense node id: 28 bytes per node, O(1) per edge, vectorised per run of equal ticks.
    """

    def __init__(self, *, alpha: float = 0.1, tick: float = 60.0) -> None:
        if not 0 < alpha < 1 or tick <= 0:
            raise ValueError("NodeBurst needs 0 < alpha < 1 and tick > 0")
        self.alpha, self.tick = alpha, tick
        self._mean = np.zeros(0)
        self._var = np.zeros(0)
        self._count = np.zeros(0)
        self._last = np.zeros(0, np.int64)
        self._t: int | None = None

    def score(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Each edge's burst score, in order: an edge counts itself and the edges before it in
        its tick (its source's occurrence before its destination's), as if scored one by one.

        The per-run bookkeeping (each node's count so far within its tick, the nodes a tick
        touches) is computed for the whole batch with two sorts; only the EWMA roll, a per-node
        recurrence across ticks, loops — one short step per tick."""
        src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        n = len(src)
        if n == 0:
            return np.zeros(0)
        self._grow(int(max(src.max(), dst.max())) + 1)
        ticks = np.floor(np.asarray(ts, np.float64) / self.tick).astype(np.int64)
        floor = ticks[0] if self._t is None else self._t
        ticks = np.maximum.accumulate(np.maximum(ticks, floor))  # late events join the current tick
        self._t = int(ticks[-1])
        first_edge = np.flatnonzero(np.r_[True, ticks[1:] != ticks[:-1]])
        runs = len(first_edge)
        nodes = np.column_stack([src, dst]).ravel()  # occurrences in event order
        run = np.repeat(np.cumsum(np.r_[True, ticks[1:] != ticks[:-1]]) - 1, 2)
        g = np.lexsort((np.arange(2 * n), nodes, run))  # by tick run, node, then order
        gn, gr = nodes[g], run[g]
        head = np.r_[True, (gn[1:] != gn[:-1]) | (gr[1:] != gr[:-1])]
        seen = np.empty(2 * n)
        seen[g] = np.arange(2 * n) - np.maximum.accumulate(np.where(head, np.arange(2 * n), 0)) + 1
        starts = np.flatnonzero(head)
        touched, counts, t_run = gn[starts], np.diff(np.r_[starts, 2 * n]).astype(np.float64), gr[starts]
        tb = np.searchsorted(t_run, np.arange(runs + 1))  # each run's slice of ``touched``
        ob = np.r_[2 * first_edge, 2 * n]  # and of the occurrences
        z = np.empty(2 * n)
        for k in range(runs):
            nodes_k, occ = touched[tb[k]:tb[k + 1]], nodes[ob[k]:ob[k + 1]]
            self._roll(nodes_k, int(ticks[first_edge[k]]))
            c = self._count[occ] + seen[ob[k]:ob[k + 1]]
            z[ob[k]:ob[k + 1]] = (c - self._mean[occ]) / np.sqrt(self._var[occ] + 1.0)
            self._count[nodes_k] += counts[tb[k]:tb[k + 1]]
        return z.reshape(n, 2).max(1)

    def _roll(self, nodes: np.ndarray, t: int) -> None:
        """Fold finished ticks of ``nodes`` into their mean/variance (idle ticks count as 0)."""
        old = self._last[nodes] < t
        n = nodes[old]
        if len(n) == 0:
            return
        a = self.alpha
        for_count = self._count[n]
        delta = for_count - self._mean[n]
        self._mean[n] += a * delta
        self._var[n] = (1 - a) * (self._var[n] + a * delta * delta)
        idle = np.maximum(t - self._last[n] - 1, 0)  # empty ticks in between pull the mean down
        self._mean[n] *= (1 - a) ** idle
        self._count[n] = 0.0
        self._last[n] = t

    def _grow(self, n: int) -> None:
        self._mean, self._var, self._count = (grown(a, n) for a in (self._mean, self._var, self._count))
        self._last = grown(self._last, n, -(2**62))


class NodeActivity:
    """Dormancy of an edge's endpoints: ``-(log1p a_u + log1p a_v)``, where ``a_x`` is node x's
    count of earlier edges decayed by ``exp(-Δ / window)`` with Δ counted in *edges*, not seconds.

    An edge clock makes ``window`` mean "the last ~window edges" at any traffic rate. Every edge
    sees the edges before it, including earlier ones of its own batch (that freshness is most
    of the signal), never itself or later ones. Two floats per node, O(1) per edge, vectorised.
    """

    _SLICE = 16  # windows of edges per vectorised step: weights stay ≤ e^16, sums exact to ~1e-5

    def __init__(self, *, window: float = 1000.0) -> None:
        if window <= 0:
            raise ValueError("NodeActivity needs window > 0")
        self.window = window
        self._value = np.zeros(0)  # decayed count at clock ``_at``
        self._at = np.zeros(0)
        self.clock = 0  # edges scored so far

    def score(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Dormancy of each edge (dense ids, in order), then count the edges in."""
        src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
        step = max(1, int(self._SLICE * self.window))
        if len(src) > step:
            return np.concatenate([self.score(src[i:i + step], dst[i:i + step]) for i in range(0, len(src), step)])
        m = len(src)
        if m == 0:
            return np.zeros(0)
        n = int(max(src.max(), dst.max())) + 1
        self._value, self._at = grown(self._value, n), grown(self._at, n)
        loop = src == dst  # a self-loop is one occurrence of its node
        nodes = np.r_[src, dst[~loop]]
        pos = np.r_[np.arange(m), np.flatnonzero(~loop)].astype(np.float64)
        order = np.lexsort((pos, nodes))
        sn, sp = nodes[order], pos[order]
        start = np.r_[True, sn[1:] != sn[:-1]]
        first = np.maximum.accumulate(np.where(start, np.arange(len(sn)), 0))
        w = np.exp((sp - sp[first]) / self.window)  # relative to the node's first occurrence: ≤ e^16
        csum = np.cumsum(w)
        before = (csum - w) - np.where(first > 0, csum[first - 1], 0.0)  # earlier occurrences, same node
        c0 = float(self.clock)
        carried = self._value[sn] * np.exp(-(c0 - self._at[sn]) / self.window)
        act = carried * np.exp(-sp / self.window) + before / w
        occ = np.empty(len(nodes))
        occ[order] = np.log1p(act)
        out = -occ[:m]
        out[~loop] -= occ[m:]
        out[loop] *= 2.0
        ends = np.r_[np.flatnonzero(sn[1:] != sn[:-1]), len(sn) - 1]  # last occurrence per node
        self.clock += m
        tail = np.exp(-(m - sp[ends]) / self.window)
        self._value[sn[ends]] = (act[ends] + 1.0) * tail
        self._at[sn[ends]] = self.clock
        return out

    def level(self, nodes: np.ndarray) -> np.ndarray:
        """Each node's decayed edge count now (after every edge scored so far)."""
        nodes = np.asarray(nodes, np.int64)
        out = np.zeros(len(nodes))
        known = nodes < len(self._value)
        k = nodes[known]
        out[known] = self._value[k] * np.exp(-(self.clock - self._at[k]) / self.window)
        return out


class QuantileCalibrator:
    """Mid-rank empirical CDF over the last ``window`` scores.

    The sorted copy is refreshed every ``refresh`` updates; until ``min_samples`` scores were
    seen it returns 0 (no evidence yet). Ties get their mid-rank, so a constant score maps to
    0.5, never to 1.
    """

    def __init__(self, *, window: int = 20_000, refresh: int = 500, min_samples: int = 1000) -> None:
        self.window, self.refresh, self.min_samples = window, refresh, min_samples
        self._buf = np.zeros(window, np.float64)
        self._n = 0
        self._sorted = np.zeros(0, np.float64)
        self._since = 0

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Remember ``raw``, then calibrate it against the window (which now includes it).

        Including the batch itself keeps the calibration current when raw scores drift
        (MIDAS statistics grow with the tick count), at the price of a batch ranking
        partly against itself.
        """
        raw = np.asarray(raw, np.float64)
        self.update(raw)
        if len(self._sorted) >= self.min_samples:
            lo = np.searchsorted(self._sorted, raw, side="left")
            hi = np.searchsorted(self._sorted, raw, side="right")
            cal = (lo + hi) / (2.0 * len(self._sorted))
        else:
            cal = np.zeros(len(raw))
        return cal

    def update(self, raw: np.ndarray) -> None:
        for i in range(0, len(raw), self.window):
            chunk = raw[i:i + self.window]
            pos = (self._n + np.arange(len(chunk))) % self.window
            self._buf[pos] = chunk
            self._n += len(chunk)
        self._since += len(raw)
        if self._since >= self.refresh or len(self._sorted) < self.min_samples or len(raw) >= self.refresh:
            self._sorted = np.sort(self._buf[: min(self._n, self.window)])
            self._since = 0


DEFAULT_WEIGHTS = {"dormancy": 0.5, "surprise": 0.3, "midas": 0.1, "burst": 0.1}


def parse_weights(text: str) -> dict[str, float]:
    """``"dormancy=0.5,surprise=0.3"`` → weights (components not named get 0)."""
    out = dict.fromkeys(DEFAULT_WEIGHTS, 0.0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep or name.strip() not in out:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"anomaly weight {part!r}: expected NAME=VALUE with NAME in {sorted(DEFAULT_WEIGHTS)} "
                             "and a number") from None
    return out


@dataclass(frozen=True)
class EdgeScores:
    """Per-edge anomaly score in [0, 1] with its calibrated components."""

    score: np.ndarray
    components: dict[str, np.ndarray]


class AnomalyDetector:
    """Score-before-learn edge anomaly detector (MIDAS-R + model surprise, calibrated)."""

    def __init__(self, *, weights: dict[str, float] | None = None, tick: float = 60.0, seed: int = 0,
                 window: int = 2_000, warmup: int = 1000, activity_window: float = 1000.0) -> None:
        self.weights = weights or dict(DEFAULT_WEIGHTS)
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown or not self.weights or min(self.weights.values()) < 0 or sum(self.weights.values()) <= 0:
            raise ValueError(f"anomaly weights need non-negative values for {sorted(DEFAULT_WEIGHTS)}, "
                             f"not all zero; got {self.weights}")
        self.midas = MidasR(tick=tick, seed=seed)
        self.burst = NodeBurst(tick=tick)
        self.activity = NodeActivity(window=activity_window)
        self.warmup = warmup
        self.seen = 0
        half = max(1, warmup // 2)  # components learn on the first half, the combined score on the second
        self._cal = {name: QuantileCalibrator(window=window, refresh=1, min_samples=half) for name in self.weights}
        self._final = QuantileCalibrator(window=window, refresh=1, min_samples=half)

    def score(self, src: np.ndarray, dst: np.ndarray, ts: np.ndarray, prior: np.ndarray) -> EdgeScores:
        """Scores in [0, 1] (0 during the first ``warmup`` edges, while the calibrations learn)."""
        raw = {"midas": np.log1p(self.midas.score(src, dst, ts)),
               "surprise": 1.0 - np.asarray(prior, np.float64),
               "burst": self.burst.score(src, dst, ts),
               "dormancy": self.activity.score(src, dst)}
        comps = {name: self._cal[name](raw[name]) for name in self.weights}
        total = sum(self.weights[k] * comps[k] for k in self.weights) / sum(self.weights.values())
        comps["raw_midas"] = raw["midas"]
        warm = self.seen >= max(1, self.warmup // 2)  # components are calibrated from here on
        self.seen += len(total)
        score = self._final(total) if warm else np.zeros(len(total))
        return EdgeScores(score=score, components=comps)


def _chi2(a: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """MIDAS's statistic per edge; 0 in the first tick (t = 1), where there is no history."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 1, (a - s / t) ** 2 * t * t / (np.maximum(s, 1e-12) * (t - 1)), 0.0)
