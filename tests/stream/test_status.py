"""The dashboard's rolling window: events/s and latency percentiles over the last seconds."""

from __future__ import annotations

import numpy as np

from stream.status import LiveStats


def test_window_and_sample_cap() -> None:
    live = LiveStats(window=10.0, samples=1_000)
    live.batch(500, np.full(500, 9.0), done_at=100.0)  # leaves the window by t = 111
    live.batch(800, np.full(800, 0.2), done_at=105.0)
    live.batch(400, np.full(400, 0.1), done_at=109.0)
    s = live.snapshot(now=109.0)
    assert s["events_per_s"] == 170.0 and s["batches_in_window"] == 3
    # the newest 1,000 latencies: 400 x 0.1 s and 600 x 0.2 s (the 9 s batch is beyond the cap)
    assert s["latency_p50_ms"] == 200.0 and s["latency_p99_ms"] == 200.0
    s = live.snapshot(now=116.0)
    assert s["batches_in_window"] == 1 and s["latency_p50_ms"] == 100.0
    assert live.snapshot(now=200.0)["latency_p99_ms"] is None
