"""Served-prediction evaluation: questions are new pairs of nodes with a list; hits are counted."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gnn.processor import ProcessorConfig
from gnn.served_eval import evaluate_served

CFG = ProcessorConfig(hidden=8, out=8, hashed_dim=4, top_k=10, candidates=2, backend="torch")


def _stream() -> pd.DataFrame:
    """A star, then new nodes that first meet someone new and next link to the star's centre."""
    rows = [("hub", f"leaf{i}") for i in range(30)]
    for i in range(5):
        rows += [(f"x{i}", f"y{i}"), (f"x{i}", "hub")]
    return pd.DataFrame({"src": [a for a, _ in rows], "dst": [b for _, b in rows], "ts": range(len(rows))})


def test_hits_count_the_partners_served_before_the_edge() -> None:
    table = _stream()
    got = {hubs: evaluate_served(table, dataclasses.replace(CFG, hubs=hubs), batch=1) for hubs in (1, 0)}
    with_hubs, without = got[1], got[0]
    assert with_hubs["questions"] == without["questions"] > 0  # the same lists exist either way; only contents differ
    assert with_hubs["new_pairs"] == 2 * len(table)  # undirected: both ways; every pair here is new
    hits = round(with_hubs["hits_at_10"] * with_hubs["questions"])
    assert hits >= 5 > round(without["hits_at_10"] * without["questions"])  # each x_i -> hub was served
    for name in ("popular", "rising", "popular_now", "rising_now"):  # the centre is the most linked node, and
        assert round(with_hubs[f"{name}_hits_at_10"] * with_hubs["questions"]) >= 5  # has the most new partners
    assert 0 < with_hubs["answered"] <= 1 and with_hubs["mrr"] > without["mrr"]


def test_served_evaluation_needs_predictions() -> None:
    with pytest.raises(ValueError, match="top_k"):
        evaluate_served(_stream(), ProcessorConfig(top_k=0))


def test_cli_writes_the_served_evaluation_as_json(tmp_path: Path) -> None:
    data, out = tmp_path / "edges.csv", tmp_path / "served.json"
    _stream().to_csv(data, index=False)
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "eval", "served", "--dataset", str(data), "--batch", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    from stream.settings import Settings

    assert res["hubs"] == Settings.model_fields["hubs"].default == ProcessorConfig().hubs  # the service's default
    assert res["questions"] > 0 and res["hits_at_10"] >= res["hits_at_1"] >= 0
