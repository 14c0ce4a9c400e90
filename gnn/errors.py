"""Errors raised by the pure graph / GNN core."""

from __future__ import annotations

__all__ = ["GnnError", "GraphError", "KernelError", "DatasetError", "EventError"]


class GnnError(Exception):
    """Root of every error raised by ``gnn``."""


class GraphError(GnnError):
    """A graph operation got arguments it cannot apply (shapes, unknown nodes)."""


class KernelError(GnnError):
    """A sparse kernel backend is unavailable or was given a malformed matrix."""


class DatasetError(GnnError):
    """An edge file could not be read: unknown format, missing columns, bad values."""


class EventError(GnnError):
    """An input event is malformed; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
