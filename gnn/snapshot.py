"""Atomic snapshots of a live :class:`~gnn.processor.Processor`: graph, features, model,
cached embeddings, link model, anomaly sketches — plus the caller's metadata (input offsets).

On disk, one directory per snapshot, named by a sequence number so the newest sorts last::

    ROOT/000000000007/
        meta.json        {"format": 1, "seq": 7, "created": ..., "summary": {...}, ...caller's meta}
        state.pkl        the object graph, with every large array replaced by a reference
        arrays/00042.npy one file per array >= 64 KiB (numpy or torch), loadable with mmap

Writing goes to a hidden temporary directory that is renamed into place once complete, so a
crash mid-write leaves the previous snapshot as the newest. Loading uses a restricted unpickler
(only classes of ``gnn``, ``numpy``, ``torch`` and a few rebuild functions), so a snapshot cannot
name arbitrary callables; still, treat a state directory like a database's data directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gnn.errors import GnnError

if TYPE_CHECKING:
    from gnn.processor import Processor

__all__ = ["save_snapshot", "load_snapshot", "latest_snapshot", "read_meta", "summary", "FORMAT"]

FORMAT = 3  # 3: engine caches hold projected sums + self halves; 2: pair features with node age/activity
INLINE_BYTES = 64 * 1024  # smaller arrays stay inside state.pkl


def save_snapshot(processor: "Processor", root: str | Path, meta: dict[str, Any] | None = None,
                  keep: int = 2) -> Path:
    """Write a snapshot under ``root`` and return its directory; keeps the newest ``keep``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    prev = latest_snapshot(root)
    seq = int(prev.name) + 1 if prev is not None else 1
    tmp = root / f".tmp-{seq:012d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "arrays").mkdir(parents=True)
    t0 = time.perf_counter()
    buf = io.BytesIO()
    _Pickler(buf, tmp / "arrays").dump(processor)
    _write(tmp / "state.pkl", buf.getvalue())
    body = {"format": FORMAT, "seq": seq, "created": time.time(), "summary": summary(processor),
            "write_seconds": round(time.perf_counter() - t0, 4), **(meta or {})}
    _write(tmp / "meta.json", json.dumps(body, indent=1).encode())
    _fsync_dir(tmp / "arrays")
    _fsync_dir(tmp)
    final = root / f"{seq:012d}"
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in sorted(p for p in root.iterdir() if p.name.isdigit())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_snapshot(path: str | Path, *, device: str | None = None, mmap: bool = True) -> tuple["Processor", dict]:
    """Load a snapshot directory (see :func:`latest_snapshot`); returns the processor and its meta.

    ``device`` moves the model and caches (default: where they were); with ``mmap`` large
    arrays are copy-on-write memory maps, so loading is fast and pages fault in on use.
    """
    path = Path(path)
    meta = read_meta(path)
    with open(path / "state.pkl", "rb") as f:
        proc = _Unpickler(f, path / "arrays", mmap=mmap).load()
    if device is not None:
        proc.engine.to(device)
    return proc, meta


def latest_snapshot(root: str | Path) -> Path | None:
    """The newest complete snapshot directory under ``root``, or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.iterdir() if p.name.isdigit() and (p / "meta.json").exists())
    return done[-1] if done else None


def read_meta(path: str | Path) -> dict[str, Any]:
    """A snapshot's ``meta.json``; raises :class:`GnnError` for anything else."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise GnnError(f"{path} is not a lepton snapshot: {err}") from None
    if meta.get("format") != FORMAT:
        raise GnnError(f"{path}: snapshot format {meta.get('format')!r}, this build reads {FORMAT}")
    return meta


def summary(processor: "Processor") -> dict[str, Any]:
    """Counts and a content hash of the edge set: equal graphs give equal summaries.

    The hash covers every live edge as ``(src key, dst key, weight)`` in sorted order (undirected
    edges with the smaller key first), so it does not depend on dense ids or insertion order.
    """
    g = processor.graph
    src, dst, w = g.edges()
    s, d = np.asarray(g.keys(src), dtype=object), np.asarray(g.keys(dst), dtype=object)
    if not g.directed:
        swap = s > d
        s[swap], d[swap] = d[swap], s[swap]
    order = sorted(range(len(s)), key=lambda i: (s[i], d[i]))
    h = hashlib.sha256()
    for i in order:
        h.update(f"{s[i]}\x00{d[i]}\x00{float(w[i]):.6g}\n".encode())
    return {"nodes": g.num_nodes, "edges": g.num_edges, "total_weight": round(float(np.sum(w, dtype=np.float64)), 6),
            "edge_set_sha256": h.hexdigest(), "model_version": processor.model_version}


# ---- helpers ---------------------------------------------------------------------------------
_FUNCTIONS = {
    ("copyreg", "_reconstructor"), ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),  # NumPy 2 pickles a generator's seed too
    ("torch._utils", "_rebuild_parameter"), ("builtins", "set"), ("builtins", "frozenset"),
    ("builtins", "slice"), ("builtins", "object"), ("collections", "OrderedDict"), ("collections", "defaultdict"),
}
_PACKAGES = ("gnn", "numpy", "torch")


class _Pickler(pickle.Pickler):
    """Pickles the object graph; large numpy arrays and all tensors go to ``.npy`` files."""

    def __init__(self, f: io.BytesIO, arrays: Path) -> None:
        super().__init__(f, protocol=5)
        self.arrays, self.n = arrays, 0

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            data = obj.detach().cpu().numpy()
            ref = ("tensor", self._save(data), str(obj.device), isinstance(obj, torch.nn.Parameter), obj.requires_grad)
            return ref
        if type(obj) is np.ndarray and obj.nbytes >= INLINE_BYTES and obj.dtype != object:
            return ("npy", self._save(obj))
        return None

    def _save(self, a: np.ndarray) -> str:
        name = f"{self.n:05d}.npy"
        self.n += 1
        with open(self.arrays / name, "wb") as f:
            np.save(f, np.ascontiguousarray(a), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        return name


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: Any, arrays: Path, mmap: bool) -> None:
        super().__init__(f)
        self.arrays, self.mmap = arrays, mmap

    def persistent_load(self, pid: Any) -> Any:
        kind, name = pid[0], pid[1]
        a = np.load(self.arrays / name, mmap_mode="c" if self.mmap else None, allow_pickle=False)
        if kind == "npy":
            return a
        _, _, device, is_param, grad = pid
        t = torch.from_numpy(np.array(a)).to(device if device == "cpu" or torch.cuda.is_available() else "cpu")
        return torch.nn.Parameter(t, requires_grad=grad) if is_param else t

    def find_class(self, module: str, name: str) -> Any:
        obj = super().find_class(module, name)
        if (module.replace("numpy._core", "numpy.core", 1), name) in _FUNCTIONS:  # NumPy 2 names its core _core
            return obj
        if module.split(".")[0] in _PACKAGES and (isinstance(obj, type) or isinstance(obj, torch.dtype)):
            return obj
        raise GnnError(f"snapshot refers to {module}.{name}, which a snapshot may not contain")


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
