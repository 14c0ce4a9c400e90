"""Journal: which batches a restart replays, and deterministic batch ids."""

from __future__ import annotations

from pathlib import Path

from stream.journal import Journal
from stream.source import Batch


def _batch(start: dict[str, int], end: dict[str, int]) -> Batch:
    return Batch(records=[], start=start, end=end)


def test_pending_are_the_batches_after_the_snapshot(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    j.append(_batch({"e:0": 0, "e:1": 0}, {"e:0": 5, "e:1": 3}))
    j.append(_batch({"e:0": 5, "e:1": 3}, {"e:0": 9, "e:1": 3}))
    j.append(_batch({"e:0": 9, "e:1": 3}, {"e:0": 9, "e:1": 8}))
    assert j.pending({"e:0": 5, "e:1": 3}) == [{"e:0": 9, "e:1": 3}, {"e:0": 9, "e:1": 8}]
    assert j.pending({"e:0": 9, "e:1": 8}) == []
    with open(j.path, "a") as f:
        f.write('{"start": {"e:0": 9')  # a torn line from a crash mid-write
    assert j.pending({}) == [{"e:0": 5, "e:1": 3}, {"e:0": 9, "e:1": 3}, {"e:0": 9, "e:1": 8}]
    j.reset()
    assert j.pending({}) == []
    j.append(_batch({"e:0": 9}, {"e:0": 10}))
    assert j.pending({"e:0": 9}) == [{"e:0": 10}]
    j.close()


def test_batch_id_depends_only_on_offsets() -> None:
    a = _batch({"e:0": 1, "e:1": 2}, {"e:0": 4, "e:1": 2})
    b = _batch({"e:1": 2, "e:0": 1}, {"e:1": 2, "e:0": 4})  # same offsets, other key order
    assert a.id == b.id and len(a.id) == 16
    assert a.id != _batch({"e:0": 1, "e:1": 2}, {"e:0": 5, "e:1": 2}).id


def test_trim_keeps_the_batches_after_a_background_snapshot(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    j.append(_batch({"e:0": 0}, {"e:0": 5}))
    j.append(_batch({"e:0": 5}, {"e:0": 9}))  # the child snapshots here...
    j.append(_batch({"e:0": 9}, {"e:0": 12}))  # ...while the parent streams on
    j.trim({"e:0": 9})
    assert j.pending({}) == [{"e:0": 12}]
    j.append(_batch({"e:0": 12}, {"e:0": 15}))  # appends continue after the rewrite
    assert j.pending({}) == [{"e:0": 12}, {"e:0": 15}]
    j.close()
