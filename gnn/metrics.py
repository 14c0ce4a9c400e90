"""Ranking metrics with scikit-learn's exact definitions (no scikit-learn dependency).

- :func:`average_precision`: :math:`\\sum_n (R_n - R_{n-1}) P_n` over distinct score thresholds
  (``sklearn.metrics.average_precision_score``);
- :func:`roc_auc`: the Mann-Whitney statistic with average ranks for ties
  (``sklearn.metrics.roc_auc_score``);
- :func:`mrr`: mean reciprocal rank of each positive among its own negatives (ties count
  against the positive's rank by half, as TGB's evaluator does with optimistic/pessimistic mean).
"""

from __future__ import annotations

import numpy as np

__all__ = ["average_precision", "roc_auc", "mrr"]


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    y = np.asarray(y_true, np.float64)
    s = np.asarray(score, np.float64)
    if y.sum() == 0:
        raise ValueError("average precision needs at least one positive")
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each run of equal scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    y = np.asarray(y_true, bool)
    s = np.asarray(score, np.float64)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUC needs both classes")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def mrr(pos: np.ndarray, neg: np.ndarray) -> float:
    """``pos[i]`` against the row ``neg[i, :]`` of its negatives."""
    pos = np.asarray(pos, np.float64)[:, None]
    neg = np.asarray(neg, np.float64)
    rank = 1.0 + (neg > pos).sum(1) + 0.5 * (neg == pos).sum(1)
    return float(np.mean(1.0 / rank))


def _average_ranks(s: np.ndarray) -> np.ndarray:
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    ranks = np.empty(len(s), np.float64)
    start = np.r_[0, np.flatnonzero(np.diff(ss)) + 1]
    end = np.r_[start[1:], len(s)]
    avg = (start + end + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, end - start)
    return ranks
