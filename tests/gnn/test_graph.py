"""DynamicGraph against a dict-of-dicts reference, through adds, removes and compactions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import gnn.graph as graph_module
from gnn.errors import GraphError
from gnn.graph import DynamicGraph, normalise_key

ops = st.lists(
    st.tuples(st.sampled_from(["add", "add", "add", "remove"]), st.integers(1, 12), st.integers(1, 12),
              st.floats(-3, 3, allow_nan=False, width=32)),
    min_size=1, max_size=60)


def _reference(seq: list, directed: bool) -> dict[tuple[int, int], float]:
    ref: dict[tuple[int, int], float] = {}
    for op, u, v, w in seq:
        keys = [(u, v)] if directed or u == v else [(u, v), (v, u)]
        for k in keys:
            if op == "add":
                ref[k] = ref.get(k, 0.0) + np.float32(w)
            else:
                ref.pop(k, None)
    return ref


def _apply(seq: list, directed: bool, batch: int) -> DynamicGraph:
    g = DynamicGraph(directed=directed, min_compact=3, compact_ratio=0.2)
    for i in range(0, len(seq), batch):
        chunk = seq[i:i + batch]
        # one batch = one op kind at a time, in order (the processor groups runs the same way)
        j = 0
        while j < len(chunk):
            k = j
            while k < len(chunk) and chunk[k][0] == chunk[j][0]:
                k += 1
            part = chunk[j:k]
            ids = [(g.node_id(u, create=True), g.node_id(v, create=True)) for _, u, v, _ in part]
            s = np.array([a for a, _ in ids]); d = np.array([b for _, b in ids])
            if chunk[j][0] == "add":
                g.add_edges(s, d, np.array([p[3] for p in part], np.float32))
            else:
                g.remove_edges(s, d)
            j = k
    return g


@settings(max_examples=150, deadline=None)
@given(ops, st.booleans(), st.integers(1, 7))
def test_graph_matches_reference(seq: list, directed: bool, batch: int) -> None:
    g = _apply(seq, directed, batch)
    ref = _reference(seq, directed)
    got: dict[tuple[int, int], float] = {}
    for v in range(1, g.n_rows):
        src, w = g.in_neighbors(v)
        for s, ww in zip(src.tolist(), w.tolist()):
            got[(int(g.key(s)), int(g.key(v)))] = ww
    assert set(got) == set(ref)
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-4)
    # degrees and counts
    indeg = g.in_degree()
    for v in range(1, g.n_rows):
        assert indeg[v] == sum(1 for (a, b) in ref if b == int(g.key(v)))
    n_edges = len(ref) if directed else len({tuple(sorted(k)) for k in ref})
    assert g.num_edges == n_edges
    # out-neighbours are the transpose
    for u in range(1, g.n_rows):
        dst, _ = g.out_neighbors(u)
        assert sorted(int(g.key(x)) for x in dst) == sorted(b for (a, b) in ref if a == int(g.key(u)))
    # edge_lookup of every pair, through the delta's dict and through its sorted-key search
    ids = np.arange(1, g.n_rows)
    u, v = np.repeat(ids, len(ids)), np.tile(ids, len(ids))
    want = np.array([(int(g.key(a)), int(g.key(b))) in ref for a, b in zip(u, v)])
    weights = np.array([ref.get((int(g.key(a)), int(g.key(b))), 0.0) for a, b in zip(u, v)])
    for threshold in (10**9, 0):
        saved, graph_module._DICT_LOOKUPS = graph_module._DICT_LOOKUPS, threshold
        try:
            exists, w = g.edge_lookup(u, v)
        finally:
            graph_module._DICT_LOOKUPS = saved
        assert (exists == want).all()
        assert np.allclose(w, weights, atol=1e-4)
    # full CSR equals the partial one
    full = g.in_csr()
    assert full.nnz == len(ref)


def test_repeated_add_sums_weight_and_remove_missing_is_counted() -> None:
    g = DynamicGraph(directed=True)
    a, b = g.node_id("a", create=True), g.node_id("b", create=True)
    r1 = g.add_edges(np.array([a]), np.array([b]), np.array([2.0]))
    r2 = g.add_edges(np.array([a]), np.array([b]), np.array([0.5]))
    assert (r1.added, r2.added, r2.reweighted) == (1, 0, 1)
    assert g.edge_weight(a, b) == pytest.approx(2.5)
    r3 = g.remove_edges(np.array([b]), np.array([a]))
    assert (r3.removed, r3.missing_removes) == (0, 1)
    assert g.num_edges == 1


def test_keys_normalise_and_bad_input_is_refused() -> None:
    assert normalise_key(5) == "5" and normalise_key("5") == "5"
    with pytest.raises(GraphError):
        normalise_key(True)
    g = DynamicGraph()
    with pytest.raises(GraphError, match="dense ids"):
        g.add_edges(np.array([1]), np.array([2]))
    g.node_id("x", create=True)
    with pytest.raises(GraphError, match="finite"):
        g.add_edges(np.array([1]), np.array([1]), np.array([np.inf]))


def test_rows_with_repeats_include_delta_arcs() -> None:
    g = DynamicGraph(min_compact=10**9)  # keep new arcs in the delta part
    g.node_ids(["a", "b", "c", "d"], create=True)
    g.add_edges(np.array([1, 1, 2]), np.array([2, 3, 4]))
    csr = g.in_rows(np.array([1, 3, 1, 1], np.int64))
    got = [sorted(csr.indices[csr.indptr[i]:csr.indptr[i + 1]].tolist()) for i in range(4)]
    assert got == [[2, 3], [1], [2, 3], [2, 3]]


def test_sorted_delta_lookup_follows_adds_removes_and_compaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph_module, "_DICT_LOOKUPS", 0)  # always the sorted-key search
    g = DynamicGraph(directed=True, min_compact=10_000)  # arcs stay in the delta until in_csr()
    ids = g.node_ids([f"n{i}" for i in range(40)], create=True)
    u, v = np.repeat(ids, len(ids)), np.tile(ids, len(ids))
    g.add_edges(ids[:10], ids[10:20])
    assert g.edge_lookup(u, v)[0].sum() == 10  # builds the index
    g.add_edges(ids[20:30], ids[30:40], np.full(10, 2.0, np.float32))  # new delta keys
    exists, w = g.edge_lookup(ids[20:30], ids[30:40])
    assert exists.all() and (w == 2.0).all()
    g.remove_edges(ids[:5], ids[10:15])  # delta keys leave
    assert not g.edge_lookup(ids[:5], ids[10:15])[0].any() and g.edge_lookup(u, v)[0].sum() == 15
    g.in_csr()  # compaction: everything moves to the base
    g.add_edges(ids[:5], ids[10:15])
    assert g.edge_lookup(u, v)[0].sum() == 20
