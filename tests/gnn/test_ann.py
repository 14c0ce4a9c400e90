"""IVF index: recall against exact search, fresh vectors after moves, new rows, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gnn.ann
from gnn.ann import IVFIndex
from gnn.ann_bench import _recall, exact_topk


def _clustered(n: int, d: int = 16, groups: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(groups, d, generator=g)
    return centres[torch.randint(0, groups, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)


def test_recall_against_exact_and_no_self_or_null() -> None:
    h = _clustered(5000)
    q = np.arange(1, 5000, 37)
    index = IVFIndex(nprobe=8, seed=1)
    index.refresh(h, 5000)
    got = index.search(h, q, 10, 5000)
    assert _recall(got, exact_topk(h, 5000, q, 10)) >= 0.9
    assert not (got == q[:, None]).any() and not (got == 0).any()
    wide = IVFIndex(nprobe=len(index._cent))  # probing every cell is exact search
    wide.refresh(h, 5000)
    assert _recall(wide.search(h, q, 10, 5000), exact_topk(h, 5000, q, 10)) == 1.0


def test_moved_rows_and_new_rows_are_found() -> None:
    h = _clustered(3000, seed=2)
    near = 8
    h[near] = h[7] * 1.001  # 7 and 8: each other's nearest neighbour
    index = IVFIndex(nprobe=2, seed=0, tail_fraction=0.5)
    index.refresh(h, 3000)
    assert index.search(h, np.array([near]), 1, 3000)[0, 0] == 7
    h[7] = -5.0 * h[near]  # row 7 moves far away (its cell stays the old one)
    index.refresh(h, 3000, np.array([7]))
    assert 7 not in index.search(h, np.array([near]), 5, 3000)[0]  # its vector was updated in place
    grown = torch.cat([h, (h[42] * 0.99)[None]])  # a new row (the tail) next to row 42
    index.refresh(grown, 3001)
    assert index._sorted == 3000 and 3000 in index.search(grown, np.array([42]), 5, 3001)[0]
    index.tail_fraction = 1e-6  # the tail now joins its cell; the others keep theirs
    index.refresh(grown, 3001)
    assert index._sorted == 3001 and 3000 in index.search(grown, np.array([42]), 5, 3001)[0]


def test_small_tables_pad_with_minus_one() -> None:
    h = torch.randn(4, 8)
    index = IVFIndex(nprobe=3)
    index.refresh(h, 4)
    got = index.search(h, np.array([1, 2]), 10, 4)
    assert got.shape == (2, 10) and (got[:, 2:] == -1).all()
    assert set(got[0, :2].tolist()) == {2, 3} and set(got[1, :2].tolist()) == {1, 3}
    with pytest.raises(RuntimeError):
        IVFIndex().search(h, np.array([1]), 2, 4)


@pytest.mark.skipif(gnn.ann._select_compiled is None, reason="numba is not installed, or LEPTON_NUMBA=0")
@pytest.mark.parametrize("threaded", [False, True])
def test_compiled_selection_equals_the_torch_path(monkeypatch: pytest.MonkeyPatch, threaded: bool) -> None:
    h = _clustered(4000, seed=3)
    index = IVFIndex(nprobe=6, seed=2, tail_fraction=0.5)
    index.refresh(h, 3900)
    grown = torch.cat([h[:3900], h[3900:] + 0.01])  # 100 new rows wait in the tail: scanned by every query
    index.refresh(grown, 4000)
    q = np.r_[np.arange(1, 4000, 13), 3950]
    monkeypatch.setattr(gnn.ann, "_THREADED_FLOATS", 0 if threaded else 1 << 40)
    monkeypatch.setattr("gnn.jit._SPLIT", [3])  # three slices, whatever the cores
    got = index.search(grown, q, 12, 4000)
    monkeypatch.setattr(gnn.ann, "_select_compiled", None)
    want = index.search(grown, q, 12, 4000)
    assert got.shape == want.shape == (len(q), 12) and (got > 0).all()
    assert [set(r) for r in got.tolist()] == [set(r) for r in want.tolist()]
    unit = torch.nn.functional.normalize(grown - index._mean, dim=1)
    sim = (unit[torch.from_numpy(q)][:, None, :] * unit[torch.from_numpy(got)]).sum(-1)
    assert (sim[:, 1:] <= sim[:, :-1] + 1e-6).all()  # best first
    assert (got >= 3900).any()  # the tail took part


@pytest.mark.skipif(gnn.ann._write_compiled is None, reason="numba is not installed, or LEPTON_NUMBA=0")
def test_compiled_write_of_moved_rows_equals_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    h, moved = _clustered(20_000, seed=4), _clustered(20_000, seed=5)
    tables = []
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(gnn.ann, "_write_compiled", None)
        index = IVFIndex(nprobe=4, seed=0)
        index.refresh(h, 20_000)
        monkeypatch.setattr("gnn.jit._SPLIT", [3])
        index.refresh(moved, 20_000, np.arange(1, 20_000, 2))  # 10k rows: split over threads
        tables.append(index._table.clone())
    assert torch.allclose(tables[0], tables[1], atol=1e-6) and not torch.allclose(tables[0], index._unit(h[index._rows]))


def test_a_reassignment_reads_only_moved_rows_and_equals_assigning_every_row() -> None:
    h = _clustered(6000, seed=6)
    index = IVFIndex(nprobe=4, seed=0, tail_fraction=0.5)
    index.refresh(h, 6000)
    moved = np.arange(1, 6000, 3)
    h2 = h.clone()
    h2[moved] = _clustered(6000, seed=7)[moved]  # a third of the rows jump elsewhere
    index.refresh(h2, 6000, moved)
    grown = torch.cat([h2, _clustered(50, seed=8)])  # and a tail
    index.refresh(grown, 6050)
    assert index._dirty[moved].all() and index._dirty.sum() == len(moved)
    index._sort(grown, 6050, reassign=True)
    every = (index._unit(grown[1:]) @ index._cent.T).argmax(1).numpy()
    assert (index._cell[1:] == every).all() and not index._dirty.any()
    assert torch.allclose(index._table, index._unit(grown[index._rows]), atol=1e-6)
