"""kho_formats.bits: bitmap stacks <-> runs, against a naive model, on every
path (dense and sparse masks, contiguous and scattered bitmaps, the threaded
paths for big inputs, runs crossing bitmaps in rank space)."""

import numpy as np
import pytest

from kho_formats.bits import _bit_positions, bitmaps_to_runs, runs_to_bitmaps
from kho_formats.pageset import runs_from_sorted_indexes


def model_runs(bits: np.ndarray, bases: np.ndarray):
    idx = (bases[:, None] + np.arange(bits.shape[1], dtype=np.uint64)[None, :])[bits]
    return runs_from_sorted_indexes(np.sort(idx))


@pytest.mark.parametrize("n,density,contiguous", [
    (3, 0.5, True), (100, 0.5, True), (100, 0.001, False), (200, 0.9, False), (1, 1.0, True),
    (70, 0.0, True), (130, 1.0, True), (129, 0.99, False), (300, 0.02, True),
])
def test_bitmaps_to_runs_matches_the_model(n, density, contiguous):
    rng = np.random.default_rng(n)
    w = 64
    bits = rng.random((n, w * 64)) < density
    words = np.packbits(bits, axis=1, bitorder="little").view("<u8")
    if contiguous:
        bases = np.arange(n, dtype=np.uint64) * np.uint64(w * 64) + np.uint64(1 << 20)
    else:
        bases = np.sort(rng.choice(1 << 20, n, replace=False)).astype(np.uint64) * np.uint64(w * 64)
    s, l = bitmaps_to_runs(words, bases)
    f, ll = model_runs(bits, bases)
    assert np.array_equal(s, f) and np.array_equal(l, ll)
    # big-endian words give the same runs
    s2, l2 = bitmaps_to_runs(words.astype(">u8"), bases)
    assert np.array_equal(s2, f) and np.array_equal(l2, ll)


def test_big_stacks_take_the_threaded_paths_and_agree():
    rng = np.random.default_rng(1)
    n, w = 256, 512  # 128 Ki words: above the threading threshold
    bits = rng.random((n, w * 64), dtype=np.float32) < 0.5
    words = np.packbits(bits, axis=1, bitorder="little").view("<u8")
    bases = np.arange(n, dtype=np.uint64) * np.uint64(w * 64)
    s, l = bitmaps_to_runs(words, bases)
    f, ll = model_runs(bits, bases)
    assert np.array_equal(s, f) and np.array_equal(l, ll)
    # and back: more than 2**20 runs take the two-thread toggle scatter
    assert f.size > 1 << 20
    ids, packed = runs_to_bitmaps(f, ll, w * 64)
    assert np.array_equal(ids, np.arange(n, dtype=np.uint64))
    assert np.array_equal(packed, np.packbits(bits, axis=1, bitorder="little"))


@pytest.mark.parametrize("density", [0.001, 0.05, 0.5, 0.99])
def test_bit_positions_every_path(density):
    rng = np.random.default_rng(int(density * 1000))
    bits = rng.random(64 * 4096) < density
    mask = np.packbits(bits, bitorder="little").view("<u8").astype(np.uint64)
    assert np.array_equal(_bit_positions(mask), np.flatnonzero(bits))


@pytest.mark.parametrize("trial", range(40))
def test_runs_to_bitmaps_matches_the_model(trial):
    rng = np.random.default_rng(100 + trial)
    nb = [64, 512, 4096][trial % 3]
    mode = trial % 4
    if mode == 0:  # dense and close together
        idx = np.sort(rng.choice(1 << 20, rng.integers(1, 3000), replace=False))
    elif mode == 1:  # sparse, far apart: rank addressing
        idx = np.sort(rng.choice(1 << 40, rng.integers(1, 300), replace=False))
    elif mode == 2:  # runs longer than a bitmap
        blocks = np.sort(rng.choice(1 << 30, 20, replace=False)).astype(np.int64) * nb
        idx = np.unique(np.concatenate([b + np.arange(rng.integers(1, 3 * nb)) for b in blocks]))
    else:  # sparse plus one long run crossing bitmaps in rank space
        idx = np.unique(np.concatenate([np.sort(rng.choice(1 << 38, 50, replace=False)), (1 << 37) + np.arange(5 * nb)]))
    idx = idx.astype(np.uint64)
    f, l = runs_from_sorted_indexes(idx)
    ids, packed = runs_to_bitmaps(f, l, nb)
    bits = np.unpackbits(packed, axis=1, bitorder="little").astype(bool)
    got = np.sort((ids[:, None] * np.uint64(nb) + np.arange(nb, dtype=np.uint64)[None, :])[bits])
    assert np.array_equal(got, idx)
    assert np.array_equal(ids, np.unique(idx // np.uint64(nb)))


def test_touching_runs_cancel_their_toggles():
    # [0, 10) and [10, 20) as two runs must give the same bits as [0, 20)
    a = runs_to_bitmaps(np.array([0, 10], dtype=np.uint64), np.array([10, 10], dtype=np.uint64), 64)
    b = runs_to_bitmaps(np.array([0], dtype=np.uint64), np.array([20], dtype=np.uint64), 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert int(a[1].view("<u8")[0, 0]) == (1 << 20) - 1
