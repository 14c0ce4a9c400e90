"""The core's batch path in process, without Kafka: events/s and where the time goes (prints JSON).

A power-law graph is pre-loaded into a :class:`Processor`, then ``batches`` micro-batches of
``batch`` add events are processed, their endpoints drawn from the graph's own edges (so hubs
keep attracting edges, as in a live stream). Reported: events/s over the timed batches (the
first ``warmup`` are untimed: index build, kernel warm-up), microseconds per event by stage
(:attr:`BatchResult.timings`), predictions per batch. ``device`` runs the engine, scoring,
top-k and the IVF index on CUDA; the graph store stays on the CPU. ``lepton bench processor``
builds the configuration and the kernel threads as the worker does (``LEPTON_*``, ``--set``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from gnn.events import EdgeEvent
from gnn.processor import SERVING, Processor, ProcessorConfig
from gnn.synthetic import powerlaw_edges

__all__ = ["bench_processor"]


def bench_processor(*, nodes: int, edges: int, batch: int = 1000, batches: int = 10, warmup: int = 2,
                    top_k: int | None = None, device: str = "cpu", config: ProcessorConfig | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark and return its results as a JSON-ready dict. ``config`` (default: the
    defaults) gives the settings, its seed the graph's and the events'; ``device`` and a given
    ``top_k`` override it."""
    say = progress or (lambda _: None)
    cfg = replace(config or ProcessorConfig(), device=device)
    cfg = cfg if top_k is None else replace(cfg, top_k=top_k)
    top_k, seed = cfg.top_k, cfg.seed
    say("pre-loading the power-law graph")
    src, dst = powerlaw_edges(nodes, edges, seed=seed)
    p = Processor(cfg)
    t0 = time.perf_counter()
    p.preload(pd.DataFrame({"src": src.astype(str), "dst": dst.astype(str)}))
    out: dict[str, Any] = {"nodes": nodes, "edges": edges, "batch": batch, "batches": batches, "top_k": top_k,
                           "device": device, "threads": torch.get_num_threads(),
                           "serving": {k: getattr(cfg, k) for k in SERVING},
                           "preload_s": round(time.perf_counter() - t0, 2)}
    rng = np.random.default_rng(seed + 1)
    pick = rng.integers(0, len(src), (2, (warmup + batches) * batch))
    s, d = src[pick[0]].astype(str), dst[pick[1]].astype(str)
    stages: dict[str, float] = {}
    wall, preds, touched = 0.0, 0, 0
    for b in range(warmup + batches):
        say(f"batch {b + 1} of {warmup + batches}" + (" (warm-up)" if b < warmup else ""))
        lo = b * batch
        evs = [EdgeEvent(s[i], d[i], float(i)) for i in range(lo, lo + batch)]
        t = time.perf_counter()
        r = p.process(evs, now=float(b))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if b < warmup:
            continue
        wall += time.perf_counter() - t
        preds += len(r.predictions)
        touched += r.update.rows_per_layer[-1] if r.update.rows_per_layer else 0
        for k, v in r.timings.items():
            stages[k] = stages.get(k, 0.0) + v
    n = batch * batches
    out.update({"events_per_s": round(n / wall), "ms_per_batch": round(wall * 1000 / batches, 1),
                "us_per_event": {k: round(v * 1e6 / n, 1) for k, v in stages.items()},
                "predictions_per_batch": round(preds / batches), "rows_changed_per_batch": round(touched / batches)})
    return out
