"""Node input features: structural features for every node, supplied features where given.

A node's input row is ``[deg(in), deg(out), has_supplied, hashed(k), supplied(f)]``, with the
degree encoding chosen by ``degree``:

- ``"log"``: :math:`\\log(1 + d)`, changes with every edge of the node;
- ``"bucket"`` (default): :math:`\\lfloor \\log_2(1 + d) \\rfloor`, changes only when the degree
  doubles (O(log d) times in a node's life). Every input change must be propagated to the
  node's neighbourhood, so this is what keeps exact incremental updates cheap on
  power-law graphs (measured in the engine benchmark);
- ``"none"``: zeros.


the hashed part is a deterministic pseudo-random vector derived from the node key (same
key, same vector, in every process), so unseen nodes embed inductively; ``supplied``
holds the ``lepton.nodes`` features (zeros until a node has them).
"""

from __future__ import annotations

import hashlib

import numpy as np

from gnn.arrays import grown
from gnn.errors import GraphError
from gnn.graph import DynamicGraph

__all__ = ["NodeFeatures", "hashed_vectors"]

_STRUCT = 3  # in-degree, out-degree, has-supplied flag
_DEGREE = {"log": np.log1p, "bucket": lambda d: np.floor(np.log2(1.0 + d)), "none": np.zeros_like}


class NodeFeatures:
    """Per-node input features, grown as nodes appear."""

    def __init__(self, *, hashed_dim: int = 16, supplied_dim: int = 0, degree: str = "bucket") -> None:
        if hashed_dim < 0 or supplied_dim < 0:
            raise GraphError("feature dimensions must be >= 0")
        if degree not in _DEGREE:
            raise GraphError(f"degree encoding must be one of {sorted(_DEGREE)}, got {degree!r}")
        self.degree = degree
        self.hashed_dim = hashed_dim
        self.supplied_dim = supplied_dim
        self._n = 1  # rows in use (row 0 = null node); the arrays below hold spare capacity
        self._hashed = np.zeros((1, hashed_dim), np.float32)
        self._supplied = np.zeros((1, supplied_dim), np.float32)
        self._has = np.zeros(1, np.bool_)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"_n": len(state["_hashed"])} | state)  # pickles from before the capacity had none

    @property
    def dim(self) -> int:
        return _STRUCT + self.hashed_dim + self.supplied_dim

    def sync(self, graph: DynamicGraph) -> np.ndarray:
        """Create hashed vectors for nodes added to ``graph`` since the last call; returns their ids.

        The arrays double when full, so a batch with a few new nodes costs
        O(new nodes), not a copy of every node's row (64 MB at 1M nodes)."""
        have, n = self._n, graph.n_rows
        if n <= have:
            return np.zeros(0, np.int64)
        self._hashed, self._supplied, self._has = (grown(a, n) for a in (self._hashed, self._supplied, self._has))
        new = np.arange(have, n, dtype=np.int64)
        self._hashed[have:n] = hashed_vectors(graph.keys(new), self.hashed_dim)
        self._n = n
        return new

    def set_supplied(self, nodes: np.ndarray, values: np.ndarray) -> None:
        """Store supplied features for existing dense ids (rows of ``values``)."""
        values = np.asarray(values, np.float32)
        if values.shape != (len(nodes), self.supplied_dim):
            raise GraphError(f"supplied features must be [{len(nodes)}, {self.supplied_dim}], got {values.shape}")
        if len(nodes) and (nodes.min() < 1 or nodes.max() >= self._n):
            raise GraphError("features given for unknown nodes: call sync() after creating them")
        self._supplied[nodes] = values
        self._has[nodes] = True

    def rows(self, graph: DynamicGraph, nodes: np.ndarray) -> np.ndarray:
        """Input feature rows ``[len(nodes), dim]`` for dense ids ``nodes``."""
        indeg = graph.in_degree()[nodes].astype(np.float32)
        outdeg = graph.out_degree()[nodes].astype(np.float32)
        out = np.empty((len(nodes), self.dim), np.float32)
        enc = _DEGREE[self.degree]
        out[:, 0] = enc(indeg)
        out[:, 1] = enc(outdeg)
        out[:, 2] = self._has[nodes]
        out[:, _STRUCT:_STRUCT + self.hashed_dim] = self._hashed[nodes]
        out[:, _STRUCT + self.hashed_dim:] = self._supplied[nodes]
        out[nodes == 0] = 0.0
        return out


def hashed_vectors(keys: list[str], dim: int) -> np.ndarray:
    """Deterministic N(0, 1/dim)-like vectors, one per key (blake2b seed + splitmix64 + Box-Muller)."""
    if dim == 0 or not keys:
        return np.zeros((len(keys), dim), np.float32)
    seeds = np.fromiter((int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
                         for k in keys), dtype=np.uint64, count=len(keys))
    half = (dim + 1) // 2
    ctr = seeds[:, None] + np.arange(1, 2 * half + 1, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15)
    u = (_splitmix64(ctr) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    u1 = np.clip(u[:, :half], 1e-12, 1.0)
    u2 = u[:, half:]
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)], axis=1)[:, :dim]
    return (z / np.sqrt(dim)).astype(np.float32)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
