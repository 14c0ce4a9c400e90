"""Compiled loops for the graph's irregular reads, with numba when it is installed.

Intersecting neighbour lists and binary-searching single arcs are loops; NumPy runs them as a
dozen whole-array passes, each a Python call, so a serving batch of a few hundred pairs pays
more in call overhead than in work. :func:`compiled` compiles such a loop (nopython, releasing
the GIL, cached on disk beside the module); the caller keeps its NumPy path for when numba is
missing (a bare CUDA machine, say) or ``LEPTON_NUMBA=0``, and the tests hold the two equal.
Compiled loops release the GIL, so :func:`in_threads` can run one over slices of its rows on
a pool of plain Python threads (:func:`set_split_threads`; they wait without spinning, unlike
OpenMP's helpers, so the worker may use every core here while its kernel pools keep one).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import TypeVar

__all__ = ["ENABLED", "compiled", "in_threads", "set_split_threads", "split"]

F = TypeVar("F", bound=Callable)
T = TypeVar("T")


def _enabled() -> bool:
    if os.environ.get("LEPTON_NUMBA", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        import numba  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


ENABLED = _enabled()
_POOL: list[tuple[ThreadPoolExecutor, int]] = []  # (pool, its threads): one per process, made on first use
_SPLIT = [0]  # threads a compiled loop is split over; 0: every core this process may use


def compiled(*signatures: str) -> Callable[[F], F | None]:
    """Decorator: ``fn`` compiled for ``signatures`` (numba's type strings) at import, or None
    when numba is off. Explicit signatures compile (or load from the disk cache) when the
    module loads, never mid-stream, and refuse arrays of other dtypes instead of compiling
    another version."""

    def wrap(fn: F) -> F | None:
        if not ENABLED:
            return None
        from numba import njit  # noqa: PLC0415

        try:
            return njit(list(signatures), cache=True, nogil=True)(fn)
        except RuntimeError:  # no writable cache directory: compile in memory, each process
            return njit(list(signatures), nogil=True)(fn)

    return wrap


def set_split_threads(n: int) -> int:
    """Split large compiled loops over ``n`` threads (0: every core this process may use; 1: no
    split). Returns the count in effect."""
    if n < 0:
        raise ValueError(f"split threads must be >= 0, got {n}")
    _SPLIT[0] = n
    return split(1, 1)


def split(items: int, threshold: int) -> int:
    """Threads for a compiled loop over ``items``: the split count from ``threshold`` items on,
    else 1 (a small loop is not worth a hand-off)."""
    if items < threshold:
        return 1
    if _SPLIT[0]:
        return _SPLIT[0]
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def in_threads(fn: Callable[[int, int], T], n: int, parts: int) -> list[T]:
    """``fn(lo, hi)`` over ``parts`` contiguous slices of ``range(n)``, the first in this thread and
    the others on a shared pool; results in slice order. For compiled loops (they release the
    GIL); with ``parts <= 1`` or ``n < parts`` it is one plain call."""
    if parts <= 1 or n < parts:
        return [fn(0, n)]
    if not _POOL or _POOL[0][1] < parts - 1:
        _POOL[:] = [(ThreadPoolExecutor(parts - 1, thread_name_prefix="lepton-jit"), parts - 1)]
    cuts = [n * i // parts for i in range(parts + 1)]
    later = [_POOL[0][0].submit(fn, lo, hi) for lo, hi in pairwise(cuts[1:])]
    return [fn(cuts[0], cuts[1])] + [f.result() for f in later]
