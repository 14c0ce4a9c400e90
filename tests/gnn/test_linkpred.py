"""Pair features equal a brute-force reference; the logistic decoder learns a separable rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnn.graph import DynamicGraph
from gnn.linkpred import FRESH_WINDOW, LogisticDecoder, PairFeatures


def test_pair_features_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    g = DynamicGraph(min_compact=16)
    g.node_ids([f"n{i}" for i in range(40)], create=True)
    feats = PairFeatures(g, tau=10.0)
    node_last: dict[int, float] = {}
    pair_last: dict[tuple[int, int], float] = {}
    _observed: tuple[list[int], list[int]] = ([], [])
    for step in range(5):  # several batches: base + delta arcs, some removals
        s, d = rng.integers(1, 35, 60), rng.integers(1, 35, 60)  # nodes 35..40 never interact
        g.add_edges(s, d)
        feats.observe(s, d, np.full(60, float(step)))
        node_last.update({int(x): float(step) for x in np.r_[s, d]})
        pair_last.update({(min(x, y), max(x, y)): float(step) for x, y in zip(s.tolist(), d.tolist())})
        _observed[0].extend(s.tolist())
        _observed[1].extend(d.tolist())
        g.remove_edges(s[:5], d[:5])
    u, v = rng.integers(0, 41, 300), rng.integers(1, 41, 300)
    emb = torch.randn(g.n_rows, 8)
    got = feats.compute(u, v, np.full(300, 7.0), emb)
    nb = {x: set(g.in_neighbors(x)[0].tolist()) for x in range(1, g.n_rows)}
    deg = g.in_degree()
    for i in range(300):
        a, b = int(u[i]), int(v[i])
        if a == 0:
            assert not got[i].any()
            continue
        common = nb[a] & nb[b]
        assert got[i, 0] == g.has_edge(a, b)
        assert got[i, 1] == pytest.approx(math.log1p(abs(g.edge_weight(a, b))))
        assert got[i, 3] == pytest.approx(math.log1p(deg[a])) and got[i, 4] == pytest.approx(math.log1p(deg[b]))
        assert got[i, 5] == pytest.approx(math.log1p(len(common)))
        x, y = (emb[a] - emb[1:].mean(0)).double(), (emb[b] - emb[1:].mean(0)).double()
        assert got[i, 7] == pytest.approx(float(x @ y / (x.norm() * y.norm())), abs=1e-6)  # centred cosine
        assert got[i, 6] == pytest.approx(sum(1 / math.log(max(deg[c], 2)) for c in common))
        last = pair_last.get((min(a, b), max(a, b)))
        assert got[i, 2] == pytest.approx(0.0 if last is None else math.exp(-(7.0 - last) / 10.0))
        for x, age, new in ((a, 9, 11), (b, 10, 12)):  # node activity: log1p(age), or "new"
            assert got[i, new] == (x not in node_last)
            assert got[i, age] == pytest.approx(math.log1p(7.0 - node_last[x]) if x in node_last else 0.0)
    assert got[:, 11].any() and not got[:, 11].all()
    # activity: each earlier edge j of the node (edge clock, 300 edges so far) weighs exp(-(300 - j) / window)
    w = feats.activity.window
    edges = [(int(x), int(y)) for x, y in zip(*_observed)]
    for i in range(300):
        a, b = int(u[i]), int(v[i])
        if a == 0:
            continue
        for x, col in ((a, 13), (b, 14)):
            ref = sum(math.exp(-(300 - j) / w) for j, e in enumerate(edges) if x in e)
            assert got[i, col] == pytest.approx(math.log1p(ref), abs=1e-9)


def test_logistic_decoder_learns() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 3))
    y = (x[:, 0] - 2 * x[:, 2] > 0).astype(float)
    dec = LogisticDecoder().fit(x, y)
    acc = ((dec.predict(x) > 0.5) == y).mean()
    assert acc > 0.97 and dec.w[0] > 0 > dec.w[2]
    with pytest.raises(RuntimeError):
        LogisticDecoder().predict(x)


def _common_reference(g, a, b):  # noqa: ANN001, ANN202 - plain set intersection
    deg = g.in_degree().astype(np.float64)
    cn, aa = [], []
    for u, v in zip(a.tolist(), b.tolist()):
        both = set(g.in_neighbors(u)[0].tolist()) & set(g.in_neighbors(v)[0].tolist())
        cn.append(len(both))
        aa.append(sum(1.0 / np.log(max(deg[x], 2.0)) for x in both))
    return np.array(cn, np.float64), np.array(aa)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])])
@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("path", ["bitmap", "index", "compiled", "threaded"])  # NumPy: small graphs look up marks, big ones
def test_common_neighbours_match_set_intersection(directed: bool, device: str, path: str,  # a sorted index
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from gnn.graph import DynamicGraph
    from gnn.linkpred import _common_neighbours, _cn_compiled

    if path in ("compiled", "threaded") and _cn_compiled is None:  # any device: the loop reads the host graph
        pytest.skip("numba is not installed (or LEPTON_NUMBA=0)")
    if path not in ("compiled", "threaded"):
        monkeypatch.setattr("gnn.linkpred._cn_compiled", None)
    if path == "threaded":  # the pairs split over threads by their larger node
        monkeypatch.setattr("gnn.linkpred._THREADED_PAIRS", 0)
        monkeypatch.setattr("gnn.jit._SPLIT", [3])
    monkeypatch.setattr("gnn.linkpred._CN_BITMAP", 1 << 24 if path == "bitmap" else 0)
    rng = np.random.default_rng(5)
    g = DynamicGraph(directed=directed, min_compact=500)  # the first add is the base; later ones stay in the delta
    g.node_ids([f"n{i}" for i in range(60)], create=True)
    hub = np.zeros(200, np.int64) + 1  # a hub, as in serving: one node against many candidates
    g.add_edges(np.r_[rng.integers(1, 61, 600), hub], np.r_[rng.integers(1, 61, 600), rng.integers(2, 61, 200)])
    g.remove_edges(rng.integers(1, 61, 50), rng.integers(1, 61, 50))
    g.node_ids([f"m{i}" for i in range(5)], create=True)
    g.add_edges(rng.integers(1, 66, 30), rng.integers(1, 66, 30))  # delta arcs, new nodes among them
    assert g.delta_arcs and g._in.dead  # base, dead and delta arcs all read
    a = np.r_[np.ones(40, np.int64), rng.integers(1, 61, 300)]
    b = rng.integers(1, 61, 340)
    cn, aa = _common_neighbours(g, a, b, g.in_degree().astype(np.float64), device)
    ref_cn, ref_aa = _common_reference(g, a, b)
    assert np.array_equal(cn, ref_cn) and np.allclose(aa, ref_aa) and cn.max() > 3
    if path in ("compiled", "threaded"):  # the same sums in the same order as the NumPy path: equal, not close
        monkeypatch.setattr("gnn.linkpred._cn_compiled", None)
        assert all(np.array_equal(x, y) for x, y in zip((cn, aa), _common_neighbours(g, a, b, g.in_degree(), device)))
    import gnn.linkpred as lp

    old, lp._CN_BUDGET = lp._CN_BUDGET, 50  # many slices: same answer
    try:
        cn2, aa2 = _common_neighbours(g, a, b, g.in_degree().astype(np.float64), device)
    finally:
        lp._CN_BUDGET = old
    assert np.array_equal(cn2, ref_cn) and np.allclose(aa2, ref_aa)


def test_compute_in_slices_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    g = DynamicGraph()
    g.node_ids([f"n{i}" for i in range(30)], create=True)
    rng = np.random.default_rng(1)
    g.add_edges(rng.integers(1, 31, 200), rng.integers(1, 31, 200))
    f = PairFeatures(g)
    u, v = rng.integers(0, 31, 500), rng.integers(1, 31, 500)
    emb = torch.randn(31, 8)
    whole = f.compute(u, v, np.full(500, 3.0), emb)
    monkeypatch.setattr(PairFeatures, "CHUNK", 64)
    assert np.allclose(f.compute(u, v, np.full(500, 3.0), emb), whole)


def test_reversed_scores_equal_scoring_the_reversed_pairs() -> None:
    from gnn.linkpred import LinkModel

    rng = np.random.default_rng(2)
    g = DynamicGraph()
    g.node_ids([f"n{i}" for i in range(50)], create=True)
    model = LinkModel(g, min_samples=10)
    emb = torch.randn(51, 8)
    for step in range(4):
        s, d = rng.integers(1, 45, 80), rng.integers(1, 45, 80)
        p, x = model.score(s, d, np.full(80, float(step)), emb)
        _, x_neg = model.score(s, rng.integers(1, 51, 80), np.full(80, float(step)), emb)
        model.remember(x, x_neg)
        g.add_edges(s, d)
        model.features.observe(s, d, np.full(80, float(step)))
    model.install(model.training_job()())
    u, v = rng.integers(1, 51, 200), rng.integers(1, 51, 200)
    forward, x = model.score(u, v, np.full(200, 9.0), emb)
    backward, _ = model.score(v, u, np.full(200, 9.0), emb)
    np.testing.assert_allclose(model.score_reversed(x), backward, rtol=1e-9)
    assert not np.allclose(forward, backward)  # the decoder is not symmetric by itself


def test_refit_from_the_previous_decoder_reaches_the_same_optimum_in_fewer_steps() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=6)
    x = rng.normal(size=(40_000, 6)) * rng.uniform(0.5, 20, 6) + rng.uniform(-5, 5, 6)
    y = (rng.random(40_000) < 1 / (1 + np.exp(-((x - x.mean(0)) / x.std(0)) @ w))).astype(np.float64)
    old = LogisticDecoder().fit(x[:30_000], y[:30_000])
    cold = LogisticDecoder().fit(x[10_000:], y[10_000:])
    warm = LogisticDecoder().fit(x[10_000:], y[10_000:], start=old)  # a quarter of the samples new
    np.testing.assert_allclose(warm.w, cold.w, rtol=1e-7, atol=1e-9)
    assert abs(warm.b - cold.b) < 1e-9
    np.testing.assert_allclose(warm.predict(x), cold.predict(x), atol=1e-9)
    assert warm.steps < cold.steps, (warm.steps, cold.steps)


def test_fits_converge_where_classes_nearly_separate_and_from_a_bad_start() -> None:
    rng = np.random.default_rng(3)
    n = 50_000  # DARPA-like: a positive is almost always a pair seen before, a negative almost never
    y = (rng.random(n) < 0.5).astype(np.float64)
    seen = np.where(rng.random(n) < 0.999, y, 1 - y)
    x = np.c_[seen, rng.normal(size=(n, 3)), y * rng.exponential(3.0, n)]
    cold = LogisticDecoder().fit(x, y)
    assert cold.steps < 25 and np.isfinite(cold.b) and np.abs(cold.w).max() < 50
    acc = ((cold.predict(x) > 0.5) == y).mean()
    assert acc > 0.99
    bad = LogisticDecoder().fit(x[:1000], y[:1000])
    bad.w, bad.b = rng.normal(size=x.shape[1]) * 1e6, 1e12  # a diverged decoder to refit from
    warm = LogisticDecoder().fit(x, y, start=bad)
    np.testing.assert_allclose(warm.w, cold.w, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(warm.predict(x), cold.predict(x), atol=1e-8)


def test_fresh_counts_first_time_pairs_only() -> None:
    """A pair's first interaction counts for both nodes once: not its repeats (either way round
    on an undirected graph), nor its copies within a batch."""
    g = DynamicGraph(directed=False)
    f = PairFeatures(g)
    a, b, c = g.node_ids(["a", "b", "c"], create=True)
    f.observe(np.array([a, a, b]), np.array([b, b, a]), np.zeros(3))  # one new pair, twice more
    f.observe(np.array([b, a]), np.array([a, c]), np.ones(2))  # a repeat (reversed), a new pair
    level = f.fresh.level(np.array([a, b, c]))
    d = np.exp(-1 / FRESH_WINDOW)  # a count decays by this per first-time pair after it (its own included)
    assert np.allclose(level, [d * d + d, d * d, d])
