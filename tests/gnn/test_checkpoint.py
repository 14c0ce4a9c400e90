"""Checkpoints: save -> load gives the same encoder, decoder and version; bad files are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn.checkpoint import load_checkpoint
from gnn.errors import GnnError
from gnn.events import EdgeEvent
from gnn.linkpred import PairFeatures
from gnn.processor import Processor, ProcessorConfig
from gnn.synthetic import SyntheticConfig, generate

CFG = dict(hidden=8, out=8, hashed_dim=4, backend="torch")


def _events(n: int, seed: int) -> list[EdgeEvent]:
    return [EdgeEvent(src=e.value["src"], dst=e.value["dst"], ts=e.value["ts"], op=e.value.get("op", "add"))
            for e in generate(SyntheticConfig(events=n, seed=seed))]


def test_round_trip_and_transfer(tmp_path: Path) -> None:
    p = Processor(ProcessorConfig(**CFG, seed=3))
    p.process(_events(1500, 1), now=0.0)
    p.install(p.training_job()())
    version = p.save(str(tmp_path / "m.pt"), {"dataset": "synthetic"})
    assert version == load_checkpoint(tmp_path / "m.pt").version and version.startswith("ckpt-")
    q = Processor(ProcessorConfig(**CFG, seed=99, model_path=str(tmp_path / "m.pt")))  # the checkpoint wins
    assert q.model_version == f"{version}/ckpt"
    for a, b in zip(p.engine.model.state_dict().values(), q.engine.model.state_dict().values()):
        assert torch.equal(a, b)
    x = np.random.default_rng(0).normal(size=(5, len(PairFeatures.NAMES)))
    np.testing.assert_allclose(p.link.decoder.predict(x), q.link.decoder.predict(x))
    body = torch.load(tmp_path / "m.pt", weights_only=True)  # a decoder from a version with fewer features
    body["decoder"] = {k: (v[:9] if k != "b" else v) for k, v in body["decoder"].items()}
    torch.save(body, tmp_path / "old.pt")
    with pytest.raises(GnnError, match="make a new one"):
        load_checkpoint(tmp_path / "old.pt").decoder()
    r = q.process(_events(300, 2), now=1.0)
    assert r.predictions and q.training_job() is None  # a loaded decoder waits for refit_every new edges
    assert p.save(str(tmp_path / "again.pt")) == version  # same weights, same version


def test_bad_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(GnnError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(GnnError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"format": 99}, tmp_path / "future.pt")
    with pytest.raises(GnnError, match="unsupported checkpoint format"):
        load_checkpoint(tmp_path / "future.pt")


def test_train_cli_writes_a_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [f"{a} {b} {t}" for t, (a, b) in enumerate(rng.integers(0, 200, (3000, 2))) if a != b]
    (tmp_path / "g.txt").write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, "-m", "stream.cli", "train", "--dataset", str(tmp_path / "g.txt"),
                          "--out", str(tmp_path / "m.pt")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout)
    assert info["version"] == load_checkpoint(tmp_path / "m.pt").version and info["edges"] == len(lines)
    assert load_checkpoint(tmp_path / "m.pt").decoder() is not None
