"""The dgl and torch backends agree with each other and with a dense reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnn.errors import KernelError
from gnn.graph import DynamicGraph
from gnn.kernels import aggregate, dgl_available, resolve_backend, scatter_sum, set_threads, torch_split

BACKENDS = ["torch"] + (["dgl"] if dgl_available() else [])


def _random_graph(seed: int, n: int = 60, m: int = 300) -> DynamicGraph:
    rng = np.random.default_rng(seed)
    g = DynamicGraph(directed=True, min_compact=50)
    for i in range(n):
        g.node_id(f"n{i}", create=True)
    src, dst = rng.integers(1, n + 1, m), rng.integers(1, n // 2, m)  # upper half: empty rows
    g.add_edges(src, dst, rng.uniform(0.1, 2.0, m).astype(np.float32))
    g.remove_edges(src[:20], dst[:20])
    return g


def _dense(g: DynamicGraph) -> np.ndarray:
    a = np.zeros((g.n_rows, g.n_rows), np.float64)
    s, d, w = g.edges()
    a[d, s] = w
    return a


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("op", ["sum", "mean", "wmean"])
@pytest.mark.parametrize("slice_bytes", [1 << 26, 256])  # 256 B: DGL's weighted path in slices of 8 arcs
def test_backends_match_dense_reference(seed: int, op: str, slice_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gnn.kernels._WEIGHT_BYTES", slice_bytes)
    g = _random_graph(seed)
    # a new node with no edges and rows queried in a shuffled subset (partial path)
    g.node_id("fresh", create=True)
    x = torch.randn(g.n_rows + 5, 8)  # capacity beyond n_rows, as the engine's caches have
    a = _dense(g)
    mask = (a != 0).astype(np.float64)
    xn = x[: g.n_rows].double().numpy()
    if op == "sum":
        ref = mask @ xn
    elif op == "mean":
        deg = mask.sum(1, keepdims=True)
        ref = np.divide(mask @ xn, deg, out=np.zeros_like(mask @ xn), where=deg > 0)
    else:
        ws = a.sum(1, keepdims=True)
        ref = np.divide(a @ xn, ws, out=np.zeros_like(a @ xn), where=ws != 0)
    rows = np.random.default_rng(seed).permutation(g.n_rows)[: g.n_rows // 2]
    for backend in BACKENDS:
        full = aggregate(g.in_csr(), x, op, backend).double().numpy()
        assert np.abs(full - ref).max() <= 1e-5, backend
        part = aggregate(g.in_rows(rows), x, op, backend).double().numpy()
        assert np.abs(part - ref[rows]).max() <= 1e-5, backend


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("arcs", [0, 1, 500, 5_000, 300_000])  # 500: under DGL_MIN_ARCS; 300k: over one index_add_ chunk
def test_scatter_sum_matches_a_loop_on_every_backend(arcs: int, weighted: bool) -> None:
    rng = np.random.default_rng(arcs)
    x = torch.randn(40, 8)
    n_out = max(30, arcs // 10)
    src, dst = rng.integers(0, 40, arcs), rng.integers(0, n_out - 5, arcs)  # repeated arcs; 5 outputs never hit
    w = rng.uniform(0.1, 2.0, arcs).astype(np.float32) if weighted else None
    ref = np.zeros((n_out, 8))
    np.add.at(ref, dst, x.double().numpy()[src] * (1.0 if w is None else w[:, None]))
    for backend in BACKENDS:
        got = scatter_sum(x, src, dst, n_out, w, backend)
        assert got.shape == (n_out, 8) and got.dtype == x.dtype
        assert np.abs(got.double().numpy() - ref).max() <= 1e-4, backend
    with pytest.raises(KernelError, match="one entry per arc"):
        scatter_sum(x, src, dst[:-1] if arcs else np.zeros(1, np.int64), n_out)


@pytest.mark.skipif(not dgl_available(), reason="dgl not installed")
def test_dgl_equals_torch_on_a_larger_graph() -> None:
    g = _random_graph(7, n=2000, m=20000)
    x = torch.randn(g.n_rows, 32)
    for op in ("sum", "mean", "wmean"):
        a = aggregate(g.in_csr(), x, op, "dgl")
        b = aggregate(g.in_csr(), x, op, "torch")
        assert (a - b).abs().max().item() <= 1e-5


def test_auto_picks_dgl_on_cpu_for_unweighted_sums_and_bad_names_fail() -> None:
    assert resolve_backend("auto", "cpu") == ("dgl" if dgl_available() else "torch")
    assert resolve_backend("auto", "cpu", weighted=True) == "torch"  # DGL's weighted CPU SpMM is the slower one
    assert resolve_backend("dgl" if dgl_available() else "torch", "cpu", weighted=True) == (
        "dgl" if dgl_available() else "torch")  # an explicit choice stands
    with pytest.raises(KernelError, match="unknown backend"):
        resolve_backend("cusparse", "cpu")  # type: ignore[arg-type]
    g = _random_graph(0)
    with pytest.raises(KernelError, match="unknown aggregation"):
        aggregate(g.in_csr(), torch.zeros(g.n_rows, 2), "max")  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_backend_on_cuda_equals_cpu() -> None:
    g = _random_graph(3, n=5000, m=60000)
    x = torch.randn(g.n_rows, 64)
    for op in ("sum", "mean", "wmean"):
        cpu = aggregate(g.in_csr(), x, op, "torch")
        gpu = aggregate(g.in_csr(), x.cuda(), op, "auto").cpu()
        assert (cpu - gpu).abs().max().item() <= 1e-4


def test_set_threads_reaches_both_backends() -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        if dgl_available():
            import dgl

            assert dgl.utils.get_num_threads() == 1
        from threadpoolctl import threadpool_info

        assert all(p["num_threads"] == 1 for p in threadpool_info())  # NumPy's OpenBLAS included
        with pytest.raises(KernelError, match="threads"):
            set_threads(0)
    finally:
        set_threads(before)


def test_torch_split_splits_only_where_torch_runs_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gnn.jit._SPLIT", [3])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch_split(100, 10, "cpu") == 3 and torch_split(5, 10, "cpu") == 1  # below the threshold: one
        assert torch_split(100, 10, "cuda") == 1
        torch.set_num_threads(2)  # torch's own pool splits its kernels: not again
        assert torch_split(100, 10, "cpu") == 1
    finally:
        torch.set_num_threads(before)
