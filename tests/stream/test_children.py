"""The worker's fit process dies with the worker, however the worker ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import os, sys, time
from stream.worker import fit_pool
pool = fit_pool()
open(sys.argv[1], "w").write(" ".join(str(p.pid) for p in pool._processes.values()))
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_the_fit_process_dies_when_the_worker_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "fit.pid"
    parent = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        (child,) = [int(p) for p in out.read_text().split()]
        os.kill(child, 0)  # alive while the worker is
        parent.send_signal(signal.SIGKILL)  # no cleanup runs in the worker
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(child, signal.SIGKILL)
        pytest.fail("the fit process outlived the worker")
    finally:
        if parent.poll() is None:
            parent.kill()
