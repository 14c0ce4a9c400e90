"""Child processes of the worker die with it: the broker, background snapshot writers and the
online-fit process. A worker killed with SIGKILL runs no cleanup, so each child asks the kernel
(Linux ``PR_SET_PDEATHSIG``) for SIGKILL when its parent goes; an orphaned fit process or
snapshot writer would otherwise linger, or race the next worker's recovery.

Kept free of heavy imports: the fit process is spawned and imports only this module and
:mod:`gnn.decoder`.
"""

from __future__ import annotations

import ctypes
import os
import signal

__all__ = ["die_with_parent", "fit_child_init"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """In a child: SIGKILL when the parent dies (Linux; elsewhere the process group still
    helps). ``parent``: its pid, to exit at once if it died before the signal was armed."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - non-glibc systems
        pass
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def fit_child_init(parent: int, nice: int = 10, threads: int = 1) -> None:
    """Initialiser of the online-fit process: dies with the worker, ``nice`` levels below it
    (a fit takes the CPU the stream leaves idle; it has a whole refit period) and ``threads``
    BLAS threads."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    die_with_parent(parent)
    threadpool_limits(threads)
    try:
        os.nice(nice)
    except OSError:  # not permitted here: fits run at the stream's priority
        pass
