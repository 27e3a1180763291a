/*
 * The first four bytes of zlib streams (RFC 1950 / RFC 1951), many at once, for the
 * root-FDT scan of a zlib-compressed kdump file (kho_formats/memory/zhead.py loads it
 * with ctypes; it is optional: without a C compiler the scan inflates in Python).
 *
 * Only the common case is decided here: a zlib header without a preset dictionary,
 * then a first deflate block that is stored, fixed-Huffman or dynamic-Huffman and
 * opens with four literals (a stored block with four or more bytes).  The code
 * sets are checked as zlib checks them (over-subscribed, incomplete, too many
 * symbols, a repeat past the end, no end-of-block code).  Everything else (a
 * match or an end of block within the first four bytes, a stream zlib would
 * refuse, data that ends early) is left to zlib: status 0, and the caller
 * inflates that page as before.  Nothing past the fourth literal is decoded.
 *
 * Written for kho-formats from RFC 1951; no zlib code.
 */
#include <stdint.h>
#include <string.h>

#define MAXBITS 15
#define NLIT 288
#define NDIST 32

typedef struct {
    const uint8_t *p, *end;
    uint64_t bb; /* bit buffer, LSB first */
    int nb;
} bits_t;

static inline void refill(bits_t *b)
{
    if (b->end - b->p >= 8) { /* eight bytes at once, as many as fit */
        uint64_t w;
        memcpy(&w, b->p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        b->bb |= w << b->nb;
        b->p += (63 - b->nb) >> 3;
        b->nb |= 56;
        return;
    }
    while (b->nb <= 56 && b->p < b->end) {
        b->bb |= (uint64_t)*b->p++ << b->nb;
        b->nb += 8;
    }
}

/* n (<= 16) bits, or -1 when the data ends first */
static inline int getbits(bits_t *b, int n)
{
    if (b->nb < n) {
        refill(b);
        if (b->nb < n)
            return -1;
    }
    int v = (int)(b->bb & ((1u << n) - 1));
    b->bb >>= n;
    b->nb -= n;
    return v;
}

/* a canonical Huffman code: its lengths, and how many codes of each length */
typedef struct {
    const uint8_t *lengths;
    int n;
    uint16_t count[MAXBITS + 1];
    const uint16_t *sym; /* the symbols in code order (sort_symbols), or NULL: found by nth() */
} huff_t;

static int counted(huff_t *h, const uint8_t *lengths, int n, const uint16_t *count, int *maxlen);

/* count the lengths[0..n) of code h: 0 complete, > 0 incomplete (codes left), < 0 over-subscribed;
 * *maxlen the longest length.  Four histograms, so that runs of one length do not wait on each other. */
static int build(huff_t *h, const uint8_t *lengths, int n, int *maxlen)
{
    uint16_t c[4][MAXBITS + 1];
    memset(c, 0, sizeof c);
    int s = 0;
    for (; s + 4 <= n; s += 4) {
        c[0][lengths[s]]++;
        c[1][lengths[s + 1]]++;
        c[2][lengths[s + 2]]++;
        c[3][lengths[s + 3]]++;
    }
    for (; s < n; s++)
        c[0][lengths[s]]++;
    for (int len = 0; len <= MAXBITS; len++)
        c[0][len] = (uint16_t)(c[0][len] + c[1][len] + c[2][len] + c[3][len]);
    return counted(h, lengths, n, c[0], maxlen);
}

/* code h of the lengths[0..n) whose histogram is count: as build() */
static int counted(huff_t *h, const uint8_t *lengths, int n, const uint16_t *count, int *maxlen)
{
    h->lengths = lengths;
    h->n = n;
    h->sym = NULL;
    int mx = 0;
    for (int len = 0; len <= MAXBITS; len++) {
        h->count[len] = count[len];
        if (len && count[len])
            mx = len;
    }
    *maxlen = mx;
    int left = 1;
    for (int len = 1; len <= MAXBITS; len++) {
        left <<= 1;
        left -= h->count[len];
        if (left < 0)
            return left;
    }
    return left;
}

/* the k-th symbol (from 0, in symbol order) of length len: canonical codes of one length
 * are given in symbol order */
static int nth(const huff_t *h, int len, int k)
{
    const uint8_t *l = h->lengths;
    int s = 0;
    for (; s + 16 <= h->n; s += 16) {
        int c = 0;
        for (int j = 0; j < 16; j++)
            c += l[s + j] == len;
        if (c > k)
            break;
        k -= c;
    }
    for (; s < h->n; s++)
        if (l[s] == len && k-- == 0)
            return s;
    return -1;
}

/* the symbols of code h in code order (by length, then symbol) into sym[h->n] */
static void sort_symbols(huff_t *h, uint16_t *sym)
{
    uint16_t offs[MAXBITS + 2];
    offs[1] = 0;
    for (int len = 1; len <= MAXBITS; len++)
        offs[len + 1] = (uint16_t)(offs[len] + h->count[len]);
    for (int s = 0; s < h->n; s++)
        if (h->lengths[s])
            sym[offs[h->lengths[s]]++] = (uint16_t)s;
    h->sym = sym;
}

/* one symbol of code h (the code's bits come MSB first), or -1 (an invalid code, or the
 * data ends first) */
static int decode(bits_t *b, const huff_t *h)
{
    if (b->nb < MAXBITS)
        refill(b);
    uint64_t bb = b->bb;
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= MAXBITS; len++) {
        if (len > b->nb)
            return -1;
        code |= (int)(bb & 1);
        bb >>= 1;
        int count = h->count[len];
        if (code - count < first) {
            b->bb >>= len;
            b->nb -= len;
            return h->sym ? h->sym[index + code - first] : nth(h, len, code - first);
        }
        index += count;
        first += count;
        first <<= 1;
        code <<= 1;
    }
    return -1;
}

