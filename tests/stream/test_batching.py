"""Adaptive batching: the controller learns the cost model and sizes batches to keep up."""

from __future__ import annotations

import numpy as np

from stream.batching import BatchController


def _simulate(c: BatchController, rate: float, a: float, b: float, seconds: float = 30.0) -> dict[str, float]:
    """A queue fed at ``rate``; each batch costs a + b*n; the worst event latency after a 5 s
    warm-up, and the backlog at the end."""
    t, backlog_start, served, worst = 0.0, 0.0, 0, 0.0
    rng = np.random.default_rng(0)
    while t < seconds:
        c.arrivals(rate)
        n, window = c.next()
        arrived = int(rate * t) - served
        if arrived < n:  # wait for the batch to fill, at most the window
            wait = min(window, (n - arrived) / rate)
            t += wait
            arrived = int(rate * t) - served
        take = max(1, min(n, arrived))
        cost = (a + b * take) * float(rng.uniform(0.9, 1.1))
        oldest = served / rate  # arrival time of the oldest event in this batch
        t += cost
        served += take
        if t > 5.0:
            worst = max(worst, t - oldest)
        c.observe(take, cost)
        backlog_start = int(rate * t) - served
    return {"worst": worst, "backlog": backlog_start}


def test_learns_the_cost_model() -> None:
    c = BatchController()
    for n in [10, 50, 200, 1000, 30, 500] * 5:
        c.observe(n, 0.02 + 50e-6 * n)
    assert abs(c.a - 0.02) < 1e-3 and abs(c.b - 50e-6) < 1e-6


def test_low_rate_small_batches_high_rate_keeps_up_within_target() -> None:
    a, b = 0.01, 60e-6  # ~16k records/s at most
    low = _simulate(BatchController(target=0.25), rate=500.0, a=a, b=b)
    high = _simulate(BatchController(target=0.25), rate=10_000.0, a=a, b=b)
    assert low["worst"] < 0.05  # no point waiting at low rates
    assert high["backlog"] < 500 and high["worst"] < 0.25  # keeps up, within the target


def test_overload_takes_the_largest_batches() -> None:
    c = BatchController(max_batch=5000)
    for _ in range(10):
        c.observe(100, 0.001 + 100 * 200e-6)
    c.arrivals(10_000.0)  # 200 us/record: 5k/s at most
    assert c.next() == (5000, 0.0)


def test_a_backlog_is_drained_in_large_batches_even_when_arrivals_stop() -> None:
    c = BatchController(max_batch=5000)
    for n in (50, 70, 40) * 5:
        c.observe(n, 0.05 + 200e-6 * n)
    c.arrivals(0.001)  # the producer stopped: the rate estimate decays towards zero
    assert c.next(backlog=0)[0] < 50
    assert c.next(backlog=120_000) == (5000, 0.0)
    assert c.next(backlog=800) == (800, 0.0)
