"""The benchmarks run end to end at a small size and report sane, exact results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_engine_small(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "bench", "engine", "--nodes", "3000", "--edges", "30000",
                           "--batch", "200", "--batches", "3", "--sustain", "40", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert json.loads(proc.stdout) == r
    assert r["exact"]["max_abs_err_vs_full"] <= 1e-4
    assert r["prune"]["max_abs_err_vs_full"] >= 0
    assert r["load"]["graph_bytes_per_edge"] <= 48
    assert set(r["kernel_s"]) >= {"torch"} and r["exact"]["edge_updates_per_s"] > 0
    held = r["sustained"]
    assert held["batches"] == 40 and held["compactions"] >= 1 and held["edge_updates_per_s"] > 0
    assert held["max_abs_err_vs_full"] <= 1e-4  # still exact after the compactions


def test_bench_ann_small(tmp_path: Path) -> None:
    out = tmp_path / "ann.json"
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "bench", "ann", "--nodes", "5000", "--edges", "40000",
                           "--queries", "100", "--nprobe", "2,100", "--batches", "2", "--batch", "200",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    few, every = r["ivf"]
    assert every["nprobe"] >= every["lists"] and every["recall"] >= 0.99  # all cells probed: exact
    assert 0 < few["recall"] <= every["recall"] and r["exact_ms_per_query"] > 0
    assert 0 < r["stream"]["recall_stale"] <= 1 and r["stream"]["rows_moved"] > 0


def test_bench_processor_small(tmp_path: Path) -> None:
    out = tmp_path / "processor.json"
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "bench", "processor", "--nodes", "3000", "--edges",
                           "30000", "--batch", "300", "--batches", "3", "--set", "HUBS=3", "--set", "lepton_ann_nprobe=4", "--set", "TOP_K=4",
                           "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LEPTON_CANDIDATES": "7", "LEPTON_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["threads"] == 1  # the worker's kernel threads (LEPTON_THREADS), not torch's default
    assert (r["serving"]["hubs"], r["serving"]["ann_nprobe"], r["serving"]["candidates"]) == (3, 4, 7)  # --set, env
    assert r["top_k"] == r["serving"]["top_k"] == 4  # no --top-k flag: the setting
    assert r["events_per_s"] > 0 and r["predictions_per_batch"] > 0
    assert set(r["us_per_event"]) >= {"graph", "score", "kernels", "predict"}
    assert r["us_per_event"]["predict"] > 0 and r["rows_changed_per_batch"] > 0
    bad = subprocess.run([sys.executable, "-m", "stream.cli", "bench", "processor", "--set", "NO_SUCH_SETTING=1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid settings" in bad.stderr
