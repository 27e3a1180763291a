"""kho_formats.memory.bits: bitmap stacks <-> runs, against a naive model, on every
path (dense and sparse masks, contiguous and scattered bitmaps, the threaded
paths for big inputs, runs crossing bitmaps in rank space)."""

import numpy as np
import pytest

from kho_formats.memory.bits import _bit_positions, bitmaps_to_runs, runs_to_bitmaps
from kho_formats.memory.pageset import runs_from_sorted_indexes


def model_runs(bits: np.ndarray, bases: np.ndarray):
    idx = (bases[:, None] + np.arange(bits.shape[1], dtype=np.uint64)[None, :])[bits]
    return runs_from_sorted_indexes(np.sort(idx))


@pytest.mark.parametrize(
    "n,density,contiguous",
    [
        (3, 0.5, True),
        (100, 0.5, True),
        (100, 0.001, False),
        (200, 0.9, False),
        (1, 1.0, True),
        (70, 0.0, True),
        (130, 1.0, True),
        (129, 0.99, False),
        (300, 0.02, True),
        # more than one 512-bitmap scan block, read bit by bit (sparse) or by run ends
        (1100, 0.01, True),
        (1100, 0.05, False),
        (1100, 0.3, True),
    ],
)
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
        idx = np.unique(
            np.concatenate([np.sort(rng.choice(1 << 38, 50, replace=False)), (1 << 37) + np.arange(5 * nb)])
        )
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


