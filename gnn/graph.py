"""DynamicGraph: the live graph store behind the engine.

Node keys (strings; integer ids are normalised to their decimal string) map to dense
ids ``1..n``. Dense id ``0`` is the *null node*: it never has edges, and the engine keeps
its activations at zero, so padded or dead entries can point at it safely.

Adjacency is held as CSR per direction: a compacted, row-sorted *base* (``int32`` columns,
``float32`` weights, a ``bool`` alive flag) plus a *delta* of arcs added since the last
compaction, kept sorted by key. Removals of base arcs only clear the alive flag; compaction
folds the delta into the base (a merge, not a re-sort) once it passes ``compact_ratio`` of
the base. Reads are binary searches, so a batch costs O(batch + its rows) plus one copy of the
delta's arrays for inserting into them (≤ ``compact_ratio`` · E; ~5 ms at 1M delta arcs),
and a compaction O(E) every ``compact_ratio`` · E new arcs.

Semantics (also in the README):
- a repeated ``add`` of an existing edge adds its weight to the edge (multi-edges merge,
  ``count`` of interactions is not kept here);
- ``remove`` deletes the edge whatever its weight; removing a missing edge is a no-op
  that is reported in :class:`Applied` as ``missing_removes``;
- ``directed=False`` (default) stores each edge in both directions, so in-neighbours are
  all neighbours; a self-loop is stored once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from gnn.errors import GraphError
from gnn.jit import compiled, in_threads, split

__all__ = ["DynamicGraph", "CSR", "Applied", "ArcDelta", "normalise_key", "distinct", "pair_keys"]

_COL_BITS = 32
_THREADED_LOOKUPS = 16_384  # arc lookups from which the compiled search is split over threads
_COL_MASK = (1 << _COL_BITS) - 1


def normalise_key(key: str | int) -> str:
    """The canonical string of a node id: integers become their decimal string."""
    if isinstance(key, bool):
        raise GraphError("a node id must be a string or an integer, not a boolean")
    if isinstance(key, (int, np.integer)):
        return str(int(key))
    if isinstance(key, str):
        return key
    raise GraphError(f"a node id must be a string or an integer, got {type(key).__name__}")


@dataclass(frozen=True)
class CSR:
    """Rows of an in-neighbour matrix: row ``i`` aggregates columns ``indices[indptr[i]:indptr[i+1]]``.

    ``rows`` names the graph node of each local row (all nodes for a full matrix).
    ``n_cols`` is the number of graph rows the column ids refer to.
    """

    indptr: np.ndarray  # int64, len n_rows + 1
    indices: np.ndarray  # int32 or int64 column (source node) ids
    weights: np.ndarray  # float32 edge weights
    rows: np.ndarray  # int64 graph node of each local row
    n_cols: int

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def slice_rows(self, lo: int, hi: int) -> "CSR":
        """Local rows ``lo:hi`` as a CSR of their own (views; the offsets rebased)."""
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        return CSR(indptr=self.indptr[lo:hi + 1] - a, indices=self.indices[a:b], weights=self.weights[a:b],
                   rows=self.rows[lo:hi], n_cols=self.n_cols)


@dataclass(frozen=True)
class ArcDelta:
    """Stored arcs a batch touched: ``count`` +1 created / 0 reweighted / -1 removed; ``weight`` change."""

    rows: np.ndarray  # receiving node (row of the in-neighbour matrix)
    cols: np.ndarray  # sending node
    count: np.ndarray  # int64
    weight: np.ndarray  # float64

    @staticmethod
    def empty() -> "ArcDelta":
        z = np.zeros(0, np.int64)
        return ArcDelta(rows=z, cols=z, count=z, weight=np.zeros(0, np.float64))


@dataclass(frozen=True)
class Applied:
    """What a batch of edge operations changed, for the incremental engine."""

    new_nodes: np.ndarray  # dense ids created by this batch
    rows_changed: np.ndarray  # nodes whose in-neighbourhood (set or weights) changed
    degree_changed: np.ndarray  # nodes whose in- or out-degree changed
    added: int  # arcs (edges) newly created
    reweighted: int  # existing edges whose weight grew
    removed: int
    missing_removes: int
    arcs: ArcDelta = field(default_factory=ArcDelta.empty)  # in-adjacency arcs touched


class DynamicGraph:
    """Mutable graph with dense ids and incrementally maintained CSR adjacency."""

    def __init__(self, *, directed: bool = False, compact_ratio: float = 0.05,
                 min_compact: int = 4096) -> None:
        if not 0 < compact_ratio <= 1:
            raise GraphError("compact_ratio must be in (0, 1]")
        self.directed = directed
        self._keys: list[str] = [""]  # dense id -> key; 0 is the null node
        self._ids: dict[str, int] = {}
        self._in = _Adjacency(compact_ratio=compact_ratio, min_compact=min_compact, paired=not directed)
        self._out = _Adjacency(compact_ratio=compact_ratio, min_compact=min_compact, paired=False) \
            if directed else self._in
        self._edges = 0

    # ---- nodes -----------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        """Real nodes (the null node is not counted)."""
        return len(self._keys) - 1

    @property
    def n_rows(self) -> int:
        """Rows of node-indexed arrays: ``num_nodes + 1`` (row 0 is the null node)."""
        return len(self._keys)

    @property
    def num_edges(self) -> int:
        """Live edges (an undirected edge counts once)."""
        return self._edges

    def node_id(self, key: str | int, *, create: bool = False) -> int:
        """Dense id of ``key``; 0 when unknown and ``create`` is false."""
        k = normalise_key(key)
        i = self._ids.get(k)
        if i is None:
            if not create:
                return 0
            i = len(self._keys)
            self._ids[k] = i
            self._keys.append(k)
        return i

    def node_ids(self, keys: list[str], *, create: bool = False) -> np.ndarray:
        """Dense ids of already-normalised keys (vector version of :meth:`node_id`)."""
        get = self._ids.get
        if not create:
            return np.fromiter((get(k, 0) for k in keys), dtype=np.int64, count=len(keys))
        out = np.empty(len(keys), dtype=np.int64)
        for j, k in enumerate(keys):
            i = get(k)
            if i is None:
                i = len(self._keys)
                self._ids[k] = i
                self._keys.append(k)
            out[j] = i
        return out

    def key(self, node: int) -> str:
        if not 0 < node < len(self._keys):
            raise GraphError(f"unknown dense node id {node}")
        return self._keys[node]

    def keys(self, nodes: np.ndarray) -> list[str]:
        ks = self._keys
        return [ks[i] for i in np.asarray(nodes, np.int64).tolist()]

    # ---- edges -----------------------------------------------------------------
    def add_edges(self, src: np.ndarray, dst: np.ndarray, weight: np.ndarray | None = None) -> Applied:
        """Add (or add weight to) edges ``src[i] -> dst[i]`` given as dense ids."""
        src, dst, w = self._check(src, dst, weight)
        first_new = self._grow()
        a_rows, a_cols, a_w = self._arcs(src, dst, w)
        created, grown, arcs = self._in.add(a_rows, a_cols, a_w, self.n_rows)
        if self.directed:
            self._out.add(a_cols, a_rows, a_w, self.n_rows)
        self._edges += created
        return Applied(new_nodes=np.arange(first_new, self.n_rows, dtype=np.int64),
                       rows_changed=distinct(a_rows, self.n_rows),
                       degree_changed=distinct(np.concatenate([src, dst]), self.n_rows),
                       added=created, reweighted=grown, removed=0, missing_removes=0, arcs=arcs)

    def remove_edges(self, src: np.ndarray, dst: np.ndarray) -> Applied:
        """Delete edges ``src[i] -> dst[i]``; missing edges are counted, not errors."""
        src, dst, _ = self._check(src, dst, None)
        a_rows, a_cols, _ = self._arcs(src, dst, np.ones(len(src), np.float32))
        removed, arcs = self._in.remove(a_rows, a_cols)
        if self.directed:
            self._out.remove(a_cols, a_rows)
        self._edges -= removed
        uniq_pairs = len(np.unique(pair_keys(src, dst, self.directed)))
        return Applied(new_nodes=np.zeros(0, np.int64), rows_changed=distinct(a_rows, self.n_rows),
                       degree_changed=distinct(np.concatenate([src, dst]), self.n_rows), added=0, reweighted=0,
                       removed=removed, missing_removes=uniq_pairs - removed, arcs=arcs)

    def edge_weight(self, src: int, dst: int) -> float:
        """Weight of ``src -> dst`` (0.0 when absent)."""
        return float(self.edge_lookup(np.array([src]), np.array([dst]))[1][0])

    def has_edge(self, src: int, dst: int) -> bool:
        return bool(self.edge_lookup(np.array([src]), np.array([dst]))[0][0])

    def edge_lookup(self, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised (exists, weight) of edges ``src[i] -> dst[i]`` (dense ids)."""
        return self._in.lookup(dst, src)

    def storage(self, direction: str = "in") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The in- (or ``"out"``-) adjacency's arrays, for compiled readers (read-only): base
        ``indptr`` (int64), columns (int32) and alive flags, the sorted delta keys
        ``row << 32 | col`` (int64) and each row's count of delta arcs (int32, ≥ ``n_rows`` long)."""
        a = self._in if direction == "in" else self._out
        a.ensure_rows(self.n_rows)
        return a.indptr, a.idx, a.alive, a.d_keys, a.d_deg

    # ---- neighbourhoods ------------------------------------------------------------
    def in_neighbors(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """(source ids, weights) of the edges into ``node``."""
        csr = self._in.rows(np.array([node], np.int64), self.n_rows)
        return csr.indices, csr.weights

    def out_neighbors(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """(destination ids, weights) of the edges out of ``node``."""
        csr = self._out.rows(np.array([node], np.int64), self.n_rows)
        return csr.indices, csr.weights

    def in_rows(self, rows: np.ndarray, cap: int | None = None) -> CSR:
        """In-neighbour CSR of the given rows (the engine's partial aggregation input).

        ``cap``: a sample of at most about ``cap`` neighbours per row (the first stored ones,
        plus recent additions), for callers that only look at a few — a hub's whole list is
        not gathered."""
        return self._in.rows(np.asarray(rows, np.int64), self.n_rows, cap)

    def out_neighbors_of(self, nodes: np.ndarray) -> np.ndarray:
        """Sorted unique out-neighbours of a set of nodes."""
        if len(nodes) == 0:
            return np.zeros(0, np.int64)
        return np.unique(self._out.rows(np.asarray(nodes, np.int64), self.n_rows).indices)

    @property
    def num_arcs(self) -> int:
        """Stored in-adjacency arcs (an undirected non-loop edge is two arcs); O(1)."""
        return self._in.num_arcs()

    def out_neighbors_rows(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in ``nodes``, out-neighbour id) pairs for a batch of nodes."""
        csr = self._out.rows(np.asarray(nodes, np.int64), self.n_rows)
        return np.repeat(np.arange(len(nodes), dtype=np.int64), np.diff(csr.indptr)), csr.indices

    def out_arcs(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position in ``nodes``, out-neighbour, weight) of every out-arc of distinct ``nodes``,
        in no particular order: the engine's scatter needs no CSR, so no sort by row."""
        local, cols, ws, _ = self._out.arcs(np.asarray(nodes, np.int64), self.n_rows)
        return local, cols, ws

    def in_csr(self) -> CSR:
        """Full in-neighbour CSR over all rows (compacts first; O(E))."""
        a = self._in
        a.compact(self.n_rows)  # afterwards the base holds every arc, all alive: share its arrays
        return CSR(indptr=a.indptr, indices=a.idx, weights=a.w, rows=np.arange(self.n_rows, dtype=np.int64),
                   n_cols=self.n_rows)

    def first_unlinked(self, nodes: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
        """``[len(nodes), k]``: per row i, the first ``k`` of ``cand[i]`` (in order; ids ≤ 0 are
        padding) that are neither ``nodes[i]`` nor linked from it yet; -1 pads."""
        nodes, cand = np.asarray(nodes, np.int64), np.asarray(cand, np.int64)
        ok = (cand > 0) & (cand != nodes[:, None])
        ok[ok] = ~self.edge_lookup(np.broadcast_to(nodes[:, None], cand.shape)[ok], cand[ok])[0]
        keep = ok & (np.cumsum(ok, axis=1) <= k)
        out = np.full((len(cand), k), -1, np.int64)
        out[np.nonzero(keep)[0], (np.cumsum(keep, axis=1) - 1)[keep]] = cand[keep]
        return out

    def in_degree(self) -> np.ndarray:
        """Live in-degree per row (neighbour count when undirected), length ``n_rows``."""
        return self._in.degree(self.n_rows)

    def out_degree(self) -> np.ndarray:
        return self._out.degree(self.n_rows)

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All live arcs as (src, dst, weight), in no particular order; undirected graphs list each
        edge once (src <= dst). A pure read: it does not compact (a snapshot's summary once did,
        so the saving process went on with its arcs in another order than its snapshot held,
        and a replay summed them in another order)."""
        rows = np.arange(self.n_rows, dtype=np.int64)
        local, src, w, _ = self._in.arcs(rows, self.n_rows)
        dst = rows[local]
        if not self.directed:
            keep = src <= dst
            return src[keep], dst[keep], w[keep]
        return src, dst, w

    def copy(self) -> "DynamicGraph":
        """An independent deep copy (benchmarks start several engines from one graph)."""
        return copy.deepcopy(self)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_ids"]  # rebuilt from the key list: halves a snapshot's key payload
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._ids = {k: i for i, k in enumerate(self._keys) if i}

    @property
    def compactions(self) -> int:
        """Times a delta was folded into the base since this graph was built."""
        return self._in.compactions + (self._out.compactions if self.directed else 0)

    @property
    def delta_arcs(self) -> int:
        """In-adjacency arcs waiting in the delta for the next compaction."""
        return len(self._in.d_keys)

    def nbytes(self) -> int:
        """Bytes held by adjacency arrays (excludes the key dictionary)."""
        return self._in.nbytes() + (self._out.nbytes() if self.directed else 0)

    # ---- helpers ---------------------------------------------------------------
    def _check(self, src: np.ndarray, dst: np.ndarray, weight: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        if src.shape != dst.shape or src.ndim != 1:
            raise GraphError("src and dst must be 1-d arrays of equal length")
        w = np.ones(len(src), np.float32) if weight is None else np.asarray(weight, dtype=np.float32)
        if w.shape != src.shape:
            raise GraphError("weight must have the same length as src")
        if len(src) and (min(src.min(), dst.min()) < 1 or max(src.max(), dst.max()) >= self.n_rows):
            raise GraphError("edge endpoints must be dense ids of known nodes (1..num_nodes)")
        if not np.isfinite(w).all():
            raise GraphError("edge weights must be finite")
        return src, dst, w

    def _arcs(self, src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored arcs as (row = receiving node, col = sending node, weight)."""
        if self.directed:
            return dst, src, w
        loop = src == dst
        rows = np.concatenate([dst, src[~loop]])
        cols = np.concatenate([src, dst[~loop]])
        return rows, cols, np.concatenate([w, w[~loop]])

    def _grow(self) -> int:
        """Make per-row arrays cover new nodes; returns the first id not yet covered."""
        first = self._in.n_rows_seen
        self._in.ensure_rows(self.n_rows)
        if self.directed:
            self._out.ensure_rows(self.n_rows)
        return first


def distinct(ids: np.ndarray, n: int) -> np.ndarray:
    """Sorted distinct ids in [0, n): a mask pass, O(len + n) instead of a sort."""
    if len(ids) < 4096:
        return np.unique(ids)
    mask = np.zeros(n, np.bool_)
    mask[ids] = True
    return np.flatnonzero(mask)


def pair_keys(src: np.ndarray, dst: np.ndarray, directed: bool) -> np.ndarray:
    """One int64 key per edge ``(src, dst)`` of dense ids; undirected: the same for both orders."""
    if directed:
        return (src << _COL_BITS) | dst
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    return (lo << _COL_BITS) | hi


def _edge_count(rows: np.ndarray, cols: np.ndarray) -> int:
    """Undirected edges behind a set of arcs: every non-loop arc has a reverse twin."""
    loops = int((rows == cols).sum())
    return (len(rows) - loops) // 2 + loops


class _Adjacency:
    """Row-sorted CSR base + a sorted delta of arcs added since the last compaction, one direction.

    The delta is two arrays sorted by key ``row << 32 | col`` (int64 keys, float32 weights)
    plus a per-row count of its arcs, so every read is a binary search: O(query · log delta),
    whatever the delta's size. (Until session 11 the delta was insertion-ordered with a dict
    index, and reading the delta arcs of a set of rows scanned the whole delta: 0.85 → 17.7 ms
    for 2,000 rows as the delta grew to 540k arcs, on the way to the 1M-arc compaction of a
    10M-edge graph.)
    """

    compactions = 0  # class default: pickles from before the count

    def __init__(self, *, compact_ratio: float, min_compact: int, paired: bool) -> None:
        self.paired = paired  # undirected: every non-loop arc has a reverse twin
        self.compact_ratio = compact_ratio
        self.min_compact = min_compact
        self.indptr = np.zeros(1, np.int64)
        self.idx = np.zeros(0, np.int32)
        self.w = np.zeros(0, np.float32)
        self.alive = np.zeros(0, np.bool_)
        self.d_keys = np.zeros(0, np.int64)  # sorted unique keys of arcs absent from the base
        self.d_w = np.zeros(0, np.float32)
        self.dead = 0
        self.n_rows_seen = 1  # rows covered by ``deg`` (row 0 = null)
        self.deg = np.zeros(1, np.int32)
        self.d_deg = np.zeros(1, np.int32)  # delta arcs per row: rows with none skip the search

    def __setstate__(self, state: dict) -> None:
        if "d_key" in state:  # pickled before session 11: an insertion-ordered delta with a dict index
            alive = state["d_alive"].view()
            keys = (state["d_row"].view()[alive] << _COL_BITS) | state["d_col"].view()[alive]
            order = np.argsort(keys)
            state["d_keys"], state["d_w"] = keys[order], state["d_w"].view()[alive][order].copy()
            state["d_deg"] = np.bincount(keys >> _COL_BITS, minlength=len(state["deg"])).astype(np.int32)
            for k in ("d_key", "d_row", "d_col", "d_alive", "_d_version", "_d_index"):
                state.pop(k, None)
        self.__dict__.update(state)

    # -- sizes
    def ensure_rows(self, n_rows: int) -> None:
        if n_rows > len(self.deg):
            size = max(n_rows, 2 * len(self.deg))
            self.deg, self.d_deg = (np.concatenate([a, np.zeros(size - len(a), np.int32)])
                                    for a in (self.deg, self.d_deg))
        self.n_rows_seen = max(self.n_rows_seen, n_rows)

    def num_arcs(self) -> int:
        return len(self.idx) - self.dead + len(self.d_keys)

    def degree(self, n_rows: int) -> np.ndarray:
        self.ensure_rows(n_rows)
        return self.deg[:n_rows]

    def copy(self) -> "DynamicGraph":
        """An independent deep copy (benchmarks start several engines from one graph)."""
        return copy.deepcopy(self)

    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.idx.nbytes + self.w.nbytes + self.alive.nbytes
                   + self.deg.nbytes + self.d_keys.nbytes + self.d_w.nbytes + self.d_deg.nbytes)

    # -- lookup
    def _base_find(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Positions of (row, col) in the base, -1 where absent (vectorised binary search)."""
        n_base = len(self.indptr) - 1
        inb = rows < n_base
        lo = np.zeros(len(rows), np.int64)
        hi = np.zeros(len(rows), np.int64)
        lo[inb] = self.indptr[rows[inb]]
        hi[inb] = self.indptr[rows[inb] + 1]
        end = hi.copy()
        lo = self._lower_bound(lo, hi, cols)
        found = lo < end
        found[found] = self.idx[lo[found]] == cols[found]
        return np.where(found, lo, -1)

    def _lower_bound(self, lo: np.ndarray, hi: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Per query, the first base position in ``[lo, hi)`` (one row's arcs, sorted by column)
        whose column is not below ``cols``; ``hi`` where there is none. Vectorised binary search:
        a row of degree d takes log2(d) rounds, and ``lo`` / ``hi`` are updated in place."""
        idx = self.idx
        act = np.flatnonzero(lo < hi)  # searches still running
        while len(act):
            a_lo, a_hi = lo[act], hi[act]
            mid = (a_lo + a_hi) >> 1
            right = idx[mid] < cols[act]
            a_lo, a_hi = np.where(right, mid + 1, a_lo), np.where(right, a_hi, mid)
            lo[act], hi[act] = a_lo, a_hi
            act = act[a_lo < a_hi]
        return lo

    def lookup(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised (exists, weight) of arcs (row, col)."""
        rows, cols = _int64s(rows), _int64s(cols)
        if _lookup_compiled is not None:
            store = (self.indptr, self.idx, self.w, self.alive, self.d_keys, self.d_w, self.d_deg)
            parts = in_threads(lambda lo, hi: _lookup_compiled(*store, rows[lo:hi], cols[lo:hi]), len(rows),
                               split(len(rows), _THREADED_LOOKUPS))
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        pos = self._base_find(rows, cols)
        hit = pos >= 0
        hit[hit] = self.alive[pos[hit]]
        weight = np.zeros(len(rows), np.float64)
        weight[hit] = self.w[pos[hit]]
        miss = np.flatnonzero(~hit)
        if len(miss) and len(self.d_keys):
            at, found = self._delta_find((rows[miss] << _COL_BITS) | cols[miss])
            hit[miss[found]] = True
            weight[miss[found]] = self.d_w[at[found]]
        return hit, weight

    def _delta_find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``keys`` in the (non-empty) delta, and which are there."""
        at = np.minimum(np.searchsorted(self.d_keys, keys), len(self.d_keys) - 1)
        return at, self.d_keys[at] == keys

    # -- updates
    def add(self, rows: np.ndarray, cols: np.ndarray, w: np.ndarray, n_rows: int) -> tuple[int, int, ArcDelta]:
        """Add arcs (duplicates merge by summing weights): (edges created, edges reweighted, arcs touched)."""
        self.ensure_rows(n_rows)
        uk, uw = _sum_by_key((rows << _COL_BITS) | cols, w)
        ur, uc = uk >> _COL_BITS, uk & _COL_MASK
        if len(uk) > self._bulk_threshold():
            created, dw = self._add_bulk(uk, uw, n_rows)
        else:
            created, dw = self._add_small(uk, ur, uc, uw)
            _count_into(self.deg, ur[created], 1)
            self._maybe_compact(n_rows)
        arcs = ArcDelta(rows=ur, cols=uc, count=created.astype(np.int64), weight=dw)
        return self._edges_of(ur[created], uc[created]), self._edges_of(ur[~created], uc[~created]), arcs

    def _add_small(self, uk: np.ndarray, ur: np.ndarray, uc: np.ndarray,
                   uw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-arc path for ordinary batches: (which arcs were created vs. reweighted, the change
        of each stored float32 weight as float64 — exact, so a consumer's running sums of the
        changes telescope to the stored weight and cancel to exactly 0 when an arc goes)."""
        created = np.zeros(len(uk), np.bool_)
        dw = uw.astype(np.float64)  # a new arc stores uw itself
        pos = self._base_find(ur, uc)
        in_base = pos >= 0
        bpos = pos[in_base]
        revived = ~self.alive[bpos]
        # base arcs: revive dead ones with the new weight, add to live ones
        old = np.where(revived, 0.0, self.w[bpos]).astype(np.float32)
        self.w[bpos] = old + uw[in_base]
        dw[in_base] = self.w[bpos].astype(np.float64) - old
        self.alive[bpos] = True
        self.dead -= int(revived.sum())
        created[np.flatnonzero(in_base)[revived]] = True
        # delta arcs: add to the ones there, insert the rest where they sort
        rest = np.flatnonzero(~in_base)
        if len(rest) and len(self.d_keys):
            at, found = self._delta_find(uk[rest])
            fa, fj = at[found], rest[found]
            before = self.d_w[fa]
            self.d_w[fa] = before + uw[fj]
            dw[fj] = self.d_w[fa].astype(np.float64) - before
            rest = rest[~found]
        if len(rest):
            where = np.searchsorted(self.d_keys, uk[rest])
            self.d_keys = np.insert(self.d_keys, where, uk[rest])
            self.d_w = np.insert(self.d_w, where, uw[rest])
            _count_into(self.d_deg, ur[rest], 1)
            created[rest] = True
        return created, dw

    def remove(self, rows: np.ndarray, cols: np.ndarray) -> tuple[int, ArcDelta]:
        """Delete arcs: (how many edges existed, arcs touched)."""
        keys = np.unique((rows << _COL_BITS) | cols)
        ur, uc = keys >> _COL_BITS, keys & _COL_MASK
        old_w = np.zeros(len(keys), np.float64)
        pos = self._base_find(ur, uc)
        hit = pos >= 0
        hit[hit] = self.alive[pos[hit]]
        bpos = pos[hit]
        old_w[hit] = self.w[bpos]
        self.alive[bpos] = False
        self.w[bpos] = 0.0
        self.dead += len(bpos)
        miss = np.flatnonzero(~hit)
        if len(miss) and len(self.d_keys):
            at, found = self._delta_find(keys[miss])
            fa, fj = at[found], miss[found]
            old_w[fj] = self.d_w[fa]
            hit[fj] = True
            keep = np.ones(len(self.d_keys), np.bool_)
            keep[fa] = False
            self.d_keys, self.d_w = self.d_keys[keep], self.d_w[keep]
            _count_into(self.d_deg, ur[fj], -1)
        gr, gc = ur[hit], uc[hit]
        _count_into(self.deg, gr, -1)
        return self._edges_of(gr, gc), ArcDelta(rows=gr, cols=gc, count=-np.ones(len(gr), np.int64),
                                                weight=-old_w[hit])

    def _edges_of(self, rows: np.ndarray, cols: np.ndarray) -> int:
        return _edge_count(rows, cols) if self.paired else len(rows)

    # -- reads
    def rows(self, rows: np.ndarray, n_rows: int, cap: int | None = None) -> CSR:
        """CSR of the given rows (repeats allowed): base part (alive) then delta part, per row;
        with ``cap``, only the first ``cap`` base arcs of each row are read."""
        uniq, inv = np.unique(rows, return_inverse=True)
        if len(uniq) < len(rows):  # the delta merge below maps each arc to one row occurrence
            u = self._rows_unique(uniq, n_rows, cap)
            lens = np.diff(u.indptr)[inv]
            pos = np.repeat(u.indptr[:-1][inv], lens) + (np.arange(int(lens.sum()), dtype=np.int64)
                                                          - np.repeat(np.cumsum(lens) - lens, lens))
            indptr = np.zeros(len(rows) + 1, np.int64)
            np.cumsum(lens, out=indptr[1:])
            return CSR(indptr=indptr, indices=u.indices[pos], weights=u.weights[pos], rows=rows, n_cols=n_rows)
        return self._rows_unique(rows, n_rows, cap)

    def arcs(self, rows: np.ndarray, n_rows: int, cap: int | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Every live arc of the distinct ``rows`` as (position in ``rows``, column, weight),
        unordered across rows: the base arcs, grouped by row in ``rows`` order, then the delta
        arcs. Also returns how many come from the base. With ``cap``, only the first ``cap``
        base arcs of each row are read."""
        n_base = len(self.indptr) - 1
        inb = rows < n_base
        starts = np.zeros(len(rows), np.int64)
        lens = np.zeros(len(rows), np.int64)
        starts[inb] = self.indptr[rows[inb]]
        lens[inb] = self.indptr[rows[inb] + 1] - starts[inb]
        if cap is not None:
            np.minimum(lens, cap, out=lens)
        ends = np.cumsum(lens)
        local = np.repeat(np.arange(len(rows), dtype=np.int64), lens)
        pos = np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
        pos += (starts - (ends - lens))[local]  # arc j of row i sits at starts[i] + j
        keep = self.alive[pos]
        if not keep.all():
            local, pos = local[keep], pos[keep]
        cols = self.idx[pos].astype(np.int64)
        ws = self.w[pos]
        n_from_base = len(local)
        if len(self.d_keys) and len(rows):  # each row's delta arcs are one run of the sorted keys
            cnt = np.zeros(len(rows), np.int64)
            inr = rows < len(self.d_deg)
            cnt[inr] = self.d_deg[rows[inr]]
            has = np.flatnonzero(cnt)
            if len(has):
                c = cnt[has]
                first = np.searchsorted(self.d_keys, rows[has] << _COL_BITS)
                ends = np.cumsum(c)
                at = np.arange(int(ends[-1]), dtype=np.int64) + np.repeat(first - (ends - c), c)
                local = np.concatenate([local, np.repeat(has, c)])
                cols = np.concatenate([cols, self.d_keys[at] & _COL_MASK])
                ws = np.concatenate([ws, self.d_w[at]])
        return local, cols, ws, n_from_base

    def _rows_unique(self, rows: np.ndarray, n_rows: int, cap: int | None = None) -> CSR:
        local, cols, ws, n_base = self.arcs(rows, n_rows, cap)
        if len(local) > n_base:  # delta arcs go after their row's base arcs
            srt_idx = np.argsort(local, kind="stable")
            local, cols, ws = local[srt_idx], cols[srt_idx], ws[srt_idx]
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(np.bincount(local, minlength=len(rows)), out=indptr[1:])
        return CSR(indptr=indptr, indices=cols, weights=ws.astype(np.float32, copy=False), rows=rows,
                   n_cols=n_rows)

    # -- compaction
    def _maybe_compact(self, n_rows: int) -> None:
        pending = len(self.d_keys) + self.dead
        if pending > max(self.min_compact, self.compact_ratio * len(self.idx)):
            self.compact(n_rows)

    def compact(self, n_rows: int) -> None:
        """Fold the delta into the base and drop dead arcs (a merge of sorted keys)."""
        self.ensure_rows(n_rows)
        if len(self.d_keys) == 0 and self.dead == 0 and len(self.indptr) - 1 == n_rows:
            return
        self._merge(n_rows, self.d_keys, self.d_w)  # delta keys are sorted, unique and absent from the base
        self.compactions += 1
        self.d_keys, self.d_w = np.zeros(0, np.int64), np.zeros(0, np.float32)
        self.d_deg[:] = 0

    def _bulk_threshold(self) -> int:
        return max(self.min_compact, int(self.compact_ratio * len(self.idx)))

    def _add_bulk(self, uk: np.ndarray, uw: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Large batches (bulk loads): fold the delta, then one sorted merge into the base.
        Returns what :meth:`_add_small` returns."""
        self.compact(n_rows)  # now every arc lives in the base, all alive
        bk = self._base_keys()
        dw = uw.astype(np.float64)
        if len(bk):
            at = np.minimum(np.searchsorted(bk, uk), len(bk) - 1)
            exists = bk[at] == uk
            old = self.w[at[exists]].copy()
            self.w[at[exists]] += uw[exists]
            dw[exists] = self.w[at[exists]].astype(np.float64) - old
        else:
            exists = np.zeros(len(uk), np.bool_)
        new_k = uk[~exists]
        self._merge(n_rows, new_k, uw[~exists])
        self.deg[:n_rows] += np.bincount(new_k >> _COL_BITS, minlength=n_rows).astype(np.int32)
        return ~exists, dw

    def _base_keys(self) -> np.ndarray:
        rows = np.repeat(np.arange(len(self.indptr) - 1, dtype=np.int64), np.diff(self.indptr))
        return (rows << _COL_BITS) | self.idx.astype(np.int64)

    def _merge(self, n_rows: int, dk: np.ndarray, dw: np.ndarray) -> None:
        """Rebuild the base from its live arcs plus sorted new keys ``dk`` (absent from the base).

        Each new arc goes where it sorts within its row (a binary search of the row's columns),
        so no 64-bit key of every base arc is built (folding a 0.9M-arc delta into 21-23M arcs:
        298-334 ms, 458-729 ms with the keys)."""
        n_base = len(self.indptr) - 1
        indptr = self.indptr if n_rows <= n_base else \
            np.concatenate([self.indptr, np.full(n_rows - n_base, self.indptr[-1], np.int64)])
        rows, cols = dk >> _COL_BITS, (dk & _COL_MASK).astype(np.int32)
        counts = np.diff(indptr) + np.bincount(rows, minlength=n_rows)
        if len(self.idx) == 0:  # a first load: the new arcs are the base
            idx, w = cols, np.asarray(dw, np.float32)
        else:
            at = self._lower_bound(indptr[rows], indptr[rows + 1], cols)
            idx, w = np.insert(self.idx, at, cols), np.insert(self.w, at, np.asarray(dw, np.float32))
        if self.dead:  # drop dead arcs: few, so count them per row instead of scanning all
            gone = np.flatnonzero(~self.alive)
            counts -= np.bincount(np.searchsorted(indptr, gone, side="right") - 1, minlength=n_rows)
            keep = np.insert(self.alive, at, True)
            idx, w = idx[keep], w[keep]
        self.indptr = np.zeros(n_rows + 1, np.int64)
        np.cumsum(counts, out=self.indptr[1:])
        self.idx, self.w = idx, w
        self.alive = np.ones(len(idx), np.bool_)
        self.dead = 0


@compiled("int64(int64[::1], int64, int64, int64)", "int64(int32[::1], int64, int64, int64)")
def lower_bound(a: np.ndarray, x: int, lo: int, hi: int) -> int:
    """Compiled: the first position in sorted ``a[lo:hi]`` whose value is not below ``x``
    (``hi`` when there is none). Also finds a row's first delta arc: ``x = row << 32``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@compiled("void(int64[::1], int32[::1], boolean[::1], int64[::1], int32[::1], int64, int32[::1], int64)")
def mark_row(indptr: np.ndarray, idx: np.ndarray, alive: np.ndarray, d_keys: np.ndarray, d_deg: np.ndarray,
             row: int, marks: np.ndarray, mark: int) -> None:
    """Compiled: ``marks[v] = mark`` for every live arc (row, v) of a :meth:`DynamicGraph.storage`
    (its base arcs, then its run of delta keys)."""
    if row < len(indptr) - 1:
        for q in range(indptr[row], indptr[row + 1]):
            if alive[q]:
                marks[idx[q]] = mark
    first = lower_bound(d_keys, row << 32, 0, len(d_keys)) if d_deg[row] else 0
    for q in range(first, first + d_deg[row]):
        marks[d_keys[q] & 0xFFFFFFFF] = mark


@compiled("Tuple((boolean[::1], float64[::1]))(int64[::1], int32[::1], float32[::1], boolean[::1], int64[::1], "
          "float32[::1], int32[::1], int64[::1], int64[::1])")
def _lookup_compiled(indptr: np.ndarray, idx: np.ndarray, w: np.ndarray, alive: np.ndarray, d_keys: np.ndarray,
                     d_w: np.ndarray, d_deg: np.ndarray, rows: np.ndarray, cols: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`_Adjacency.lookup` as one loop: a binary search of the row's base columns, then
    of the delta keys where the base has no live arc and the row has delta arcs (most serving
    lookups are misses: a search of every delta key for them was half the call's time)."""
    hit = np.zeros(len(rows), np.bool_)
    weight = np.zeros(len(rows), np.float64)
    n_base = len(indptr) - 1
    for i in range(len(rows)):
        r, c = rows[i], cols[i]
        if r < n_base:
            at = lower_bound(idx, c, indptr[r], indptr[r + 1])
            if at < indptr[r + 1] and idx[at] == c and alive[at]:
                hit[i] = True
                weight[i] = w[at]
                continue
        if r < len(d_deg) and d_deg[r] == 0:
            continue
        key = (r << 32) | c
        at = lower_bound(d_keys, key, 0, len(d_keys))
        if at < len(d_keys) and d_keys[at] == key:
            hit[i] = True
            weight[i] = d_w[at]
    return hit, weight


def _count_into(counts: np.ndarray, rows: np.ndarray, sign: int) -> None:
    """``counts[r] += sign`` once per occurrence of ``r`` in the *sorted* ``rows`` (``np.add.at``
    took ~0.5 ms per 2,000 arcs)."""
    if len(rows):
        start = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        counts[rows[start]] += sign * np.diff(np.r_[start, len(rows)]).astype(counts.dtype)


def _sum_by_key(keys: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique ``keys`` and the sum of ``w`` per key (torch's sort: ~3x NumPy's here)."""
    if len(keys) == 0:
        return keys.astype(np.int64), np.zeros(0, np.float32)
    v, perm = torch.sort(torch.from_numpy(np.ascontiguousarray(keys, dtype=np.int64)))
    sk, order = v.numpy(), perm.numpy()
    start = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
    return sk[start], np.add.reduceat(np.asarray(w, np.float64)[order], start).astype(np.float32)


class _Grow:
    """A growable 1-d array: kept only so that snapshots pickled before session 11 still load
    (:meth:`_Adjacency.__setstate__` turns their delta into sorted arrays)."""

    a: np.ndarray
    n: int

    def view(self) -> np.ndarray:
        return self.a[: self.n]


def _int64s(a: np.ndarray) -> np.ndarray:
    """Contiguous, writable int64 ids: compiled loops refuse read-only views (``np.broadcast_to``)."""
    a = np.ascontiguousarray(a, np.int64)
    return a if a.flags.writeable else a.copy()
