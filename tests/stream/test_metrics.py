"""Prometheus registry: a vectorised histogram update equals one observation at a time."""

from __future__ import annotations

import numpy as np

from stream.metrics import Metrics, parse_prometheus


def test_observe_many_equals_observe_each() -> None:
    values = np.r_[np.random.default_rng(0).exponential(0.3, 500), 0.25, 0.005, 0.0, 20.0]  # edges, and past the last
    one, many = Metrics(), Metrics()
    for v in values.tolist():
        one.observe("event_latency_seconds", v)
    many.observe_many("event_latency_seconds", values[:200])
    many.observe_many("event_latency_seconds", values[200:])
    a, b = parse_prometheus(one.render()), parse_prometheus(many.render())
    assert a.keys() == b.keys() and len(a) == 16  # 14 buckets, sum, count
    for k in a:
        assert abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(a[k])), k
