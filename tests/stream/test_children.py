"""Child processes die with the worker, however it ends: a forked snapshot writer and the
online-fit process (``stream/children.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")

ROOT = Path(__file__).resolve().parents[2]

FORKED = """
import os, sys, time
from stream.children import background_child
parent = os.getpid()
pid = os.fork()
if pid == 0:
    background_child(parent)
    open(sys.argv[1] + ".tmp", "w").write(str(os.nice(0) - int(sys.argv[2])))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1] + ".nice")  # whole, before the parent sees it
    time.sleep(30)
    os._exit(0)
deadline = time.monotonic() + 10
while not os.path.exists(sys.argv[1] + ".nice") and time.monotonic() < deadline:
    time.sleep(0.01)  # the child is set up
open(sys.argv[1], "w").write(str(pid))
os._exit(0)  # the parent dies at once, the child is orphaned
"""

FIT_POOL = """
import os, sys, time
from stream.worker import fit_pool
pool = fit_pool()
open(sys.argv[1], "w").write(" ".join(str(p.pid) for p in pool._processes.values()))
time.sleep(60)
"""


def test_a_forked_snapshot_writer_dies_with_its_parent_and_yields_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "child.pid"
    subprocess.run([sys.executable, "-c", FORKED, str(out), str(os.nice(0))], check=True, timeout=30, cwd=ROOT)
    _assert_gone(int(out.read_text()))
    assert int((tmp_path / "child.pid.nice").read_text()) == min(10, 19 - os.nice(0))  # 10 levels below the worker (capped at 19)


def test_the_fit_process_dies_when_the_worker_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "fit.pid"
    parent = subprocess.Popen([sys.executable, "-c", FIT_POOL, str(out)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        (child,) = [int(p) for p in out.read_text().split()]
        os.kill(child, 0)  # alive while the worker is
        parent.send_signal(signal.SIGKILL)  # no cleanup runs in the worker
        parent.wait(10)
        _assert_gone(child)
    finally:
        if parent.poll() is None:
            parent.kill()


def _assert_gone(pid: int, timeout: float = 10.0) -> None:
    """``pid`` disappears within ``timeout`` s (killed here, and the test fails, otherwise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"child {pid} outlived its parent")
