"""kho_formats.memory.distinct gives what np.unique gives."""

from __future__ import annotations

import numpy as np
import pytest

from kho_formats.memory.distinct import distinct, first_of_each


@pytest.mark.parametrize(
    "values",
    [
        [],
        [5],
        [1, 2, 3, 9],  # increasing: the fast path
        [3, 1, 3, 2, 1, 0, 2**64 - 1, 0],
        [7, 7, 7],
        [2, 1],
    ],
)
def test_distinct_and_first_of_each_are_np_unique(values: list[int]) -> None:
    a = np.array(values, dtype=np.uint64)
    want, first = np.unique(a, return_index=True)
    assert distinct(a).tolist() == want.tolist()
    assert first_of_each(a).tolist() == first.tolist()


def test_random_arrays_with_repeats() -> None:
    rng = np.random.default_rng(5)
    for n in (10, 1000, 50_000):
        a = rng.integers(0, n // 3 + 1, size=n).astype(np.uint64)
        want, first = np.unique(a, return_index=True)
        assert np.array_equal(distinct(a), want)
        assert np.array_equal(first_of_each(a), first)


def test_distinct_of_an_increasing_array_is_a_copy() -> None:
    a = np.arange(5, dtype=np.uint64)
    out = distinct(a)
    out[0] = 9
    assert a[0] == 0
