"""Neighbour aggregation kernels: one interface, two backends.

``aggregate(csr, x, op)`` returns, for every row ``i`` of ``csr`` (a subset of graph rows
or all of them), an aggregate of ``x`` over the row's in-neighbours:

- ``sum``   :math:`\\sum_{u \\in N(i)} x_u`
- ``wsum``  :math:`\\sum_{u \\in N(i)} w_{ui} x_u`
- ``mean``  :math:`\\frac{1}{|N(i)|} \\sum_{u \\in N(i)} x_u` (0 for an empty row)
- ``wmean`` :math:`\\sum_u w_{ui} x_u / \\sum_u w_{ui}` (0 where the weights sum to 0)

Backends:

- ``dgl``: DGL's GSpMM on a graph built straight from our CSR as DGL's ``csc`` format
  (no format conversion). Unweighted ``sum``/``mean`` use ``copy_lhs`` on DGL's libxsmm CPU
  kernel; ``wsum``/``wmean`` use ``u_mul_e`` with the weight expanded to the feature width,
  slice by slice, which keeps them on libxsmm too (see ``_dgl_weighted``).
- ``torch``: ``torch.sparse_csr_tensor @ x`` with int32 indices; runs on CUDA.
- ``auto``: DGL on CPU for ``sum``/``mean``, torch for the weighted ops (DGL's weighted CPU
  SpMM cannot match torch: see ``_dgl_weighted``); torch on CUDA unless the installed DGL was
  built with CUDA.

``scatter_sum(x, src, dst, n_out)`` is the same sum over an arbitrary arc list (no CSR):
``out[dst[i]] += w[i] * x[src[i]]``. The incremental engine pushes changed activations to
their out-neighbours with it; DGL's kernel runs it in parallel after its own (parallel) sort
into CSC, ~3.5x torch's serial ``index_add_`` on a million arcs. Below ``DGL_MIN_ARCS`` arcs
the ``dgl`` backend takes torch's path: building DGL's block costs ~0.7 ms a call, 5-20x
``index_add_`` on a few hundred arcs (a small batch's scatter).
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import numpy as np
import torch

from gnn.errors import KernelError
from gnn.graph import CSR
from gnn.jit import split

# torch 2.2 warns on every CSR construction that the API is "beta"; we pin the version and test it.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

__all__ = ["aggregate", "scatter_sum", "set_threads", "torch_split", "as_tensor", "resolve_backend", "row_weight_sums",
           "torch_csr", "pad_rows", "Backend", "Op", "dgl_available"]

Backend = Literal["auto", "dgl", "torch"]
Op = Literal["sum", "wsum", "mean", "wmean"]
_OPS = ("sum", "wsum", "mean", "wmean")


def aggregate(csr: CSR, x: torch.Tensor, op: Op = "mean", backend: Backend = "auto") -> torch.Tensor:
    """Aggregate ``x`` (``[csr.n_cols, d]``) over each row's in-neighbours -> ``[csr.n_rows, d]``."""
    if op not in _OPS:
        raise KernelError(f"unknown aggregation {op!r}; use one of {_OPS}")
    if x.dim() != 2 or x.shape[0] < csr.n_cols:
        raise KernelError(f"x must be [>= {csr.n_cols}, d], got {tuple(x.shape)}")
    weighted = op in ("wsum", "wmean")
    name = resolve_backend(backend, x.device, weighted)
    if csr.n_rows == 0:
        return x.new_zeros((0, x.shape[1]))
    out = (_dgl_spmm if name == "dgl" else _torch_spmm)(csr, x, weighted)
    if op in ("sum", "wsum"):
        return out
    denom = row_weight_sums(csr) if weighted else np.diff(csr.indptr).astype(np.float64)
    d = torch.from_numpy(denom.astype(np.float32)).to(x.device)
    safe = torch.where(d == 0, torch.ones_like(d), d)
    return torch.where((d == 0)[:, None], torch.zeros_like(out), out / safe[:, None])


def scatter_sum(x: torch.Tensor, src: np.ndarray, dst: np.ndarray, n_out: int, weight: np.ndarray | None = None,
                backend: Backend = "auto") -> torch.Tensor:
    """``[n_out, d]``: ``out[dst[i]] += weight[i] * x[src[i]]`` over arcs ``i`` (weight 1 when None)."""
    if len(src) != len(dst) or (weight is not None and len(weight) != len(src)):
        raise KernelError(f"src, dst and weight must have one entry per arc, got {len(src)}, {len(dst)}, "
                          f"{None if weight is None else len(weight)}")
    name = resolve_backend(backend, x.device, weight is not None)
    if name == "dgl" and len(src) >= DGL_MIN_ARCS and max(x.shape[0], n_out) < 2**31:
        return _dgl_scatter(x, src, dst, n_out, weight)
    out = x.new_zeros((n_out, x.shape[1]))
    for lo in range(0, len(src), _SCATTER_CHUNK):  # bounds the gathered [chunk, d] temporary
        part = slice(lo, lo + _SCATTER_CHUNK)
        upd = x[as_tensor(src[part], x.device)]
        if weight is not None:
            upd *= as_tensor(weight[part], x.device).to(x.dtype)[:, None]
        out.index_add_(0, as_tensor(dst[part], x.device), upd)
    return out


