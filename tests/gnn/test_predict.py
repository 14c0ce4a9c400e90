"""Exact embedding top-k: centred cosines without a centred copy of the embeddings."""

from __future__ import annotations

import numpy as np
import torch

from gnn.graph import DynamicGraph
from gnn.predict import LinkScorer


def _brute(h: np.ndarray, graph: DynamicGraph, q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    c = h - h[1:].mean(0)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    sim = c @ c[q]
    banned = {0, q, *graph.out_neighbors_rows(np.array([q]))[1].tolist()}
    order = [int(v) for v in np.argsort(-sim, kind="stable") if int(v) not in banned][:k]
    return np.array(order), 1.0 / (1.0 + np.exp(-5.0 * sim[order]))


def test_topk_equals_brute_force_centred_cosine_and_skips_self_null_and_neighbours() -> None:
    rng = np.random.default_rng(0)
    g = DynamicGraph()
    ids = g.node_ids([f"n{i}" for i in range(300)], create=True)
    pairs = rng.integers(0, 300, (900, 2))
    g.add_edges(ids[pairs[:, 0]], ids[pairs[:, 1]])
    h = torch.from_numpy(rng.normal(0.3, 1.0, (g.n_rows, 16)).astype(np.float32))  # a shared offset to centre away
    h[0] = 0.0
    nodes = ids[[0, 5, 17, 299]]
    scorer = LinkScorer(chunk=3)  # two chunks
    for got in (scorer.topk(h, g, nodes, 7), scorer.topk(h, g, nodes, 7, h[1:].mean(0, keepdim=True))):
        for row, q in enumerate(nodes):
            want, p = _brute(h.double().numpy(), g, int(q), 7)
            assert got.partners[row].tolist() == want.tolist()
            assert np.abs(got.probs[row] - p).max() < 1e-5


def test_topk_pads_when_fewer_candidates_than_k() -> None:
    g = DynamicGraph()
    ids = g.node_ids(["a", "b", "c"], create=True)
    g.add_edges(ids[[0]], ids[[1]])
    h = torch.randn(g.n_rows, 4)
    got = LinkScorer().topk(h, g, ids[[0]], 5)
    assert got.partners.tolist() == [[int(ids[2]), -1, -1]]  # k capped at the 3 other rows; b is a neighbour
    assert got.probs[0, 1:].tolist() == [0.0, 0.0]
