"""MIDAS-R scoring (vectorised == sequential), calibration semantics, detector warm-up."""

from __future__ import annotations

import numpy as np
import pytest

from gnn.anomaly import AnomalyDetector, MidasR, QuantileCalibrator


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("tick", [60.0, 1.0])  # 1 s: a batch spans ~100 ticks, cut into several spans
def test_batch_scores_equal_one_by_one(decay: float, tick: float) -> None:
    rng = np.random.default_rng(0)
    src, dst = rng.integers(1, 30, 600), rng.integers(1, 30, 600)
    ts = np.sort(rng.uniform(0, 600, 600))
    a, b = MidasR(tick=tick, decay=decay, seed=1), MidasR(tick=tick, decay=decay, seed=1)
    batch = np.concatenate([a.score(src[i:i + 97], dst[i:i + 97], ts[i:i + 97]) for i in range(0, 600, 97)])
    single = np.concatenate([b.score(src[i:i + 1], dst[i:i + 1], ts[i:i + 1]) for i in range(600)])
    np.testing.assert_allclose(batch, single, rtol=1e-9, atol=1e-9)  # a span's weighted sum rounds (~1e-9)


def test_burst_scores_above_background() -> None:
    rng = np.random.default_rng(1)
    m = MidasR(tick=1.0)
    normal = []
    for t in range(200):  # background: random edges among 500 nodes, 20 per tick
        normal.append(m.score(rng.integers(1, 500, 20), rng.integers(1, 500, 20), np.full(20, t + 0.5)))
    burst = m.score(np.full(50, 7), np.full(50, 9), np.full(50, 200.5))
    assert np.median(burst) > np.percentile(np.concatenate(normal[50:]), 99)
    assert m._cur.nbytes == m._tot.nbytes == 3 * 2 * 2719 * 8  # constant memory


def test_late_events_join_the_current_tick() -> None:
    m = MidasR(tick=10)
    m.score(np.array([1]), np.array([2]), np.array([100.0]))
    m.score(np.array([1]), np.array([2]), np.array([5.0]))  # late: no crash, no tick rewind
    assert m._t == 10


def test_calibrator_midrank_and_warmup() -> None:
    c = QuantileCalibrator(window=100, refresh=1, min_samples=10)
    assert c(np.ones(5)).tolist() == [0.0] * 5  # not enough evidence yet
    assert c(np.ones(10)).tolist() == [0.5] * 10  # ties get the mid-rank, never 1
    c(np.arange(100, dtype=float))
    assert c(np.array([1000.0]))[0] == 0.995  # ranked against the window, which includes it
    assert c(np.array([-1.0]))[0] == 0.005


def test_detector_warms_up_then_scores_in_unit_interval() -> None:
    d = AnomalyDetector(tick=1.0, warmup=100)
    rng = np.random.default_rng(2)
    first = d.score(rng.integers(1, 50, 50), rng.integers(1, 50, 50), np.arange(50.0), np.full(50, 0.5))
    assert (first.score == 0).all()
    for k in range(5):
        out = d.score(rng.integers(1, 50, 50), rng.integers(1, 50, 50), np.arange(50.0) + 50 * (k + 1),
                      rng.uniform(0, 1, 50))
    assert ((out.score >= 0) & (out.score <= 1)).all() and out.score.max() > 0
    assert set(out.components) >= {"midas", "surprise"}


def test_node_burst_flags_a_sudden_spike() -> None:
    from gnn.anomaly import NodeBurst

    nb = NodeBurst(tick=1.0, alpha=0.2)
    rng = np.random.default_rng(3)
    for t in range(100):  # every node: about one edge per tick
        nb.score(rng.integers(1, 50, 25), rng.integers(50, 100, 25), np.full(25, t + 0.5))
    normal = nb.score(rng.integers(1, 50, 25), rng.integers(50, 100, 25), np.full(25, 100.5))
    spike = nb.score(np.full(30, 7), rng.integers(50, 100, 30), np.full(30, 100.5))
    assert spike[-1] > 5 * max(1.0, normal.max()) and spike[0] < spike[-1]  # grows within the tick
    assert nb._mean.nbytes == nb._var.nbytes  # per-node arrays, no per-edge state