def as_tensor(a: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A NumPy array (any strides) as a tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


def set_threads(n: int) -> int:
    """Use ``n`` CPU threads in every kernel pool: torch's, DGL's (its own OpenMP library) and
    NumPy's OpenBLAS, whose idle helpers otherwise spin for a while after each call (a worker
    on 2 cores: 113 vs 75 % CPU at 5,000 events/s). Returns ``n``."""
    if n < 1:
        raise KernelError(f"threads must be >= 1, got {n}")
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    torch.set_num_threads(n)
    if (dgl := _dgl()) is not None:
        dgl.utils.set_num_threads(n)
    threadpool_limits(n)  # every BLAS / OpenMP library loaded by now
    return n


def torch_split(work: int, threshold: int, device: torch.device | str) -> int:
    """Python threads to split torch (or DGL) kernels over, ``work`` units from ``threshold`` on:
    :func:`gnn.jit.split`'s count where torch runs one thread on a CPU (the worker: its kernels
    release the GIL, so slices run side by side); else 1, since torch's own pool splits them and
    splitting again oversubscribed the cores (IVF search, 1,854 queries: 56 → 43 ms without)."""
    if torch.device(device).type != "cpu" or torch.get_num_threads() != 1:
        return 1
    return split(work, threshold)


def resolve_backend(backend: Backend, device: torch.device | str = "cpu", weighted: bool = False) -> str:
    """The concrete backend ``auto`` stands for on ``device`` for a weighted or unweighted sum;
    validates explicit choices."""
    dev = torch.device(device)
    if backend == "torch":
        return "torch"
    if backend == "dgl":
        if not dgl_available():
            raise KernelError("backend 'dgl' requested but dgl is not importable; install dgl==2.1.0 or use 'torch'")
        if dev.type == "cuda" and not _dgl_has_cuda():
            raise KernelError("the installed DGL has no CUDA support; use backend 'torch' on CUDA")
        return "dgl"
    if backend != "auto":
        raise KernelError(f"unknown backend {backend!r}; use auto, dgl or torch")
    if dev.type == "cuda":
        return "dgl" if dgl_available() and _dgl_has_cuda() else "torch"
    return "dgl" if dgl_available() and not weighted else "torch"


def dgl_available() -> bool:
    return _dgl() is not None


# ---- backends -------------------------------------------------------------------------------
def _torch_spmm(csr: CSR, x: torch.Tensor, weighted: bool) -> torch.Tensor:
    return torch_csr(csr, x.shape[0], x.device, x.dtype, weighted) @ x


def torch_csr(csr: CSR, n_cols: int, device: torch.device | str, dtype: torch.dtype = torch.float32,
              weighted: bool = False) -> torch.Tensor:
    """``csr`` as a torch sparse CSR tensor on ``device`` (int32 indices; ``n_cols`` columns).

    This copy is most of a CUDA SpMM's cost when the graph lives on the host (the benchmark
    reports both), so callers that aggregate over one graph repeatedly may keep it."""
    dev = torch.device(device)
    vals = (torch.from_numpy(csr.weights).to(device=dev, dtype=dtype) if weighted
            else torch.ones(csr.nnz, dtype=dtype, device=dev))
    return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(np.int32, copy=False)).to(dev),
                                   torch.from_numpy(csr.indices.astype(np.int32, copy=False)).to(dev),
                                   vals, size=(csr.n_rows, n_cols))


def _dgl_spmm(csr: CSR, x: torch.Tensor, weighted: bool) -> torch.Tensor:
    dgl = _dgl()
    if dgl is None:
        raise KernelError("dgl is not importable; use backend 'torch'")
    if weighted:
        return _dgl_weighted(dgl, csr, x)
    ip = torch.from_numpy(csr.indptr.astype(np.int32, copy=False))
    ix = torch.from_numpy(csr.indices.astype(np.int32, copy=False))
    # our rows are destinations, columns are sources: exactly DGL's CSC of a src->dst block
    g = dgl.create_block(("csc", (ip, ix, torch.zeros(0, dtype=torch.int32))),
                         num_src_nodes=x.shape[0], num_dst_nodes=csr.n_rows, idtype=torch.int32,
                         device=x.device)
    return dgl.ops.gspmm(g, "copy_lhs", "sum", x, None)


