"""Live status for operators: rolling throughput and latency, recent alerts and prediction metadata.

Feeds ``/api/status`` and the ``/ui`` dashboard. Prediction samples hold metadata only (id,
batch, model version, number of partners); partners appear only when the operator turned
``ui_plaintext`` on and asks from the worker's own machine.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LiveStats"]


@dataclass
class LiveStats:
    """Rolling window over the last ``window`` seconds of batches."""

    window: float = 10.0
    _batches: deque = field(default_factory=deque)  # (done_at, events)
    samples: int = 20_000  # latencies kept for the percentiles (the newest)
    _latency: deque = field(default_factory=deque)  # (done_at, seconds of each event of a batch)
    alerts: deque = field(default_factory=lambda: deque(maxlen=20))
    predictions: deque = field(default_factory=lambda: deque(maxlen=20))

    def batch(self, events: int, latencies: "np.ndarray | list[float]", done_at: float | None = None) -> None:
        t = time.time() if done_at is None else done_at
        self._batches.append((t, events))
        self._latency.append((t, np.asarray(latencies, np.float64)[-self.samples:]))  # one array per batch
        self._trim(t)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Events/s and latency percentiles (ms) over the window (the newest ``samples`` events)."""
        now = time.time() if now is None else now
        self._trim(now)
        parts = [x for t, x in self._latency if t >= now - self.window]
        lat = np.concatenate(parts)[-self.samples:] if parts else np.zeros(0)
        pct = (lambda q: round(float(np.percentile(lat, q)) * 1000, 1)) if len(lat) else (lambda q: None)
        return {"events_per_s": round(sum(e for _, e in self._batches) / self.window, 1),
                "latency_p50_ms": pct(50), "latency_p99_ms": pct(99), "batches_in_window": len(self._batches)}

    def _trim(self, now: float) -> None:
        while self._batches and self._batches[0][0] < now - self.window:
            self._batches.popleft()
        while self._latency and self._latency[0][0] < now - self.window:
            self._latency.popleft()
        while len(self._latency) > 1 and sum(len(x) for _, x in self._latency) - len(self._latency[0][1]) >= self.samples:
            self._latency.popleft()  # older batches no longer reach the newest ``samples``
