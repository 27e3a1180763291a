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
 * The nonzero words of a leaf are found from masks (of 8-word chunks, then
 * of the words of a chunk), so a zero word costs no branch of its own.  Each
 * word's runs come from two masks: the first bits of runs
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

/* bit c: one of words blk + 8c .. blk + 8c + 7 (below w) is nonzero; c < 64 */
static inline u64 chunk_mask(const unsigned char *row, i64 blk, i64 w)
{
	i64 c, end = w - blk < 512 ? w - blk : 512;
	u64 mask = 0;

	for (c = 0; 8 * c < end; c++) {
		const unsigned char *p = row + 8 * (blk + 8 * c);
		u64 q[8], o = 0;
		i64 j;

		if (8 * c + 8 <= end) {
			__builtin_memcpy(q, p, sizeof(q));
			o = (q[0] | q[1] | q[2] | q[3]) | (q[4] | q[5] | q[6] | q[7]);
		} else {
			for (j = 0; 8 * c + j < end; j++) {
				__builtin_memcpy(q, p + 8 * j, 8);
				o |= q[0];
			}
		}
		mask |= (u64)(o != 0) << c;
	}
	return mask;
}

/* bit t: word j0 + t (below w) is nonzero; t < 8 */
static inline unsigned int word_mask(const unsigned char *row, i64 j0, i64 w)
{
	unsigned int mask = 0, t;

	for (t = 0; t < 8 && j0 + t < w; t++) {
		u64 v;

		__builtin_memcpy(&v, row + 8 * (j0 + t), 8);
		mask |= (unsigned int)(v != 0) << t;
	}
	return mask;
}

/*
 * The nonzero words of a leaf of w words from word k0 on, in order.  Zero
 * words cost a load and an OR and no branch of their own: the nonzero ones
 * are found 512 words at a time from a mask of 8-word chunks, then from a
 * mask of the words of each chunk that has one.
 */
struct nonzero_words {
	const unsigned char *row;
	i64 w, k0, blk, j0;
	u64 chunks;	   /* chunks of the block at blk still to visit */
	unsigned int here; /* words of the chunk at j0 still to visit */
};

static inline void nonzero_block(struct nonzero_words *it)
{
	i64 skip = it->k0 - it->blk; /* words of the block before k0 */

	it->chunks = chunk_mask(it->row, it->blk, it->w);
	if (skip > 0)
		it->chunks &= skip >= 512 ? 0 : ~(u64)0 << (skip / 8);
}

static inline void nonzero_start(struct nonzero_words *it, const unsigned char *row, i64 w, i64 k0)
{
	it->row = row;
	it->w = w;
	it->k0 = k0;
	it->blk = (k0 / 512) * 512;
	it->here = 0;
	if (it->blk < w)
		nonzero_block(it);
	else
		it->chunks = 0;
}

/* the next nonzero word's index into *k; 0 when there is none */
static inline int nonzero_next(struct nonzero_words *it, i64 *k)
{
	while (!it->here) {
		i64 skip;

		while (!it->chunks) {
			it->blk += 512;
			if (it->blk >= it->w)
				return 0;
			nonzero_block(it);
		}
		it->j0 = it->blk + 8 * __builtin_ctzll(it->chunks);
		it->chunks &= it->chunks - 1;
		it->here = word_mask(it->row, it->j0, it->w);
		skip = it->k0 - it->j0; /* 0 .. 7 here: chunks wholly before k0 were dropped */
		if (skip > 0)
			it->here &= 0xffu << skip;
	}
	*k = it->j0 + __builtin_ctz(it->here);
	it->here &= it->here - 1;
	return 1;
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
	i64 i, k, count = 0;

	stack_init(&s, words, stride, rows, bases, n, w, swap);
	for (i = lo; i < hi; i++) {
		const unsigned char *row = leaf_row(&s, i);

		struct nonzero_words it;

		nonzero_start(&it, row, w, 0);
		while (nonzero_next(&it, &k)) {
			u64 v = word(&s, row, k);

			count += __builtin_popcountll(v & ~((v << 1) | (before(&s, i, k) >> 63)));
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
	i64 leaf = state[0] / w, k0 = state[0] % w, closed = state[1], nonempty = state[2], seen = state[3];

	stack_init(&s, words, stride, rows, bases, n, w, swap);
	for (; leaf < hi; leaf++, k0 = 0) {
		const unsigned char *row = leaf_row(&s, leaf);
		u64 base = bases[leaf];
		struct nonzero_words it;
		i64 k;

		nonzero_start(&it, row, w, k0);
		while (nonzero_next(&it, &k)) {
			u64 v = word(&s, row, k);
			u64 at = base + 64 * (u64)k;
			u64 starts = v & ~((v << 1) | (before(&s, leaf, k) >> 63));
			u64 ends;

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
		}
	}
	state[0] = hi * w;
	state[1] = closed;
	state[2] = nonempty;
	state[3] = seen;
	return nout;
}