def _dgl_scatter(x: torch.Tensor, src: np.ndarray, dst: np.ndarray, n_out: int,
                 weight: np.ndarray | None) -> torch.Tensor:
    dgl = _dgl()
    g = dgl.create_block((torch.from_numpy(src.astype(np.int32)), torch.from_numpy(dst.astype(np.int32))),
                         num_src_nodes=x.shape[0], num_dst_nodes=n_out, idtype=torch.int32, device=x.device)
    if weight is None:
        return dgl.ops.gspmm(g, "copy_lhs", "sum", x, None)
    w = as_tensor(weight, x.device).to(x.dtype)[:, None]
    return dgl.ops.gspmm(g, "mul", "sum", x, w)  # [E, 1] broadcasts (DGL's generic loop): 143 vs 156 ms on 1.1M arcs


_SCATTER_CHUNK = 1 << 18  # arcs per index_add_ call in scatter_sum's torch path
DGL_MIN_ARCS = 4096  # scatter_sum: fewer arcs go to index_add_ (1 thread: 0.16 vs 0.71 ms at 1k arcs, 1.4 vs 1.0 at 10k)
_WEIGHT_BYTES = 1 << 26  # expanded edge weights per DGL call (64 MiB)


def _dgl_weighted(dgl, csr: CSR, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - the dgl module
    """Weighted sum on DGL's fast CPU path: ``u_mul_e`` runs on libxsmm only when the edge
    feature has the node feature's shape (a ``[E, 1]`` weight broadcasts and takes the generic
    loop, 3-4x slower), so each slice of rows gets its weights expanded to ``[arcs, d]`` —
    sliced to bound that copy — and explicit edge ids, which the libxsmm path requires.

    Still slower than torch, which reads one weight per arc: on the 10M-edge graph (20M arcs,
    64-d, session 14) the products alone took 0.43 s against 0.25 s for the unweighted
    ``copy_lhs`` (they read ``[arcs, d]`` weights besides the features), the expansion 0.28 s,
    torch's weighted SpMM 0.30 s. Hence ``auto`` uses torch for weighted sums on CPU."""
    d = x.shape[1]
    out = x.new_empty((csr.n_rows, d))
    step = max(1, _WEIGHT_BYTES // (4 * d))
    cuts = np.unique(np.r_[0, np.searchsorted(csr.indptr, np.arange(step, csr.nnz, step)), csr.n_rows])
    for r0, r1 in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        lo, hi = int(csr.indptr[r0]), int(csr.indptr[r1])
        ip = torch.from_numpy((csr.indptr[r0:r1 + 1] - lo).astype(np.int32))
        ix = torch.from_numpy(csr.indices[lo:hi].astype(np.int32, copy=False))
        g = dgl.create_block(("csc", (ip, ix, torch.arange(hi - lo, dtype=torch.int32))), num_src_nodes=x.shape[0],
                             num_dst_nodes=r1 - r0, idtype=torch.int32, device=x.device)
        w = torch.from_numpy(csr.weights[lo:hi]).to(device=x.device, dtype=x.dtype)[:, None].expand(-1, d)
        out[r0:r1] = dgl.ops.gspmm(g, "mul", "sum", x, w.contiguous())
    return out


def pad_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """``t`` with zero rows appended up to ``n`` rows (rows the graph has but a matrix does not)."""
    return t if t.shape[0] >= n else torch.cat([t, t.new_zeros((n - t.shape[0], *t.shape[1:]))])


def row_weight_sums(csr: CSR) -> np.ndarray:
    """Sum of edge weights per row (float64 prefix sums)."""
    c = np.zeros(csr.nnz + 1, np.float64)
    np.cumsum(csr.weights, dtype=np.float64, out=c[1:])
    return c[csr.indptr[1:]] - c[csr.indptr[:-1]]


_DGL: object | None = None
_DGL_TRIED = False


def _dgl():  # noqa: ANN202 - returns the dgl module or None
    global _DGL, _DGL_TRIED
    if not _DGL_TRIED:
        _DGL_TRIED = True
        os.environ.setdefault("DGLBACKEND", "pytorch")
        try:
            import dgl  # noqa: PLC0415 - optional, heavy import

            _DGL = dgl
        except Exception:  # noqa: BLE001 - any import failure means "not available"
            _DGL = None
    return _DGL


def _dgl_has_cuda() -> bool:
    """True when the installed DGL can place a graph on CUDA (PyPI's 2.1.0 wheels cannot)."""
    dgl = _dgl()
    if dgl is None or not torch.cuda.is_available():
        return False
    try:
        dgl.graph(([0], [0])).to("cuda")
        return True
    except Exception:  # noqa: BLE001 - a CPU-only build raises a DGLError here
        return False
