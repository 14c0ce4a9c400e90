"""Exact vs IVF nearest-neighbour search over live embeddings (prints JSON).

Measured in one run on a power-law graph: build time, query time per touched node and
recall@k of :class:`gnn.ann.IVFIndex` at several ``nprobe`` against exact cosine top-k, then
the recall again after ``batches`` stream batches have moved the embeddings under the index
(the staleness the service lives with between reassignments).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from gnn.ann import IVFIndex
from gnn.events import EdgeEvent
from gnn.processor import Processor, ProcessorConfig
from gnn.synthetic import powerlaw_edges

__all__ = ["bench_ann", "exact_topk"]


def bench_ann(*, nodes: int, edges: int, queries: int = 500, k: int = 20, nprobes: tuple[int, ...] = (4, 8, 16, 32),
              batches: int = 10, batch: int = 1000, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the comparison; returns a JSON-ready dict."""
    say = progress or (lambda _: None)
    say("pre-loading the power-law graph")
    src, dst = powerlaw_edges(nodes, edges, seed=seed)
    p = Processor(ProcessorConfig(top_k=0, seed=seed))
    p.preload(pd.DataFrame({"src": src.astype(str), "dst": dst.astype(str)}))
    rng = np.random.default_rng(seed + 1)
    n = p.graph.n_rows
    q = np.unique(p.graph.node_ids(src[rng.integers(0, len(src), queries)].astype(str)))  # degree-biased
    h = p.engine.embeddings
    out: dict[str, Any] = {"nodes": n - 1, "edges": edges, "queries": len(q), "k": k, "threads": torch.get_num_threads()}
    say("exact search")
    t0 = time.perf_counter()
    exact = exact_topk(h, n, q, k)
    out["exact_ms_per_query"] = round((time.perf_counter() - t0) * 1000 / len(q), 3)
    out["ivf"] = []
    for nprobe in nprobes:
        say(f"IVF, nprobe {nprobe}")
        index = IVFIndex(nprobe=nprobe, seed=seed)
        t0 = time.perf_counter()
        index.refresh(h, n)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = index.search(h, q, k, n)
        query = time.perf_counter() - t0
        out["ivf"].append({"nprobe": nprobe, "lists": index.cells, "build_s": round(build, 3),
                           "ms_per_query": round(query * 1000 / len(q), 3), "recall": _recall(got, exact),
                           "speedup": round(out["exact_ms_per_query"] / (query * 1000 / len(q)), 1)})
    best = max(out["ivf"], key=lambda r: (r["recall"] >= 0.9, -r["ms_per_query"]))
    say(f"{batches} stream batches under an IVF index (nprobe {best['nprobe']})")
    index = IVFIndex(nprobe=best["nprobe"], seed=seed)
    index.refresh(h, n)
    ts, rows = 0.0, 0
    for _ in range(batches):
        pick = rng.integers(0, len(src), (2, batch))
        events = [EdgeEvent(src=str(a), dst=str(b), ts=ts) for a, b in zip(src[pick[0]], dst[pick[1]])]
        ts += 1.0
        r = p.process(events, now=ts)
        rows += len(r.update.moved)
        index.refresh(p.engine.embeddings, p.graph.n_rows, r.update.moved)
    h, n = p.engine.embeddings, p.graph.n_rows
    out["stream"] = {"nprobe": best["nprobe"], "batches": batches, "batch": batch, "rows_moved": rows,
                     "rows_moved_per_node": round(rows / n, 2),
                     "recall_stale": _recall(index.search(h, q, k, n), exact_topk(h, n, q, k))}
    return out


def exact_topk(h: torch.Tensor, n: int, q: np.ndarray, k: int, *, chunk: int = 256) -> np.ndarray:
    """Exact cosine top-k (centred embeddings, the query itself and row 0 excluded)."""
    hn = torch.nn.functional.normalize(h[:n].float() - h[1:n].float().mean(0, keepdim=True), dim=1)
    parts = []
    for i in range(0, len(q), chunk):
        qq = torch.from_numpy(q[i:i + chunk])
        sim = hn[qq] @ hn.T
        sim[:, 0] = -torch.inf
        sim[torch.arange(len(qq)), qq] = -torch.inf
        parts.append(sim.topk(k, dim=1).indices.numpy())
    return np.concatenate(parts)


def _recall(got: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(got, exact))
    return round(hits / exact.size, 4)
