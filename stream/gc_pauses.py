"""Garbage-collection pauses of the worker, per generation (``lepton_gc_*`` on ``/metrics``; ``gc`` in ``lepton bench e2e``'s JSON).

A full (generation-2) collection walks every object the collector tracks, with the GIL held:
once the worker is up (torch, aiokafka, aiohttp, a restored processor) ~230k objects, 140-220 ms
that every batch in flight waits (DARPA bench at 5,000 events/s: one or two in a 45-s run).
The gauges let an operator tell such a stall from the pipeline's own latency.

Neither ``gc.freeze()`` once ready (full collections ~2 ms) nor ``gc.disable()`` moved the
bench's end-to-end latency in three alternating rounds (session 11: p99 321-440 ms as is,
316-426 frozen, 326-496 disabled), so the collector is left alone. (Session 10's three rounds
had frozen runs slower, p50 239-265 vs 145-190 ms; that did not reproduce.)
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

__all__ = ["GcPauses"]


@dataclass
class GcPauses:
    """Collections and their pause time per generation, recorded by a ``gc.callbacks`` hook.

    The hook runs inside whichever thread allocated (mid-statement), so it only adds to these
    lists; the event loop copies them into the metrics registry."""

    count: list[int] = field(default_factory=lambda: [0, 0, 0])
    seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    longest: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _started: float = 0.0

    def install(self) -> "GcPauses":
        if self._hook not in gc.callbacks:
            gc.callbacks.append(self._hook)
        return self

    def uninstall(self) -> None:
        if self._hook in gc.callbacks:
            gc.callbacks.remove(self._hook)

    def _hook(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen, secs = info["generation"], time.perf_counter() - self._started
        self.count[gen] += 1
        self.seconds[gen] += secs
        self.longest[gen] = max(self.longest[gen], secs)
