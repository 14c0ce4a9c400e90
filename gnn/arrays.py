"""Array helpers shared by per-node state (features, anomaly statistics, pair features)."""

from __future__ import annotations

import numpy as np

__all__ = ["grown"]


def grown(a: np.ndarray, n: int, fill: float = 0.0) -> np.ndarray:
    """``a`` with at least ``n`` entries (rows), new ones ``fill``: per-node state grows with the
    graph, by doubling, so growth costs O(1) amortised per node."""
    if n <= len(a):
        return a
    out = np.full((max(n, 2 * len(a)),) + a.shape[1:], fill, a.dtype)
    out[: len(a)] = a
    return out
