"""Adaptive micro-batching: pick each batch's size and fill window to hold a latency target.

Model: processing a batch of ``n`` records takes ``T(n) = a + b·n`` (a fixed per-batch cost —
commit, journal, model checks, kernel launches — plus a per-record cost), fitted online by
least squares with exponential forgetting. Arrivals come at rate ``λ`` (an EWMA of what the
worker consumed plus the change in its lag).

- To keep up, a batch must be processed before the next one has arrived: ``T(n) ≤ n/λ``, so
  ``n ≥ aλ / (1 − bλ)``; the controller takes that with ``headroom`` to spare.
- Latency of an event is at most about fill time + processing: ``n/λ + T(n)``. Any larger
  batch only adds latency, so the smallest batch that keeps up is the latency-optimal one.
- Overloaded (``bλ ≥ 1``: no batch size keeps up): the largest batch, to drain the backlog
  with the least per-batch overhead.
- Behind (a backlog — lag — larger than that batch): take the backlog, up to the largest
  batch, without waiting; a backlog is latency already spent, and small batches would drain it
  at the worst per-record cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["BatchController"]

_DITHER = (1.0, 1.4, 0.8)


@dataclass
class BatchController:
    target: float = 0.25  # seconds: the p99 latency to hold
    min_batch: int = 1
    max_batch: int = 20_000
    headroom: float = 1.3  # process batches 30 % faster than they arrive
    forget: float = 0.97  # weight kept by old (n, T) observations per batch
    a: float = 0.005  # seconds per batch (prior until observations arrive)
    b: float = 100e-6  # seconds per record (prior)
    rate: float = 0.0  # arrivals per second (EWMA)
    _s: list[float] = field(default_factory=lambda: [0.0] * 5)  # weighted sums: w, n, T, n², nT
    _turn: int = 0

    def observe(self, n: int, seconds: float) -> None:
        """A batch of ``n`` records took ``seconds`` from hand-out to commit."""
        s, f = self._s, self.forget
        for i, v in enumerate((1.0, n, seconds, n * n, n * seconds)):
            s[i] = f * s[i] + v
        w, sn, st, snn, snt = s
        var = snn * w - sn * sn
        if w >= 5 and var > 0.01 * sn * sn:  # n varies by > 10 %: a and b can be told apart
            b = (snt * w - sn * st) / var
            a = (st - b * sn) / w
            if b > 0:
                self.a, self.b = max(0.0, a), b
        elif n > 0:  # one batch size so far: attribute the excess over the fixed cost to records
            self.b = max(1e-7, (seconds - self.a) / n) if seconds > self.a else self.b

    def arrivals(self, rate: float, alpha: float = 0.5) -> None:
        """Observed arrival rate over the last interval (records/s)."""
        self.rate = rate if self.rate == 0 else alpha * rate + (1 - alpha) * self.rate

    def next(self, backlog: int = 0) -> tuple[int, float]:
        """(max records, fill window in seconds) for the next batch; ``backlog`` = records waiting."""
        lam, a, b = self.rate, self.a, self.b
        if lam <= 0:
            n, window = max(self.min_batch, min(100, self.max_batch)), min(0.05, self.target / 4)  # no rate yet
        elif b * lam * self.headroom >= 1:  # overloaded: biggest batches, no waiting
            return self.max_batch, 0.0
        else:
            need = a * lam * self.headroom / (1 - b * lam * self.headroom)
            self._turn += 1  # dither the size (1, 1.4, 0.8, ...) so the fit can separate a from b
            need *= _DITHER[self._turn % len(_DITHER)]
            n = int(min(self.max_batch, max(self.min_batch, math.ceil(need))))
            window = min(n / lam, self.target / 4)
        if backlog > n:
            return int(min(self.max_batch, backlog)), 0.0
        return n, window

    def expected_latency(self, n: int) -> float:
        """Fill time + processing for a batch of ``n`` at the current rate (for reports)."""
        return (n / self.rate if self.rate > 0 else 0.0) + self.a + self.b * n