static uint8_t fixed_lens[NLIT + NDIST];
static uint16_t fixed_sym[NLIT + NDIST];
static huff_t fixed_lit, fixed_dist;
static int fixed_ready;

static void make_fixed(void)
{
    uint8_t *l = fixed_lens;
    int s = 0, mx;
    for (; s < 144; s++)
        l[s] = 8;
    for (; s < 256; s++)
        l[s] = 9;
    for (; s < 280; s++)
        l[s] = 7;
    for (; s < NLIT; s++)
        l[s] = 8;
    build(&fixed_lit, l, NLIT, &mx);
    sort_symbols(&fixed_lit, fixed_sym);
    memset(l + NLIT, 5, NDIST);
    build(&fixed_dist, l + NLIT, NDIST, &mx);
    sort_symbols(&fixed_dist, fixed_sym + NLIT);
    fixed_ready = 1;
}

static const uint8_t cl_order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

/* the dynamic block's header: the literal/length and distance codes into *lit and *dist (their
 * lengths in lens[286 + 30]); 0 when zlib would not take it as is */
static int dynamic(bits_t *b, huff_t *lit, huff_t *dist, uint8_t *lens)
{
    int hlit = getbits(b, 5), hdist = getbits(b, 5), hclen = getbits(b, 4);
    if (hlit < 0 || hdist < 0 || hclen < 0)
        return 0;
    hlit += 257;
    hdist += 1;
    hclen += 4;
    if (hlit > 286 || hdist > 30)
        return 0; /* zlib: too many length or distance symbols */
    uint8_t cl[19] = {0};
    for (int i = 0; i < hclen; i++) {
        int v = getbits(b, 3);
        if (v < 0)
            return 0;
        cl[cl_order[i]] = (uint8_t)v;
    }
    /* the code-length code: complete (zlib refuses an incomplete one), at most 7 bits: a table */
    huff_t clh;
    int mx;
    if (build(&clh, cl, 19, &mx) != 0)
        return 0;
    uint16_t table[128]; /* symbol | length << 8, indexed by the next 7 stream bits */
    {
        uint16_t next[8]; /* the first code of each length */
        next[1] = 0;
        for (int len = 2; len <= 7; len++)
            next[len] = (uint16_t)((next[len - 1] + clh.count[len - 1]) << 1);
        for (int s = 0; s < 19; s++) {
            int len = cl[s];
            if (!len)
                continue;
            int c = next[len]++, r = 0;
            for (int i = 0; i < len; i++)
                r |= ((c >> i) & 1) << (len - 1 - i);
            for (int j = r; j < 128; j += 1 << len)
                table[j] = (uint16_t)(s | len << 8);
        }
    }
    int n = 0, total = hlit + hdist;
    uint16_t cnt[2][MAXBITS + 1]; /* the histograms of the literal/length and the distance lengths, as read */
    memset(cnt, 0, sizeof cnt);
    while (n < total) {
        if (b->nb < 7)
            refill(b);
        int e = table[b->bb & 127];
        int len = e >> 8, sym = e & 0xff;
        if (len > b->nb)
            return 0;
        b->bb >>= len;
        b->nb -= len;
        if (sym < 16) {
            cnt[n >= hlit][sym]++;
            lens[n++] = (uint8_t)sym;
            continue;
        }
        int rep, val = 0;
        if (sym == 16) {
            if (n == 0)
                return 0;
            val = lens[n - 1];
            rep = getbits(b, 2);
            rep = rep < 0 ? -1 : 3 + rep;
        } else if (sym == 17) {
            rep = getbits(b, 3);
            rep = rep < 0 ? -1 : 3 + rep;
        } else {
            rep = getbits(b, 7);
            rep = rep < 0 ? -1 : 11 + rep;
        }
        if (rep < 0 || n + rep > total)
            return 0; /* zlib: invalid bit length repeat */
        memset(lens + n, val, (size_t)rep);
        int before = n < hlit ? (hlit - n < rep ? hlit - n : rep) : 0; /* a repeat may run into the distances */
        cnt[0][val] = (uint16_t)(cnt[0][val] + before);
        cnt[1][val] = (uint16_t)(cnt[1][val] + rep - before);
        n += rep;
    }
    if (lens[256] == 0)
        return 0; /* zlib: missing end-of-block */
    if (counted(lit, lens, hlit, cnt[0], &mx) != 0)
        return 0; /* over-subscribed or incomplete: left to zlib */
    int left = counted(dist, lens + hlit, hdist, cnt[1], &mx);
    if (left < 0 || (left > 0 && mx > 1))
        return 0; /* zlib: invalid distances set (an incomplete one is only taken with one 1-bit code, or none) */
    return 1;
}

