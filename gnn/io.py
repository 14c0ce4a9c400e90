"""Edge files: SNAP whitespace, CSV with a header, JSON lines, Parquet, MIDAS's DARPA CSV
(also zipped) -> one columnar table.

Columns of the result: ``src``, ``dst`` (node ids as read: integers or strings), ``ts``
(float seconds; the row number where the file has none), ``weight`` (float, default 1.0),
``op`` (``add``/``remove``, default ``add``). Rows keep file order, stably sorted by ``ts``
(timestamps repeat; file order breaks ties).

Column names are matched case-insensitively with aliases: ``src|source|from|u``,
``dst|target|to|v``, ``ts|time|timestamp|t``, ``weight|w|rating``.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from gnn.errors import DatasetError
from gnn.graph import DynamicGraph, pair_keys

__all__ = ["read_edges", "bulk_load", "Format"]

Format = Literal["auto", "snap", "csv", "jsonl", "parquet", "darpa"]
_ALIASES = {"src": ("src", "source", "from", "u", "sender"), "dst": ("dst", "target", "to", "v", "receiver"),
            "ts": ("ts", "time", "timestamp", "t", "unix_ts"), "weight": ("weight", "w", "rating"),
            "op": ("op",), "label": ("label",)}


def read_edges(path: str | Path, fmt: Format = "auto", *, limit: int | None = None) -> pd.DataFrame:
    """Read an edge file into the columnar table described above."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"edge file {p} does not exist")
    kind = _detect(p) if fmt == "auto" else fmt
    if kind == "darpa":
        df = _read_darpa(p, limit)
    elif kind == "snap":
        df = _read_snap(p, limit)
    elif kind == "csv":
        df = _normalise(pd.read_csv(p, nrows=limit, engine="c"), p)
    elif kind == "jsonl":
        df = _normalise(pd.read_json(p, lines=True, nrows=limit, dtype=False), p)
    elif kind == "parquet":
        df = _normalise(pd.read_parquet(p), p)
        if limit is not None:
            df = df.iloc[:limit]
    else:
        raise DatasetError(f"unknown edge file format {fmt!r}; use snap, csv, jsonl or parquet")
    ts = df["ts"].to_numpy()
    if len(ts) > 1 and not (ts[1:] >= ts[:-1]).all():  # most files are in time order: no sort, no copy
        df = df.sort_values("ts", kind="stable").reset_index(drop=True)
    return df


def bulk_load(graph: DynamicGraph, table: pd.DataFrame) -> int:
    """Apply ``table``'s rows (columns src, dst, weight[, op]) to ``graph`` at once, ending with
    the edges that applying them one by one in row order gives (every row's nodes are created);
    returns the edges created.

    Adds of a pair sum their weights (as :meth:`DynamicGraph.add_edges` does); a ``remove``
    deletes the pair's edge whatever its weight, so of a pair with removes only the adds after
    its last remove are inserted, once its edge from before the load is removed."""
    ops = table["op"].to_numpy() if "op" in table else None
    removes = None if ops is None else ops == "remove"
    if ops is not None and not (known := removes | (ops == "add")).all():
        bad = sorted({str(o) for o in ops[~known]})[:3]
        raise DatasetError(f"op must be 'add' or 'remove', got {bad}")
    both = pd.concat([table["src"], table["dst"]], ignore_index=True)
    codes, uniques = pd.factorize(both, sort=False)
    ids = graph.node_ids([str(u) for u in uniques], create=True)
    n = len(table)
    src, dst = ids[codes[:n]], ids[codes[n:]]
    weight = table["weight"].to_numpy(np.float32)
    if removes is None or not removes.any():
        return graph.add_edges(src, dst, weight).added
    last_at, last = _last_removes(pair_keys(src, dst, graph.directed), removes)
    graph.remove_edges(src[last_at], dst[last_at])
    after = ~removes & (np.arange(n) > last)  # adds after their pair's last remove (-1: none)
    return graph.add_edges(src[after], dst[after], weight[after]).added


