"""The incremental engine equals a full recomputation after any sequence of changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st

import gnn.incremental as incremental
from gnn.features import NodeFeatures, hashed_vectors
from gnn.graph import DynamicGraph
from gnn.incremental import Engine
from gnn.kernels import dgl_available
from gnn.model import GraphSAGE, ModelConfig

step = st.one_of(
    st.tuples(st.just("add"), st.lists(st.tuples(st.integers(0, 25), st.integers(0, 25),
                                                 st.floats(0.125, 3.0, width=32)), min_size=1, max_size=8)),
    st.tuples(st.just("remove"), st.lists(st.tuples(st.integers(0, 25), st.integers(0, 25), st.just(1.0)),
                                          min_size=1, max_size=4)),
    st.tuples(st.just("features"), st.lists(st.tuples(st.integers(0, 25), st.integers(0, 25), st.just(1.0)),
                                            min_size=1, max_size=3)),
    st.tuples(st.just("nodes"), st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.just(1.0)),
                                         min_size=1, max_size=3)),  # new ones isolated until an add reaches them
)


def _engine(directed: bool, aggregator: str, backend: str, full_fraction: float, device: str = "cpu") -> Engine:
    g = DynamicGraph(directed=directed, min_compact=5, compact_ratio=0.3)
    feats = NodeFeatures(hashed_dim=6, supplied_dim=3)
    model = GraphSAGE(ModelConfig(in_dim=feats.dim, hidden=16, out=8, layers=2, aggregator=aggregator, seed=1))
    return Engine(graph=g, features=feats, model=model, backend=backend, full_fraction=full_fraction, device=device)


def _run(eng: Engine, seq: list) -> None:
    g = eng.graph
    for kind, items in seq:
        src = g.node_ids([f"v{a}" for a, _, _ in items], create=kind != "remove")
        dst = g.node_ids([f"v{b}" for _, b, _ in items], create=kind != "remove")
        if kind == "add":
            changes = [g.add_edges(src, dst, np.array([w for *_, w in items], np.float32))]
            eng.update(changes)
        elif kind == "nodes":  # what a processor does before scoring a batch: embed its new nodes alone
            eng.update([])
        elif kind == "remove":
            known = (src > 0) & (dst > 0)
            eng.update([g.remove_edges(src[known], dst[known])])
        else:
            eng.features.sync(g)
            nodes = np.unique(src)
            eng.features.set_supplied(nodes, np.random.default_rng(len(nodes)).normal(size=(len(nodes), 3)))
            eng.update([], feature_nodes=nodes)


@settings(max_examples=220, deadline=None)
@given(st.lists(step, min_size=1, max_size=12), st.booleans(), st.sampled_from(["mean", "wmean", "sum"]),
       st.sampled_from([0.0, 0.03, 1.1]), st.sampled_from(["torch"] + (["dgl"] if dgl_available() else [])),
       st.sampled_from([0.0, 1.25, 1e9]))
@example(  # found by hypothesis: summed float32 weights, then a remove; the weight sum must cancel to exactly 0
    seq=[("add", [(0, 0, 1.0)]), ("add", [(0, 0, 1.0), (0, 0, 1.0), (0, 0, 1.2568113803863525)]),
         ("remove", [(0, 0, 1.0)])], directed=False, aggregator="wmean", full_fraction=0.35, backend="torch",
    direct=1.25)
def test_incremental_equals_full_recompute(seq: list, directed: bool, aggregator: str, full_fraction: float,
                                           backend: str, direct: float) -> None:
    """``direct``: arcs per reached row up to which deltas go straight into the sums (0: always
    through the per-batch buffer, 1e9: always straight)."""
    eng = _engine(directed, aggregator, backend, full_fraction)
    eng.mean_embedding()  # the running sum starts here and follows every change below
    saved, incremental._DIRECT_RATIO = incremental._DIRECT_RATIO, direct
    try:
        _run(eng, seq)
    finally:
        incremental._DIRECT_RATIO = saved
    got = eng.embeddings
    ref = eng.reference()[: eng.graph.n_rows]
    assert (got - ref).abs().max().item() <= 1e-4
    if eng.graph.n_rows > 1:
        assert (eng.mean_embedding() - got[1:].mean(0, keepdim=True)).abs().max().item() <= 1e-5


@pytest.mark.skipif(not dgl_available(), reason="dgl not installed")
def test_incremental_on_dgl_backend_equals_full() -> None:
    rng = np.random.default_rng(0)
    eng = _engine(False, "mean", "dgl", 0.35)
    g = eng.graph
    for _ in range(30):
        a = g.node_ids([f"v{i}" for i in rng.integers(0, 400, 50)], create=True)
        b = g.node_ids([f"v{i}" for i in rng.integers(0, 400, 50)], create=True)
        eng.update([g.add_edges(a, b)])
    assert (eng.embeddings - eng.reference()[: g.n_rows]).abs().max().item() <= 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("aggregator", ["mean", "wmean"])
def test_engine_on_cuda_equals_cpu(aggregator: str) -> None:
    engines = [_engine(False, aggregator, "torch", 0.3, device) for device in ("cpu", "cuda")]
    for eng in engines:
        g, rng = eng.graph, np.random.default_rng(0)
        for _ in range(20):
            a = g.node_ids([f"v{i}" for i in rng.integers(0, 300, 40)], create=True)
            b = g.node_ids([f"v{i}" for i in rng.integers(0, 300, 40)], create=True)
            eng.update([g.add_edges(a, b, rng.uniform(0.5, 2.0, 40).astype(np.float32))])
    cpu, gpu = engines
    assert gpu.embeddings.device.type == "cuda"
    assert (gpu.embeddings.cpu() - cpu.embeddings).abs().max().item() <= 1e-4
    assert (gpu.embeddings - gpu.reference()[: gpu.graph.n_rows]).abs().max().item() <= 1e-4


def test_partial_update_touches_fewer_rows_than_the_graph() -> None:
    eng = _engine(False, "mean", "torch", 0.35)
    g = eng.graph
    chain = g.node_ids([f"c{i}" for i in range(200)], create=True)
    eng.update([g.add_edges(chain[:-1], chain[1:])])
    stats = eng.update([g.add_edges(chain[:1], chain[5:6])])
    assert stats.full_layers == 0
    assert 0 < stats.rows_recomputed < g.num_nodes
    assert (eng.embeddings - eng.reference()[: g.n_rows]).abs().max().item() <= 1e-4


def test_prune_mode_skips_small_changes_with_bounded_error() -> None:
    exact, pruned = (_engine(False, "mean", "torch", 1.1) for _ in range(2))
    pruned.prune_eps = 2e-2
    rng = np.random.default_rng(1)
    for eng in (exact, pruned):
        g = eng.graph
        r = np.random.default_rng(1)
        a = g.node_ids([f"v{i}" for i in r.integers(0, 300, 3000)], create=True)
        b = g.node_ids([f"v{i}" for i in r.integers(0, 300, 3000)], create=True)
        eng.update([g.add_edges(a, b)])
    rows_exact = rows_pruned = 0
    for _ in range(10):
        pair = [f"v{i}" for i in rng.integers(0, 300, 2)]
        for eng in (exact, pruned):
            ids = eng.graph.node_ids(pair)
            st_ = eng.update([eng.graph.add_edges(ids[:1], ids[1:])])
            if eng is exact:
                rows_exact += st_.rows_recomputed
            else:
                rows_pruned += st_.rows_recomputed
    assert rows_pruned < rows_exact
    err = (pruned.embeddings - exact.embeddings).abs().max().item()
    assert err < 0.05


def test_hashed_features_are_deterministic_and_distinct() -> None:
    a = hashed_vectors(["x", "y", "x"], 16)
    assert np.array_equal(a[0], a[2]) and not np.allclose(a[0], a[1])
    assert abs(float(hashed_vectors([str(i) for i in range(4000)], 16).std()) - 0.25) < 0.02


def test_mean_embedding_follows_small_and_large_changes() -> None:
    """The running sum is corrected by the rows a small batch rewrites, and summed afresh after
    a batch that rewrites most rows; both equal the mean of the embeddings."""
    eng = _engine(False, "mean", "torch", 0.3)
    g, rng = eng.graph, np.random.default_rng(2)
    ids = g.node_ids([f"v{i}" for i in range(2000)], create=True)
    eng.update([g.add_edges(ids[rng.integers(0, 2000, 6000)], ids[rng.integers(0, 2000, 6000)])])
    eng.mean_embedding()
    for n_edges in (3, 3, 5000, 3):
        stats = eng.update([g.add_edges(ids[rng.integers(0, 2000, n_edges)], ids[rng.integers(0, 2000, n_edges)])])
        corrected = eng.total is not None
        assert corrected == (n_edges == 3 and stats.rows_per_layer[-1] < 500)  # few rows: corrected in place
        want = eng.embeddings[1:].mean(0, keepdim=True)
        assert (eng.mean_embedding() - want).abs().max().item() <= 1e-6


def test_new_isolated_nodes_are_embedded_alone_and_exactly() -> None:
    eng = _engine(False, "mean", "torch", 1.1)
    g = eng.graph
    _run(eng, [("add", [(a, (a * 7 + 3) % 20, 1.0) for a in range(20)])])
    eng.mean_embedding()  # the running sum exists: the new rows must correct it
    g.node_ids(["new-a", "new-b"], create=True)
    stats = eng.update([])
    assert stats.arcs_per_layer == [0, 0] and stats.rows_per_layer == [2, 2] and len(stats.moved) == 2
    ref = eng.reference()[: g.n_rows]
    assert (eng.embeddings - ref).abs().max() <= 1e-5
    assert (eng.mean_embedding() - ref[1:].mean(0, keepdim=True)).abs().max() <= 1e-6
    a, b = g.node_ids(["new-a", "v1"])  # then edges reach them, and another new node: the general path
    g.node_ids(["new-c"], create=True)
    c = g.node_ids(["new-c"])[0]
    eng.update([g.add_edges(np.array([a, c]), np.array([b, a]), np.ones(2, np.float32))])
    assert (eng.embeddings - eng.reference()[: g.n_rows]).abs().max() <= 1e-5


def test_caches_grow_in_place_into_their_reserve_and_stay_exact() -> None:
    eng = _engine(False, "mean", "torch", 0.15)
    g = eng.graph
    g.add_edges(*(g.node_ids([f"v{i}" for i in range(n, n + 40)], create=True) for n in (0, 1)))
    eng.full_refresh()  # a start-up: the caches move into allocations of twice their rows
    rows, base = eng.h[-1].shape[0], eng.h[-1]._base
    assert base is not None and base.shape[0] >= 2 * rows
    grown = 0
    for step_ in range(12):  # a few new nodes at a time: views of the same allocations, then one move
        new = g.node_ids([f"w{step_}_{j}" for j in range(8)], create=True)
        eng.update([g.add_edges(new, g.node_ids([f"v{j}" for j in range(8)]))])
        grown += eng.h[-1]._base.data_ptr() != base.data_ptr()
        base = eng.h[-1]._base
        assert all(t._base is not None and t.shape[0] == g.n_rows for t in eng.h + eng.p + eng.a)
        assert float((eng.reference() - eng.embeddings).abs().max()) <= 1e-4
    assert grown == 1  # ~42 rows reserve ~100: 7 steps fit, the 8th moves (into twice its rows), the rest fit


@pytest.mark.parametrize("aggregator", ["mean", "wmean"])
def test_full_passes_in_row_slices_on_split_threads_equal_one_pass(monkeypatch: pytest.MonkeyPatch,
                                                                    aggregator: str) -> None:
    """Where torch runs one thread (the worker), a full pass runs its row slices side by side:
    the same sums, bit for bit, as one pass, at start-up and at a full layer mid-stream."""
    parts: list[int] = []
    real = incremental.in_threads
    monkeypatch.setattr(incremental, "in_threads", lambda fn, n, k: parts.append(k) or real(fn, n, k))
    monkeypatch.setattr("gnn.jit._SPLIT", [3])  # three slices, whatever the cores
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engines = []
        for work in (1 << 60, 0):  # one slice, then three
            monkeypatch.setattr(incremental, "_THREADED_WORK", work)
            eng = _engine(False, aggregator, "auto", 0.0)  # full fraction 0: every layer a full pass
            g, rng = eng.graph, np.random.default_rng(7)
            ids = lambda k: g.node_ids([f"v{i}" for i in rng.integers(0, 300, k)], create=True)  # noqa: E731
            g.add_edges(ids(2000), ids(2000), rng.uniform(0.5, 2.0, 2000).astype(np.float32))
            eng.full_refresh()
            eng.update([g.add_edges(ids(50), ids(50), rng.uniform(0.5, 2.0, 50).astype(np.float32))])
            engines.append(eng)
    finally:
        torch.set_num_threads(before)
    assert 1 in parts and 3 in parts  # both ways ran
    one, three = engines
    assert all(torch.equal(a, b) for a, b in zip(one.p, three.p))
    assert float((three.reference() - three.embeddings).abs().max()) <= 1e-4


def test_a_split_full_pass_is_taken_at_a_smaller_share_of_its_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The full/scatter threshold counts the threads a full pass's slices run on (the scatter
    runs on one): with two slices, a layer goes full at half the fanout."""
    monkeypatch.setattr(incremental, "_THREADED_WORK", 0)
    monkeypatch.setattr("gnn.jit._SPLIT", [2])

    def full_layers(threads: int, fraction: float) -> int:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            eng = _engine(False, "mean", "torch", fraction)
            g, rng = eng.graph, np.random.default_rng(3)
            ids = lambda k: g.node_ids([f"v{i}" for i in rng.integers(0, 400, k)], create=True)  # noqa: E731
            g.add_edges(ids(3000), ids(3000))
            eng.full_refresh()
            return eng.update([g.add_edges(ids(40), ids(40))]).full_layers
        finally:
            torch.set_num_threads(before)

    got = {f: (full_layers(1, f), full_layers(2, f)) for f in (0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8)}
    assert all(split >= whole for split, whole in got.values())
    assert any(split > whole for split, whole in got.values()), got
