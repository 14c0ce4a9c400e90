"""DynamicGraph against a dict-of-dicts reference, through adds, removes and compactions."""

from __future__ import annotations

import pickle

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
    assert g.num_arcs == len(ref)  # kept as a count, not summed from degrees
    # edge_lookup of every pair, base and delta
    ids = np.arange(1, g.n_rows)
    u, v = np.repeat(ids, len(ids)), np.tile(ids, len(ids))
    want = np.array([(int(g.key(a)), int(g.key(b))) in ref for a, b in zip(u, v)])
    weights = np.array([ref.get((int(g.key(a)), int(g.key(b))), 0.0) for a, b in zip(u, v)])
    exists, w = g.edge_lookup(u, v)
    assert (exists == want).all()
    assert np.allclose(w, weights, atol=1e-4)
    if graph_module._lookup_compiled is not None:  # that was the compiled lookup: the NumPy one agrees
        compiled, graph_module._lookup_compiled = graph_module._lookup_compiled, None
        try:
            exists2, w2 = g.edge_lookup(u, v)
        finally:
            graph_module._lookup_compiled = compiled
        assert np.array_equal(exists2, exists) and np.array_equal(w2, w)
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


def test_sorted_delta_lookup_follows_adds_removes_and_compaction() -> None:
    g = DynamicGraph(directed=True, min_compact=10_000)  # arcs stay in the delta until in_csr()
    ids = g.node_ids([f"n{i}" for i in range(40)], create=True)
    u, v = np.repeat(ids, len(ids)), np.tile(ids, len(ids))
    g.add_edges(ids[:10], ids[10:20])
    assert g.edge_lookup(u, v)[0].sum() == 10  # builds the index
    one = np.broadcast_to(ids[:1], (len(ids),))  # a read-only view (compiled loops refuse those): copied
    assert g.edge_lookup(one, ids)[0].sum() == 1
    g.add_edges(ids[20:30], ids[30:40], np.full(10, 2.0, np.float32))  # new delta keys
    exists, w = g.edge_lookup(ids[20:30], ids[30:40])
    assert exists.all() and (w == 2.0).all()
    g.remove_edges(ids[:5], ids[10:15])  # delta keys leave
    assert not g.edge_lookup(ids[:5], ids[10:15])[0].any() and g.edge_lookup(u, v)[0].sum() == 15
    assert (g.delta_arcs, g.compactions) == (15, 0)
    g.in_csr()  # compaction: everything moves to the base
    assert g.delta_arcs == 0 and g.compactions >= 1
    g.add_edges(ids[:5], ids[10:15])
    assert g.edge_lookup(u, v)[0].sum() == 20


def test_snapshot_of_the_old_delta_format_still_loads() -> None:
    """A graph pickled before session 11 held its delta in insertion order with a dict index."""
    g = DynamicGraph(directed=True, min_compact=10**9)
    ids = g.node_ids([f"n{i}" for i in range(30)], create=True)
    g.add_edges(ids[:10], ids[10:20])
    g.in_csr()  # these ten in the base
    g.add_edges(ids[20:30], ids[:10], np.arange(1, 11, dtype=np.float32))  # the delta, out of key order
    g.add_edges(ids[[25, 3]], ids[[5, 4]])  # 25 -> 5 is reweighted
    g.remove_edges(ids[[22]], ids[[2]])
    want = _arcs(g)
    assert len(g._in.d_keys) == 10  # the delta (one arc reweighted, one removed) is there to convert
    state = pickle.loads(pickle.dumps(g))
    for adj in (state._in, state._out):  # rewrite each direction's delta the way it used to be held
        old = adj.__dict__
        keys, w = old.pop("d_keys"), old.pop("d_w")
        del old["d_deg"]
        perm = np.random.default_rng(0).permutation(len(keys))
        dead = np.array([_key(5, 6)])  # a removed arc stays in the arrays, flagged dead
        rows = np.r_[keys[perm] >> 32, dead >> 32]
        old.update(d_key={int(k): i for i, k in enumerate(keys[perm])}, d_row=_grow(rows),
                   d_col=_grow(np.r_[keys[perm], dead] & 0xFFFFFFFF), d_w=_grow(np.r_[w[perm], 9.0]),
                   d_alive=_grow(np.r_[np.ones(len(keys), bool), False]), _d_version=3)
    back = pickle.loads(pickle.dumps(state))
    assert _arcs(back) == want
    assert back.num_arcs == len(want)
    nbrs, w = back.out_neighbors(ids[20])
    assert nbrs.tolist() == [ids[0]] and w.tolist() == [1.0]
    back.add_edges(ids[[20, 29]], ids[[0, 9]])  # still updates: one reweight, one revive-free add
    assert back.edge_weight(ids[20], ids[0]) == 2.0 and back.edge_weight(ids[29], ids[9]) == 11.0
    back.in_csr()  # compaction folds the converted delta into the base
    assert _arcs(back) == want | {(ids[20], ids[0]): 2.0, (ids[29], ids[9]): 11.0}


def _arcs(g: DynamicGraph) -> dict[tuple[int, int], float]:
    """Every arc as (src, dst) -> weight, read without compacting."""
    return {(int(s), v): w for v in range(1, g.n_rows) for s, w in zip(*map(np.ndarray.tolist, g.in_neighbors(v)))}


def _key(row: int, col: int) -> int:
    return row << 32 | col


def _grow(values: np.ndarray) -> graph_module._Grow:
    g = graph_module._Grow()
    g.a, g.n = np.concatenate([values, np.zeros(5, values.dtype)]), len(values)
    return g


def test_first_unlinked_keeps_each_rows_order_and_pads() -> None:
    g = DynamicGraph(directed=True)
    a, b, c, d, e = g.node_ids(list("abcde"), create=True)
    g.add_edges(np.array([a]), np.array([b]))  # a -> b linked; b -> a not (directed)
    cand = np.array([[b, a, -1, d, c, e], [a, a, 0, c, -1, -1]])
    got = g.first_unlinked(np.array([a, b]), cand, 2)
    assert got.tolist() == [[d, c], [a, a]]  # a: b linked, itself and pads skipped; b: a twice, as given
    assert g.first_unlinked(np.array([a]), np.array([[b, -1]]), 2).tolist() == [[-1, -1]]
