"""Engine benchmark: incremental vs full recomputation on a power-law graph (prints JSON).

Everything is measured in one run so the ratios compare like with like on a noisy machine:
bulk load (from a SNAP file written to a temporary directory), resident bytes per edge,
one SpMM per backend (and torch's with its matrix already on the device: the floor of a
full pass when the graph lives on the host), the full recompute (the textbook forward pass,
:meth:`GraphSAGE.full`) per backend, the engine's cache rebuild, ``batches`` incremental
batches of ``batch`` edge inserts, the exactness check against a full recompute, and the
same batches in ``prune_eps`` mode (inexact) with its measured error. The speedup is the
full recompute on the default backend over the median incremental batch. With ``sustain``,
the exact engine then takes that many more batches back to back, long enough to pass the
graph's delta compactions, and reports the rate over all of them (a few batches right after a
load see an empty delta and no compaction) and the error against a full recompute after them.
"""

from __future__ import annotations

import ctypes
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import torch

from gnn.features import NodeFeatures
from gnn.graph import DynamicGraph
from gnn.incremental import Engine
from gnn.io import bulk_load, read_edges
from gnn.kernels import aggregate, dgl_available, torch_csr
from gnn.model import GraphSAGE, ModelConfig
from gnn.synthetic import powerlaw_edges

__all__ = ["bench_engine"]


