/*
 * _leafscan.c - bitmap leaves to runs of set bits, for kho_formats.memory.leafscan.
 *
 * Written for kho-formats from the ABI description (the radix tree's bitmap
 * leaves): a leaf is an array of 64-bit words, bit b of word k stands for
 * key base + 64 * k + b, and the caller gives the base of every leaf.  This
 * file turns a stack of such leaves into sorted runs (first key, number of
 * keys).  A run goes on across words, and across leaves whose bases are
 * contiguous (base of leaf i == base of leaf i-1 + 64 * w).
 *
 * Each word's runs come from two masks: the first bits of runs
 * (v & ~(v << 1 | carry in)) and their last bits (v & ~(v >> 1 | carry
 * out)); the k-th first bit opens run k, the k-th last bit closes it.  The
 * carries are the neighbouring words' edge bits, so no run is cut.
 *
 * The caller owns every buffer.  The scan of kho_leaf_runs stops before a
 * word whose runs do not fit in the output (a word opens at most 32) and
 * says where it stopped: the caller grows the output by
 * what was found and calls again, so memory follows the runs present, never
 * a count claimed by the input.  kho_leaf_count counts the runs a range of
 * leaves opens, for a caller that sizes the output exactly first.  No
 * allocation, no I/O, no global state.
 *
 *   cc -O2 -shared -fPIC -o leafscan.so _leafscan.c
 */
#include <stddef.h>
#include <stdint.h>

typedef uint64_t u64;
typedef int64_t i64;

struct stack {
	const unsigned char *words; /* row 0 of the rows holding the leaves */
	i64 stride;		    /* bytes from one row to the next */
	const i64 *rows;	    /* row of each leaf (NULL: leaf i is row i) */
	const u64 *bases;	    /* key of bit 0 of each leaf, ascending */
	i64 n, w;		    /* leaves, 64-bit words per leaf */
	int swap;		    /* words stored in the other byte order than the host's */
};

static inline const unsigned char *leaf_row(const struct stack *s, i64 i)
{
	return s->words + s->stride * (s->rows ? s->rows[i] : i);
}

static inline u64 word(const struct stack *s, const unsigned char *row, i64 k)
{
	u64 v;

	__builtin_memcpy(&v, row + 8 * k, 8);
	return s->swap ? __builtin_bswap64(v) : v;
}

/* leaf i continues leaf i - 1 */
static inline int continues(const struct stack *s, i64 i)
{
	return i > 0 && i < s->n && s->bases[i] == s->bases[i - 1] + 64 * (u64)s->w;
}

/* the word before word k of leaf i in key order, 0 when there is none */
static inline u64 before(const struct stack *s, i64 i, i64 k)
{
	if (k > 0)
		return word(s, leaf_row(s, i), k - 1);
	return continues(s, i) ? word(s, leaf_row(s, i - 1), s->w - 1) : 0;
}

/* the word after word k of leaf i in key order, 0 when there is none */
static inline u64 after(const struct stack *s, const unsigned char *row, i64 i, i64 k)
{
	if (k + 1 < s->w)
		return word(s, row, k + 1);
	return continues(s, i + 1) ? word(s, leaf_row(s, i + 1), 0) : 0;
}

/* from word k of a leaf: the next nonzero word's index, or w */
static inline i64 next_nonzero(const unsigned char *row, i64 k, i64 w)
{
	while (k + 4 <= w) {
		u64 q[4];

		__builtin_memcpy(q, row + 8 * k, sizeof(q));
		if (q[0] | q[1] | q[2] | q[3])
			break;
		k += 4;
	}
	for (; k < w; k++) {
		u64 v;

		__builtin_memcpy(&v, row + 8 * k, 8);
		if (v)
			break;
	}
	return k;
}

static void stack_init(struct stack *s, const unsigned char *words, i64 stride, const i64 *rows, const u64 *bases,
		       i64 n, i64 w, int swap)
{
	s->words = words;
	s->stride = stride;
	s->rows = rows;
	s->bases = bases;
	s->n = n;
	s->w = w;
	s->swap = swap;
}

/*
 * Runs opened in leaves [lo, hi) (a run continued from leaf lo - 1 is not
 * counted; one going on into leaf hi is).
 */
i64 kho_leaf_count(const unsigned char *words, i64 stride, const i64 *rows, const u64 *bases, i64 n, i64 w, int swap,
		   i64 lo, i64 hi)
{
	struct stack s;
	i64 i, count = 0;

	stack_init(&s, words, stride, rows, bases, n, w, swap);
	for (i = lo; i < hi; i++) {
		const unsigned char *row = leaf_row(&s, i);
		u64 prev = before(&s, i, 0);
		i64 k = 0;

		while ((k = next_nonzero(row, k, w)) < w) {
			u64 v = word(&s, row, k);

			if (k > 0)
				prev = word(&s, row, k - 1);
			count += __builtin_popcountll(v & ~((v << 1) | (prev >> 63)));
			prev = v;
			k++;
		}
	}
	return count;
}

/*
 * Scan leaves up to hi.
 *
 * state:  in: [0] where to start (leaf * w + word), [1] runs closed so far,
 *         [2] leaves seen holding bits, [3] the last of them (-1: none);
 *         out: where the scan stopped (hi * w when done) and the rest, updated
 * first, len, cap: the output runs and their capacity
 * nout:   runs opened so far (runs nclosed .. nout - 1 are still open)
 *
 * Returns the number of runs opened.
 */
i64 kho_leaf_runs(const unsigned char *words, i64 stride, const i64 *rows, const u64 *bases, i64 n, i64 w, int swap,
		  i64 hi, i64 *state, u64 *first, u64 *len, i64 cap, i64 nout)
{
	struct stack s;
	i64 leaf = state[0] / w, k = state[0] % w, closed = state[1], nonempty = state[2], seen = state[3];

	stack_init(&s, words, stride, rows, bases, n, w, swap);
	for (; leaf < hi; leaf++, k = 0) {
		const unsigned char *row = leaf_row(&s, leaf);
		u64 base = bases[leaf];
		u64 prev = before(&s, leaf, k);

		while ((k = next_nonzero(row, k, w)) < w) {
			u64 v = word(&s, row, k);
			u64 at = base + 64 * (u64)k;
			u64 starts, ends;

			if (k > 0)
				prev = word(&s, row, k - 1);
			starts = v & ~((v << 1) | (prev >> 63));
			if (cap - nout < __builtin_popcountll(starts)) {
				state[0] = leaf * w + k;
				state[1] = closed;
				state[2] = nonempty;
				state[3] = seen;
				return nout;
			}
			if (seen != leaf) {
				nonempty++;
				seen = leaf;
			}
			ends = v & ~((v >> 1) | (after(&s, row, leaf, k) << 63));
			while (starts) {
				first[nout++] = at + (u64)__builtin_ctzll(starts);
				starts &= starts - 1;
			}
			while (ends) {
				u64 last = at + (u64)__builtin_ctzll(ends);

				len[closed] = last + 1 - first[closed];
				closed++;
				ends &= ends - 1;
			}
			prev = v;
			k++;
		}
	}
	state[0] = hi * w;
	state[1] = closed;
	state[2] = nonempty;
	state[3] = seen;
	return nout;
}
