"""Exact incremental GraphSAGE: cache every layer's two halves, propagate deltas along arcs.

A layer computes :math:`h_{l+1}[v] = \\sigma(a_l[v] + p_l[v] / d[v])` with the *self* half
:math:`a_l[v] = W^{self}_l h_l[v] + b_l` and the *projected neighbour sum*
:math:`p_l[v] = \\sum_{u \\in N_{in}(v)} c_{uv} W^{neigh}_l h_l[u]` (float64; :math:`c_{uv}` = 1
for ``sum``/``mean``, the edge weight for ``wmean``; :math:`d` = degree, weight sum, or 1 for
``sum``). Projecting before aggregating (as PyG's and DGL's SAGEConv do when it is cheaper)
makes a row whose only change is its neighbour sum cost O(d) to refresh, with no matrix
product: on a power-law graph most rows a batch reaches are of that kind (out-neighbours of
a hub whose activation moved). After the graph changed, for each layer in order:

1. *structure*: for every arc whose coefficient changed by :math:`\\Delta c`,
   :math:`p_l[v] \\mathrel{+}= \\Delta c \\cdot W^{neigh}_l h_l^{old}[u]`;
2. *values*: for every row :math:`u` whose :math:`h_l` changed by :math:`\\Delta_u`,
   :math:`a_l[u]` is recomputed and :math:`p_l[v] \\mathrel{+}= c_{uv} W^{neigh}_l \\Delta_u` for
   its out-neighbours :math:`v` (new graph);
3. recompute :math:`h_{l+1}` for rows whose :math:`h_l`, :math:`p_l` or :math:`d` changed, and
   keep only those whose output actually changed for the next layer.

Steps 1 + 2 give exactly :math:`W^{neigh}_l \\sum_{u \\in N_{new}(v)} c^{new}_{uv} h^{new}_l[u]`,
so the caches equal a full recomputation (:meth:`GraphSAGE.full`) up to float rounding. The
work is the arcs touched, not the rows touched: a hub that gains one neighbour costs O(1) at
its own row, and O(degree) only when its activation changes at a layer whose output feeds
another one. When a layer's scatter would touch more than ``full_fraction`` of the work of a
full pass (its arcs plus :data:`_ROW_ARCS` per row: the full pass also projects and re-outputs
every row, and hands every row to the next layer), that layer's sums are recomputed with one
SpMM instead (DGL or torch kernels).

``prune_eps`` (optional, inexact, the InkStream idea) skips step 2 for rows whose
activation moved by at most ε (max-abs); the benchmark reports the error it causes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gnn.features import NodeFeatures
from gnn.graph import CSR, Applied, DynamicGraph, distinct
from gnn.jit import in_threads
from gnn.kernels import (Backend, aggregate, as_tensor, resolve_backend, row_weight_sums, torch_split,
                         scatter_sum)
from gnn.model import GraphSAGE

__all__ = ["Engine", "UpdateStats"]

_DIRECT_RATIO = 1.25  # at most this many arcs per reached row: scatter straight into the sums, no buffer
_ROW_ARCS = 16  # a row costs a full pass about as much as this many scattered arcs (see README, session 13)
_THREADED_WORK = 1 << 16  # a full pass's work (arcs + _ROW_ARCS per row) from which its slices run side by side
_RESUM_FRACTION = 0.25  # more final rows rewritten than this share: the mean's sum is redone, not corrected


@dataclass
class UpdateStats:
    """What one :meth:`Engine.update` recomputed."""

    rows_per_layer: list[int] = field(default_factory=list)  # output rows recomputed per layer
    arcs_per_layer: list[int] = field(default_factory=list)  # arcs scattered per layer input
    full_layers: int = 0
    moved: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # final-layer rows rewritten

    @property
    def rows_recomputed(self) -> int:
        return int(sum(self.rows_per_layer))


class Engine:
    """Holds layer caches for ``graph`` and keeps them equal to a full recomputation."""

    def __init__(self, *, graph: DynamicGraph, features: NodeFeatures, model: GraphSAGE,
                 backend: Backend = "auto", device: str | torch.device = "cpu",
                 full_fraction: float = 0.15, prune_eps: float | None = None) -> None:
        self.graph = graph
        self.features = features
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.backend_choice = backend
        self.backend = resolve_backend(backend, self.device, self.op == "wmean")
        self.full_fraction = full_fraction
        self.prune_eps = prune_eps
        self.h: list[torch.Tensor] = []  # h[0] inputs, h[l] output of layer l (float32)
        self.a: list[torch.Tensor] = []  # a[l]: self half of layer l, W_self h[l] + b (float32)
        self.p: list[torch.Tensor] = []  # p[l]: projected neighbour sums of h[l] (float64)
        self.den = torch.zeros(0, dtype=torch.float64)
        self.total: torch.Tensor | None = None  # running float64 sum of the final rows 1.. (for the mean)
        self.full_refresh()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"total": None} | state)  # a snapshot from before the running sum has none
        if self.h and self.device.type == "cpu":
            self._reserve()  # a snapshot holds the caches' rows only

    # ---- public -------------------------------------------------------------------------
    @property
    def embeddings(self) -> torch.Tensor:
        """Final-layer embeddings, one row per dense id (row 0 = null node, zeros)."""
        return self.h[-1][: self.graph.n_rows]

    def mean_embedding(self) -> torch.Tensor:
        """``embeddings[1:].mean(0)`` as ``[1, d]`` float32 (the centring of pair cosines), from a
        running sum that each update corrects by the rows it rewrites: O(rows changed), not
        O(N·d) per call (~18 ms per call at 1M nodes on 2 cores)."""
        if self.total is None:
            self.total = _column_sum(self.h[-1][1:self.graph.n_rows])
        return (self.total / max(self.graph.n_rows - 1, 1)).float()[None]

    @property
    def op(self) -> str:
        return self.model.config.aggregator

    @torch.no_grad()
    def full_refresh(self) -> None:
        """Rebuild every cache from scratch (start-up, model swap)."""
        g = self.graph
        self.features.sync(g)
        n = g.n_rows
        csr = g.in_csr()
        self.den = torch.from_numpy(self._denominators(csr)).to(self.device)
        self.h = [torch.from_numpy(self.features.rows(g, np.arange(n, dtype=np.int64))).to(self.device)]
        self.a, self.p = [], []
        for li, layer in enumerate(self.model.layers):
            h = self.h[li]
            self.a.append(layer.lin_self(h))
            self.p.append(h.new_empty((n, layer.lin_neigh.weight.shape[0]), dtype=torch.float64))
            self._full_sums(li, csr, h, self.p[li])
            out = self._output(li, torch.arange(n, device=self.device))
            out[0] = 0.0
            self.h.append(out)
        self._known = n
        self.total = None  # recomputed on the next mean_embedding()
        self._reserve()

    def to(self, device: str) -> "Engine":
        """Move the model and every cache to ``device`` (a loaded snapshot may run elsewhere)."""
        self.device = torch.device(device)
        self.model = self.model.to(self.device)
        self.backend = resolve_backend(self.backend_choice, self.device, self.op == "wmean")
        self.h, self.a, self.p = ([t.to(self.device) for t in ts] for ts in (self.h, self.a, self.p))
        self.den = self.den.to(self.device)
        self.total = None
        return self

    @torch.no_grad()
    def update(self, changes: list[Applied], feature_nodes: np.ndarray | None = None) -> UpdateStats:
        """Bring the caches up to date after ``changes`` (and supplied-feature updates)."""
        g = self.graph
        self.features.sync(g)
        n = g.n_rows
        self._grow(n)
        new_nodes = np.arange(self._known, n, dtype=np.int64)
        self._known = n
        if not changes and feature_nodes is None and self._isolated(new_nodes):
            return self._embed_isolated(new_nodes)
        a_r, a_c, coef = self._arc_changes(changes)
        if len(a_r):
            self.den.index_add_(0, as_tensor(a_r, self.device), as_tensor(coef, self.device))  # degree or weight sum
        parts = [new_nodes] + [c.degree_changed for c in changes]
        if feature_nodes is not None:
            parts.append(np.asarray(feature_nodes, np.int64))
        rows = _union(parts, n)
        rows = rows[rows > 0]
        vals = torch.from_numpy(self.features.rows(g, rows)).to(self.device)
        stats = UpdateStats()
        struct = _union([a_r, new_nodes], n)  # recomputed at every layer: degree or arcs changed, or new
        for li in range(self.model.num_layers):
            # rows of layer li+1 to recompute: their own input, their neighbour sum or their degree changed
            rows, scattered, full = self._propagate(li, rows, vals, a_r, a_c, coef, struct)
            stats.arcs_per_layer.append(scattered)
            stats.full_layers += int(full)
            stats.rows_per_layer.append(len(rows))
            vals = self._output_all(li, n) if full else self._output(li, as_tensor(rows, self.device))
        if full:  # every row 1.. rewritten: the running sum is redone on the next call
            self.total = None
            self.h[-1][1:n] = vals
        elif len(rows):
            idx = as_tensor(rows, self.device)
            if self.total is not None:  # correct the running sum, or drop it where
                if len(rows) > _RESUM_FRACTION * n:  # summing afresh (on the next call) is cheaper
                    self.total = None
                else:
                    self.total += _column_sum(vals) - _column_sum(self.h[-1].index_select(0, idx))
            self.h[-1].index_copy_(0, idx, vals)
        stats.moved = rows
        return stats

    def reference(self) -> torch.Tensor:
        """The textbook full forward pass on the current graph (for tests and benchmarks)."""
        g = self.graph
        x = torch.from_numpy(self.features.rows(g, np.arange(g.n_rows, dtype=np.int64))).to(self.device)
        return self.model.full(g.in_csr(), x, self.backend)

    # ---- one layer ----------------------------------------------------------------------------
    def _propagate(self, li: int, rows: np.ndarray, vals: torch.Tensor, a_r: np.ndarray, a_c: np.ndarray,
                   coef: np.ndarray, struct: np.ndarray) -> tuple[np.ndarray, int, bool]:
        """Write the new ``h[li]`` values of ``rows`` and bring ``a[li]`` and ``p[li]`` up to date.

        Returns the rows whose layer ``li + 1`` output must be recomputed, the number of
        arcs scattered, and whether the sums were recomputed in full instead.
        """
        h, p, dev, layer = self.h[li], self.p[li], self.device, self.model.layers[li]
        if len(a_r):  # 1. structure, with the old values
            p.index_add_(0, as_tensor(a_r, dev),
                         _project(layer, h[as_tensor(a_c, dev)]) * as_tensor(coef, dev)[:, None])
        idx = as_tensor(rows, dev)
        delta = vals - h[idx]
        h.index_copy_(0, idx, vals)
        moved = delta.abs().amax(dim=1) > (self.prune_eps or 0.0)  # exact mode: any change at all
        rows, delta, idx = rows[moved.cpu().numpy()], delta[moved], idx[moved]
        self.a[li].index_copy_(0, idx, layer.lin_self(h[idx]))
        n = self.graph.n_rows
        fanout = int(self.graph.out_degree()[rows].sum())  # arcs a scatter would touch
        work = self.graph.num_arcs + _ROW_ARCS * n  # a full pass's, split over its threads (the scatter is not)
        if fanout > self.full_fraction * work / torch_split(work, _THREADED_WORK, self.device):
            self._full_sums(li, self.graph.in_csr(), h, p)
            return np.arange(1, n, dtype=np.int64), fanout, True
        pos, targets, weight = self.graph.out_arcs(rows)
        hit = _union([targets], n)
        if len(hit) and len(targets) <= _DIRECT_RATIO * len(hit):  # 2. values, to out-neighbours; few repeat:
            dz = _project(layer, delta)[as_tensor(pos, dev)]  # one float64 add per arc (1,000 uniform inserts: ~10 % faster)
            if self.op == "wmean":
                dz *= as_tensor(weight, dev).double()[:, None]
            p.index_add_(0, as_tensor(targets, dev), dz)
        elif len(hit):  # 2. values, to out-neighbours: summed per batch in a compact buffer, then added once
            slot = np.empty(n, np.int64)
            slot[hit] = np.arange(len(hit))
            dz = _project(layer, delta).float()  # a batch's increments are small: float32 sums them exactly enough
            buf = scatter_sum(dz, pos, slot[targets], len(hit), weight if self.op == "wmean" else None, self.backend)
            p.index_add_(0, as_tensor(hit, dev), buf.double())
        nxt = _union([rows, hit, struct], n)
        return nxt[nxt > 0], len(targets), False

    def _isolated(self, rows: np.ndarray) -> bool:
        """Whether no arc touches ``rows`` (new nodes before their edges are applied)."""
        g = self.graph
        return not (np.asarray(g.in_degree())[rows].any() or np.asarray(g.out_degree())[rows].any())

    def _embed_isolated(self, rows: np.ndarray) -> UpdateStats:
        """Each layer's rows for nodes without arcs: their own input alone (an empty neighbour
        sum), and no other row reads them. What :meth:`_propagate` computes for them, without
        its arc lookups and unions: a processor embeds a batch's new nodes this way before
        scoring their edges (DARPA, 300-event batches: 1.29 -> 0.73 ms a call)."""
        layers = self.model.num_layers
        if not len(rows):
            return UpdateStats(rows_per_layer=[0] * layers, arcs_per_layer=[0] * layers, moved=rows)
        stats = UpdateStats(moved=rows)
        idx = as_tensor(rows, self.device)
        vals = torch.from_numpy(self.features.rows(self.graph, rows)).to(self.device)
        for li, layer in enumerate(self.model.layers):
            self.h[li].index_copy_(0, idx, vals)
            self.a[li].index_copy_(0, idx, layer.lin_self(vals))
            vals = self._output(li, idx)
            stats.rows_per_layer.append(len(rows))
            stats.arcs_per_layer.append(0)
        if self.total is not None:  # new rows were zeros: their values are all the sum gains
            self.total += _column_sum(vals)
        self.h[-1].index_copy_(0, idx, vals)
        return stats

    # ---- helpers --------------------------------------------------------------------------
    def _output(self, li: int, idx: torch.Tensor) -> torch.Tensor:
        """Layer ``li``'s output for rows ``idx`` from the cached halves: act(a + p / den).

        Gathered copies are updated in place: each pass over the rows costs a memory sweep.
        """
        p = self.p[li].index_select(0, idx).float()  # float32 from here: mixed-precision ops are ~3x slower
        den = self.den.index_select(0, idx) if self.op != "sum" else None
        return _finish(p, self.a[li].index_select(0, idx), den, self.model.layers[li].activate)

    def _output_all(self, li: int, n: int) -> torch.Tensor:
        """:meth:`_output` for rows ``1..n-1`` after a full pass: read as slices (no gathers),
        side by side where torch runs one thread on a CPU, with the same arithmetic (equal
        bits). 100k rows on 2 cores: ~40 ms gathered, ~6 here."""
        p, a, den = self.p[li], self.a[li], self.den if self.op != "sum" else None
        out = a.new_empty((n - 1, a.shape[1]))
        activate = self.model.layers[li].activate

        def run(lo: int, hi: int) -> None:
            with torch.no_grad():
                rows = slice(lo + 1, hi + 1)
                _finish(out[lo:hi].copy_(p[rows]), a[rows], None if den is None else den[rows], activate)

        in_threads(run, n - 1, torch_split(_ROW_ARCS * n, _THREADED_WORK, out.device))
        return out

    def _full_sums(self, li: int, csr: CSR, h: torch.Tensor, out: torch.Tensor) -> None:
        """Write ``p[li]`` for every row of ``csr`` into ``out[:csr.n_rows]``: per slice of rows,
        one SpMM on the configured kernel backend and the projection, copied into the float64
        sums (the float32 product carries the same rounding; increments stay float64:
        ``_project``). The slices run side by side where torch runs one thread on a CPU (the
        worker; SpMM and product release the GIL): 100k rows, 1M arcs, 2 cores: ~65 → ~25 ms
        (~43 in one slice: no padded float64 temporary, no second copy)."""
        weight = self.model.layers[li].lin_neigh.weight.T
        op = "wsum" if self.op == "wmean" else "sum"

        def run(lo: int, hi: int) -> None:
            with torch.no_grad():  # grad mode is per thread: the pool's threads start with it on
                out[lo:hi].copy_(aggregate(csr.slice_rows(lo, hi), h, op, self.backend) @ weight)

        in_threads(run, csr.n_rows, torch_split(csr.nnz + _ROW_ARCS * csr.n_rows, _THREADED_WORK, h.device))

    def _denominators(self, csr: CSR) -> np.ndarray:
        return row_weight_sums(csr) if self.op == "wmean" else np.diff(csr.indptr).astype(np.float64)

    def _arc_changes(self, changes: list[Applied]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not changes:
            z = np.zeros(0, np.int64)
            return z, z, np.zeros(0, np.float64)
        r = np.concatenate([c.arcs.rows for c in changes])
        c_ = np.concatenate([c.arcs.cols for c in changes])
        coef = np.concatenate([(c.arcs.weight if self.op == "wmean" else c.arcs.count.astype(np.float64))
                               for c in changes])
        keep = coef != 0
        return r[keep], c_[keep], coef[keep]

    def _grow(self, n_rows: int) -> None:
        have = self.h[0].shape[0]
        if n_rows <= have:
            return
        # on a CPU the caches are views with room behind them: extend them row by row (a cap
        # beyond the rows needed would write that many rows now); elsewhere, by half at a time
        cap = n_rows if self.device.type == "cpu" else max(n_rows, int(have * 1.5) + 16)
        self.h, self.p = [_extend(t, cap, 0.0) for t in self.h], [_extend(t, cap, 0.0) for t in self.p]
        self.a = [_extend(t, cap, layer.lin_self.bias)  # a new row's self half: the bias
                  for t, layer in zip(self.a, self.model.layers)]
        self.den = _extend(self.den, cap, 0.0)

    def _reserve(self) -> None:
        """Move every cache into an allocation with room to grow (:func:`_extend`): at start-up
        and after a load, so that the stream's first new nodes do not copy them all."""
        self.h, self.p, self.a = ([_extend(t, t.shape[0], 0.0, fresh=True) for t in ts] for ts in (self.h, self.p, self.a))
        self.den = _extend(self.den, self.den.shape[0], 0.0, fresh=True)