def bench_engine(*, nodes: int, edges: int, batch: int, batches: int = 10, degree: str = "bucket",
                 endpoints: str = "preferential", prune_eps: float = 1e-3, exponent: float = 2.5,
                 device: str = "cpu", seed: int = 0, sustain: int = 0,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark and return its results as a JSON-ready dict."""
    say = progress or (lambda _: None)
    proc = psutil.Process()
    out: dict[str, Any] = {"nodes": nodes, "edges": edges, "batch": batch, "batches": batches, "degree": degree,
                           "endpoints": endpoints, "exponent": exponent, "device": device, "sustain": sustain,
                           "threads": torch.get_num_threads()}
    say("generating the power-law graph")
    src, dst = powerlaw_edges(nodes, edges, exponent=exponent, seed=seed)
    rng = np.random.default_rng(seed + 1)
    total = batch * (batches + sustain)
    if endpoints == "uniform":
        new_s, new_d = rng.integers(0, nodes, total), rng.integers(0, nodes, total)
    else:  # the same degree-biased distribution as the graph itself: hubs keep attracting edges
        pick = rng.integers(0, len(src), (2, total))
        new_s, new_d = src[pick[0]], dst[pick[1]]

    say("bulk load from a SNAP file")
    _release_freed_memory()
    rss0 = proc.memory_info().rss
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.txt"
        pd.DataFrame({"s": src, "d": dst}).to_csv(path, sep=" ", header=False, index=False)
        t0 = time.perf_counter()
        table = read_edges(path, "snap")
        t1 = time.perf_counter()
        g = DynamicGraph()
        bulk_load(g, table)
        g.in_csr()
        t2 = time.perf_counter()
        del table
    _release_freed_memory()
    rss1 = proc.memory_info().rss
    out["load"] = {"read_s": round(t1 - t0, 3), "graph_s": round(t2 - t1, 3),
                   "edges_per_s": round(len(src) / (t2 - t0)), "edges_per_s_graph_only": round(len(src) / (t2 - t1)),
                   "graph_edges": g.num_edges, "graph_bytes_per_edge": round(g.nbytes() / g.num_edges, 2),
                   "rss_bytes_per_edge": round((rss1 - rss0) / g.num_edges, 2),
                   "rss_note": "process RSS growth over the load, freed heap returned first; includes the id map"}
    ids_s = g.node_ids([str(int(x)) for x in new_s], create=True)
    ids_d = g.node_ids([str(int(x)) for x in new_d], create=True)

    say("kernels: one SpMM per backend on the full graph")
    csr = g.in_csr()
    x = torch.randn(g.n_rows, 64, device=device)
    kernels = {}
    for backend in (["dgl"] if dgl_available() and device == "cpu" else []) + ["torch"]:
        kernels[backend] = {op: round(_best(lambda: aggregate(csr, x, op, backend), 3, device), 4)
                           for op in ("mean", "wmean")}
    out["kernel_s"] = kernels
    resident = torch_csr(csr, x.shape[0], device)  # the floor: the matrix already on the device
    out["torch_spmm_resident_s"] = round(_best(lambda: resident @ x, 3, device), 5)
    if "dgl" in kernels:
        out["dgl_over_torch"] = {op: round(kernels["dgl"][op] / kernels["torch"][op], 3) for op in ("mean", "wmean")}

    model = GraphSAGE(ModelConfig(in_dim=NodeFeatures(hashed_dim=16).dim, hidden=64, out=64, layers=2, seed=seed))
    results = {}
    for mode, eps in (("exact", None), ("prune", prune_eps)):
        gm = g.copy()
        eng = Engine(graph=gm, features=NodeFeatures(hashed_dim=16, degree=degree), model=model,
                     device=device, prune_eps=eps)
        if mode == "exact":  # the baseline: the textbook full forward pass, per kernel backend
            say("full recompute per backend, and the engine's cache rebuild")
            auto = eng.backend
            for backend in kernels:
                eng.backend = backend
                out.setdefault("full_recompute_s", {})[backend] = round(_best(eng.reference, 3, device), 4)
            eng.backend = auto
            out["cache_rebuild_s"] = round(_best(eng.full_refresh, 1, device), 4)
        full_s = out["full_recompute_s"][eng.backend]
        say(f"{mode}: {batches} incremental batches")
        times, rows, arcs = [], [], []
        for b in range(batches):
            sl = slice(b * batch, (b + 1) * batch)
            t = time.perf_counter()
            change = gm.add_edges(ids_s[sl], ids_d[sl])
            st = eng.update([change])
            _sync(device)
            times.append(time.perf_counter() - t)
            rows.append(st.rows_per_layer)
            arcs.append(st.arcs_per_layer)
        err = float((eng.embeddings - eng.reference()[: gm.n_rows]).abs().max())
        per = float(np.median(times))
        results[mode] = {"incremental_s_per_batch": round(per, 4),
                         "incremental_s_mean": round(float(np.mean(times)), 4),
                         "speedup": round(full_s / per, 2), "edge_updates_per_s": round(batch / per),
                         "max_abs_err_vs_full": err,
                         "rows_per_layer_mean": np.mean(rows, axis=0).round().astype(int).tolist(),
                         "arcs_per_layer_mean": np.mean(arcs, axis=0).round().astype(int).tolist()}
        if mode == "exact" and sustain:
            say(f"exact: {sustain} more batches back to back, through the graph's compactions")
            results["sustained"] = _sustain(gm, eng, ids_s, ids_d, batch, batches, sustain, device)
        del eng, gm
        gc.collect()
    out.update(results)
    return out


def _sustain(g: DynamicGraph, eng: Engine, ids_s: np.ndarray, ids_d: np.ndarray, batch: int, start: int,
             count: int, device: str) -> dict[str, Any]:
    """``count`` more exact batches: the rate over all of them, their spread, compactions, error after."""
    before = g.compactions
    delta_max = 0
    times = []
    for b in range(start, start + count):
        sl = slice(b * batch, (b + 1) * batch)
        t = time.perf_counter()
        eng.update([g.add_edges(ids_s[sl], ids_d[sl])])
        _sync(device)
        times.append(time.perf_counter() - t)
        delta_max = max(delta_max, g.delta_arcs)
    ms = np.array(times) * 1e3
    return {"batches": count, "edge_updates_per_s": round(count * batch / float(np.sum(times))),
            "batch_ms_p50": round(float(np.median(ms)), 2), "batch_ms_p99": round(float(np.percentile(ms, 99)), 2),
            "batch_ms_max": round(float(ms.max()), 2), "compactions": g.compactions - before,
            "delta_arcs_max": delta_max,
            "max_abs_err_vs_full": float((eng.embeddings - eng.reference()[: g.n_rows]).abs().max())}


def _best(fn: Callable[[], Any], repeat: int, device: str) -> float:
    """Best wall time of ``repeat`` calls after a warm-up; waits for CUDA kernels to finish."""
    fn()  # warm-up (allocations, DGL format creation, CUDA context and kernels)
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS, so RSS shows what is really held."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - non-glibc
        pass


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
