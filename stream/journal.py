"""Batch journal: the offsets of every batch since the last snapshot, written before processing.

After a crash the worker loads the newest snapshot and replays the journaled batches with
exactly the same boundaries, so the replayed outputs carry the same deterministic ids as the
ones already published (consumers drop them as duplicates). One JSON line per batch::

    {"start": {"lepton.edges:0": 120, ...}, "end": {"lepton.edges:0": 180, ...}}

Lines are flushed, not fsynced: a killed process loses nothing (the page cache survives it);
after a power loss the tail may be lost and those batches are re-cut differently — still
applied exactly once, since the snapshot's offsets decide what is replayed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stream.source import Batch

__all__ = ["Journal"]


class Journal:
    """Append-only batch boundaries since the last snapshot."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open for appends

    def append(self, batch: Batch) -> None:
        self._f.write(json.dumps({"start": batch.start, "end": batch.end}, separators=(",", ":")) + "\n")
        self._f.flush()

    def pending(self, positions: dict[str, int]) -> list[dict[str, int]]:
        """End offsets of the journaled batches that start at or after ``positions`` (a snapshot's)."""
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            entry = _parse(line)
            if entry is None:  # a torn last line
                break
            if not _covered(entry, positions):  # else already in the snapshot
                out.append(entry["end"])
        return out

    def trim(self, positions: dict[str, int]) -> None:
        """Drop the batches a snapshot at ``positions`` covers (a background snapshot finished
        while later batches were already journaled)."""
        self._f.flush()
        lines = self.path.read_text(encoding="utf-8").splitlines()
        # a torn line is kept: pending() stops there anyway
        self._rewrite([x for x in lines if x and ((e := _parse(x)) is None or not _covered(e, positions))])

    def reset(self) -> None:
        """Empty the journal (after a snapshot made its entries redundant)."""
        self._rewrite([])

    def _rewrite(self, lines: list[str]) -> None:
        """Replace the file atomically with ``lines`` and keep appending to it."""
        self._f.close()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, self.path)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self._f.close()


def _parse(line: str) -> dict | None:
    """A journal entry, or None for a torn line."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "end" in entry else None


def _covered(entry: dict, positions: dict[str, int]) -> bool:
    """Whether a snapshot at ``positions`` already holds the batch."""
    return all(v <= positions.get(k, 0) for k, v in entry["end"].items())
