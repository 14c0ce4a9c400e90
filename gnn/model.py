"""GraphSAGE encoder (mean aggregator by default), written layer-by-layer for partial updates.

Layer :math:`l` computes, for node :math:`v`,

.. math::
    h_v^{(l)} = \\sigma\\big(W_{self}^{(l)} h_v^{(l-1)} + W_{neigh}^{(l)}\\,
    \\mathrm{agg}_{u \\in N_{in}(v)} h_u^{(l-1)} + b^{(l)}\\big)

with :math:`\\sigma` = ReLU on hidden layers and the identity on the last one. Because a
layer only needs a row's own previous activation and its aggregate, the incremental
engine can recompute any subset of rows exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gnn.graph import CSR
from gnn.kernels import Backend, Op, aggregate, pad_rows

__all__ = ["ModelConfig", "SAGELayer", "GraphSAGE"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the encoder; ``in_dim`` comes from :class:`gnn.features.NodeFeatures`."""

    in_dim: int
    hidden: int = 64
    out: int = 64
    layers: int = 2
    aggregator: Op = "mean"
    seed: int = 0


class SAGELayer(nn.Module):
    """One GraphSAGE layer: ``act(lin_self(h) + lin_neigh(agg) )``."""

    def __init__(self, in_dim: int, out_dim: int, *, activate: bool) -> None:
        super().__init__()
        self.lin_self = nn.Linear(in_dim, out_dim, bias=True)
        self.lin_neigh = nn.Linear(in_dim, out_dim, bias=False)
        self.activate = activate

    def forward(self, h_self: torch.Tensor, h_agg: torch.Tensor) -> torch.Tensor:
        out = self.lin_self(h_self) + self.lin_neigh(h_agg)
        return torch.relu(out) if self.activate else out

    def __repr__(self) -> str:
        return f"SAGELayer({self.lin_self.in_features}, {self.lin_self.out_features}, relu={self.activate})"


class GraphSAGE(nn.Module):
    """Stack of :class:`SAGELayer`; :meth:`layer` applies one of them to given rows."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.layers < 1:
            raise ValueError("a GraphSAGE encoder needs at least one layer")
        self.config = config
        dims = [config.in_dim] + [config.hidden] * (config.layers - 1) + [config.out]
        gen = torch.Generator().manual_seed(config.seed)
        self.layers = nn.ModuleList(
            SAGELayer(dims[i], dims[i + 1], activate=i < config.layers - 1) for i in range(config.layers))
        with torch.no_grad():
            for p in self.parameters():  # seeded init: the same config gives the same weights
                if p.dim() == 2:
                    bound = (6.0 / (p.shape[0] + p.shape[1])) ** 0.5
                    p.copy_(torch.rand(p.shape, generator=gen) * 2 * bound - bound)
                else:
                    p.zero_()

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer(self, index: int, h_self: torch.Tensor, h_agg: torch.Tensor) -> torch.Tensor:
        return self.layers[index](h_self, h_agg)

    @torch.no_grad()
    def full(self, csr: CSR, x: torch.Tensor, backend: Backend = "auto") -> torch.Tensor:
        """The textbook full forward pass over every row (the reference the engine must equal).

        ``csr`` is the graph's full in-neighbour matrix, ``x`` one input row per graph row;
        row 0, the null node, stays zero.
        """
        h = x
        for layer in self.layers:
            h = layer(h, pad_rows(aggregate(csr, h, self.config.aggregator, backend), h.shape[0]))
            h[0] = 0.0
        return h
