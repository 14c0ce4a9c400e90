"""The engine benchmark runs end to end at a small size and reports an exact incremental result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_engine_small(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "bench", "engine", "--nodes", "3000", "--edges", "30000",
                           "--batch", "200", "--batches", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert json.loads(proc.stdout) == r
    assert r["exact"]["max_abs_err_vs_full"] <= 1e-4
    assert r["prune"]["max_abs_err_vs_full"] >= 0
    assert r["load"]["graph_bytes_per_edge"] <= 48
    assert set(r["kernel_s"]) >= {"torch"} and r["exact"]["edge_updates_per_s"] > 0