static const uint16_t len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,    65,    97,    129,
                                       193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

/* the length of length symbol s (257..285) with its extra bits, or -1 */
static int match_length(bits_t *b, int s)
{
    int e = len_extra[s - 257], x = e ? getbits(b, e) : 0;
    return x < 0 ? -1 : len_base[s - 257] + x;
}

/* a distance with its extra bits, or -1 (the data ends, or symbol 30 / 31 / an unused code) */
static int distance(bits_t *b, const huff_t *h)
{
    int d = decode(b, h);
    if (d < 0 || d > 29)
        return -1;
    int e = dist_extra[d], x = e ? getbits(b, e) : 0;
    return x < 0 ? -1 : dist_base[d] + x;
}

/* the first four bytes of the zlib stream data[0..size) into *head: 1, or 0 (left to zlib) */
static int head_of(const uint8_t *data, int64_t size, uint32_t *head)
{
    if (size < 3)
        return 0;
    int cmf = data[0], flg = data[1];
    if ((cmf & 0x0f) != 8 || (cmf >> 4) > 7 || ((cmf << 8) | flg) % 31 != 0 || (flg & 0x20))
        return 0;
    bits_t b = {data + 2, data + size, 0, 0};
    getbits(&b, 1); /* BFINAL: the first four bytes are in the first block or left to zlib */
    int type = getbits(&b, 2);
    if (type == 0) {
        /* stored: LEN, NLEN from the next byte boundary */
        b.bb = 0;
        b.nb = 0;
        const uint8_t *p = data + 3;
        if (p + 8 > data + size)
            return 0;
        int len = p[0] | p[1] << 8, nlen = p[2] | p[3] << 8;
        if ((len ^ nlen) != 0xffff || len <= 4)
            return 0; /* four bytes exactly: zlib goes on to the next block header */
        *head = (uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 8 | p[7];
        return 1;
    }
    huff_t dyn, dyndist;
    uint8_t lens[286 + 30]; /* the dynamic codes' lengths: dyn and dyndist point into them */
    const huff_t *lit, *dist;
    if (type == 1) {
        if (!fixed_ready)
            return 0;
        lit = &fixed_lit;
        dist = &fixed_dist;
    } else if (type == 2) {
        if (!dynamic(&b, &dyn, &dyndist, lens))
            return 0;
        lit = &dyn;
        dist = &dyndist;
    } else {
        return 0;
    }
    /* the first four bytes: literals, and matches within what is already out */
    uint8_t out[4];
    int have = 0, rest = 0; /* rest: bytes of the last match past the fourth */
    while (have < 4) {
        int s = decode(&b, lit);
        if (s < 0 || s == 256 || s > 285)
            return 0; /* an invalid code, the end of the data or of the block: left to zlib */
        if (s < 256) {
            out[have++] = (uint8_t)s;
            continue;
        }
        int len = match_length(&b, s);
        int off = len < 0 ? -1 : distance(&b, dist);
        if (off <= 0 || off > have)
            return 0; /* the data ends, an invalid distance code, or too far back: left to zlib */
        int i = 0;
        for (; i < len && have < 4; i++, have++)
            out[have] = out[have - off];
        rest = len - i;
    }
    if (rest == 0) {
        /* zlib decodes one more symbol before it sees that the four bytes asked for are there:
         * a literal, or a length and a distance within the four bytes (a valid stream's);
         * anything else (an end of block, an invalid code, the data ending here) is left to zlib */
        int s = decode(&b, lit);
        if (s < 0 || s == 256 || s > 285)
            return 0;
        if (s > 256) {
            int len = match_length(&b, s);
            int off = len < 0 ? -1 : distance(&b, dist);
            if (off <= 0 || off > 4)
                return 0;
        }
    }
    *head = (uint32_t)out[0] << 24 | (uint32_t)out[1] << 16 | (uint32_t)out[2] << 8 | out[3];
    return 1;
}

/* called once, before any thread scans */
void kho_zlib_heads_init(void)
{
    if (!fixed_ready)
        make_fixed();
}

/* how many streams ahead kho_zlib_heads asks for the next stream's first bytes */
#define ZLIB_AHEAD 16

/* For i < n: the head of the stream at buf[off[i] .. off[i] + size[i]) into heads[i], status[i] 1
 * when decided here, 0 when left to zlib (a stream out of buf's bounds too).  Returns how many were decided. */
int64_t kho_zlib_heads(const uint8_t *buf, int64_t bufsize, const int64_t *off, const int64_t *size, int64_t n,
                       uint32_t *heads, uint8_t *status)
{
    int64_t done = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i + ZLIB_AHEAD < n) { /* the streams' starts are a file page apart: their misses overlap */
            int64_t o = off[i + ZLIB_AHEAD];
            if (o >= 0 && size[i + ZLIB_AHEAD] >= 128 && o <= bufsize - size[i + ZLIB_AHEAD]) {
                __builtin_prefetch(buf + o);
                __builtin_prefetch(buf + o + 64);
            }
        }
        status[i] = 0;
        if (off[i] < 0 || size[i] <= 0 || off[i] > bufsize - size[i])
            continue;
        if (head_of(buf + off[i], size[i], &heads[i])) {
            status[i] = 1;
            done++;
        }
    }
    return done;
}

