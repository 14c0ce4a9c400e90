"""`lepton demo` end to end (small): the summary meets the foundation's done-when criteria."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_summary(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    for _ in range(2):  # a second `make demo` in the same state directory works too (new broker, old state)
        proc = subprocess.run([sys.executable, "-m", "stream.cli", "demo", "--events", "4000", "--malformed", "7",
                               "--state-dir", str(tmp_path), "--summary-json", str(out)],
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    for key in ("events_in", "applied", "deadlettered", "predictions_out", "alerts_out", "decrypted_ok",
                "throughput_eps", "latency_ms_p50", "latency_ms_p99"):
        assert key in s
    assert s["applied"] + s["deadlettered"] == s["events_in"]
    assert s["deadlettered"] == 7 and len(s["deadletter_reasons"]) == 7
    assert s["predictions_out"] > 0 and s["decrypted_ok"] == s["predictions_out"]
    assert s["alerts_out"] > 0
    assert s["latency_ms_p50"] <= s["latency_ms_p99"]
