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

__all__ = ["die_with_parent", "background_child", "fit_child_init"]

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


def background_child(parent: int, nice: int = 10) -> None:
    """In a child doing the worker's background work (a snapshot writer, the fit process): die
    with the worker and run ``nice`` levels below it. Such work has time (a snapshot interval, a
    refit period) and should take the CPU the stream leaves idle: on 2 cores, nearly busy at 5,000
    events/s, a snapshot writer (DARPA state: ~0.3 s of CPU, every 100k events by default) or a
    fit (~60 ms a second) competes with the worker and the broker otherwise."""
    die_with_parent(parent)
    try:
        os.nice(nice)
    except OSError:  # not permitted here: the child runs at the stream's priority
        pass


def fit_child_init(parent: int, nice: int = 10, threads: int = 1) -> None:
    """Initialiser of the online-fit process: a :func:`background_child` with ``threads`` BLAS
    threads (a fit has a whole refit period)."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    background_child(parent, nice)
    threadpool_limits(threads)
