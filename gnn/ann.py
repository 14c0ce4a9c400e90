"""Approximate nearest neighbours over live embeddings: an inverted-file (IVF) index.

Exact top-k compares each query with every node (O(N·d) per touched node). The index clusters
the centred, unit-length embeddings into ``lists`` ≈ √N cells with spherical k-means and keeps
a copy of the vectors *ordered by cell*; a query scans only its ``nprobe`` closest cells, one
matrix product per probed cell for all queries that probe it.

Embeddings move every batch: :meth:`IVFIndex.refresh` overwrites the moved rows' vectors in
place (their cell stays, so assignments go slowly stale), new rows wait in a tail that every
query scans, and the cells are re-sorted when the tail outgrows ``tail_fraction`` of the rows
(only the tail is assigned), every row is reassigned after ``reassign_rows`` × N moved rows,
and the cells are re-clustered when the graph has doubled.
Recall against exact search is measured by ``lepton bench ann``. Torch on CPU or CUDA; on a
CPU with numba, each query's best are picked from the cells' products by a compiled loop.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gnn.arrays import grown
from gnn.jit import compiled, in_threads, split
from gnn.kernels import torch_split

__all__ = ["IVFIndex"]

_BUFFER_FLOATS = 1 << 25  # similarities per padded buffer (128 MiB): bounds the queries per chunk
_THREADED_ROWS = 8_192  # moved rows from which their compiled write is split over threads
_THREADED_FLOATS = 1 << 20  # similarities from which the compiled selection is split over threads


class IVFIndex:
    """IVF over the rows of an embedding table (row 0 is the null node and is never returned)."""

    def __init__(self, *, nprobe: int = 8, lists: int | None = None, iters: int = 8, seed: int = 0,
                 reassign_rows: float = 10.0, tail_fraction: float = 0.02) -> None:
        if nprobe < 1 or iters < 1 or reassign_rows <= 0 or tail_fraction <= 0:
            raise ValueError("IVFIndex needs nprobe >= 1, iters >= 1, reassign_rows > 0, tail_fraction > 0")
        self.nprobe, self.lists, self.iters, self.seed = nprobe, lists, iters, seed
        self.reassign_rows, self.tail_fraction = reassign_rows, tail_fraction
        self._cent: torch.Tensor | None = None  # [C, d] unit centroids
        self._mean: torch.Tensor | None = None  # [1, d] centring of the build
        self._table = torch.zeros(0)  # [sorted rows, d] unit vectors in cell order
        self._rows = torch.zeros(0, dtype=torch.long)  # row id at each table position
        self._pos = np.zeros(0, np.int64)  # table position of each sorted row
        self._start = np.zeros(1, np.int64)  # cell c spans _table[_start[c]:_start[c + 1]]
        self._cell = np.full(1, -1, np.int64)  # cell of each sorted row
        self._sorted = 0  # rows [0, _sorted) are in the table; later rows are the tail
        self._built_rows = 0
        self._moved = 0
        self._dirty = np.zeros(1, np.bool_)  # rows moved since their cell was chosen: the only ones a reassignment reads
        self._buf = torch.zeros(0)  # products of the compiled search, reused (a fresh one page-faults)

    @property
    def built(self) -> bool:
        return self._cent is not None

    @property
    def cells(self) -> int:
        """Number of k-means cells (0 before the first refresh)."""
        return 0 if self._cent is None else len(self._cent)

    @torch.no_grad()
    def refresh(self, h: torch.Tensor, n_rows: int, moved: np.ndarray | None = None) -> None:
        """Keep the index current for ``h[:n_rows]``; ``moved`` = rows whose embedding changed."""
        if self._cent is None or n_rows > 2 * max(self._built_rows, 1):
            self._build(h, n_rows)
            return
        moved = np.zeros(0, np.int64) if moved is None else np.asarray(moved, np.int64)
        self._moved += len(moved)
        self._dirty = grown(self._dirty, n_rows, False)
        self._dirty[moved[moved < len(self._dirty)]] = True
        if self._moved > self.reassign_rows * n_rows:
            self._sort(h, n_rows, reassign=True)
            return
        if n_rows - self._sorted > self.tail_fraction * n_rows:
            self._sort(h, n_rows, reassign=False)  # the tail joins its cells; others keep theirs
            return
        moved = moved[moved < self._sorted]
        if len(moved) and _write_compiled is not None and h.device.type == "cpu" and h.dtype == torch.float32:
            self._write(h, self._pos[moved], moved)  # 87k rows: 11-17 → ~7 ms
        elif len(moved):
            self._table[torch.from_numpy(self._pos[moved]).to(self._table.device)] = self._unit(
                h[torch.from_numpy(moved).to(h.device)])

    @torch.no_grad()
    def search(self, h: torch.Tensor, queries: np.ndarray, k: int, n_rows: int) -> np.ndarray:
        """``[len(queries), k]`` candidate rows by cosine, best first; -1 pads (never the query itself)."""
        if self._cent is None:
            raise RuntimeError("IVFIndex.search before refresh()")
        queries = np.asarray(queries, np.int64)
        if len(queries) == 0:
            return np.zeros((0, k), np.int64)
        q = torch.from_numpy(queries).to(self._table.device)
        qv = self._unit(h[q])
        probe = (qv @ self._cent.T).topk(min(self.nprobe, len(self._cent)), dim=1).indices.cpu().numpy()
        width = np.diff(self._start)[probe].sum(1)  # each query's similarity row: its probed cells side by side
        step = max(1, _BUFFER_FLOATS // max(int(width.max()), 1))  # queries per padded buffer
        return np.concatenate([self._search(h, q[i:i + step], qv[i:i + step], probe[i:i + step], k, n_rows)
                               for i in range(0, len(queries), step)])

    # ---- helpers ------------------------------------------------------------------------------
    def _search(self, h: torch.Tensor, q: torch.Tensor, qv: torch.Tensor, probe: np.ndarray, k: int,
                n_rows: int) -> np.ndarray:
        """One chunk of queries: each query's similarities to every row of its probed cells are
        written side by side into one row of a padded buffer (one product per cell), then a single
        top-k per query picks the best — one top-k call in all instead of one per cell. Big chunks
        matter: the loop over cells costs per chunk (8,000 queries on a 100k-row table: 809 ms in
        chunks of 1,024, 532 ms in one; medians of 5)."""
        dev = self._table.device
        if _select_compiled is not None and dev.type == "cpu" and self._table.dtype == torch.float32:
            return self._search_compiled(h, q, qv, probe, k, n_rows)
        nq, p = probe.shape
        lens = np.diff(self._start)[probe]  # [queries, probes]: rows of each probed cell
        col0 = np.cumsum(lens, axis=1) - lens  # where each probed cell's block starts in its query's row
        width = max(int(lens.sum(1).max()), 1)
        sims = torch.full((nq * width,), -torch.inf, device=dev)
        order = np.argsort(probe.ravel(), kind="stable")  # (query, probed cell) slots grouped by cell
        cells, first = np.unique(probe.ravel()[order], return_index=True)
        bounds = np.r_[first, len(order)]
        owner = torch.from_numpy(order // p).to(dev)
        block = torch.from_numpy((order // p) * width + col0.ravel()[order]).to(dev)  # flat start of each slot
        starts = self._start.tolist()
        for c, lo, hi in zip(cells.tolist(), bounds[:-1].tolist(), bounds[1:].tolist()):
            a, b = starts[c], starts[c + 1]
            if a < b:  # one product per probed cell, written into its slots
                sims[(block[lo:hi, None] + torch.arange(b - a, device=dev)).view(-1)] = \
                    (qv[owner[lo:hi]] @ self._table[a:b].T).view(-1)
        val, col = sims.view(nq, width).topk(min(k + 1, width), dim=1)  # +1: the query itself may be here
        row = torch.where(torch.isinf(val), -1, self._rows_at(probe, col0, col))
        tail = torch.arange(self._sorted, n_rows, device=dev)
        if len(tail):  # rows added since the last sort: scanned by every query
            v, i = (qv @ self._unit(h[tail]).T).topk(min(k + 1, len(tail)), dim=1)
            val, row = torch.cat([val, v], 1), torch.cat([row, tail[i]], 1)
        val = torch.where(row == q[:, None], -torch.inf, val.nan_to_num(-1.0))
        best, at_ = val.topk(min(k, val.shape[1]), dim=1)
        out = torch.where(torch.isinf(best), -1, row.gather(1, at_)).cpu().numpy()
        if out.shape[1] < k:
            out = np.concatenate([out, np.full((nq, k - out.shape[1]), -1, np.int64)], 1)
        return out

    def _search_compiled(self, h: torch.Tensor, q: torch.Tensor, qv: torch.Tensor, probe: np.ndarray, k: int,
                         n_rows: int) -> np.ndarray:
        """:meth:`_search` on a CPU: the same products, each cell's written contiguously into
        one reused buffer, then one compiled pass per query over its probed cells keeps its
        ``k`` best. The padded buffer's fill, scatter and top-k cost more than the products
        (1,854 queries on a 100k-row table: ~120 → ~40 ms)."""
        nq, p = probe.shape
        flat = probe.ravel()
        order = np.argsort(flat, kind="stable")  # (query, probed cell) slots grouped by cell
        cells, first, count = np.unique(flat[order], return_index=True, return_counts=True)
        size = np.diff(self._start)[cells]
        block = np.cumsum(count * size) - count * size  # where each cell's [queries, rows] block starts
        offset = np.empty(nq * p, np.int64)  # per slot: where its similarity row starts in the buffer
        offset[order] = np.repeat(block, count) + (np.arange(len(order)) - np.repeat(first, count)) * np.repeat(size,
                                                                                                               count)
        total = int((count * size).sum())
        if len(self._buf) < total + nq * (n_rows - self._sorted):
            self._buf = torch.empty(total + nq * (n_rows - self._sorted))
        owner = torch.from_numpy(order // p)
        jobs = [(int(self._start[c]), lo, n, at, m) for c, lo, n, at, m in
                zip(cells.tolist(), first.tolist(), count.tolist(), block.tolist(), size.tolist()) if m]
        work = np.cumsum([n * m for _, _, n, _, m in jobs])
        parts = torch_split(total, _THREADED_FLOATS, self._table.device)
        cuts = np.searchsorted(work, np.arange(parts + 1) * (total / parts), "right").tolist()

        def products(lo_: int, hi_: int) -> None:
            for a, lo, n, at, m in jobs[cuts[lo_]:cuts[hi_]]:
                torch.mm(qv[owner[lo:lo + n]], self._table[a:a + m].T, out=self._buf[at:at + n * m].view(n, m))

        in_threads(products, parts, parts)
        tail = torch.arange(self._sorted, n_rows)  # rows added since the last sort: one more slot per query
        if len(tail):
            self._buf[total:total + nq * len(tail)].view(nq, len(tail))[:] = qv @ self._unit(h[tail]).T
        first = np.c_[self._start[probe], np.full(nq, len(self._rows))].ravel()  # table position of a slot's 1st row
        length = np.c_[np.diff(self._start)[probe], np.full(nq, len(tail))].ravel()
        offset = np.c_[offset.reshape(nq, p), total + len(tail) * np.arange(nq)].ravel()
        buf, rows, queries = self._buf.numpy(), np.r_[self._rows.numpy(), tail.numpy()], q.numpy()

        def select(lo: int, hi: int) -> np.ndarray:
            at = slice(lo * (p + 1), hi * (p + 1))
            return _select_compiled(buf, offset[at], first[at], length[at], rows, queries[lo:hi], p + 1, k)

        return np.concatenate(in_threads(select, nq, split(total, _THREADED_FLOATS)))  # 2 cores: ~27 → ~13 ms

    def _rows_at(self, probe: np.ndarray, col0: np.ndarray, col: torch.Tensor) -> torch.Tensor:
        """Graph rows behind columns of the padded buffer: the probed cell a column falls in, then
        the row at that offset in the cell (columns past a query's cells are clamped; their -inf
        similarity marks them)."""
        c = col.cpu().numpy()
        j = (col0[:, None, :] <= c[:, :, None]).sum(-1) - 1
        pos = self._start[np.take_along_axis(probe, j, 1)] + c - np.take_along_axis(col0, j, 1)
        return self._rows[torch.from_numpy(pos).to(col.device).clamp_(max=len(self._rows) - 1)]

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x.float() - self._mean, dim=1)

    def _build(self, h: torch.Tensor, n: int) -> None:
        """Spherical k-means on a sample of the rows, then sort every row into its cell."""
        self._mean = h[1:n].float().mean(0, keepdim=True) if n > 1 else torch.zeros((1, h.shape[1]), device=h.device)
        c = self.lists or max(1, int(round(math.sqrt(max(n - 1, 1)))))
        gen = torch.Generator().manual_seed(self.seed)
        sample = (torch.randperm(max(n - 1, 1), generator=gen)[: 64 * c] + 1).clamp(max=max(n - 1, 0))
        x = self._unit(h[sample.to(h.device)])
        cent = x[torch.randperm(len(x), generator=gen)[:c].to(h.device)].clone()
        for _ in range(self.iters):  # assign by cosine; centroid = normalised mean of its members
            acc = torch.zeros_like(cent).index_add_(0, (x @ cent.T).argmax(1), x)
            empty = acc.abs().sum(1) == 0
            cent = torch.where(empty[:, None], cent, torch.nn.functional.normalize(acc, dim=1))
        self._cent, self._built_rows, self._sorted = cent, n, 0  # new cells: every row is assigned afresh
        self._sort(h, n)

    def _sort(self, h: torch.Tensor, n: int, *, reassign: bool = True) -> None:
        """Assign rows to their nearest cell (the tail, and with ``reassign`` the rows moved since
        their cell was chosen: a row that did not move keeps its nearest centroid) and lay the
        table out in cell order. One 100k-row reassignment on one torch thread, Zipf endpoints:
        ~200 → ~92 ms, mostly from splitting the products over threads as the search does (82-83 %
        of the rows had moved since the last, so reading only those saves less)."""
        cell = np.full(max(n - 1, 0), -1, np.int64)
        keep = max(min(self._sorted, n) - 1, 0)
        cell[:keep] = self._cell[1:1 + keep]
        todo = np.arange(max(self._sorted, 1), n, dtype=np.int64)  # the tail
        if reassign and keep:
            todo = np.r_[np.flatnonzero(self._dirty[1:1 + keep]) + 1, todo]

        def assign(lo_: int, hi_: int) -> None:
            for lo in range(lo_, hi_, 65_536):
                rows_ = todo[lo:min(lo + 65_536, hi_)]
                x = self._unit(h[torch.from_numpy(rows_).to(h.device)])
                cell[rows_ - 1] = (x @ self._cent.T).argmax(1).cpu().numpy()

        in_threads(assign, len(todo), torch_split(len(todo) * len(self._cent), _THREADED_FLOATS, h.device))
        self._cell = np.r_[-1, cell]
        self._dirty = np.zeros(n, np.bool_) if reassign else self._dirty
        order = np.argsort(cell, kind="stable")
        rows = order + 1
        self._start = np.searchsorted(cell[order], np.arange(len(self._cent) + 1))
        self._pos = np.zeros(n, np.int64)
        self._pos[rows] = np.arange(len(rows))
        dev = h.device
        self._rows = torch.from_numpy(rows).to(dev)
        if len(rows) and _write_compiled is not None and dev.type == "cpu" and h.dtype == torch.float32:
            self._table = torch.empty((len(rows), h.shape[1]))  # written in place, in threads: no gathered copy
            self._write(h, np.arange(len(rows)), rows)
        else:
            self._table = self._unit(h[self._rows]) if len(rows) else torch.zeros((0, h.shape[1]), device=dev)
        self._sorted, self._moved = n, 0

    def _write(self, h: torch.Tensor, pos: np.ndarray, rows: np.ndarray) -> None:
        """``_table[pos] = _unit(h[rows])`` by the compiled loop, split over threads."""
        table, src, mean = self._table.numpy(), h.contiguous().numpy(), self._mean[0].numpy()
        in_threads(lambda lo, hi: _write_compiled(table, pos[lo:hi], src, rows[lo:hi], mean), len(rows),
                   split(len(rows), _THREADED_ROWS))


@compiled("int64[:, ::1](float32[::1], int64[::1], int64[::1], int64[::1], int64[::1], int64[::1], int64, int64)")
def _select_compiled(buf: np.ndarray, offset: np.ndarray, first: np.ndarray, length: np.ndarray, rows: np.ndarray,
                     queries: np.ndarray, slots: int, k: int) -> np.ndarray:
    """Per query, the ``k`` rows of highest similarity among its ``slots`` (slot ``query · slots
    + j`` holds ``length`` similarities at ``buf[offset:]``, of the rows ``rows[first:]``), best
    first, never the query itself, -1 padded. NaN counts as -1 (the torch path's
    ``nan_to_num``); of equal similarities the one read first is kept."""
    nq = len(queries)
    best = np.full((nq, k), -1, np.int64)
    val = np.empty(k, np.float32)
    for r in range(nq):
        u, held, floor = queries[r], 0, np.float32(-np.inf)
        for j in range(r * slots, (r + 1) * slots):
            o, f = offset[j], first[j]
            for i in range(length[j]):
                s = buf[o + i]
                if not s > floor:
                    if s == s or not floor < -1.0:
                        continue
                    s = np.float32(-1.0)
                v = rows[f + i]
                if v == u:
                    continue
                at = held if held < k else k - 1
                while at > 0 and val[at - 1] < s:
                    val[at], best[r, at] = val[at - 1], best[r, at - 1]
                    at -= 1
                val[at], best[r, at] = s, v
                held = min(held + 1, k)
                if held == k:
                    floor = val[k - 1]
    return best


@compiled("void(float32[:, ::1], int64[::1], float32[:, ::1], int64[::1], float32[::1])")
def _write_compiled(table: np.ndarray, pos: np.ndarray, h: np.ndarray, rows: np.ndarray, mean: np.ndarray) -> None:
    """``table[pos[i]] = unit(h[rows[i]] - mean)`` (:meth:`IVFIndex._unit`: float32 differences,
    the norm summed in float64 and floored at 1e-12) without gathered copies."""
    for i in range(len(rows)):
        x, out = h[rows[i]], table[pos[i]]
        ss = 0.0
        for j in range(len(mean)):
            d = np.float64(x[j] - mean[j])
            ss += d * d
        scale = np.float32(1.0 / max(np.sqrt(ss), 1e-12))
        for j in range(len(mean)):
            out[j] = (x[j] - mean[j]) * scale
