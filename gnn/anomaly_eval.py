"""Anomaly evaluation: TADDY-style injected anomalies, or labelled streams (e.g. DARPA).

Injection protocol (Liu et al., TADDY; ``codes/AnomalyGeneration.py``): make edges undirected
(u < v), drop self-loops and repeated pairs (first occurrence kept), relabel nodes 0..n-1;
the first ``train_share`` of the edges are training (all normal); cluster the whole graph's
adjacency spectrally (``clusters`` clusters); anomalies are uniform random node pairs in
different clusters that never occur in the data, ``floor(rate * len(test))`` of them inserted
at uniformly random positions of the test stream; scored in snapshots of ``snapshot`` edges;
one AUC pooled over all test edges.

Scores come from the service path (:class:`gnn.processor.Processor`): each edge is scored
before it is inserted, with the detector's calibrated score and its components.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from gnn.anomaly import DEFAULT_WEIGHTS
from gnn.events import EdgeEvent
from gnn.metrics import average_precision, roc_auc

__all__ = ["InjectionConfig", "inject_anomalies", "spectral_clusters", "score_stream", "score_midas", "auc_ap"]


@dataclass(frozen=True)
class InjectionConfig:
    rate: float = 0.01
    train_share: float = 0.5
    clusters: int = 42
    snapshot: int = 1000
    seed: int = 0


def inject_anomalies(table: pd.DataFrame, config: InjectionConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) tables in the TADDY protocol; ``test`` has a ``label`` column (1 = injected)."""
    rng = np.random.default_rng(config.seed)
    u = table["src"].astype(str).to_numpy()
    v = table["dst"].astype(str).to_numpy()
    lo, hi = np.where(u < v, u, v), np.where(u < v, v, u)
    df = pd.DataFrame({"a": lo, "b": hi, "ts": table["ts"].to_numpy()})
    df = df[df["a"] != df["b"]].drop_duplicates(["a", "b"], keep="first").reset_index(drop=True)
    codes, _ = pd.factorize(pd.concat([df["a"], df["b"]], ignore_index=True))
    n_nodes = int(codes.max()) + 1
    src, dst = codes[: len(df)], codes[len(df):]
    n_train = int(len(df) * config.train_share)
    clusters = spectral_clusters(src, dst, n_nodes, config.clusters, seed=config.seed)
    existing = set((np.minimum(src, dst) * n_nodes + np.maximum(src, dst)).tolist())
    n_anom = int(np.floor(config.rate * (len(df) - n_train)))
    anomalies: list[tuple[int, int]] = []
    while len(anomalies) < n_anom:
        a, b = (int(x) for x in rng.integers(0, n_nodes, 2))
        key = min(a, b) * n_nodes + max(a, b)
        if a != b and clusters[a] != clusters[b] and key not in existing:
            existing.add(key)
            anomalies.append((a, b))
    test_src, test_dst, test_ts = list(src[n_train:]), list(dst[n_train:]), list(df["ts"].to_numpy()[n_train:])
    labels = [0] * len(test_src)
    for a, b in anomalies:  # at uniformly random positions; an injected edge takes its neighbour's time
        pos = int(rng.integers(0, len(test_src) + 1))
        t = test_ts[min(pos, len(test_ts) - 1)]
        test_src.insert(pos, a)
        test_dst.insert(pos, b)
        test_ts.insert(pos, t)
        labels.insert(pos, 1)
    train = pd.DataFrame({"src": src[:n_train], "dst": dst[:n_train], "ts": df["ts"].to_numpy()[:n_train]})
    test = pd.DataFrame({"src": test_src, "dst": test_dst, "ts": test_ts, "label": labels})
    return train, test


def spectral_clusters(src: np.ndarray, dst: np.ndarray, n: int, k: int, *, seed: int = 0, iters: int = 100) -> np.ndarray:
    """Normalised spectral clustering of an undirected graph (dense eigensolver; fine for ~10^4 nodes)."""
    a = torch.zeros((n, n), dtype=torch.float64)
    a[torch.from_numpy(src), torch.from_numpy(dst)] = 1.0
    a[torch.from_numpy(dst), torch.from_numpy(src)] = 1.0
    d = a.sum(1)
    inv = torch.where(d > 0, d.rsqrt(), torch.zeros_like(d))
    lap = torch.eye(n, dtype=torch.float64) - inv[:, None] * a * inv[None, :]
    _, vecs = torch.linalg.eigh(lap)
    x = torch.nn.functional.normalize(vecs[:, :k], dim=1).numpy()
    return _kmeans(x, k, seed=seed, iters=iters)


def score_stream(processor: object, table: pd.DataFrame, *, batch: int, refit: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray | float]:
    """Feed ``table`` through ``processor`` in batches; the per-edge anomaly score and components
    (each edge scored before its insertion), plus edges/s. ``refit``: the link decoder (the
    *surprise* component's prior) keeps training on the stream on the worker's schedule, as in
    the service; otherwise it stays as it is."""
    src, dst, ts = table["src"].to_numpy(), table["dst"].to_numpy(), table["ts"].to_numpy(np.float64)
    scores, comps = [], {name: [] for name in DEFAULT_WEIGHTS}
    t0 = time.perf_counter()
    for lo in range(0, len(table), batch):
        hi = min(lo + batch, len(table))
        events = [EdgeEvent(src=str(src[i]), dst=str(dst[i]), ts=float(ts[i])) for i in range(lo, hi)]
        if refit:
            processor.refit_in_line()  # type: ignore[attr-defined]
        r = processor.process(events, now=float(ts[hi - 1]))  # type: ignore[attr-defined]
        scores.append(r.anomaly.score)
        for k in comps:
            comps[k].append(r.anomaly.components[k])
        if progress:
            progress(hi, len(table))
    return {"score": np.concatenate(scores), **{k: np.concatenate(v) for k, v in comps.items()},
            "edges_per_s": len(table) / (time.perf_counter() - t0)}


def score_midas(table: pd.DataFrame, *, tick: float, batch: int = 10_000) -> dict[str, np.ndarray | float]:
    """The MIDAS-R sketch alone over a stream (the paper's setting), with edges/s."""
    from gnn.anomaly import MidasR  # noqa: PLC0415

    codes, _ = pd.factorize(pd.concat([table["src"].astype(str), table["dst"].astype(str)], ignore_index=True))
    n = len(table)
    src, dst, ts = codes[:n] + 1, codes[n:] + 1, table["ts"].to_numpy(np.float64)
    m = MidasR(tick=tick)
    t0 = time.perf_counter()
    score = np.concatenate([m.score(src[i:i + batch], dst[i:i + batch], ts[i:i + batch]) for i in range(0, n, batch)])
    return {"score": score, "edges_per_s": n / (time.perf_counter() - t0)}


def auc_ap(labels: np.ndarray, score: np.ndarray) -> dict[str, float]:
    return {"auc": round(roc_auc(labels, score), 4), "ap": round(average_precision(labels, score), 4)}


def _kmeans(x: np.ndarray, k: int, *, seed: int, iters: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(0, len(x))]]
    for _ in range(1, k):  # k-means++ seeding
        d2 = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(0, len(x))])
    c = np.array(centres)
    labels = np.zeros(len(x), np.int64)
    for _ in range(iters):
        labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.array([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return labels