def _model_packed(idx: np.ndarray, nb: int):
    """Touched bitmap ids and their packed bits, the slow way."""
    ids = np.unique(idx // np.uint64(nb))
    bits = np.zeros((ids.size, nb), dtype=bool)
    bits[np.searchsorted(ids, idx // np.uint64(nb)), (idx % np.uint64(nb)).astype(np.int64)] = True
    return ids, np.packbits(bits, axis=1, bitorder="little")


@pytest.mark.parametrize("layout", ["rank-sparse", "rank-crossing", "direct-mixed"])
def test_runs_to_bitmaps_big_inputs_on_every_fill_path(layout):
    # more than 4 blocks of 64 Ki runs: the two-thread split, per-block choice
    # between toggles and word-at-a-time filling, rank and direct addressing
    rng = np.random.default_rng({"rank-sparse": 7, "rank-crossing": 8, "direct-mixed": 9}[layout])
    nb = 32768
    if layout == "rank-sparse":  # scattered bitmaps, ~1% full, some 2-3 page runs
        leaves = np.sort(rng.choice(1 << 22, 6000, replace=False)).astype(np.uint64)
        offs = rng.integers(0, nb // 8, (leaves.size, 60)).astype(np.uint64) * np.uint64(8)
        base = np.unique((leaves[:, None] * np.uint64(nb) + offs).ravel())
        idx = np.unique(np.concatenate([base, base[::5] + np.uint64(1), base[::11] + np.uint64(2)]))
    elif layout == "rank-crossing":  # scattered bits plus long runs across several bitmaps
        leaves = np.sort(rng.choice(1 << 20, 400, replace=False)).astype(np.uint64)
        scattered = (
            leaves[:, None] * np.uint64(nb) + rng.integers(0, nb, (leaves.size, 800)).astype(np.uint64)
        ).ravel()
        longs = [
            np.uint64((1 << 21) * nb + j * 7 * nb + 100) + np.arange(3 * nb + 17, dtype=np.uint64) for j in range(3)
        ]
        idx = np.unique(np.concatenate([scattered] + longs))
    else:  # close bitmaps: dense blocks (toggles) next to sparse ones (word at a time)
        dense = np.flatnonzero(rng.random(1 << 22, dtype=np.float32) < 0.5).astype(np.uint64)
        sparse = np.uint64(1 << 22) + np.sort(rng.choice(1 << 26, 200_000, replace=False)).astype(np.uint64)
        idx = np.concatenate([dense, sparse])
    f, l = runs_from_sorted_indexes(idx)
    assert f.size > 4 * (1 << 16)
    ids, packed = runs_to_bitmaps(f, l, nb)
    mids, mpacked = _model_packed(idx, nb)
    assert np.array_equal(ids, mids)
    assert np.array_equal(packed, mpacked)


def test_runs_to_bitmaps_touching_runs_in_a_big_dense_block():
    # touching runs (not coalesced) must give the bits of the merged run on the toggle path too
    f = np.arange(0, 1 << 19, 4, dtype=np.uint64)
    l = np.full(f.size, 4, dtype=np.uint64)
    l[1::3] = 2  # leave some gaps
    ids, packed = runs_to_bitmaps(f, l, 4096)
    idx = np.concatenate([np.arange(a, a + n, dtype=np.uint64) for a, n in zip(f[:2000].tolist(), l[:2000].tolist())])
    mids, mpacked = _model_packed(idx, 4096)
    assert np.array_equal(packed[: mpacked.shape[0] - 1], mpacked[:-1])


def test_bitmaps_to_runs_joins_runs_across_scan_blocks():
    # 300 contiguous all-ones bitmaps of 512 words: several scan blocks, one run
    n, w = 300, 512
    words = np.full((n, w), ~np.uint64(0), dtype=np.uint64)
    bases = np.uint64(1 << 30) + np.arange(n, dtype=np.uint64) * np.uint64(w * 64)
    s, l = bitmaps_to_runs(words, bases)
    assert s.tolist() == [1 << 30] and l.tolist() == [n * w * 64]
    # a gap in the middle of one bitmap splits it in two; a non-contiguous base splits too
    words[150, 3] = 0
    bases[200:] += np.uint64(w * 64)
    s, l = bitmaps_to_runs(words, bases)
    assert s.tolist() == [1 << 30, (1 << 30) + 150 * w * 64 + 4 * 64, int(bases[200])]
    assert l.tolist() == [150 * w * 64 + 3 * 64, 50 * w * 64 - 4 * 64, 100 * w * 64]


def test_bit_positions_one_bit_per_word():
    rng = np.random.default_rng(5)
    mask = np.zeros(50_000, dtype=np.uint64)
    nz = rng.choice(mask.size, 20_000, replace=False)
    bit = rng.integers(0, 64, nz.size).astype(np.uint64)
    mask[nz] = np.uint64(1) << bit
    want = np.sort(nz.astype(np.int64) * 64 + bit.astype(np.int64))
    assert np.array_equal(_bit_positions(mask), want)


@pytest.mark.parametrize("trial", range(60))
def test_tiny_blocks_stress_every_boundary(monkeypatch, trial):
    # with blocks of a few runs / words and the thread split from 16 runs on,
    # small inputs cross every block and thread boundary many times: shared
    # words between blocks, runs joined across scan blocks, toggles next to
    # word-at-a-time blocks
    from kho_formats.memory import bits

    monkeypatch.setattr(bits, "_BLOCK", 3 + trial % 4)
    monkeypatch.setattr(bits, "_BLOCK_WORDS", 2 + trial % 3)
    monkeypatch.setattr(bits, "_PARALLEL_WORDS", 4)
    rng = np.random.default_rng(1000 + trial)
    nb = [64, 128, 512][trial % 3]
    mode = trial % 3
    if mode == 0:  # dense, touching the bitmaps' ends
        idx = np.flatnonzero(rng.random(nb * 12) < rng.uniform(0.2, 0.95)).astype(np.uint64)
    elif mode == 1:  # sparse over far-apart bitmaps, some runs of a few bits
        base = np.sort(rng.choice(1 << 30, 60, replace=False)).astype(np.uint64) * np.uint64(nb)
        idx = np.unique(
            np.concatenate(
                [base + rng.integers(0, nb, 60).astype(np.uint64), base + np.uint64(nb - 1), base + np.uint64(nb)]
            )
        )
    else:  # long runs crossing several bitmaps, next to scattered bits
        idx = np.unique(
            np.concatenate(
                [
                    np.arange(3 * nb + 5, dtype=np.uint64) + np.uint64(nb // 2),
                    rng.integers(0, 40 * nb, 200).astype(np.uint64),
                ]
            )
        )
    if idx.size == 0:
        return
    f, l = runs_from_sorted_indexes(idx)
    ids, packed = runs_to_bitmaps(f, l, nb)
    mids, mpacked = _model_packed(idx, nb)
    assert np.array_equal(ids, mids) and np.array_equal(packed, mpacked)
    # and back, bitmap by bitmap (runs crossing contiguous bitmaps are joined)
    words = packed.view("<u8").reshape(ids.size, nb // 64)
    s, ll = bitmaps_to_runs(words, ids * np.uint64(nb))
    assert np.array_equal(s, f) and np.array_equal(ll, l)


def test_empty_runs_set_nothing():
    ids, packed = runs_to_bitmaps(np.array([0, 100, 200], np.uint64), np.array([0, 5, 0], np.uint64), 4096)
    assert ids.tolist() == [0]
    words = packed.view("<u8")[0]
    assert int(words[1]) == 0x1F << 36 and np.count_nonzero(words) == 1
    ids, packed = runs_to_bitmaps(np.array([7], np.uint64), np.array([0], np.uint64), 64)
    assert ids.size == 0 and packed.shape == (0, 8)


# -- issue 14: stacks read in place (``rows``), sparse stacks by nonzero words,
# dense stacks written straight into their final arrays ------------------------


def _stack(bits: np.ndarray, bases: np.ndarray, rng, junk_rows: int, order: str):
    """The bitmaps of ``bits`` placed as rows of a bigger table with junk
    rows around them (which must never be read), in ``order``: "consecutive"
    (one stretch), "shuffled" (every row elsewhere) or "stretches" (runs of
    consecutive rows broken now and then, like leaves between level-1 tables)."""
    n, nb = bits.shape
    words = np.packbits(bits, axis=1, bitorder="little").view("<u8")
    m = n + junk_rows
    table = rng.integers(1, 1 << 63, size=(m, nb // 64), dtype=np.uint64).astype("<u8")  # junk everywhere
    if order == "consecutive":
        rows = np.arange(n) + junk_rows // 2
    elif order == "shuffled":
        rows = rng.permutation(m)[:n]
    else:
        gaps = np.zeros(n, dtype=np.int64)
        gaps[rng.choice(n, size=max(1, n // 37), replace=False)] = 1  # a junk row before some bitmaps
        rows = np.arange(n) + np.cumsum(gaps)
        assert rows[-1] < m
    table[rows] = words
    return table, rows.astype(np.intp)


@pytest.mark.parametrize("order", ["consecutive", "shuffled", "stretches"])
@pytest.mark.parametrize(
    "n,w,density,contiguous",
    [
        (1500, 64, 0.002, True),  # sparse stack, several blocks
        (1500, 64, 0.002, False),
        (1500, 64, 0.4, True),  # dense stack, several blocks, threaded
        (1500, 64, 0.4, False),
        (300, 512, 0.7, True),  # page-sized leaves
        (7, 64, 0.3, True),  # one block
    ],
)
def test_rows_read_in_place_match_the_model(order, n, w, density, contiguous):
    rng = np.random.default_rng(n + w + len(order))
    bits = rng.random((n, w * 64), dtype=np.float32) < density
    if contiguous:
        bases = np.arange(n, dtype=np.uint64) * np.uint64(w * 64) + np.uint64(7 << 30)
    else:
        bases = np.sort(rng.choice(1 << 20, n, replace=False)).astype(np.uint64) * np.uint64(w * 64)
    table, rows = _stack(bits, bases, rng, 40, order)
    f, ll = model_runs(bits, bases)
    s, l = bitmaps_to_runs(table, bases, rows)
    assert np.array_equal(s, f) and np.array_equal(l, ll)
    s2, l2 = bitmaps_to_runs(table.astype(">u8"), bases, rows)  # the other byte order: word-wise sparse scan
    assert np.array_equal(s2, f) and np.array_equal(l2, ll)


def _edges_model_check(bits, bases, rows=None, words=None):
    if words is None:
        words = np.packbits(bits, axis=1, bitorder="little").view("<u8")
    s, l = bitmaps_to_runs(words, bases, rows)
    f, ll = model_runs(bits, bases)
    assert np.array_equal(s, f) and np.array_equal(l, ll)
    return s, l


def test_sparse_stack_with_a_dense_block_takes_the_masks_there(monkeypatch):
    """A stack whose sample looks sparse but one block of which is dense:
    that block is read with the run masks, the streaks around it bit by
    bit, and runs crossing from one into the other are joined."""
    import kho_formats.memory.bits as kb

    w = 64
    k = kb._BLOCK_WORDS // w  # bitmaps per block
    n = 8 * k
    rng = np.random.default_rng(5)
    bits = rng.random((n, w * 64), dtype=np.float32) < 0.001
    dense = slice(2 * k, 3 * k)
    bits[dense] = rng.random((k, w * 64), dtype=np.float32) < 0.6
    # runs across both edges of the dense block, and one across a sparse block edge
    bits[2 * k - 1, -5:] = True
    bits[2 * k, :9] = True
    bits[3 * k - 1, -3:] = True
    bits[3 * k, :70] = True
    bits[5 * k - 1, -1] = True
    bits[5 * k, 0] = True
    bases = np.arange(n, dtype=np.uint64) * np.uint64(w * 64)
    calls = []
    real = kb._runs_of_block
    monkeypatch.setattr(kb, "_runs_of_block", lambda *a: calls.append(1) or real(*a))
    s, l = _edges_model_check(bits, bases)
    assert len(calls) == 1  # the dense block only
    assert kb._looks_sparse(kb._Stack(np.packbits(bits, axis=1, bitorder="little").view("<u8"), None), n)
    # the joined runs are there
    start = int(bases[2 * k - 1]) + w * 64 - 5
    assert start in s.tolist()


@pytest.mark.parametrize("rows_order", [None, "stretches"])
def test_dense_stack_carries_cross_blocks_and_the_thread_cut(rows_order):
    """All-ones stretches crossing several block boundaries (the masks carry
    them: nothing is joined afterwards), one crossing the middle where the
    two threads meet, a non-contiguous bitmap at a block boundary with bits
    on both sides (not joined), a run ending exactly at a block end and
    sparse blocks inside the dense stack."""
    import kho_formats.memory.bits as kb

    w = 64
    k = kb._BLOCK_WORDS // w
    n = 6 * k + 17
    rng = np.random.default_rng(9)
    bits = rng.random((n, w * 64), dtype=np.float32) < 0.5
    bits[k - 3 : 2 * k + 4] = True  # across two block boundaries
    mid = (n // 2 + k - 1) // k * k  # the threads' cut
    bits[mid - 2 : mid + 1] = True
    bits[4 * k - 1, -1] = True
    bits[4 * k, 0] = True
    bits[5 * k : 5 * k + 40] = False  # a sparse stretch in a dense stack
    bits[5 * k + 3, 100] = True
    bits[k * 6 - 1, -7:] = True  # run ending at a block's end
    bits[k * 6, 0] = False
    bases = np.arange(n, dtype=np.uint64) * np.uint64(w * 64)
    bases[4 * k :] += np.uint64(w * 64)  # bitmap 4k starts a new stretch: no carry from 4k-1
    assert not kb._looks_sparse(kb._Stack(np.packbits(bits, axis=1, bitorder="little").view("<u8"), None), n)
    if rows_order is None:
        s, l = _edges_model_check(bits, bases)
    else:
        table, rows = _stack(bits, bases, rng, 200, rows_order)
        s, l = _edges_model_check(bits, bases, rows, table)
    assert int(l.max()) >= (k + 7) * w * 64
    assert (int(bases[4 * k]) in s.tolist()) and int(bases[4 * k - 1]) + w * 64 - 1 in (s + l - np.uint64(1)).tolist()


def test_dense_stack_all_zero_and_all_ones():
    import kho_formats.memory.bits as kb

    w = 64
    n = 3 * (kb._BLOCK_WORDS // w) + 1
    bases = np.arange(n, dtype=np.uint64) * np.uint64(w * 64) + np.uint64(64)
    ones = np.ones((n, w * 64), dtype=bool)
    s, l = _edges_model_check(ones, bases)
    assert s.tolist() == [64] and l.tolist() == [n * w * 64]
    s, l = bitmaps_to_runs(np.zeros((n, w), dtype="<u8"), bases)
    assert s.size == 0 and l.size == 0


@pytest.mark.parametrize("bits_per_word", [1, 2, 5, 40, 64])
def test_sparse_streaks_words_with_several_bits(bits_per_word):
    """Nonzero words holding one bit (a single round), a few (peeled one
    rank at a time) or many (unpacked), in a stack that looks sparse."""
    w = 64
    n = 2000
    rng = np.random.default_rng(bits_per_word)
    bits = np.zeros((n, w * 64), dtype=bool)
    words_hit = rng.choice(n * w, size=n * w // 300, replace=False)
    for q in words_hit.tolist():
        r, c = divmod(q, w)
        bits[r, c * 64 + rng.choice(64, size=bits_per_word, replace=False)] = True
    bases = np.arange(n, dtype=np.uint64) * np.uint64(w * 64)
    _edges_model_check(bits, bases)
    _edges_model_check(bits, bases, words=np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(">u8"))


@pytest.mark.parametrize("order", ["consecutive", "stretches", "none"])
def test_sparse_stack_scanned_in_place_over_its_span(monkeypatch, order):
    """A sparse stack of page-sized leaves lying between a few other rows
    (tables) is scanned once over the rows it spans; hits in rows outside
    the stack are dropped, and the result is the model's."""
    from kho_formats.memory import bits as bits_mod

    rng = np.random.default_rng(11)
    n, w = 700, 512
    bits = rng.random((n, w * 64), dtype=np.float32) < 0.0005
    bases = np.sort(rng.choice(1 << 22, n, replace=False)).astype(np.uint64) * np.uint64(w * 64)
    if order == "none":
        table, rows = np.packbits(bits, axis=1, bitorder="little").view("<u8"), None
    else:
        table, rows = _stack(bits, bases, rng, 40, order)
        junk = np.ones(table.shape[0], dtype=bool)
        junk[rows] = False
        table[junk] = 0
        table[junk, 3] = 5  # a few bits in the rows between: read over, never reported
    used = []
    real = bits_mod._sparse_span_words
    monkeypatch.setattr(bits_mod, "_sparse_span_words", lambda s, k: used.append(real(s, k)) or used[-1])
    s, l = bitmaps_to_runs(table, bases, rows)
    f, ll = model_runs(bits, bases)
    assert used and used[0] is not None
    assert np.array_equal(s, f) and np.array_equal(l, ll)


def test_sparse_span_scan_gives_up_on_a_dense_span(monkeypatch):
    """Rows between the bitmaps full of bits make the span too dense to scan
    word by word: the block scan takes over, with the same result."""
    from kho_formats.memory import bits as bits_mod

    rng = np.random.default_rng(12)
    n, w = 300, 512
    bits = rng.random((n, w * 64), dtype=np.float32) < 0.0005
    bases = np.arange(n, dtype=np.uint64) * np.uint64(w * 64)
    table, rows = _stack(bits, bases, rng, 40, "stretches")  # junk rows: every word nonzero
    used = []
    real = bits_mod._sparse_span_words
    monkeypatch.setattr(bits_mod, "_sparse_span_words", lambda s, k: used.append(real(s, k)) or used[-1])
    monkeypatch.setattr(bits_mod, "_SPARSE_WORDS", 1 << 20)  # any nonzero word is too many
    s, l = bitmaps_to_runs(table, bases, rows)
    f, ll = model_runs(bits, bases)
    assert used == [None]
    assert np.array_equal(s, f) and np.array_equal(l, ll)
