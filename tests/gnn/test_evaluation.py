"""Metrics match scikit-learn's definitions; the DyGLib protocol runs and EdgeBank behaves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gnn.evaluation import EdgeBank, LinkPredConfig, evaluate_linkpred
from gnn.metrics import average_precision, mrr, roc_auc

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"


def test_metrics_on_hand_checked_cases() -> None:
    # sklearn: average_precision_score([1,0,1,0],[.9,.8,.4,.1]) == 0.8333..., roc_auc_score == 0.75
    assert average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.4, 0.1])) == pytest.approx(5 / 6)
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.4, 0.1])) == pytest.approx(0.75)
    # ties: binary scores (EdgeBank) -> AP = R1*P1 + (1-R1)*0.5
    y, s = np.array([1, 1, 0, 0]), np.array([1.0, 0.0, 1.0, 0.0])
    assert average_precision(y, s) == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)
    assert roc_auc(y, s) == pytest.approx(0.5)
    assert mrr(np.array([0.9, 0.1]), np.array([[0.5, 0.2], [0.5, 0.1]])) == pytest.approx((1 + 1 / 2.5) / 2)


def test_protocol_on_a_repeating_stream() -> None:
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 50, (300, 2))
    picks = rng.integers(0, 300, 4000)  # the same 300 pairs recur: memorisation is strong
    table = pd.DataFrame({"src": pairs[picks, 0], "dst": pairs[picks, 1], "ts": np.arange(4000.0)})
    out = evaluate_linkpred(table, {"edgebank": EdgeBank()}, config=LinkPredConfig(seed=1))
    assert out["edgebank"]["batches"] == 3 and out["edgebank"]["auc"] > 0.8
    again = evaluate_linkpred(table, {"edgebank": EdgeBank()}, config=LinkPredConfig(seed=1))
    assert again == out  # deterministic by seed


@pytest.mark.skipif(not (SHARED / "uci" / "CollegeMsg.txt").exists(), reason="shared datasets not present")
def test_edgebank_on_uci_is_near_the_published_value() -> None:
    from gnn.io import read_edges

    out = evaluate_linkpred(read_edges(SHARED / "uci" / "CollegeMsg.txt"), {"edgebank": EdgeBank()})
    assert abs(out["edgebank"]["ap"] - 0.7620) < 0.01 and abs(out["edgebank"]["auc"] - 0.7730) < 0.01


@pytest.mark.skipif(not (SHARED / "uci" / "CollegeMsg.txt").exists(), reason="shared datasets not present")
def test_trained_model_beats_edgebank_on_uci() -> None:
    from gnn.evaluation import TrainedScorer
    from gnn.io import read_edges
    from gnn.processor import Processor

    out = evaluate_linkpred(read_edges(SHARED / "uci" / "CollegeMsg.txt"),
                            {"model": TrainedScorer(Processor()), "edgebank": EdgeBank()},
                            config=LinkPredConfig(mrr_negatives=0))
    assert out["model"]["ap"] >= 0.90 and out["model"]["ap"] > out["edgebank"]["ap"]
    assert out["model"]["auc"] > out["edgebank"]["auc"]