def test_node_burst_batch_equals_one_edge_at_a_time() -> None:
    from gnn.anomaly import NodeBurst

    rng = np.random.default_rng(4)
    src, dst = rng.integers(1, 12, 900), rng.integers(1, 12, 900)  # nodes are sources and targets in one tick
    src[::37] = dst[::37]  # self-loops
    ts = np.sort(rng.uniform(0, 300, 900))
    ts[::53] -= 40  # late events join the current tick
    a, b = NodeBurst(tick=7.0), NodeBurst(tick=7.0)
    batch = np.concatenate([a.score(src[i:i + 113], dst[i:i + 113], ts[i:i + 113]) for i in range(0, 900, 113)])
    single = np.concatenate([b.score(src[i:i + 1], dst[i:i + 1], ts[i:i + 1]) for i in range(900)])
    np.testing.assert_allclose(batch, single, rtol=1e-12, atol=1e-12)
    assert np.abs(batch).max() > 1.0


def _activity_reference(batches: list[tuple[np.ndarray, np.ndarray]], window: float) -> np.ndarray:
    """One edge at a time: decayed counts on an edge clock, each edge sees only earlier ones."""
    val: dict[int, float] = {}
    last: dict[int, int] = {}
    out, clock = [], 0
    for s, d in batches:
        for a, b in zip(s.tolist(), d.tolist()):
            act = {x: val.get(x, 0.0) * np.exp(-(clock - last.get(x, clock)) / window) for x in {a, b}}
            out.append(-(np.log1p(act[a]) + np.log1p(act[b])))
            for x in act:
                val[x], last[x] = act[x] + 1.0, clock
            clock += 1
    return np.array(out)


def test_node_activity_equals_edge_by_edge_reference() -> None:
    from gnn.anomaly import NodeActivity

    rng = np.random.default_rng(4)
    for window in (1.0, 7.0, 300.0):  # window 1: many vectorised slices per batch
        batches = [(rng.integers(0, 40, m), rng.integers(0, 40, m)) for m in rng.integers(1, 500, 6)]
        batches.append((np.array([5, 5, 6]), np.array([5, 6, 5])))  # self-loops count once
        na = NodeActivity(window=window)
        got = np.concatenate([na.score(s, d) for s, d in batches])
        np.testing.assert_allclose(got, _activity_reference(batches, window), atol=1e-6)


def test_dormancy_flags_an_edge_between_idle_nodes() -> None:
    from gnn.anomaly import NodeActivity

    na = NodeActivity(window=200.0)
    rng = np.random.default_rng(5)
    na.score(np.array([900]), np.array([901]))  # two nodes active once, then idle
    for _ in range(20):  # 50 busy nodes keep talking
        na.score(rng.integers(1, 50, 100), rng.integers(1, 50, 100))
    busy = na.score(rng.integers(1, 50, 99), rng.integers(1, 50, 99))
    idle = na.score(np.array([900]), np.array([901]))
    assert idle[0] > busy.max()  # dormant endpoints: the most anomalous edge
    assert na._value.nbytes == na._at.nbytes  # two floats per node, nothing per edge


def test_weights_parse_and_reject_unknown_components() -> None:
    import pytest

    from gnn.anomaly import parse_weights

    assert parse_weights("dormancy=1, midas=0.5") == {"dormancy": 1.0, "surprise": 0.0, "midas": 0.5, "burst": 0.0}
    for bad in ("novelty=1", "dormancy", "dormancy=x"):
        with pytest.raises(ValueError):
            parse_weights(bad)
    with pytest.raises(ValueError, match="not all zero"):
        AnomalyDetector(weights=parse_weights("midas=0"))