# ---- helpers ---------------------------------------------------------------------------------
def _last_removes(keys: np.ndarray, removes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The row of each pair's last remove (one per pair), and for every row that of its pair
    (-1 where the pair has none)."""
    at = np.flatnonzero(removes)[::-1]
    pairs, first = np.unique(keys[at], return_index=True)  # a pair's first row, reversed: its last remove
    last_at = at[first]
    slot = np.searchsorted(pairs, keys).clip(max=len(pairs) - 1)
    return last_at, np.where(pairs[slot] == keys, last_at[slot], -1)


def _detect(p: Path) -> str:
    name = p.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".zip"):
        return "darpa" if _DARPA_TIME.search(_first_line(p)) else "csv"
    with p.open("r", errors="replace") as f:
        first = next((ln for ln in f if ln.strip() and not ln.startswith(("#", "%"))), "")
    if _DARPA_TIME.search(first):
        return "darpa"
    if first.lstrip().startswith("{"):
        return "jsonl"
    return "csv" if "," in first else "snap"


_DARPA_TIME = re.compile(r"^[^,]+,[^,]+,\d\d/\d\d/\d{4}-\d\d:\d\d,")


def _first_line(p: Path) -> str:
    with zipfile.ZipFile(p) as z, z.open(z.namelist()[0]) as f:
        return f.readline().decode(errors="replace")


def _read_darpa(p: Path, limit: int | None) -> pd.DataFrame:
    """MIDAS's DARPA layout: ``src,dst,MM/DD/YYYY-HH:MM,label`` without a header (``-`` = normal);
    plain or as the single CSV inside a zip."""
    raw = pd.read_csv(p, header=None, names=["src", "dst", "time", "label"], nrows=limit, dtype=str,
                      compression="zip" if p.suffix.lower() == ".zip" else None)
    # not calendar dates (the file has days like 07/32): a monotone minute index, in seconds
    t = raw["time"].str
    minutes = ((t[0:2].astype(np.int64) * 32 + t[3:5].astype(np.int64)) * 24 + t[11:13].astype(np.int64)) * 60 \
        + t[14:16].astype(np.int64)
    ts = minutes * 60
    return pd.DataFrame({"src": raw["src"].to_numpy(), "dst": raw["dst"].to_numpy(),
                         "ts": ts.to_numpy(np.float64), "weight": 1.0, "op": "add",
                         "label": (raw["label"] != "-").astype(np.int64).to_numpy()})


def _read_snap(p: Path, limit: int | None) -> pd.DataFrame:
    df = _read_snap_arrow(p) if limit is None else None
    if df is None:
        df = pd.read_csv(p, sep=r"\s+", header=None, comment="#", nrows=limit, engine="c", dtype=str)
        if len(df) and _header([str(v) for v in df.iloc[0].tolist() if isinstance(v, str)]):
            df = df.iloc[1:]  # a header line such as "src dst time"
    if df.shape[1] < 2:
        raise DatasetError(f"{p}: a SNAP edge list needs at least two columns (src dst [ts [weight]])")
    out = pd.DataFrame({"src": _ids(df.iloc[:, 0]), "dst": _ids(df.iloc[:, 1])})
    out["ts"] = pd.to_numeric(df.iloc[:, 2]).astype(np.float64).to_numpy() if df.shape[1] > 2 \
        else np.arange(len(df), dtype=np.float64)  # no times: file order
    out["weight"] = pd.to_numeric(df.iloc[:, 3]).astype(np.float64).to_numpy() if df.shape[1] > 3 else 1.0
    out["op"] = "add"
    return out


def _read_snap_arrow(p: Path) -> pd.DataFrame | None:
    """Fast path (multi-threaded pyarrow) for single-delimiter SNAP files; None = use pandas."""
    import pyarrow.csv as pv  # noqa: PLC0415

    skip, delim = 0, " "
    with p.open("r", errors="replace") as f:
        for line in f:
            if line.startswith(("#", "%")) or not line.strip():
                skip += 1
                continue
            if _header(line.split()):
                skip += 1  # a header line such as "src dst time"
                continue
            delim = "\t" if "\t" in line else " "
            if "  " in line or line.startswith((" ", "\t")):
                return None
            break
    try:
        table = pv.read_csv(p, read_options=pv.ReadOptions(skip_rows=skip, autogenerate_column_names=True),
                            parse_options=pv.ParseOptions(delimiter=delim))
    except Exception:  # noqa: BLE001 - irregular file: the pandas path handles it or explains
        return None
    if table.num_columns < 2:
        return None
    df = pd.DataFrame({i: np.array(table.column(i).to_numpy()) for i in range(table.num_columns)})  # own copies
    del table
    import pyarrow as pa  # noqa: PLC0415

    pa.default_memory_pool().release_unused()  # arrow's allocator keeps freed pages otherwise
    return df


def _normalise(df: pd.DataFrame, p: Path) -> pd.DataFrame:
    cols = {c.lower().strip(): c for c in df.columns}
    found = {}
    for want, names in _ALIASES.items():
        hit = next((cols[n] for n in names if n in cols), None)
        if hit is not None:
            found[want] = hit
    if "src" not in found or "dst" not in found:
        raise DatasetError(f"{p}: need src and dst columns (aliases {_ALIASES['src']} / {_ALIASES['dst']}); "
                           f"found {list(df.columns)}")
    out = pd.DataFrame({"src": df[found["src"]].to_numpy(), "dst": df[found["dst"]].to_numpy()})
    out["ts"] = pd.to_numeric(df[found["ts"]]).astype(np.float64).to_numpy() if "ts" in found \
        else np.arange(len(df), dtype=np.float64)
    out["weight"] = pd.to_numeric(df[found["weight"]]).astype(np.float64).to_numpy() if "weight" in found else 1.0
    out["op"] = df[found["op"]].fillna("add").to_numpy() if "op" in found else "add"
    if "label" in found:
        out["label"] = df[found["label"]].to_numpy()
    if out["src"].isna().any() or out["dst"].isna().any():
        raise DatasetError(f"{p}: src/dst must not be empty")
    return out


def _ids(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_integer_dtype(col):
        return col.to_numpy(np.int64)
    as_num = pd.to_numeric(col, errors="coerce")
    if as_num.notna().all() and (as_num % 1 == 0).all():
        return as_num.astype(np.int64).to_numpy()
    return col.astype(str).to_numpy()


def _header(tokens: list[str]) -> bool:
    """Whether a SNAP file's first line names its columns: no numbers where data has them
    (ids may be strings, so "a b" alone is data unless it names the src/dst columns)."""
    if len(tokens) < 2 or _numeric(tokens[0]) or _numeric(tokens[1]):
        return False
    if len(tokens) > 2:
        return not _numeric(tokens[2])  # a data row's third column is its time
    return tokens[0].lower() in _ALIASES["src"] and tokens[1].lower() in _ALIASES["dst"]


def _numeric(v: object) -> bool:
    try:
        float(str(v))
        return True
    except ValueError:
        return False