def _extend(t: torch.Tensor, rows: int, fill: float | torch.Tensor, *, fresh: bool = False) -> torch.Tensor:
    """``t`` with rows up to ``rows``, the new ones set to ``fill``. On a CPU a cache is a view of
    an allocation of twice the rows it had when it last moved: growing within it writes only the
    new rows, where copying every cache at once had stalled the stream (100k nodes: 367 ms in
    the worker at its first new node; seconds at 1M). The untouched rest is address space,
    not memory (pages are backed when first written). ``fresh``: move into a new allocation."""
    have = t.shape[0]
    base = t._base if t._base is not None else t
    if fresh or t.device.type != "cpu" or base.data_ptr() != t.data_ptr() or base.shape[0] < rows:
        base = t.new_empty((2 * rows + 16 if t.device.type == "cpu" else rows, *t.shape[1:]))
        base[:have] = t
    out = base[:rows]
    out[have:] = fill
    return out


def _finish(out: torch.Tensor, a: torch.Tensor, den: torch.Tensor | None, activate: bool) -> torch.Tensor:
    """A layer's output, in place in ``out`` (its rows' neighbour sums, float32): divided by the
    denominators ``den`` (None for ``sum``; an empty row aggregates to 0), plus the self half
    ``a``, activated. The gathered rows of :meth:`Engine._output` and the slices of
    :meth:`Engine._output_all` share it, so both give the same bits."""
    if den is not None:
        out.mul_(torch.where(den > 0, 1.0 / den, 0.0).float()[:, None])
    out.add_(a)
    return out.relu_() if activate else out


def _project(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``W_neigh x`` in float64: the long-lived sums take exact increments."""
    return x.double() @ layer.lin_neigh.weight.double().T


def _column_sum(x: torch.Tensor) -> torch.Tensor:
    """Float64 sum over the rows of ``x``. NumPy's on a CPU: torch's reduction across rows
    runs ~2.5x slower (100k x 64: 13.6 vs 5.5 ms)."""
    if x.device.type == "cpu":
        return torch.from_numpy(x.numpy().sum(0, dtype=np.float64))
    return x.sum(0, dtype=torch.float64)


def _union(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Sorted union of id arrays in [0, n)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros(0, np.int64)
    return distinct(np.concatenate(parts).astype(np.int64, copy=False), n)
