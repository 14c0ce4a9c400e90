"""Garbage-collection pauses of the worker, per generation (``lepton_gc_*`` on ``/metrics``; ``gc`` in ``lepton bench e2e``'s JSON).

A full (generation-2) collection walks every object the collector tracks, with the GIL held:
once the worker is up (torch, aiokafka, aiohttp, a restored processor) ~230k objects, 140-440
ms that every batch in flight waits. At 5,000 events/s (DARPA bench) that is one or two in a
45-s run; at 20,000-25,000 events/s the allocation churn triggers 12-18 in a 25-s run, 2.2-3.8 s
of pauses in all.

:meth:`GcPauses.freeze` (``LEPTON_GC_FREEZE``, on by default) moves everything alive once the
worker has started into the collector's permanent generation (``gc.freeze()``), so later
walks only visit what the stream allocated since. Alternating runs at 20,000 and 25,000
events/s (session 12): total pauses 2.2-3.8 -> 0.4-0.8 s, p50 latency 169-1,265 -> 127-227
ms, p99 2.7-3.9 -> 2.4-2.8 s. At 5,000 events/s three rounds showed no consistent difference
(session 11: p99 321-440 ms as is, 316-426 frozen). Objects frozen are still freed by reference
counting; only cycles among them stay until :meth:`GcPauses.uninstall`, which unfreezes.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

__all__ = ["GcPauses", "freeze_alive"]


@dataclass
class GcPauses:
    """Collections and their pause time per generation, recorded by a ``gc.callbacks`` hook.

    The hook runs inside whichever thread allocated (mid-statement), so it only adds to these
    lists; the event loop copies them into the metrics registry."""

    count: list[int] = field(default_factory=lambda: [0, 0, 0])
    seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    longest: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    frozen: int = 0  # objects :meth:`freeze` moved out of the collector's walks
    _started: float = 0.0

    def install(self) -> "GcPauses":
        if self._hook not in gc.callbacks:
            gc.callbacks.append(self._hook)
        return self

    def uninstall(self) -> None:
        if self._hook in gc.callbacks:
            gc.callbacks.remove(self._hook)
        if self.frozen:
            gc.unfreeze()
            self.frozen = 0

    def freeze(self) -> int:
        """Collect once, then freeze everything still alive; returns how many objects that is."""
        self.frozen = freeze_alive()
        return self.frozen

    def _hook(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen, secs = info["generation"], time.perf_counter() - self._started
        self.count[gen] += 1
        self.seconds[gen] += secs
        self.longest[gen] = max(self.longest[gen], secs)


def freeze_alive() -> int:
    """Collect once, then move everything still alive out of the collector's walks
    (``gc.freeze``); returns the frozen count. ``gc.unfreeze()`` undoes it."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
