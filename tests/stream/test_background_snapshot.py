"""A background snapshot writer never outlives the worker that forked it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import os, sys, time
from stream.children import die_with_parent
parent = os.getpid()
pid = os.fork()
if pid == 0:
    die_with_parent(parent)
    time.sleep(30)
    os._exit(0)
open(sys.argv[1], "w").write(str(pid))
os._exit(0)  # the parent dies at once, the child is orphaned
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    out = tmp_path / "child.pid"
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True, timeout=30,
                   cwd=Path(__file__).resolve().parents[2])
    child = int(out.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(child, 9)
    raise AssertionError("the forked child outlived its parent")
