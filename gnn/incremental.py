"""Exact incremental GraphSAGE: cache every layer and its neighbour sums, propagate deltas.

For each layer input :math:`h_l` the engine keeps the neighbour sums
:math:`S_l[v] = \\sum_{u \\in N_{in}(v)} c_{uv} h_l[u]` (float64; :math:`c_{uv}` = 1 for
``sum``/``mean``, the edge weight for ``wmean``) and the denominators (degree or weight
sum). Layer :math:`l+1` of row :math:`v` is then a cheap function of :math:`h_l[v]` and
:math:`S_l[v]`. After the graph changed, for each layer in order:

1. *structure*: for every arc whose coefficient changed by :math:`\\Delta c`,
   :math:`S_l[v] \\mathrel{+}= \\Delta c \\cdot h_l^{old}[u]`;
2. *values*: for every row :math:`u` whose :math:`h_l` changed by :math:`\\Delta_u`,
   :math:`S_l[v] \\mathrel{+}= c_{uv} \\Delta_u` for its out-neighbours :math:`v` (new graph);
3. recompute layer :math:`l+1` for rows whose :math:`h_l` or :math:`S_l` changed, and keep
   only those whose output actually changed for the next layer.

Steps 1 + 2 give exactly :math:`\\sum_{u \\in N_{new}(v)} c^{new}_{uv} h^{new}_l[u]`, so the
caches equal a full recomputation (up to float summation order). The work is the arcs
touched, not the rows touched: a hub that gains one neighbour costs O(1) at its own row,
and O(degree) only when its activation changes at a layer whose output feeds another one.
When a layer's scatter would touch more than ``full_fraction`` of all arcs (a scatter-add
costs several times an SpMM per arc here), that layer's sums are recomputed with one SpMM
instead (DGL or torch kernels), and every later layer in full too.

``prune_eps`` (optional, inexact, the InkStream idea) skips step 2 for rows whose
activation moved by at most ε (max-abs); the benchmark reports the error it causes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gnn.features import NodeFeatures
from gnn.graph import CSR, Applied, DynamicGraph, distinct
from gnn.kernels import Backend, aggregate, resolve_backend, row_weight_sums
from gnn.model import GraphSAGE

__all__ = ["Engine", "UpdateStats"]

_SCATTER_CHUNK = 1 << 18  # arcs per index_add_ call (bounds the temporary [chunk, d] buffer)


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
                 full_fraction: float = 0.1, prune_eps: float | None = None) -> None:
        self.graph = graph
        self.features = features
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.backend_choice = backend
        self.backend = resolve_backend(backend, self.device)
        self.full_fraction = full_fraction
        self.dense_fraction = 0.25  # above this share of rows, recompute a layer's output for all rows
        self.prune_eps = prune_eps
        self.h: list[torch.Tensor] = []  # h[0] inputs, h[l] output of layer l
        self.s: list[torch.Tensor] = []  # s[l]: float64 neighbour sums of h[l]
        self.den = torch.zeros(0, dtype=torch.float64)
        self.full_refresh()

    # ---- public -------------------------------------------------------------------------
    @property
    def embeddings(self) -> torch.Tensor:
        """Final-layer embeddings, one row per dense id (row 0 = null node, zeros)."""
        return self.h[-1][: self.graph.n_rows]

    @property
    def op(self) -> str:
        return self.model.config.aggregator

    @torch.no_grad()
    def full_refresh(self) -> None:
        """Recompute every layer and every sum from scratch (start-up, model swap, reference)."""
        g = self.graph
        self.features.sync(g)
        n = g.n_rows
        csr = g.in_csr()
        self.den = torch.from_numpy(self._denominators(csr)).to(self.device)
        self.h = [torch.from_numpy(self.features.rows(g, np.arange(n, dtype=np.int64))).to(self.device)]
        self.s = []
        for li in range(self.model.num_layers):
            self.s.append(self._full_sums(csr, self.h[li]))
            out = self.model.layer(li, self.h[li], self._agg(li, slice(0, n)))
            out[0] = 0.0
            self.h.append(out)
        self._known = n

    def to(self, device: str) -> "Engine":
        """Move the model and every cache to ``device`` (a loaded snapshot may run elsewhere)."""
        self.device = torch.device(device)
        self.model = self.model.to(self.device)
        self.backend = resolve_backend(self.backend_choice, self.device)
        self.h = [t.to(self.device) for t in self.h]
        self.s = [t.to(self.device) for t in self.s]
        self.den = self.den.to(self.device)
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
        a_r, a_c, coef = self._arc_changes(changes)
        if len(a_r):
            self.den.index_add_(0, _t(a_r, self.device), _t(coef, self.device))  # degree or weight sum
        parts = [new_nodes] + [c.degree_changed for c in changes]
        if feature_nodes is not None:
            parts.append(np.asarray(feature_nodes, np.int64))
        rows = _union(parts, n)
        rows = rows[rows > 0]
        vals = torch.from_numpy(self.features.rows(g, rows)).to(self.device)
        stats = UpdateStats()
        struct = _union([a_r], n)
        for li in range(self.model.num_layers):
            # rows of layer li+1 to recompute: their own input or their neighbour sum changed
            rows, scattered, full = self._propagate(li, rows, vals, a_r, a_c, coef, struct)
            stats.arcs_per_layer.append(scattered)
            stats.full_layers += int(full)
            stats.rows_per_layer.append(len(rows))
            if len(rows) > self.dense_fraction * n:  # most rows: contiguous whole-table pass, no gathers
                rows = np.arange(1, n, dtype=np.int64)
                vals = self.model.layer(li, self.h[li][1:n], self._agg(li, slice(1, n)))
                continue
            idx = _t(rows, self.device)
            vals = self.model.layer(li, self.h[li][idx], self._agg(li, idx))
        if len(rows):
            last = self.h[-1]
            last[_t(rows, self.device)] = vals
        stats.moved = rows
        return stats

    def reference(self) -> torch.Tensor:
        """A fresh full recomputation of the final layer (for tests and benchmarks)."""
        other = Engine.__new__(Engine)
        other.__dict__.update(self.__dict__)
        Engine.full_refresh(other)
        return other.h[-1]

    # ---- one layer ----------------------------------------------------------------------------
    def _propagate(self, li: int, rows: np.ndarray, vals: torch.Tensor, a_r: np.ndarray, a_c: np.ndarray,
                   coef: np.ndarray, struct: np.ndarray) -> tuple[np.ndarray, int, bool]:
        """Write the new ``h[li]`` values of ``rows`` and bring ``s[li]`` up to date.

        Returns the rows whose layer ``li + 1`` output must be recomputed, the number of
        arcs scattered, and whether the sums were recomputed in full instead.
        """
        h, s, dev = self.h[li], self.s[li], self.device
        if len(a_r):  # 1. structure, with the old values
            s.index_add_(0, _t(a_r, dev), h[_t(a_c, dev)].double() * _t(coef, dev)[:, None])
        idx = _t(rows, dev)
        delta = vals - h[idx]
        h[idx] = vals
        moved = delta.abs().amax(dim=1) > (self.prune_eps or 0.0)  # exact mode: any change at all
        rows, delta = rows[moved.cpu().numpy()], delta[moved]
        n = self.graph.n_rows
        fanout = int(self.graph.out_degree()[rows].sum())  # arcs a scatter would touch
        if fanout > self.full_fraction * max(self.graph.num_arcs, 1):
            self.s[li][:n] = self._full_sums(self.graph.in_csr(), h)[:n]
            return np.arange(1, n, dtype=np.int64), fanout, True
        pos, targets, weight = self._out_arcs(rows)
        for lo in range(0, len(targets), _SCATTER_CHUNK):  # 2. values, to out-neighbours
            part = slice(lo, lo + _SCATTER_CHUNK)
            upd = delta[_t(pos[part], dev)].double()
            if self.op == "wmean":
                upd *= _t(weight[part], dev)[:, None]
            s.index_add_(0, _t(targets[part], dev), upd)
        nxt = _union([rows, targets, struct], n)
        return nxt[nxt > 0], len(targets), False

    # ---- helpers --------------------------------------------------------------------------
    def _agg(self, li: int, idx: torch.Tensor | slice) -> torch.Tensor:
        """Aggregate of layer ``li``'s input for rows ``idx``: the sum, or sum / denominator."""
        s = self.s[li][idx]
        if self.op == "sum":
            return s.float()
        d = self.den[idx]
        inv = torch.where(d == 0, torch.zeros_like(d), 1.0 / d)  # an empty row aggregates to 0
        return (s * inv[:, None]).float()

    def _full_sums(self, csr: CSR, h: torch.Tensor) -> torch.Tensor:
        """``s`` for every row with one SpMM on the configured kernel backend."""
        out = aggregate(csr, h, "wsum" if self.op == "wmean" else "sum", self.backend).double()
        if out.shape[0] < h.shape[0]:
            out = torch.cat([out, out.new_zeros((h.shape[0] - out.shape[0], out.shape[1]))])
        return out

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

    def _out_arcs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position in ``rows``, out-neighbour, arc weight) for every out-arc of ``rows``."""
        if len(rows) == 0:
            z = np.zeros(0, np.int64)
            return z, z, np.zeros(0, np.float64)
        csr = self.graph.out_rows(rows)
        pos = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(csr.indptr))
        return pos, csr.indices.astype(np.int64, copy=False), csr.weights.astype(np.float64)

    def _grow(self, n_rows: int) -> None:
        have = self.h[0].shape[0]
        if n_rows <= have:
            return
        cap = max(n_rows, int(have * 1.5) + 16)

        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, t.new_zeros((cap - have, *t.shape[1:]))])

        self.h = [pad(t) for t in self.h]
        self.s = [pad(t) for t in self.s]
        self.den = pad(self.den)


def _t(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


def _union(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Sorted union of id arrays in [0, n)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros(0, np.int64)
    return distinct(np.concatenate(parts).astype(np.int64, copy=False), n)
