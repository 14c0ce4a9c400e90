"""Prequential (test-then-train) evaluation of the online link decoder, run the way the service runs it.

The stream goes through :class:`~gnn.processor.Processor` batch by batch with the worker's fit
schedule (a fit handed out when due is installed when the next one is due; here fits finish at
once). Each batch's training pairs, its sampled edges featurised before insertion against a
random pair of the same source, are scored by the decoder in use for that batch before any fit
has seen them. This is how settings that shape training (``refit_every``, ``train_per_batch``)
are compared on a real stream: they change what the decoder learns from, and when.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from gnn.events import table_events
from gnn.metrics import average_precision, roc_auc
from gnn.processor import Processor, ProcessorConfig

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["evaluate_online"]


def evaluate_online(table: "pd.DataFrame", config: ProcessorConfig, *, preload: int = 0, events: int | None = None,
                    batch: int = 1_000, progress: Callable[[int, int], None] | None = None) -> dict[str, float | int]:
    """Preload ``table``'s first ``preload`` edges, then stream up to ``events`` more in
    ``batch``-event batches; AUC and AP pooled over every scored pair, the mean per-batch AUC,
    and how many pairs, batches and fits that took. Batches before the first fit score nothing."""
    p = Processor(config)
    if preload:
        head = table.iloc[:preload]
        p.preload(head.astype({"src": str, "dst": str}))  # with its weights and removes
    rest = table.iloc[preload:] if events is None else table.iloc[preload:preload + events]
    stream = table_events(rest)
    pos: list[np.ndarray] = []
    neg: list[np.ndarray] = []
    fits, n = 0, (len(stream) + batch - 1) // batch
    for k, lo in enumerate(range(0, len(stream), batch)):
        fits += p.refit_in_line()  # the worker's _swap_model, with fits that are done at once
        part = stream[lo:lo + batch]
        decoder = p.link.decoder  # the one this batch is scored with
        result = p.process(part, now=part[-1].ts)
        if decoder is not None and result.training is not None:
            pos.append(decoder.predict(result.training[0]))
            neg.append(decoder.predict(result.training[1]))
        if progress:
            progress(k + 1, n)
    if not pos:
        return {"pairs": 0, "batches": n, "fits": fits}
    y = np.r_[np.ones(sum(map(len, pos))), np.zeros(sum(map(len, neg)))]
    s = np.r_[np.concatenate(pos), np.concatenate(neg)]
    per_batch = [roc_auc(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b]) for a, b in zip(pos, neg)]
    return {"auc": round(roc_auc(y, s), 4), "ap": round(average_precision(y, s), 4),
            "batch_auc_mean": round(float(np.mean(per_batch)), 4), "pairs": int(len(y)), "batches": n, "fits": fits}
