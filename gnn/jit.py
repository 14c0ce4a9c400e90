"""Compiled loops for the graph's irregular reads, with numba when it is installed.

Intersecting neighbour lists and binary-searching single arcs are loops; NumPy runs them as a
dozen whole-array passes, each a Python call, so a serving batch of a few hundred pairs pays
more in call overhead than in work. :func:`compiled` compiles such a loop (nopython, releasing
the GIL, cached on disk beside the module); the caller keeps its NumPy path for when numba is
missing (a bare CUDA machine, say) or ``LEPTON_NUMBA=0``, and the tests hold the two equal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

__all__ = ["ENABLED", "compiled"]

F = TypeVar("F", bound=Callable)


def _enabled() -> bool:
    if os.environ.get("LEPTON_NUMBA", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        import numba  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


ENABLED = _enabled()


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
