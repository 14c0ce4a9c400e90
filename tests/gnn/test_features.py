"""NodeFeatures grows with the graph in steps, and its rows stay what a fresh build gives."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from gnn.errors import GraphError
from gnn.features import NodeFeatures, hashed_vectors
from gnn.graph import DynamicGraph


def test_rows_survive_growth_in_steps() -> None:
    g, feats = DynamicGraph(), NodeFeatures(hashed_dim=4, supplied_dim=2)
    supplied = {}
    for step in range(40):  # a few new nodes per batch, as a stream creates them
        ids = g.node_ids([f"n{step}-{j}" for j in range(step % 5 + 1)], create=True)
        assert feats.sync(g).tolist() == ids.tolist()
        supplied[int(ids[0])] = np.full(2, step, np.float32)
        feats.set_supplied(ids[:1], supplied[int(ids[0])][None])
    assert len(feats._hashed) < 2 * g.n_rows  # grown by doubling, not row by row
    nodes = np.arange(1, g.n_rows)
    rows = feats.rows(g, nodes)
    assert np.array_equal(rows[:, 3:7], hashed_vectors(g.keys(nodes), 4))
    for node, want in supplied.items():
        assert np.array_equal(rows[node - 1, 7:], want) and rows[node - 1, 2] == 1.0
    assert feats.sync(g).size == 0


def test_spare_capacity_is_not_a_known_node() -> None:
    g, feats = DynamicGraph(), NodeFeatures(hashed_dim=4, supplied_dim=1)
    for key in ("a", "b", "c", "d"):  # the arrays double: 2, 4, then 8 rows for 5
        g.node_ids([key], create=True)
        feats.sync(g)
    assert len(feats._hashed) > g.n_rows  # room for more
    with pytest.raises(GraphError, match="unknown nodes"):
        feats.set_supplied(np.array([g.n_rows]), np.ones((1, 1)))


def test_pickle_from_before_the_capacity_loads() -> None:
    g, feats = DynamicGraph(), NodeFeatures(hashed_dim=4)
    g.node_ids(["a", "b", "c"], create=True)
    feats.sync(g)
    old = pickle.loads(pickle.dumps(feats))
    n = old.__dict__.pop("_n")
    for name in ("_hashed", "_supplied", "_has"):  # an old pickle: exactly one row per node
        setattr(old, name, getattr(old, name)[:n])
    back = pickle.loads(pickle.dumps(old))
    g.node_ids(["d"], create=True)
    assert back.sync(g).tolist() == [4]
    feats.sync(g)
    assert np.array_equal(back.rows(g, np.arange(1, 5)), feats.rows(g, np.arange(1, 5)))
