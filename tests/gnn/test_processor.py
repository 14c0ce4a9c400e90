"""Processor: batching never changes the result; ids deduplicate; predictions are sane."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
import pytest
from hypothesis import given, settings, strategies as st

from gnn.events import EdgeEvent
from gnn.processor import Processor, ProcessorConfig

CFG = ProcessorConfig(hidden=8, out=8, hashed_dim=4, top_k=3, backend="torch")

event = st.builds(lambda op, u, v, dup: (op, u, v, dup), st.sampled_from(["add", "add", "remove"]),
                  st.integers(0, 9), st.integers(0, 9), st.integers(0, 30))


def _events(raw: list) -> list[EdgeEvent]:
    return [EdgeEvent(src=f"n{u}", dst=f"n{v}", ts=float(i), op=op, id=f"e{dup}") for i, (op, u, v, dup) in enumerate(raw)]


def _edge_set(p: Processor) -> set:
    s, d, w = p.graph.edges()
    return {(tuple(sorted((p.graph.key(a), p.graph.key(b)))), round(float(x), 4)) for a, b, x in zip(s, d, w)}


@settings(max_examples=60, deadline=None)
@given(st.lists(event, min_size=1, max_size=40), st.integers(1, 40))
def test_batch_size_does_not_change_the_graph(raw: list, batch: int) -> None:
    evs = _events(raw)
    one, many = Processor(CFG), Processor(CFG)
    counts = [0, 0]
    for e in evs:
        r = one.process([e], now=0.0)
        counts[0] += r.applied + r.duplicates
    for i in range(0, len(evs), batch):
        r = many.process(evs[i:i + batch], now=0.0)
        counts[1] += r.applied + r.duplicates
    assert _edge_set(one) == _edge_set(many)
    assert counts == [len(evs), len(evs)]
    assert (many.engine.embeddings - many.engine.reference()[: many.graph.n_rows]).abs().max() <= 1e-4


def test_duplicate_ids_are_dropped_and_missing_removes_counted() -> None:
    p = Processor(CFG)
    r = p.process([EdgeEvent("a", "b", 0.0, id="x"), EdgeEvent("a", "b", 1.0, id="x"),
                   EdgeEvent("c", "d", 2.0, op="remove")], now=0.0)
    assert (r.applied, r.duplicates, r.missing_removes) == (2, 1, 1)
    assert p.graph.num_edges == 1 and p.graph.edge_weight(*p.graph.node_ids(["a", "b"])) == 1.0


@pytest.mark.parametrize("ann", ["exact", "ivf"])
def test_predictions_exclude_self_and_neighbours_and_priors_exist(ann: str) -> None:
    p = Processor(dataclasses.replace(CFG, ann=ann))
    rng = np.random.default_rng(0)
    evs = [EdgeEvent(f"n{a}", f"n{b}", float(i)) for i, (a, b) in enumerate(rng.integers(0, 40, (200, 2))) if a != b]
    r = p.process(evs, now=0.0)
    assert len(r.priors) == len(evs) and ((r.priors >= 0) & (r.priors <= 1)).all()
    for pred in r.predictions:
        me = p.graph.node_id(pred.node)
        nbrs = set(p.graph.keys(p.graph.in_neighbors(me)[0]))
        assert 0 < len(pred.partners) <= 3
        assert all(n != pred.node and n not in nbrs for n, _ in pred.partners)
        assert [x for _, x in pred.partners] == sorted((x for _, x in pred.partners), reverse=True)
    nodes = p.graph.node_ids([x.node for x in r.predictions])
    near = p._nearest(nodes, 4)  # both paths: at most c candidates, never the node or a current neighbour
    assert near.shape == (len(nodes), 4) and (near > 0).any()
    for q, row in zip(nodes, near):
        cands = row[row > 0]
        assert q not in cands and not p.graph.edge_lookup(np.full(len(cands), q), cands)[0].any()


def test_online_training_and_hot_swap_change_the_version_and_keep_state() -> None:
    from gnn.synthetic import SyntheticConfig, generate

    p = Processor(ProcessorConfig(hidden=8, out=8, hashed_dim=4, top_k=3, backend="torch", refit_every=400))
    evs = [EdgeEvent(src=e.value["src"], dst=e.value["dst"], ts=e.value["ts"], op=e.value.get("op", "add"))
           for e in generate(SyntheticConfig(events=3000, seed=4))]
    first = p.process(evs[:1500], now=0.0)
    assert first.predictions and p.model_version.endswith("/untrained")
    job = p.training_job()
    assert job is not None and p.training_job() is None  # one snapshot at a time until more data arrives
    edges_before = p.graph.num_edges
    version = p.install(job())  # what the worker does from a background thread's result
    assert version.endswith("/lr-1") and p.graph.num_edges == edges_before
    second = p.process(evs[1500:], now=1.0)
    assert second.predictions and all(0 < x <= 1 for pr in second.predictions for _, x in pr.partners)
    assert (p.engine.embeddings - p.engine.reference()[: p.graph.n_rows]).abs().max() <= 1e-4
    assert p.training_job() is not None  # 512 more positives (the batch's training sample) since the last fit


def test_large_batches_train_on_a_seeded_sample_of_their_adds() -> None:
    evs = [EdgeEvent(src=f"a{i % 50}", dst=f"b{(i * 7) % 61}", ts=float(i)) for i in range(300)]

    def run(cap: int) -> tuple[Processor, list]:
        p = Processor(dataclasses.replace(CFG, train_per_batch=cap))
        return p, [p.process(evs[:200], now=0.0), p.process(evs[200:], now=1.0)]

    p, (r1, r2) = run(64)
    assert len(r1.priors) == 200 and len(r2.priors) == 100  # every add is still scored
    assert [len(x) for x in p.link._x] == [64, 64, 64, 64] and p.link._since == 128  # 64 edges + 64 negatives a batch
    q, _ = run(64)
    assert all(np.array_equal(a, b) for a, b in zip(p.link._x, q.link._x))  # seeded: a replay draws the same sample
    full, _ = run(1_000)
    assert [len(x) for x in full.link._x] == [200, 200, 100, 100]  # small batches: every add
    rows = {tuple(r) for r in full.link._x[0]}  # the sampled positives are the batch's own edges' features
    assert all(tuple(r) in rows for r in p.link._x[0])


def test_alert_storm_becomes_one_summary() -> None:
    p = Processor(dataclasses.replace(CFG, top_k=0, alert_rate=0.5, storm_max=5, alert_warmup=0))
    p.detector.warmup = 0  # score from the first edge on (the calibrations still need samples)
    rng = np.random.default_rng(0)
    alerts = []
    for t in range(6):
        evs = [EdgeEvent(f"n{a}", f"n{b}", float(t * 100 + i)) for i, (a, b) in enumerate(rng.integers(0, 80, (400, 2)))]
        alerts += p.process(evs, now=0.0).alerts
    assert alerts and all(a.kind == "alert_storm" for a in alerts)
    a = alerts[-1]
    assert a.components["count"] > 5 and a.node is not None and len(a.id) == 24


def test_alert_storm_names_the_busiest_node_and_breaks_ties_by_first_seen() -> None:
    p = Processor(CFG)
    evs = [EdgeEvent("x", "y", 1.0), EdgeEvent("b", "a", 2.0), EdgeEvent("a", "c", 3.0), EdgeEvent("b", "d", 4.0)]
    storm = p._storm(evs, np.array([0.99, 0.98, 0.97, 0.999]))
    assert storm.node == "b"  # a and b both have 2 edges; b is seen first
    assert storm.components == {"count": 4.0, "distinct_nodes": 6.0, "top_node_edges": 2.0, "mean_score": 0.98475}
    assert p._storm(evs[:1], np.array([0.99])).node == "x"  # x and y tie: the source comes first


def test_ivf_index_is_maintained_and_left_out_of_snapshots() -> None:
    import pickle

    p = Processor(dataclasses.replace(CFG, ann="ivf"))
    rng = np.random.default_rng(1)
    batches = [[EdgeEvent(f"n{a}", f"n{b}", float(i)) for i, (a, b) in enumerate(rng.integers(0, 300, (150, 2)))]
               for _ in range(3)]
    p.process(batches[0], now=0.0)
    assert p._index is not None and p._index._sorted == p.graph.n_rows
    p.process(batches[1], now=1.0)  # new nodes wait in the tail or trigger a re-sort; none is lost
    assert max(p._index._sorted, 1) <= p.graph.n_rows
    q = pickle.loads(pickle.dumps(p))
    assert q._index is None  # rebuilt on demand: a snapshot does not carry (or depend on) it
    a, b = p.process(batches[2], now=2.0), q.process(batches[2], now=2.0)
    assert [x.node for x in a.predictions] == [x.node for x in b.predictions] and q._index is not None


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("ann", ["exact", "ivf"])
def test_processor_on_cuda_equals_cpu(ann: str) -> None:
    """``--device cuda``: the whole batch path (engine, priors, anomaly scores, top-k, IVF) on the
    GPU gives the CPU's results; predictions compare by their ranked probabilities (near-ties may
    swap partners)."""
    cfg = dataclasses.replace(CFG, hidden=16, out=16, top_k=5, ann=ann)
    cpu, gpu = Processor(cfg), Processor(dataclasses.replace(cfg, device="cuda"))
    rng = np.random.default_rng(3)
    for b in range(4):
        evs = [EdgeEvent(f"n{a}", f"n{c}", float(b * 300 + i)) for i, (a, c) in enumerate(rng.integers(0, 400, (300, 2)))]
        evs += [EdgeEvent(e.src, e.dst, e.ts + 0.5, op="remove") for e in evs[:20]]
        r_cpu, r_gpu = cpu.process(evs, now=float(b)), gpu.process(evs, now=float(b))
        assert np.allclose(r_cpu.priors, r_gpu.priors, atol=1e-4)
        assert np.allclose(r_cpu.anomaly.score, r_gpu.anomaly.score, atol=1e-3)
        assert [p.node for p in r_cpu.predictions] == [p.node for p in r_gpu.predictions]
        for a, g in zip(r_cpu.predictions, r_gpu.predictions):
            assert np.allclose([x for _, x in a.partners], [x for _, x in g.partners], atol=1e-3)
    assert gpu.engine.embeddings.device.type == "cuda"
    assert (gpu.engine.embeddings.cpu() - cpu.engine.embeddings).abs().max() <= 1e-4


def test_touched_nodes_in_first_appearance_order_with_newest_stamp() -> None:
    from gnn.processor import _touched

    rng = np.random.default_rng(3)
    src, dst = rng.integers(0, 30, 400), rng.integers(0, 30, 400)  # 0 = unknown node: its edge is skipped
    stamps = rng.integers(0, 10**12, 400)
    ref: dict[int, int] = {}
    for s, d, t in zip(src.tolist(), dst.tolist(), stamps.tolist()):
        if s > 0 and d > 0:
            for node in (s, d):
                ref[node] = max(ref.get(node, -1), t)
    nodes, latest = _touched(src, dst, stamps)
    assert nodes.tolist() == list(ref) and latest.tolist() == list(ref.values())
    assert _touched(src[:0], dst[:0], stamps[:0])[0].tolist() == []


def test_prediction_budget_defers_oldest_first_and_coalesces() -> None:
    from gnn.processor import PREDICTION_FLOOR

    p = Processor(dataclasses.replace(CFG, predictions_per_event=0.25))
    star = [EdgeEvent(src="hub", dst=f"leaf{i}", ts=float(i)) for i in range(60)]  # 61 touched nodes
    r1 = p.process(star, now=60.0, produced_ms=list(range(1000, 1060)))
    assert len(r1.predictions) == max(PREDICTION_FLOOR, 15) and p.waiting == 61 - 16
    assert [q.node for q in r1.predictions] == ["hub"] + [f"leaf{i}" for i in range(15)]  # first touched, first served
    # leaf40 is touched again while it waits: it keeps its place and takes the newer trigger
    r2 = p.process([EdgeEvent(src="leaf40", dst="other", ts=61.0)], now=61.0, produced_ms=[5000])
    assert [q.node for q in r2.predictions] == [f"leaf{i}" for i in range(15, 31)]
    served = {q.node: q.trigger_ts_ms for r in (r1, r2) for q in r.predictions}
    while p.waiting:
        r = p.process([EdgeEvent(src="hub", dst="leaf0", ts=62.0)], now=62.0, produced_ms=[6000])
        assert len(r.predictions) <= PREDICTION_FLOOR
        for q in r.predictions:
            assert q.node not in served or q.node in ("hub", "leaf0")  # each waiting node once
            served[q.node] = q.trigger_ts_ms
    assert set(served) == {"hub", "other"} | {f"leaf{i}" for i in range(60)}  # nothing lost
    assert served["leaf40"] == 5000 and served["leaf41"] == 1041


def test_no_budget_predicts_every_touched_node_and_budget_survives_a_snapshot() -> None:
    import pickle

    star = [EdgeEvent(src="hub", dst=f"leaf{i}", ts=float(i)) for i in range(60)]
    assert len(Processor(CFG).process(star, now=60.0).predictions) == 61
    p = Processor(dataclasses.replace(CFG, predictions_per_event=0.1))
    p.process(star, now=60.0)
    q = pickle.loads(pickle.dumps(p))
    assert q.waiting == p.waiting == 61 - 16
    more = [EdgeEvent(src="x", dst="y", ts=61.0)]
    assert [a.node for a in q.process(more, now=61.0).predictions] == [a.node for a in p.process(more, now=61.0).predictions]
    old = p.__getstate__()
    del old["_waiting"]  # a snapshot from before the budget
    r = Processor.__new__(Processor)
    r.__setstate__(old)
    assert r.waiting == 0


def test_a_restored_processor_takes_new_serving_settings_and_keeps_its_model() -> None:
    import pickle

    p = Processor(CFG)
    star = [EdgeEvent(src="hub", dst=f"leaf{i}", ts=float(i)) for i in range(60)]
    p.process(star, now=60.0)
    q = pickle.loads(pickle.dumps(p))  # as a snapshot restores it
    new = dataclasses.replace(CFG, top_k=5, predictions_per_event=0.5, refit_every=77, hidden=32)
    changed, kept = q.reconfigure(new)
    assert changed == {"top_k": (3, 5), "predictions_per_event": (0.0, 0.5), "refit_every": (5000, 77)}
    assert kept == {"hidden": (8, 32)} and q.config.hidden == 8 and q.link.refit_every == 77
    r = q.process([EdgeEvent(src=f"x{i}", dst=f"y{i}", ts=61.0) for i in range(40)], now=61.0)
    assert len(r.predictions) == 20 and all(len(a.partners) <= 5 for a in r.predictions)  # the budget: 0.5 x 40
    assert max(len(a.partners) for a in r.predictions) == 5


@settings(max_examples=40, deadline=None)
@given(st.lists(event, min_size=1, max_size=40))
def test_preload_ends_with_the_graph_that_streaming_the_rows_gives(raw: list) -> None:
    evs = [e._replace(id=None) for e in _events(raw)]
    table = pd.DataFrame({"src": [e.src for e in evs], "dst": [e.dst for e in evs], "ts": [e.ts for e in evs],
                          "weight": 1.0, "op": [e.op for e in evs]})
    loaded, streamed = Processor(CFG), Processor(CFG)
    loaded.preload(table)
    streamed.process(evs, now=0.0)
    assert _edge_set(loaded) == _edge_set(streamed)


@pytest.mark.parametrize("compiled", [True, False])
def test_best_per_node_ranks_each_nodes_candidates_like_a_lexsort(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import gnn.processor as proc

    if compiled and proc._best_per_node_compiled is None:
        pytest.skip("numba is not installed, or LEPTON_NUMBA=0")
    if not compiled:
        monkeypatch.setattr(proc, "_best_per_node_compiled", None)
    rng = np.random.default_rng(3)
    owner = np.sort(rng.choice([0, 1, 3, 4, 6], 400))  # nodes 2, 5 and 7 have no candidates
    probs = rng.choice([0.1, 0.5, 0.5, 0.9], 400) + np.where(owner == 4, rng.random(400), 0)  # ties, and distinct
    keep = owner != 1
    keep[np.flatnonzero(owner == 1)[:3]] = True  # node 1: fewer candidates than k
    owner, probs = owner[keep], probs[keep]
    take, bounds = proc._best_per_node(owner, probs, 8, 5)
    order = np.lexsort((-probs, owner))
    want = np.concatenate([order[owner[order] == n][:5] for n in range(8)])
    assert take.tolist() == want.tolist()
    assert np.diff(bounds).tolist() == [5, 3, 0, 5, 5, 0, 5, 0]


def test_auto_search_takes_the_index_for_a_batch_of_many_touched_nodes() -> None:
    rng = np.random.default_rng(4)
    cfg = dataclasses.replace(CFG, ann="auto", ann_min_work=40 * 300)  # 40 touched nodes x 300 rows
    p = Processor(cfg)
    p.preload(pd.DataFrame({"src": [f"n{i}" for i in rng.integers(0, 299, 3000)],
                            "dst": [f"n{i}" for i in rng.integers(0, 299, 3000)]}))
    few = p.process([EdgeEvent(src="n1", dst="n2", ts=1.0), EdgeEvent(src="n3", dst="n4", ts=1.0)], now=1.0)
    assert p._index is None and len(few.predictions) == 4  # 4 nodes x 300 rows: exact
    burst = [EdgeEvent(src=f"n{i}", dst=f"n{i + 100}", ts=2.0) for i in range(5, 35)]  # 60 touched nodes
    many = p.process(burst, now=2.0)
    assert p._index is not None and len(many.predictions) == 60
    assert all(len(x.partners) == cfg.top_k for x in many.predictions)
    p.process([EdgeEvent(src="n1", dst="n9", ts=3.0)], now=3.0)  # the index stays current from now on
    assert p._index._sorted == p.graph.n_rows


def test_search_choice_by_mode_size_work_and_device() -> None:
    from gnn.processor import CUDA_EXACT_ROWS, exact_search

    auto = dataclasses.replace(CFG, ann="auto", ann_min_nodes=1000, ann_min_work=10_000)
    assert exact_search(auto, 500, 10, "cpu") and not exact_search(auto, 500, 40, "cpu")  # 40 x 500 >= the work bound
    assert not exact_search(auto, 5000, 1, "cpu")  # a large graph: the index
    assert exact_search(auto, 5000, 40, "cuda") and exact_search(auto, CUDA_EXACT_ROWS - 1, 8000, "cuda")
    assert not exact_search(auto, CUDA_EXACT_ROWS, 1, "cuda")  # a chunk's products would take 512 x rows floats
    assert exact_search(dataclasses.replace(auto, ann_min_work=0), 500, 10**6, "cpu")  # 0: by graph size only
    assert exact_search(dataclasses.replace(auto, ann="exact"), 10**8, 1, "cpu")
    assert not exact_search(dataclasses.replace(auto, ann="ivf"), 10, 1, "cuda")


def test_node_features_refresh_the_index_rows_they_move() -> None:
    from gnn.events import NodeEvent

    rng = np.random.default_rng(6)
    p = Processor(dataclasses.replace(CFG, ann="ivf", feature_dim=2))
    p.preload(pd.DataFrame({"src": [f"n{i}" for i in rng.integers(0, 99, 600)],
                            "dst": [f"n{i}" for i in rng.integers(0, 99, 600)]}))
    p.process([EdgeEvent(src="n1", dst="n2", ts=1.0)], now=1.0)  # builds the index
    before = p._index._table.clone()
    p.set_node_features([NodeEvent(node=f"n{i}", features=(3.0, -2.0), ts=2.0) for i in range(10)])
    index = p._index
    assert not torch.allclose(before, index._table)  # the supplied features moved rows ...
    assert torch.allclose(index._table, index._unit(p.engine.embeddings[index._rows]), atol=1e-6)  # ... all of them


@settings(max_examples=40, deadline=None)
@given(st.lists(event, min_size=1, max_size=60), st.integers(1, 15))
def test_hub_candidates_are_the_nodes_with_the_most_new_partners_lately(raw: list, batch: int) -> None:
    p = Processor(dataclasses.replace(CFG, hubs=3))
    evs = _events(raw)
    for i in range(0, len(evs), batch):
        p.process(evs[i:i + batch], now=0.0)
        level = p.link.features.fresh.level(np.arange(p.graph.n_rows))
        want = np.sort(level[1:][level[1:] > 0])[::-1][:3]  # kept from the last top and the batch: as ranking all
        got = level[p._hubs] if p._hubs is not None else np.zeros(0)
        assert np.allclose(got, want)


def test_more_hubs_after_new_settings_are_ranked_from_every_node() -> None:
    p = Processor(dataclasses.replace(CFG, hubs=2))
    rng = np.random.default_rng(5)
    batches = [[EdgeEvent(f"n{a}", f"n{b}", float(i)) for i, (a, b) in enumerate(rng.integers(0, 60, (50, 2)))]
               for _ in range(4)]
    for b in batches[:3]:
        p.process(b, now=0.0)
    p.reconfigure(dataclasses.replace(CFG, hubs=5))
    p.process(batches[3][:1], now=0.0)  # one event: the top five cannot come from the last two and it alone
    level = p.link.features.fresh.level(np.arange(p.graph.n_rows))
    assert np.allclose(level[p._hubs], np.sort(level[1:])[::-1][:5])


def test_hubs_are_served_to_nodes_not_yet_linked_to_them() -> None:
    """A star's centre is a candidate of every other node; with ``hubs=0`` it is not reached."""
    star = [EdgeEvent("hub", f"leaf{i}", float(i)) for i in range(30)]
    late = [EdgeEvent(f"x{i}", f"y{i}", 100.0 + i) for i in range(5)]  # pairs far from the star
    served = {}
    for hubs in (1, 0):
        p = Processor(dataclasses.replace(CFG, hubs=hubs, top_k=10, candidates=2))
        p.process(star, now=30.0)
        r = p.process(late, now=105.0)
        served[hubs] = [pred for pred in r.predictions if pred.node.startswith("x")]
    assert served[1] and all("hub" in dict(pred.partners) for pred in served[1])
    assert not any("hub" in dict(pred.partners) for pred in served[0])
