"""The embedded broker starts, answers metadata, stops, and never outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.broker import BrokerError, EmbeddedBroker, wait_for_broker

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); check its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_start_answer_stop(tmp_path: Path) -> None:
    b = EmbeddedBroker(log_dir=tmp_path).start()
    pid = b.process.pid  # type: ignore[union-attr]
    wait_for_broker(b.bootstrap, timeout=5)
    assert b.log_path is not None and b.log_path.exists()
    b.stop()
    assert not _alive(pid)
    with pytest.raises(BrokerError):
        wait_for_broker(b.bootstrap, timeout=1)


def test_no_orphan_after_parent_sigkill(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from stream.broker import EmbeddedBroker;"
            f"b = EmbeddedBroker(log_dir=Path({str(tmp_path)!r})).start();"
            "print(b.process.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
    assert _alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid), "tansu outlived its SIGKILLed parent"


def test_cli_broker_prints_bootstrap(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "broker", "--state-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert line.startswith("127.0.0.1:")
        wait_for_broker(line, timeout=5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)  # SIGTERM to Tansu, SIGKILL after 5 s
