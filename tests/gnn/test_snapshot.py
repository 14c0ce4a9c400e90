"""Snapshots: a loaded processor continues exactly like the one that was saved."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn.errors import GnnError
from gnn.events import EdgeEvent, parse_edge
from gnn.processor import Processor, ProcessorConfig
from gnn.snapshot import latest_snapshot, load_snapshot, read_meta, save_snapshot, summary
from gnn.synthetic import SyntheticConfig, generate

CFG = ProcessorConfig(hidden=8, out=8, hashed_dim=4, top_k=3, backend="torch", refit_every=200, alert_warmup=50)


def _batches(n: int = 3000, size: int = 250) -> list[list[EdgeEvent]]:
    evs = [parse_edge(json.dumps(e.value).encode(), record_ts=0.0) for e in generate(SyntheticConfig(events=n, nodes=300, seed=3))]
    return [evs[i:i + size] for i in range(0, len(evs), size)]


def _run(p: Processor, batches: list[list[EdgeEvent]]) -> list:
    out = []
    for b in batches:
        job = p.training_job()
        if job is not None:
            p.install(job())
        r = p.process(b, now=1.7e9)
        out.append(([(x.node, x.partners) for x in r.predictions], [a.id for a in r.alerts], r.priors.tolist(),
                     None if r.anomaly is None else r.anomaly.score.tolist()))
    return out


def test_loaded_snapshot_continues_identically(tmp_path: Path) -> None:
    batches = _batches()
    p = Processor(CFG)
    _run(p, batches[:6])
    delta = p.graph.delta_arcs
    path = save_snapshot(p, tmp_path, meta={"offsets": {"lepton.edges": {"0": 1500}}})
    assert delta and p.graph.delta_arcs == delta  # saving (its summary) left the graph as it was: no compaction
    q, meta = load_snapshot(path)
    assert meta["offsets"] == {"lepton.edges": {"0": 1500}} and meta["summary"] == summary(p)
    assert all(t._base is not None and t._base.shape[0] >= 2 * t.shape[0] for t in q.engine.h)  # room to grow
    assert _run(q, batches[6:]) == _run(p, batches[6:])  # predictions, alerts, priors, anomaly scores
    assert summary(q) == summary(p)
    for a, b in zip(q.engine.h, p.engine.h):
        assert torch.equal(a, b)
    ref = q.engine.reference()
    assert float((ref - q.engine.embeddings).abs().max()) <= 1e-4  # the loaded cache is still exact
    saved = sum(f.stat().st_size for f in (path / "arrays").iterdir())  # the caches' rows, not their reserve
    assert saved < 2 * sum(t.numel() * t.element_size() for t in p.engine.h + p.engine.p + p.engine.a) + (1 << 20)


def test_snapshots_are_atomic_and_pruned(tmp_path: Path) -> None:
    p = Processor(CFG)
    p.process(_batches(300)[0], now=1.7e9)
    for _ in range(3):
        save_snapshot(p, tmp_path, keep=2)
    assert [d.name for d in sorted(tmp_path.iterdir())] == ["000000000002", "000000000003"]
    (tmp_path / ".tmp-000000000004-1").mkdir()  # a crash mid-write leaves a hidden temp dir
    (tmp_path / "000000000009").mkdir()  # ... or a directory without meta.json
    assert latest_snapshot(tmp_path) == tmp_path / "000000000003"
    assert latest_snapshot(tmp_path / "missing") is None


def test_summary_hash_ignores_insertion_order() -> None:
    a, b = Processor(CFG), Processor(CFG)
    evs = [EdgeEvent(src=f"n{i}", dst=f"n{(i * 7) % 11}", ts=float(i), weight=1.0 + i % 3) for i in range(40)]
    a.process(evs, now=0.0)
    b.process(evs[::-1], now=0.0)
    assert summary(a)["edge_set_sha256"] == summary(b)["edge_set_sha256"]
    b.process([EdgeEvent(src="n1", dst="n7", ts=99.0, op="remove")], now=0.0)
    assert summary(a)["edge_set_sha256"] != summary(b)["edge_set_sha256"]


def test_snapshot_refuses_foreign_callables(tmp_path: Path) -> None:
    p = Processor(CFG)
    path = save_snapshot(p, tmp_path)
    (path / "state.pkl").write_bytes(pickle.dumps(print))  # builtins.print is not an allowed global
    with pytest.raises(GnnError, match="may not contain"):
        load_snapshot(path)
    (path / "meta.json").write_text("{}")
    with pytest.raises(GnnError, match="format"):
        read_meta(path)


def test_snapshot_written_under_numpy_2_loads(tmp_path: Path) -> None:
    """NumPy 2 pickles arrays as ``numpy._core.multiarray._reconstruct``: an allowed function
    under its new name (found on a NumPy 2 GPU host, where the worker refused its own snapshot)."""
    import io

    from gnn.snapshot import _Unpickler

    small = np.arange(5, dtype=np.int64).astype(object)  # object arrays always pickle inline
    data = pickle.dumps(small, protocol=3)  # protocol 3: module names are plain text, so renaming is safe
    renamed = data.replace(b"numpy.core.multiarray", b"numpy._core.multiarray")  # as NumPy 2 writes it
    assert b"numpy._core.multiarray" in renamed
    out = _Unpickler(io.BytesIO(renamed), tmp_path, mmap=False).load()
    assert list(out) == list(small)


def test_large_arrays_are_memory_mapped(tmp_path: Path) -> None:
    p = Processor(CFG)
    evs = [EdgeEvent(src=f"a{i}", dst=f"b{i % 997}", ts=float(i)) for i in range(20_000)]
    p.process(evs, now=0.0)
    path = save_snapshot(p, tmp_path)
    assert len(list((path / "arrays").glob("*.npy"))) >= 3
    q, _ = load_snapshot(path)
    assert any(isinstance(v, np.memmap) for v in vars(q.graph._in).values())
    q.process([EdgeEvent(src="a1", dst="z", ts=1.0)], now=0.0)  # copy-on-write maps stay writable
    assert q.graph.num_edges == p.graph.num_edges + 1
