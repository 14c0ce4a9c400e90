"""Compiled-loop helpers: slices run on threads come back whole and in order."""

from __future__ import annotations

import threading

import pytest

from gnn.jit import in_threads, set_split_threads, split


def test_in_threads_covers_every_item_once_in_order_and_uses_other_threads() -> None:
    seen: list[str] = []

    def part(lo: int, hi: int) -> list[int]:
        seen.append(threading.current_thread().name)
        return list(range(lo, hi))

    out = in_threads(part, 10, 3)
    assert [x for p in out for x in p] == list(range(10)) and len(out) == 3
    assert any(name.startswith("lepton-jit") for name in seen)
    assert in_threads(part, 2, 3) == [[0, 1]] and in_threads(part, 0, 1) == [[]]  # too few items: one call


def test_split_counts_threads_from_the_threshold_on() -> None:
    try:
        assert set_split_threads(3) == 3 and split(10, 10) == 3 and split(9, 10) == 1
        assert set_split_threads(0) >= 1  # every core
        with pytest.raises(ValueError):
            set_split_threads(-1)
    finally:
        set_split_threads(0)
