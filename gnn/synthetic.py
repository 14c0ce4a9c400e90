"""Deterministic synthetic temporal graph stream with planted anomalies.

Normal traffic: nodes belong to communities and have heavy-tailed activity; a source
repeats a past partner with probability ``p_repeat``, otherwise picks an active node of its
own community (rarely, ``p_cross``, of another one). A few edges are removed again.

Planted anomalies (``label = 1``), placed after the first ``warmup`` fraction of the stream:
- ``burst``: a microcluster of ``burst_nodes`` nodes from different communities exchanging
  ``burst_edges`` edges inside one second (a MIDAS-style burst);
- ``cross``: single edges between random nodes of different communities that never met.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

__all__ = ["SyntheticConfig", "SyntheticEvent", "generate"]


@dataclass(frozen=True)
class SyntheticConfig:
    events: int = 10_000
    nodes: int = 2_000
    communities: int = 20
    p_repeat: float = 0.4
    p_cross: float = 0.02
    remove_rate: float = 0.01
    anomaly_rate: float = 0.01  # fraction of events that are planted anomalies
    burst_nodes: int = 6
    burst_edges: int = 30
    warmup: float = 0.3
    rate: float = 2.0  # events per second of event time (about 120 per one-minute tick)
    start_ts: float = 1_700_000_000.0
    seed: int = 0


@dataclass(frozen=True)
class SyntheticEvent:
    """One event as the JSON object published to ``lepton.edges`` plus its ground truth."""

    value: dict
    label: int
    kind: str  # normal | remove | burst | cross


def generate(config: SyntheticConfig) -> list[SyntheticEvent]:
    """The whole stream, in time order."""
    return list(_stream(config))


def _stream(c: SyntheticConfig) -> Iterator[SyntheticEvent]:
    rng = np.random.default_rng(c.seed)
    comm = rng.integers(0, c.communities, c.nodes)
    activity = rng.pareto(1.5, c.nodes) + 0.1
    members = [np.flatnonzero(comm == k) for k in range(c.communities)]
    member_p = [activity[m] / activity[m].sum() for m in members]
    src_p = activity / activity.sum()
    partners: dict[int, list[int]] = {}
    n_anom = int(round(c.events * c.anomaly_rate))
    n_bursts = max(1, n_anom // (2 * c.burst_edges)) if n_anom else 0
    n_cross = max(0, n_anom - n_bursts * c.burst_edges)
    lo = int(c.events * c.warmup)
    burst_at = set(rng.integers(lo, c.events, n_bursts).tolist())
    cross_at = set(rng.integers(lo, c.events, n_cross).tolist())
    ts = c.start_ts
    seq = 0

    def event(u: int, v: int, t: float, op: str, label: int, kind: str) -> SyntheticEvent:
        nonlocal seq
        seq += 1
        value = {"src": f"n{u}", "dst": f"n{v}", "ts": round(t, 3), "id": f"s{c.seed}-{seq}"}
        if op == "remove":
            value["op"] = "remove"
        return SyntheticEvent(value=value, label=label, kind=kind)

    for i in range(c.events):
        ts += float(rng.exponential(1.0 / c.rate))
        if i in burst_at:
            group = rng.choice(c.nodes, c.burst_nodes, replace=False)
            for j in range(c.burst_edges):
                u, v = rng.choice(group, 2, replace=False)
                yield event(int(u), int(v), ts + j * (1.0 / c.burst_edges), "add", 1, "burst")
        if i in cross_at:
            while True:
                u, v = rng.integers(0, c.nodes, 2)
                if comm[u] != comm[v] and int(v) not in partners.get(int(u), ()):
                    break
            yield event(int(u), int(v), ts, "add", 1, "cross")
        u = int(rng.choice(c.nodes, p=src_p))
        past = partners.get(u)
        if past and rng.random() < c.remove_rate:
            v = past.pop(int(rng.integers(0, len(past))))
            yield event(u, v, ts, "remove", 0, "remove")
            continue
        if past and rng.random() < c.p_repeat:
            v = past[int(rng.integers(0, len(past)))]
        else:
            k = int(rng.integers(0, c.communities)) if rng.random() < c.p_cross else int(comm[u])
            v = int(rng.choice(members[k], p=member_p[k]))
            if v == u:
                continue
            partners.setdefault(u, []).append(v)
        yield event(u, v, ts, "add", 0, "normal")


def powerlaw_edges(nodes: int, edges: int, *, exponent: float = 2.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Chung-Lu style power-law graph: endpoints drawn with probability ∝ (i+1)^(-1/(exponent-1)).

    Returns 0-based ``(src, dst)`` arrays without self-loops (duplicates may remain; the graph
    store merges them). Used by the engine benchmark.
    """
    rng = np.random.default_rng(seed)
    w = np.arange(1, nodes + 1, dtype=np.float64) ** (-1.0 / (exponent - 1.0))
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    src = np.searchsorted(cdf, rng.random(edges)).astype(np.int64)
    dst = np.searchsorted(cdf, rng.random(edges)).astype(np.int64)
    perm = rng.permutation(nodes)  # hubs are not the lowest ids
    src, dst = perm[src], perm[dst]
    keep = src != dst
    return src[keep], dst[keep]