/*
 * zstd (RFC 8878): the first byte of a frame's output, for rejecting pages that cannot
 * start with the FDT magic without decompressing them.
 *
 * At a frame's start there is no history, so the first output byte is the first byte of a
 * raw or RLE first block, or the first literal of a compressed one.  Decided here: a frame
 * without a dictionary id whose first block is raw or RLE, or compressed with raw, RLE or
 * Huffman-coded literals (Huffman: the tree description, direct or FSE-coded weights,
 * checked as the format says; then the first symbol of stream 1, read from its end).
 * Everything else (a skippable frame, a dictionary, an empty first block, no literals,
 * sizes that do not fit, a tree the format refuses) is status 0: the caller decompresses
 * that page as before.  Only the block's start (and stream 1's end) is read: damage later
 * in the block is not seen here.
 *
 * Written for kho-formats from RFC 8878; no zstd code.
 */

static inline int highbit32(uint32_t v) { return 31 - __builtin_clz(v); }

/* the 8 bytes at p[at..] (0 <= at), zeros past n */
static inline uint64_t load_le(const uint8_t *p, int64_t n, int64_t at)
{
    uint64_t w = 0;
    if (at + 8 <= n) {
        memcpy(&w, p + at, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        return w;
    }
    for (int i = 0; at + i < n && i < 8; i++)
        w |= (uint64_t)p[at + i] << (8 * i);
    return w;
}

/* a backward bit reader over p[0..n): the stream's bits from its last byte's marker down */
typedef struct {
    const uint8_t *p;
    int64_t n, left; /* left: bits not yet read; below 0: read past the start (zeros) */
} rbits_t;

static int rinit(rbits_t *b, const uint8_t *p, int64_t n)
{
    if (n <= 0 || p[n - 1] == 0)
        return 0;
    b->p = p;
    b->n = n;
    b->left = 8 * (n - 1) + highbit32(p[n - 1]);
    return 1;
}

/* the next k (<= 16) bits (the first read the highest); bits past the start are zeros */
static inline uint32_t rread(rbits_t *b, int k)
{
    int64_t lo = b->left - k;
    uint32_t v;
    if (lo >= 0)
        v = (uint32_t)(load_le(b->p, b->n, lo >> 3) >> (lo & 7)) & ((1u << k) - 1);
    else if (lo + k > 0)
        v = ((uint32_t)load_le(b->p, b->n, 0) & ((1u << (lo + k)) - 1)) << -lo;
    else
        v = 0;
    b->left = lo;
    return v;
}

#define WMAX 255 /* Huffman weights described: at most 255 (the last one is implied) */

/* the 8 bytes at p, little-endian (p may be unaligned) */
static inline uint64_t ld64(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

/* FSE-coded Huffman weights: p[0..n) (n <= 127) into w; their count, or -1.
 *
 * The description is copied into a buffer with zeros on both sides first, so that every
 * read is one unaligned 8-byte load without a bounds test: the forward reads of the table
 * description stop within 8 bytes past its end (zeros, as the format reads them), and the
 * backward reads of the stream go at most 7 bits before its start; a read that goes past
 * the start ends the stream, and its value is not used. */
static int fse_weights(const uint8_t *p, int64_t n, uint8_t *w, uint32_t hist[2][16])
{
    uint8_t pad[8 + 128 + 16];
    if (n < 1 || n > 128)
        return -1;
    memset(pad, 0, sizeof pad);
    memcpy(pad + 8, p, (size_t)n);
    const uint8_t *q = pad + 8;
#define FPEEK(pos, k) ((uint32_t)(ld64(q + ((pos) >> 3)) >> ((pos) & 7)) & ((1u << (k)) - 1))
    int64_t pos = 4;
    int al = (int)(q[0] & 15) + 5;
    if (al > 6)
        return -1;
    int size = 1 << al;
    int16_t norm[16];
    int nsym = 0, remaining = size + 1, threshold = size, nb = al + 1;
    while (remaining > 1) {
        if (nsym >= 16 || pos > 8 * n)
            return -1;
        int max = (2 * threshold - 1) - remaining;
        int low = (int)FPEEK(pos, nb - 1), count;
        if (low < max) {
            count = low;
            pos += nb - 1;
        } else {
            count = (int)FPEEK(pos, nb);
            if (count >= threshold)
                count -= max;
            pos += nb;
        }
        count--;
        remaining -= count < 0 ? -count : count;
        norm[nsym++] = (int16_t)count;
        if (count == 0) { /* repeat flags: 2 bits each, 3 means more follow */
            for (;;) {
                int r = (int)FPEEK(pos, 2);
                pos += 2;
                if (nsym + r > 16 || pos > 8 * n)
                    return -1;
                for (int i = 0; i < r; i++)
                    norm[nsym++] = 0;
                if (r != 3)
                    break;
            }
        }
        if (remaining < 1)
            return -1;
        while (remaining < threshold) {
            nb--;
            threshold >>= 1;
        }
    }
#undef FPEEK
    if (remaining != 1 || pos > 8 * n)
        return -1;
    int64_t used = (pos + 7) >> 3;
    if (used >= n)
        return -1;
    /* the decoding table: symbol | bits to read << 8 | base of the next state << 16 */
    uint8_t sym[64];
    uint32_t cell[64];
    uint16_t next[16];
    int high = size - 1;
    for (int s = 0; s < nsym; s++) {
        if (norm[s] == -1) {
            if (high < 0)
                return -1;
            sym[high--] = (uint8_t)s;
            next[s] = 1;
        } else {
            next[s] = (uint16_t)norm[s];
        }
    }
    int at = 0, step = (size >> 1) + (size >> 3) + 3, mask = size - 1;
    for (int s = 0; s < nsym; s++)
        for (int i = 0; i < norm[s]; i++) {
            sym[at] = (uint8_t)s;
            do
                at = (at + step) & mask;
            while (at > high);
        }
    if (at != 0)
        return -1;
    for (int u = 0; u < size; u++) {
        int s = sym[u];
        uint32_t x = next[s]++;
        if (x == 0)
            return -1;
        uint32_t nbits = (uint32_t)(al - highbit32(x));
        cell[u] = (uint32_t)s | nbits << 8 | ((x << nbits) - (uint32_t)size) << 16;
    }
    /* two interleaved states, read from the stream's end; done when a read passes its start */
    const uint8_t *r = q + used;
    int64_t m = n - used;
    if (r[m - 1] == 0)
        return -1;
    int64_t left = 8 * (m - 1) + highbit32(r[m - 1]); /* bits not yet read */
    /* the bits [cb, cb + 64) of the stream in one word, refilled when fewer than 13 of the
     * bits below left are in it (two reads of up to 6 bits each): the chain from one state to
     * the next is then a table load, shifts and adds, no memory load */
    int64_t cb = (left + 8) / 8 * 8 - 64; /* a multiple of 8, 56 <= left - cb <= 63 (left >= 0) */
    uint64_t word = ld64(r + cb / 8);
#define RREAD(k) (left -= (k), (uint32_t)(word >> (left - cb)) & ((1u << (k)) - 1))
#define REFILL()                                \
    if (left - cb < 13) {                       \
        cb = (left + 8) / 8 * 8 - 64;           \
        word = ld64(r + cb / 8);                \
    }
    uint32_t s0 = RREAD(al);
    uint32_t s1 = RREAD(al);
    if (left < 0)
        return -1;
    int out = 0;
    for (;;) {
        if (out > WMAX - 2)
            return -1;
        REFILL();
        uint32_t e = cell[s0];
        uint32_t k = (e >> 8) & 0xff;
        w[out++] = (uint8_t)e;
        hist[0][e & 15]++;
        s0 = (e >> 16) + RREAD(k);
        if (left < 0) {
            w[out++] = (uint8_t)cell[s1];
            hist[1][cell[s1] & 15]++;
            break;
        }
        if (out > WMAX - 2)
            return -1;
        e = cell[s1];
        k = (e >> 8) & 0xff;
        w[out++] = (uint8_t)e;
        hist[1][e & 15]++;
        s1 = (e >> 16) + RREAD(k);
        if (left < 0) {
            w[out++] = (uint8_t)cell[s0];
            hist[0][cell[s0] & 15]++;
            break;
        }
    }
#undef REFILL
#undef RREAD
    return out;
}

/* the first literal of Huffman-coded literals: the tree description at p[0..n), then the
 * streams; regen the literals' count; 1 and *first, or 0 */
static int huff_first(const uint8_t *p, int64_t n, int four, uint8_t *first)
{
    if (n < 1)
        return 0;
    uint8_t w[WMAX + 1];
    /* how many symbols of each weight (weights are 4-bit): several histograms, so that
     * runs of one weight do not wait on each other (the FSE decoder fills the first two) */
    uint32_t c4[4][16], count[16];
    memset(c4, 0, sizeof c4);
    int nw;
    int64_t tree;
    int hb = p[0];
    if (hb < 128) {
        if (hb == 0 || 1 + hb > n)
            return 0;
        nw = fse_weights(p + 1, hb, w, c4);
        if (nw < 0)
            return 0;
        tree = 1 + hb;
    } else {
        nw = hb - 127;
        tree = 1 + (nw + 1) / 2;
        if (tree > n)
            return 0;
        for (int i = 0; i < nw; i++)
            w[i] = (uint8_t)((i & 1) ? p[1 + i / 2] & 15 : p[1 + i / 2] >> 4);
    }
    if (nw > WMAX)
        return 0;
    if (hb >= 128) {
        int i = 0;
        for (; i + 4 <= nw; i += 4) {
            c4[0][w[i] & 15]++;
            c4[1][w[i + 1] & 15]++;
            c4[2][w[i + 2] & 15]++;
            c4[3][w[i + 3] & 15]++;
        }
        for (; i < nw; i++)
            c4[0][w[i] & 15]++;
    }
    uint32_t total = 0;
    for (int k = 0; k < 16; k++) {
        count[k] = c4[0][k] + c4[1][k] + c4[2][k] + c4[3][k];
        if (k > 11 && count[k])
            return 0;
        if (k)
            total += count[k] << (k - 1);
    }
    if (total == 0)
        return 0;
    int maxbits = highbit32(total) + 1;
    if (maxbits > 11)
        return 0;
    uint32_t rest = (1u << maxbits) - total;
    if (rest & (rest - 1))
        return 0; /* not a power of two: no last weight completes the code */
    w[nw] = (uint8_t)(highbit32(rest) + 1);
    count[w[nw]]++;
    nw++;
    if (count[1] < 2 || (count[1] & 1))
        return 0;
    /* stream 1 */
    const uint8_t *s = p + tree;
    int64_t left = n - tree, s1 = left;
    if (four) {
        if (left < 6)
            return 0;
        s1 = s[0] | s[1] << 8;
        int64_t s2 = s[2] | s[3] << 8, s3 = s[4] | s[5] << 8;
        if (s1 == 0 || s1 + s2 + s3 + 6 >= left)
            return 0; /* stream 4 empty or past the end */
        s += 6;
    }
    rbits_t rb;
    if (!rinit(&rb, s, s1))
        return 0;
    uint32_t v = rread(&rb, maxbits);
    /* codes in order of weight, then symbol: weight k spans 2^(k-1) of the 2^maxbits prefixes */
    uint32_t at = 0;
    for (int k = 1; k <= maxbits; k++) {
        uint32_t span = count[k] << (k - 1);
        if (v >= at + span) {
            at += span;
            continue;
        }
        uint32_t j = (v - at) >> (k - 1); /* the j-th symbol of weight k */
        if (rb.left + maxbits < maxbits + 1 - k)
            return 0; /* its code is longer than the stream */
        /* eight weights at a time: the bytes equal to k counted in one word */
        const uint64_t ones = 0x0101010101010101ull, low7 = 0x7f7f7f7f7f7f7f7full;
        int sym = 0;
        for (; sym + 8 <= nw; sym += 8) {
            uint64_t y = ld64(w + sym) ^ (ones * (uint64_t)k);
            uint64_t eq = ~(((y & low7) + low7) | y | low7); /* 0x80 in each byte of y that is 0 */
            uint32_t c = (uint32_t)__builtin_popcountll(eq);
            if (c > j)
                break;
            j -= c;
        }
        for (; sym < nw; sym++)
            if (w[sym] == k && j-- == 0) {
                *first = (uint8_t)sym;
                return 1;
            }
        return 0;
    }
    return 0;
}

/* the first output byte of the zstd frame data[0..size): 1 and *first, or 0 (left alone) */
static int zstd_first_of(const uint8_t *data, int64_t size, uint8_t *first)
{
    if (size < 9)
        return 0;
    uint32_t magic = data[0] | data[1] << 8 | data[2] << 16 | (uint32_t)data[3] << 24;
    if (magic != 0xFD2FB528u)
        return 0;
    int fhd = data[4];
    if (fhd & 0x08 || fhd & 3)
        return 0; /* reserved bit set, or a dictionary id */
    int single = (fhd >> 5) & 1, fcsf = fhd >> 6;
    int fcs = fcsf == 0 ? single : 1 << fcsf;
    int64_t bh = 5 + !single + fcs;
    if (bh + 3 > size)
        return 0;
    uint32_t h = data[bh] | data[bh + 1] << 8 | (uint32_t)data[bh + 2] << 16;
    int btype = (h >> 1) & 3;
    int64_t bsize = h >> 3, b = bh + 3;
    if (btype < 2) { /* raw: the block's bytes are the output; RLE: its one byte, bsize times */
        if (bsize < 1 || bsize > (128 << 10) || b + (btype == 0 ? bsize : 1) > size)
            return 0;
        *first = data[b];
        return 1;
    }
    if (btype != 2 || bsize < 2 || bsize > (128 << 10) || b + bsize > size)
        return 0;
    const uint8_t *l = data + b;
    int ltype = l[0] & 3, sf = (l[0] >> 2) & 3;
    int64_t regen, comp = 0, lh;
    if (ltype < 2) {
        if (!(sf & 1)) {
            lh = 1;
            regen = l[0] >> 3;
        } else if (sf == 1) {
            lh = 2;
            regen = (l[0] >> 4) | l[1] << 4;
        } else {
            lh = 3;
            if (bsize < 3)
                return 0;
            regen = (l[0] >> 4) | l[1] << 4 | (int64_t)l[2] << 12;
        }
        if (regen < 1 || lh + (ltype == 0 ? regen : 1) > bsize)
            return 0;
        *first = l[lh];
        return 1;
    }
    if (ltype == 3)
        return 0; /* treeless: not in a frame's first block */
    lh = sf < 2 ? 3 : sf + 2;
    if (lh > bsize)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < lh; i++)
        v |= (uint64_t)l[i] << (8 * i);
    int bitsz = sf < 2 ? 10 : sf == 2 ? 14 : 18;
    regen = (int64_t)((v >> 4) & ((1u << bitsz) - 1));
    comp = (int64_t)((v >> (4 + bitsz)) & ((1u << bitsz) - 1));
    if (regen < 1 || comp < 1 || lh + comp > bsize)
        return 0;
    return huff_first(l + lh, comp, sf != 0, first);
}

/* Where the first-byte decoder of the frame data[0..size) will read past its first 64 bytes:
 * the last byte of literal stream 1 (a hint for prefetching, no check of the format: the
 * decoder checks it; 0 when the frame is short or not the usual case). */
static inline int64_t zstd_stream1_end(const uint8_t *data, int64_t size)
{
    if (size < 32)
        return 0;
    int fhd = data[4], single = (fhd >> 5) & 1, fcsf = fhd >> 6;
    int64_t b = 5 + !single + (fcsf == 0 ? single : 1 << fcsf) + 3; /* the literals section */
    int l0 = data[b];
    if ((l0 & 3) != 2)
        return 0;
    int sf = (l0 >> 2) & 3;
    int64_t t = b + (sf < 2 ? 3 : sf + 2); /* the tree description */
    int hb = data[t];
    int64_t s = t + 1 + (hb < 128 ? hb : (hb - 126) / 2); /* the streams */
    if (s + 2 > size)
        return 0;
    int64_t end = sf ? s + 6 + (data[s] | data[s + 1] << 8) - 1 : s; /* stream 1's last byte */
    return end > 0 && end < size - 8 ? end : 0;
}

/* how many frames ahead the loop below asks for the frame headers, and for stream 1's end */
#define AHEAD 16
#define AHEAD_STREAM 8

/* For i < n: the first output byte of the zstd frame at buf[off[i] .. off[i] + size[i]) into
 * first[i], status[i] 1 when decided here, 0 when left to the caller.  Returns how many were decided.
 * The bytes a frame needs are far apart in memory (one page of the file each): the headers
 * of the frames AHEAD on, and the end of stream 1 of the frame AHEAD_STREAM on, are
 * prefetched, so that their cache misses overlap the decoding of this one. */
int64_t kho_zstd_first_bytes(const uint8_t *buf, int64_t bufsize, const int64_t *off, const int64_t *size, int64_t n,
                             uint8_t *first, uint8_t *status)
{
    int64_t done = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i + AHEAD < n) {
            int64_t o = off[i + AHEAD];
            if (o >= 0 && size[i + AHEAD] >= 64 && o <= bufsize - size[i + AHEAD]) {
                __builtin_prefetch(buf + o);
                __builtin_prefetch(buf + o + 63);
            }
        }
        if (i + AHEAD_STREAM < n) {
            int64_t o = off[i + AHEAD_STREAM], z = size[i + AHEAD_STREAM];
            if (o >= 0 && z > 0 && o <= bufsize - z) {
                int64_t e = zstd_stream1_end(buf + o, z);
                if (e)
                    __builtin_prefetch(buf + o + e - 7);
            }
        }
        status[i] = 0;
        if (off[i] < 0 || size[i] <= 0 || off[i] > bufsize - size[i])
            continue;
        if (zstd_first_of(buf + off[i], size[i], &first[i])) {
            status[i] = 1;
            done++;
        }
    }
    return done;
}
