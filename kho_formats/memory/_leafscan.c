/*
 * _leafscan.c - bitmap leaves to runs of set bits, for kho_formats.memory.leafscan.
 *
 * Written for kho-formats from the ABI description (docs: KHO-ABI, the
 * radix tree's bitmap leaves): a leaf is an array of 64-bit words, bit b of
 * word k stands for key base + 64 * k + b, and the caller gives the base of
 * every leaf.  This file turns a stack of such leaves into sorted runs
 * (first key, number of keys), joining a run that ends where the next one
 * starts (across words, and across leaves whose bases are contiguous).
 *
 * The caller owns every buffer.  The scan stops when fewer than 33 output
 * slots are free before a nonzero word (a word holds at most 32 runs), and
 * says where it stopped, so the caller grows the output by what was found
 * and calls again: memory follows the runs present, never a count claimed
 * by the input.  No allocation, no I/O, no global state.
 *
 *   cc -O2 -shared -fPIC -o leafscan.so _leafscan.c
 */
#include <stddef.h>
#include <stdint.h>

typedef uint64_t u64;
typedef int64_t i64;

#define SLOTS_PER_WORD 32

static inline u64 load_word(const unsigned char *row, i64 k, int swap)
{
	u64 v;

	__builtin_memcpy(&v, row + 8 * k, 8);
	return swap ? __builtin_bswap64(v) : v;
}

/*
 * words:  address of row 0 of the rows holding the leaves
 * stride: bytes from one row to the next
 * rows:   row of each leaf (NULL: leaf i is row i)
 * bases:  key of bit 0 of each leaf, ascending
 * n, w:   leaves, 64-bit words per leaf
 * swap:   words are stored in the other byte order than the host's
 * pos:    in: where to start (leaf * w + word); out: where the scan stopped
 *         (n * w when it is done)
 * first, len, cap: the output runs and their capacity
 * nout:   runs already in the output (the last one may be extended)
 *
 * Returns the number of runs in the output.
 */
i64 kho_leaf_runs(const unsigned char *words, i64 stride, const i64 *rows, const u64 *bases, i64 n, i64 w, int swap,
		  i64 *pos, u64 *first, u64 *len, i64 cap, i64 nout)
{
	i64 leaf = *pos / w, k = *pos % w;
	u64 end = nout ? first[nout - 1] + len[nout - 1] : ~(u64)0;

	for (; leaf < n; leaf++, k = 0) {
		const unsigned char *row = words + stride * (rows ? rows[leaf] : leaf);
		u64 base = bases[leaf];

		for (; k < w; k++) {
			u64 v = load_word(row, k, swap);
			u64 at;

			if (!v) {
				/* skip zero words four at a time */
				while (k + 4 < w) {
					u64 q[4];

					__builtin_memcpy(q, row + 8 * (k + 1), sizeof(q));
					if (q[0] | q[1] | q[2] | q[3])
						break;
					k += 4;
				}
				continue;
			}
			if (cap - nout < SLOTS_PER_WORD + 1) {
				*pos = leaf * w + k;
				return nout;
			}
			at = base + 64 * (u64)k;
			while (v) {
				unsigned int s = (unsigned int)__builtin_ctzll(v);
				u64 x = v >> s;
				unsigned int l = ~x ? (unsigned int)__builtin_ctzll(~x) : 64;
				u64 start = at + s;

				if (start == end) {
					len[nout - 1] += l;
				} else {
					first[nout] = start;
					len[nout] = l;
					nout++;
				}
				end = start + l;
				v = s + l >= 64 ? 0 : v & (~(u64)0 << (s + l));
			}
		}
	}
	*pos = n * w;
	return nout;
}
