"""Versioned model checkpoints: encoder config + weights, link decoder, provenance.

A checkpoint is one file written with ``torch.save`` and read with ``weights_only=True``
(tensors, numbers, strings, lists and dicts only: loading it cannot run code)::

    {"format": 1, "version": "ckpt-3f2a9c1d", "created": 1700000000.0,
     "encoder": {"config": {...ModelConfig...}, "state": {name: tensor}},
     "features": {"hashed_dim": 16, "supplied_dim": 0, "degree": "bucket"},
     "decoder": {"mean": tensor, "std": tensor, "w": tensor, "b": float} | None,
     "meta": {"dataset": "...", "edges": 59835, "train_seconds": 1.2, ...}}

The version is a content hash, so the same weights always carry the same version.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnn.errors import GnnError
from gnn.linkpred import LogisticDecoder, PairFeatures
from gnn.model import ModelConfig

__all__ = ["save_checkpoint", "load_checkpoint", "Checkpoint", "FORMAT"]

FORMAT = 1


class Checkpoint(dict):
    """The loaded checkpoint dict (see the module docstring for its keys)."""

    @property
    def version(self) -> str:
        return str(self["version"])

    def model_config(self) -> ModelConfig:
        return ModelConfig(**self["encoder"]["config"])

    def decoder(self) -> LogisticDecoder | None:
        d = self.get("decoder")
        if d is None:
            return None
        if len(d["w"]) != len(PairFeatures.NAMES):
            raise GnnError(f"checkpoint {self.version}: its decoder uses {len(d['w'])} pair features, this version "
                           f"computes {len(PairFeatures.NAMES)}; make a new one with `lepton train`")
        dec = LogisticDecoder()
        dec.mean, dec.std, dec.w = (d[k].numpy().astype(np.float64) for k in ("mean", "std", "w"))
        dec.b = float(d["b"])
        return dec


def save_checkpoint(path: str | Path, *, config: ModelConfig, encoder: torch.nn.Module, features: dict[str, Any],
                    decoder: LogisticDecoder | None, meta: dict[str, Any] | None = None) -> str:
    """Write a checkpoint atomically; returns its version."""
    body: dict[str, Any] = {
        "format": FORMAT, "created": time.time(),
        "encoder": {"config": asdict(config), "state": {k: v.detach().cpu() for k, v in encoder.state_dict().items()}},
        "features": dict(features),
        "decoder": None if decoder is None or not decoder.fitted else {
            "mean": torch.from_numpy(decoder.mean), "std": torch.from_numpy(decoder.std),
            "w": torch.from_numpy(decoder.w), "b": float(decoder.b)},
        "meta": dict(meta or {}),
    }
    digest = hashlib.sha256(_bytes({k: body[k] for k in ("encoder", "decoder", "features")})).hexdigest()[:8]
    body["version"] = f"ckpt-{digest}"
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    torch.save(body, tmp)
    tmp.replace(p)
    return body["version"]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint (weights only; refuses unknown formats)."""
    try:
        body = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GnnError(f"checkpoint {path} does not exist; create one with `lepton train`") from None
    except Exception as exc:  # noqa: BLE001 - corrupt file or not a checkpoint
        raise GnnError(f"{path} is not a readable lepton checkpoint: {exc}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise GnnError(f"{path}: unsupported checkpoint format {body.get('format') if isinstance(body, dict) else '?'}")
    return Checkpoint(body)


def _bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()
