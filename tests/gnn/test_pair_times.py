"""PairTimes answers exactly what a dict of the same writes would."""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import given, settings, strategies as st

from gnn.graph import DynamicGraph
from gnn.linkpred import PairFeatures, _key
from gnn.pair_times import PairTimes

batches = st.lists(st.lists(st.tuples(st.integers(0, 40), st.floats(0, 1e9)), max_size=12), min_size=1, max_size=25)


@settings(max_examples=200, deadline=None)
@given(batches, st.sampled_from([1, 2, 4]), st.sampled_from([0, 3, 1 << 16]))
def test_equals_a_dict_of_the_same_writes(writes: list, merge_ratio: int, min_recent: int) -> None:
    pt, ref = PairTimes(merge_ratio=merge_ratio, min_recent=min_recent), {}
    for batch in writes:
        keys = np.array([k for k, _ in batch], np.int64) << 20
        times = np.array([t for _, t in batch], np.float64)
        pt.set(keys, times)
        for k, t in zip(keys.tolist(), times.tolist()):  # in order: a repeated key keeps its later time
            ref[k] = t
        probe = np.arange(-1, 42, dtype=np.int64) << 20
        expect = np.array([ref.get(k, np.nan) for k in probe.tolist()])
        np.testing.assert_array_equal(pt.get(probe), expect)
        assert len(pt) == len(ref)


def test_merges_into_the_base_and_keeps_the_newest_time() -> None:
    pt = PairTimes(merge_ratio=2, min_recent=4)
    pt.set(np.arange(10), np.zeros(10))  # recent outgrows 4: merged into the base
    assert len(pt._base[0]) == 10 and len(pt._recent[0]) == 0
    pt.set(np.array([3, 3, 11]), np.array([5.0, 7.0, 1.0]))
    assert len(pt._recent[0]) == 2  # small writes wait in the recent run
    np.testing.assert_array_equal(pt.get(np.array([3, 11, 12, 0])), [7.0, 1.0, np.nan, 0.0])


def test_a_pickled_dict_from_an_older_snapshot_loads_as_pair_times() -> None:
    f = PairFeatures(DynamicGraph())
    f.observe(np.array([1, 4]), np.array([2, 3]), np.array([10.0, 20.0]))
    state = f.__getstate__() if hasattr(f, "__getstate__") else dict(f.__dict__)
    old = {**state, "_last": {int(_key(np.array([1]), np.array([2]))[0]): 10.0}}
    f2 = PairFeatures.__new__(PairFeatures)
    f2.__setstate__(pickle.loads(pickle.dumps(old)))
    assert isinstance(f2._last, PairTimes)
    np.testing.assert_array_equal(f2._last.get(_key(np.array([2, 4]), np.array([1, 3]))), [10.0, np.nan])
