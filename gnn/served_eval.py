"""How good are the predictions the service publishes? Hits@k of each node's next new partner.

The stream goes through :class:`~gnn.processor.Processor` batch by batch, as the worker runs
it. After each batch every touched node has a published top-k (its latest replaces the one
before). Before a batch is applied, each of its ``add`` events whose two nodes are not yet
linked is a question: was ``dst`` in the top-k last published for ``src``? (Undirected
graphs ask both ways.) A node with no published list yet, or a pair already linked (the
top-k leaves current neighbours out by design), is not a question; ``answered`` is the share
of new pairs whose node had a list. Reported over the questions: hits@1, hits@5, hits@k and
MRR (1 / rank, 0 when absent); and baselines' hits@k, each a list of k nodes not yet the
node's neighbours: those of highest degree (``popular``) and those with the most first-time
partners lately (``rising``: the pair features' ``fresh`` counts), made when the node's list
was served (a fair comparison: both lists age until the node is touched again) and again at
the question (``*_now``: what a list refreshed for every question would get); and random.

This is the measure for serving settings that trade work for quality (``candidates``,
``hubs``, ``hop_fanout``, ``ann_nprobe``, the prediction budget): they change which lists are
served, not how pairs are scored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from gnn.events import table_events
from gnn.processor import Processor, ProcessorConfig

if TYPE_CHECKING:
    import pandas as pd

    from gnn.graph import DynamicGraph

__all__ = ["evaluate_served"]


def evaluate_served(table: "pd.DataFrame", config: ProcessorConfig, *, preload: int = 0, events: int | None = None,
                    batch: int = 1_000, progress: Callable[[int, int], None] | None = None) -> dict[str, float | int]:
    """Preload ``table``'s first ``preload`` edges, stream up to ``events`` more in ``batch``-event
    batches and score the lists served along the way (see the module docstring)."""
    if config.top_k < 1:
        raise ValueError(f"served predictions need top_k >= 1, got {config.top_k}")
    p = Processor(config)
    if preload:
        p.preload(table.iloc[:preload].astype({"src": str, "dst": str}))
    rest = table.iloc[preload:] if events is None else table.iloc[preload:preload + events]
    stream = table_events(rest)
    served: dict[str, dict[str, int]] = {}  # node -> {partner: rank from 1} of its latest list
    base: dict[str, dict[str, set[int]]] = {"popular": {}, "rising": {}}  # node -> baseline list when it was served
    ranks: list[int] = []  # per question: the partner's rank, 0 when absent
    hits = dict.fromkeys(("popular", "rising", "popular_now", "rising_now"), 0)
    new_pairs, fits, n = 0, 0, (len(stream) + batch - 1) // batch
    for b, lo in enumerate(range(0, len(stream), batch)):
        part = stream[lo:lo + batch]
        g = p.graph
        adds = [e for e in part if e.op == "add" and e.src != e.dst]
        ends = [(e.src, e.dst) for e in adds] + ([] if config.directed else [(e.dst, e.src) for e in adds])
        ids = g.node_ids([k for pair in ends for k in pair])  # unknown nodes: 0
        u, v = ids[0::2], ids[1::2]
        linked = np.zeros(len(ends), np.bool_)
        known = (u > 0) & (v > 0)
        linked[known] = g.edge_lookup(u[known], v[known])[0]
        asked: set[tuple[str, str]] = set()  # a pair repeated within the batch is one question
        posed: list[int] = []  # index in ``ends`` of each question
        for i, ((a, c), was) in enumerate(zip(ends, linked.tolist())):
            if was or (a, c) in asked:
                continue
            asked.add((a, c))
            new_pairs += 1
            if a in served:
                ranks.append(served[a].get(c, 0))
                posed.append(i)
                for name in ("popular", "rising"):
                    hits[name] += int(v[i]) in base[name][a]
        if posed:  # the same baselines made now, at the question (no list ages)
            for name, score in _scores(p).items():
                got = _lists(g, u[posed], score, config.top_k)
                hits[f"{name}_now"] += int((got == v[posed][:, None]).any(axis=1).sum())
        fits += p.refit_in_line()  # the worker's fit schedule, fits done at once (as gnn.online_eval)
        result = p.process(part, now=part[-1].ts)
        for pred in result.predictions:
            served[pred.node] = {name: r for r, (name, _) in enumerate(pred.partners, 1)}
        if result.predictions:
            keys = [pred.node for pred in result.predictions]
            nodes = p.graph.node_ids(keys)
            for name, score in _scores(p).items():
                for key, row in zip(keys, _lists(p.graph, nodes, score, config.top_k).tolist()):
                    base[name][key] = set(row)
        if progress:
            progress(b + 1, n)
    k = config.top_k
    r = np.asarray(ranks, np.int64)
    hit = lambda m: round(float(np.mean((r > 0) & (r <= m))), 4) if len(r) else None  # noqa: E731
    nodes = max(p.graph.num_nodes, 1)
    return {"questions": int(len(r)), "new_pairs": new_pairs,
            "answered": round(len(r) / new_pairs, 4) if new_pairs else None,
            "hits_at_1": hit(1), "hits_at_5": hit(5), f"hits_at_{k}": hit(k),
            "mrr": round(float(np.mean(np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0))), 4) if len(r) else None,
            **{f"{name}_hits_at_{k}": round(h / len(r), 4) if len(r) else None for name, h in hits.items()},
            f"random_hits_at_{k}": round(min(1.0, k / nodes), 6), "batches": n, "fits": fits,
            "nodes": p.graph.num_nodes}


def _scores(p: Processor) -> dict[str, np.ndarray]:
    """Per dense id, what each baseline ranks by: in-degree, and first-time partners lately."""
    g = p.graph
    return {"popular": np.asarray(g.in_degree(), np.float64),
            "rising": p.link.features.fresh.level(np.arange(g.n_rows))}


def _lists(g: "DynamicGraph", u: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """``[len(u), k]``: per node, the ``k`` nodes of highest ``score`` (0 = never listed) that
    are neither it nor already its neighbours; -1 pads."""
    if not len(u):
        return np.full((0, k), -1, np.int64)
    linked = int(max(np.asarray(g.in_degree())[u].max(), np.asarray(g.out_degree())[u].max()))
    top = np.argsort(-score[1:], kind="stable")[: k + linked + 1] + 1  # enough to skip u itself and its neighbours
    top = top[score[top] > 0]
    return g.first_unlinked(u, np.broadcast_to(top, (len(u), len(top))), k)
