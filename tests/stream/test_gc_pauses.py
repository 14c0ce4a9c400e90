"""Garbage-collection pauses are measured per generation (``stream/gc_pauses.py``)."""

from __future__ import annotations

import gc

from stream.gc_pauses import GcPauses


def test_pauses_are_recorded_per_generation_until_uninstalled() -> None:
    pauses = GcPauses().install()
    pauses.install()  # idempotent: one hook
    try:
        gc.collect()
        assert pauses.count[2] == 1 and pauses.seconds[2] > 0 and pauses.longest[2] == pauses.seconds[2]
        gc.collect(0)
        assert pauses.count[0] >= 1
    finally:
        pauses.uninstall()
    gc.collect()
    assert pauses.count[2] == 1


def test_freeze_leaves_startup_objects_out_of_full_collections_until_uninstalled() -> None:
    pauses = GcPauses().install()
    try:
        keep = [[i] for i in range(50_000)]  # tracked containers alive "at startup"
        assert pauses.freeze() >= 50_000 == len(keep) and gc.get_freeze_count() == pauses.frozen
        assert len(gc.get_objects(generation=2)) < 50_000  # a full collection no longer walks them
    finally:
        pauses.uninstall()
    assert gc.get_freeze_count() == 0 and pauses.frozen == 0
