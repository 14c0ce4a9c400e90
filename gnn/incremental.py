"""Exact incremental GraphSAGE: cache every layer, recompute only the rows a batch changed.

For a batch, let :math:`C_0` be the nodes whose *inputs* changed (new nodes, degree or
supplied-feature changes) and :math:`R` the nodes whose in-neighbourhood changed. Row
:math:`v` of layer :math:`l` depends on :math:`h^{(l-1)}_v`, on :math:`h^{(l-1)}_u` for
:math:`u \\in N_{in}(v)`, and on :math:`N_{in}(v)` itself, so with :math:`D_{l-1}` the rows
of layer :math:`l-1` that changed,

.. math::  A_l = D_{l-1} \\cup N_{out}(D_{l-1}) \\cup R,\\qquad D_0 = C_0 .

Recomputing exactly :math:`A_l` at each layer reproduces a full recomputation (up to
float summation order). Where :math:`|A_l|` exceeds ``full_fraction`` of the graph, the
layer (and every later one) is recomputed in full instead, which is then cheaper.

``prune_eps`` (optional, inexact) keeps in :math:`D_l` only rows whose activation moved by
more than ε (max-abs), the InkStream idea; rows in :math:`R` are always recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gnn.features import NodeFeatures
from gnn.graph import Applied, DynamicGraph
from gnn.kernels import Backend, aggregate, resolve_backend
from gnn.model import GraphSAGE

__all__ = ["Engine", "UpdateStats"]


@dataclass
class UpdateStats:
    """What one :meth:`Engine.update` recomputed."""

    rows_per_layer: list[int] = field(default_factory=list)
    full_layers: int = 0

    @property
    def rows_recomputed(self) -> int:
        return int(sum(self.rows_per_layer))


class Engine:
    """Holds the layer caches for ``graph`` and keeps them equal to a full recomputation."""

    def __init__(self, *, graph: DynamicGraph, features: NodeFeatures, model: GraphSAGE,
                 backend: Backend = "auto", device: str | torch.device = "cpu",
                 full_fraction: float = 0.35, prune_eps: float | None = None) -> None:
        self.graph = graph
        self.features = features
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.backend = resolve_backend(backend, self.device)
        self.full_fraction = full_fraction
        self.prune_eps = prune_eps
        self.h: list[torch.Tensor] = []  # h[0] inputs, h[l] output of layer l
        self.full_refresh()

    # ---- public -------------------------------------------------------------------------
    @property
    def embeddings(self) -> torch.Tensor:
        """Final-layer embeddings, one row per dense id (row 0 = null node, zeros)."""
        return self.h[-1][: self.graph.n_rows]

    @torch.no_grad()
    def full_refresh(self) -> None:
        """Recompute every layer from scratch (start-up, model swap, reference)."""
        g = self.graph
        self.features.sync(g)
        rows = np.arange(g.n_rows, dtype=np.int64)
        h0 = torch.from_numpy(self.features.rows(g, rows)).to(self.device)
        self.h = [h0]
        self._known = g.n_rows
        csr = g.in_csr()
        for li in range(self.model.num_layers):
            prev = self.h[-1]
            agg = aggregate(csr, prev, self.model.config.aggregator, self.backend)
            out = self.model.layer(li, prev, agg)
            out[0] = 0.0
            self.h.append(out)

    @torch.no_grad()
    def update(self, changes: list[Applied], feature_nodes: np.ndarray | None = None) -> UpdateStats:
        """Bring the caches up to date after ``changes`` (and supplied-feature updates)."""
        g = self.graph
        self.features.sync(g)
        new_nodes = np.arange(self._known, g.n_rows, dtype=np.int64)
        self._known = g.n_rows
        parts_in = [new_nodes] + [c.degree_changed for c in changes] + [c.new_nodes for c in changes]
        if feature_nodes is not None:
            parts_in.append(np.asarray(feature_nodes, np.int64))
        structural = _union([c.rows_changed for c in changes] + [new_nodes])
        dirty = _union(parts_in)
        self._grow(g.n_rows)
        stats = UpdateStats()
        if len(dirty) == 0 and len(structural) == 0:
            return stats
        self.h[0][dirty] = torch.from_numpy(self.features.rows(g, dirty)).to(self.device)
        n = g.n_rows
        full = False
        for li in range(self.model.num_layers):
            prev, cur = self.h[li], self.h[li + 1]
            if not full:
                rows = _union([dirty, g.out_neighbors_of(dirty), structural])
                rows = rows[rows > 0]
                full = len(rows) > self.full_fraction * n
            if full:
                rows = np.arange(n, dtype=np.int64)
                csr = g.in_csr()
                stats.full_layers += 1
            else:
                csr = g.in_rows(rows)
            agg = aggregate(csr, prev, self.model.config.aggregator, self.backend)
            idx = torch.from_numpy(rows).to(self.device)
            new = self.model.layer(li, prev[idx], agg)
            if self.prune_eps is not None and not full:
                moved = (new - cur[idx]).abs().amax(dim=1) > self.prune_eps
                dirty = _union([rows[moved.cpu().numpy()], structural])
            else:
                dirty = rows
            cur[idx] = new
            cur[0] = 0.0
            stats.rows_per_layer.append(len(rows))
        return stats

    def reference(self) -> torch.Tensor:
        """A fresh full recomputation of the final layer (for tests and benchmarks)."""
        other = Engine.__new__(Engine)
        other.__dict__.update(self.__dict__)
        other.h = []
        Engine.full_refresh(other)
        return other.h[-1]

    # ---- helpers --------------------------------------------------------------------------
    def _grow(self, n_rows: int) -> None:
        have = self.h[0].shape[0]
        if n_rows <= have:
            return
        cap = max(n_rows, int(have * 1.5) + 16)
        self.h = [torch.cat([t, t.new_zeros((cap - have, t.shape[1]))]) for t in self.h]


def _union(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate(parts).astype(np.int64, copy=False))
