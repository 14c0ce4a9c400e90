"""Prequential evaluation of the online decoder (``gnn/online_eval.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gnn.online_eval import evaluate_online
from gnn.processor import ProcessorConfig

CFG = ProcessorConfig(hidden=8, out=8, hashed_dim=4, top_k=0, refit_every=1_000, backend="torch")


def _table(n: int = 6_000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    src = rng.integers(0, 300, n)
    dst = (src + rng.integers(1, 4, n)) % 300  # each node has three partners: pairs repeat, a decoder can learn that
    return pd.DataFrame({"src": src, "dst": dst, "ts": np.arange(n, dtype=np.float64)})


def test_batches_are_scored_by_the_decoder_in_use_before_training_on_them() -> None:
    res = evaluate_online(_table(), CFG, preload=1_000, batch=500)
    # 10 batches; the first fit is handed out after batch 1 and installed before batch 3
    assert res["batches"] == 10 and res["fits"] >= 3 and res["pairs"] == 8 * 2 * 500
    assert res["auc"] > 0.8 and res["ap"] > 0.8 and 0 < res["batch_auc_mean"] <= 1
    assert evaluate_online(_table(), CFG, preload=1_000, batch=500) == res  # seeded: the same again


def test_the_training_cap_scores_and_trains_on_a_sample_of_large_batches() -> None:
    capped = evaluate_online(_table(), ProcessorConfig(**{**CFG.__dict__, "train_per_batch": 100}), batch=500)
    # 100 edges + 100 negatives a batch: 1,000 samples (the first fit's minimum) after 5 batches,
    # that fit in use from batch 7, so batches 7-12 are scored
    assert capped["pairs"] == 6 * 200 and capped["batches"] == 12
    assert evaluate_online(_table(), CFG, events=50, batch=1_000) == {"pairs": 0, "batches": 1, "fits": 0}
