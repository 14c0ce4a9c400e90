"""Edge files in every supported format read to the same table; bulk load matches per-edge adds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gnn.errors import DatasetError
from gnn.graph import DynamicGraph
from gnn.io import bulk_load, read_edges

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
ROWS = [(1, 2, 30.0), (2, 3, 10.0), (3, 1, 10.0), (1, 2, 40.0)]


def _expected() -> pd.DataFrame:
    df = pd.DataFrame(ROWS, columns=["src", "dst", "ts"])
    return df.sort_values("ts", kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("fmt", ["snap", "snap_header", "snap_tabs_comments", "csv", "jsonl", "parquet"])
def test_formats_agree(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / f"edges.{ 'parquet' if fmt == 'parquet' else 'jsonl' if fmt == 'jsonl' else 'txt'}"
    lines = [f"{s} {d} {int(t)}" for s, d, t in ROWS]
    if fmt == "snap":
        p.write_text("\n".join(lines) + "\n")
    elif fmt == "snap_header":
        p.write_text("src dst time\n" + "\n".join(lines) + "\n")
    elif fmt == "snap_tabs_comments":
        p.write_text("# a comment\n" + "\n".join(x.replace(" ", "\t") for x in lines) + "\n")
    elif fmt == "csv":
        p.write_text("Source,Target,Time\n" + "\n".join(x.replace(" ", ",") for x in lines) + "\n")
    elif fmt == "jsonl":
        p.write_text("\n".join(json.dumps({"src": s, "dst": d, "ts": t}) for s, d, t in ROWS) + "\n")
    else:
        pd.DataFrame(ROWS, columns=["src", "dst", "timestamp"]).to_parquet(p)
    df = read_edges(p)
    exp = _expected()
    assert df["src"].tolist() == exp["src"].tolist() and df["dst"].tolist() == exp["dst"].tolist()
    assert df["ts"].tolist() == exp["ts"].tolist()  # stable: ties keep file order
    assert (df["weight"] == 1.0).all() and (df["op"] == "add").all()


def test_missing_columns_and_files_are_clear_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="src and dst"):
        read_edges(p)
    with pytest.raises(DatasetError, match="does not exist"):
        read_edges(tmp_path / "nope.txt")


def test_bulk_load_equals_per_edge_adds() -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"src": rng.integers(0, 300, 20000), "dst": rng.integers(0, 300, 20000),
                          "ts": np.arange(20000.0), "weight": rng.uniform(0.5, 2, 20000), "op": "add"})
    bulk = DynamicGraph()
    bulk_load(bulk, table)
    slow = DynamicGraph()
    for s, d, w in zip(table["src"], table["dst"], table["weight"]):
        u, v = slow.node_ids([str(s), str(d)], create=True)
        slow.add_edges(np.array([u]), np.array([v]), np.array([w]))
    assert bulk.num_edges == slow.num_edges
    for key in ("0", "17", "299"):
        a, b = bulk.node_id(key), slow.node_id(key)
        na, wa = bulk.in_neighbors(a)
        nb, wb = slow.in_neighbors(b)
        ka = dict(zip(bulk.keys(na), wa.round(3)))
        assert ka == dict(zip(slow.keys(nb), wb.round(3)))


@pytest.mark.skipif(not (SHARED / "uci" / "CollegeMsg.txt").exists(), reason="shared datasets not present")
def test_reads_the_shared_uci_and_bitcoin_files() -> None:
    uci = read_edges(SHARED / "uci" / "CollegeMsg.txt")
    assert len(uci) == 59835 and uci["ts"].is_monotonic_increasing
    btc = read_edges(SHARED / "bitcoin-alpha" / "soc-sign-bitcoinalpha.csv")
    assert len(btc) == 24186 and set(np.unique(btc["weight"])) <= set(range(-10, 11))


def test_darpa_layout_plain_and_zipped(tmp_path: Path) -> None:
    import zipfile

    text = ("172.016.112.020,192.168.001.010,07/31/1998-23:59,-\n"
            "172.016.112.020,192.168.001.010,07/32/1998-00:01,portsweep\n")  # the file really has day 32
    (tmp_path / "d.csv").write_text(text)
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        z.writestr("darpa_original.csv", text)
    for name in ("d.csv", "d.zip"):
        df = read_edges(tmp_path / name)
        assert df["label"].tolist() == [0, 1] and df["ts"].diff().iloc[1] == 120.0
        assert df["src"].iloc[0] == "172.016.112.020"


@pytest.mark.skipif(not (SHARED / "darpa" / "darpa_original.zip").exists(), reason="shared datasets not present")
def test_midas_r_reproduces_the_published_darpa_auc() -> None:
    from gnn.anomaly_eval import auc_ap, score_midas

    df = read_edges(SHARED / "darpa" / "darpa_original.zip")
    assert len(df) == 4_554_344
    res = auc_ap(df["label"].to_numpy(), score_midas(df, tick=60.0)["score"])
    assert res["auc"] >= 0.93 and res["ap"] >= 0.95  # paper, MIDAS-R: AUC 0.95, AP 0.97


@pytest.mark.parametrize(("text", "rows"), [
    ("a b 5\nc d 6\n", [("a", "b"), ("c", "d")]),  # string ids: the first line is data
    ("src dst time\na b 5\n", [("a", "b")]),
    ("x y\nz w\n", [("x", "y"), ("z", "w")]),
    ("source target\nx y\n", [("x", "y")]),  # two columns: a header only when it names them
    ("1 2 5\n3 4 6\n", [("1", "2"), ("3", "4")]),
])
@pytest.mark.parametrize("sep", [" ", "  "])  # "  ": the pandas path instead of pyarrow's
def test_snap_header_is_told_from_string_ids(tmp_path: Path, text: str, rows: list, sep: str) -> None:
    p = tmp_path / "e.txt"
    p.write_text(text.replace(" ", sep))
    t = read_edges(p, "snap")
    assert list(zip(t["src"].astype(str), t["dst"].astype(str))) == rows


@pytest.mark.parametrize("directed", [False, True])
def test_bulk_load_with_removes_ends_where_applying_rows_in_order_does(directed: bool) -> None:
    rng = np.random.default_rng(1)
    n = 3000  # 30 nodes: pairs repeat, are removed and added again
    table = pd.DataFrame({"src": rng.integers(0, 30, n), "dst": rng.integers(0, 30, n), "ts": np.arange(float(n)),
                          "weight": rng.uniform(0.5, 2, n), "op": np.where(rng.random(n) < 0.2, "remove", "add")})
    before = pd.DataFrame({"src": [0, 1, 2], "dst": [1, 2, 3], "weight": [5.0, 5.0, 5.0]})  # the graph already has these

    def loaded(bulk: bool) -> dict[tuple[str, str], float]:
        g = DynamicGraph(directed=directed)
        bulk_load(g, before)
        if bulk:
            bulk_load(g, table)
        else:
            for s, d, w, op in zip(table["src"], table["dst"], table["weight"], table["op"]):
                u, v = g.node_ids([str(s), str(d)], create=True)
                if op == "add":
                    g.add_edges(np.array([u]), np.array([v]), np.array([w]))
                else:
                    g.remove_edges(np.array([u]), np.array([v]))
        rows, cols, w = g.edges()
        pairs = zip(g.keys(rows), g.keys(cols))  # undirected: each edge once, in either order
        return {(a, b) if directed else tuple(sorted((a, b))): round(float(x), 3) for (a, b), x in zip(pairs, w)}

    one_by_one = loaded(bulk=False)
    assert loaded(bulk=True) == one_by_one
    assert 0 < len(one_by_one) < 30 * 30  # some pairs gone, some kept


def test_bulk_load_refuses_unknown_ops() -> None:
    table = pd.DataFrame({"src": [1, 2], "dst": [2, 3], "weight": [1.0, 1.0], "op": ["add", "upsert"]})
    with pytest.raises(DatasetError, match="upsert"):
        bulk_load(DynamicGraph(), table)
