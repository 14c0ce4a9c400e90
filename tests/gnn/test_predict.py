"""Exact embedding top-k: centred cosines without a centred copy of the embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gnn.predict
from gnn.graph import DynamicGraph
from gnn.predict import LinkScorer

# "compiled": numba's masking and selection after the matmul ("threaded": its queries split over
# threads); "torch": the path without numba (and on CUDA)
_NUMBA = pytest.mark.skipif(gnn.predict._best_compiled is None, reason="numba is not installed, or LEPTON_NUMBA=0")
PATHS = pytest.mark.parametrize("path", ["torch", pytest.param("compiled", marks=_NUMBA),
                                         pytest.param("threaded", marks=_NUMBA)])


@pytest.fixture
def path_(path: str, monkeypatch: pytest.MonkeyPatch) -> str:
    if path == "torch":
        monkeypatch.setattr(gnn.predict, "_best_compiled", None)
    monkeypatch.setattr(gnn.predict, "_THREADED_DOTS", 0 if path == "threaded" else 1 << 40)
    monkeypatch.setattr("gnn.jit._SPLIT", [2])
    return path


def _brute(h: np.ndarray, graph: DynamicGraph, q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    c = h - h[1:].mean(0)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    sim = c @ c[q]
    banned = {0, q, *graph.out_neighbors_rows(np.array([q]))[1].tolist()}
    order = [int(v) for v in np.argsort(-sim, kind="stable") if int(v) not in banned][:k]
    return np.array(order), 1.0 / (1.0 + np.exp(-5.0 * sim[order]))


@PATHS
@pytest.mark.parametrize("directed", [False, True])
def test_topk_equals_brute_force_centred_cosine_and_skips_self_null_and_neighbours(path_: str,
                                                                                  directed: bool) -> None:
    rng = np.random.default_rng(0)
    g = DynamicGraph(directed=directed, min_compact=500)  # the first add is the base, the later ones a delta
    ids = g.node_ids([f"n{i}" for i in range(300)], create=True)
    pairs = rng.integers(0, 300, (900, 2))
    g.add_edges(ids[pairs[:, 0]], ids[pairs[:, 1]])
    g.remove_edges(ids[pairs[:40, 0]], ids[pairs[:40, 1]])
    g.add_edges(ids[np.r_[5, 5, 17, 299, rng.integers(0, 300, 60)]], ids[rng.integers(0, 300, 64)])
    assert g.delta_arcs and g._in.dead
    h = torch.from_numpy(rng.normal(0.3, 1.0, (g.n_rows, 16)).astype(np.float32))  # a shared offset to centre away
    h[0] = 0.0
    nodes = ids[[0, 5, 17, 299]]
    scorer = LinkScorer(chunk=3)  # two chunks
    for got in (scorer.topk(h, g, nodes, 7), scorer.topk(h, g, nodes, 7, h[1:].mean(0, keepdim=True))):
        for row, q in enumerate(nodes):
            want, p = _brute(h.double().numpy(), g, int(q), 7)
            assert got.partners[row].tolist() == want.tolist()
            assert np.abs(got.probs[row] - p).max() < 1e-5


@PATHS
def test_topk_pads_when_fewer_candidates_than_k(path_: str) -> None:
    g = DynamicGraph()
    ids = g.node_ids(["a", "b", "c"], create=True)
    g.add_edges(ids[[0]], ids[[1]])
    h = torch.randn(g.n_rows, 4)
    got = LinkScorer().topk(h, g, ids[[0]], 5)
    assert got.partners.tolist() == [[int(ids[2]), -1, -1]]  # k capped at the 3 other rows; b is a neighbour
    assert got.probs[0, 1:].tolist() == [0.0, 0.0]
    assert LinkScorer().topk(h, g, ids[[0]], 0).partners.shape == (1, 0)
