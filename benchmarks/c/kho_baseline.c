/*
 * kho_baseline.c - compiled C baseline for the kho-formats benchmarks (issue 5).
 *
 * Does what the Linux kernel does with the KHO preserved-memory maps, in
 * plain C, so the Python library has a yardstick:
 *
 *   radix-walk       walk a kho-v2+ radix tree (recursion over table entries
 *                    in ascending index order, rebuilding the key, one
 *                    callback per set leaf bit, decoded to (phys, order))
 *   radix-build      add pages one at a time to a new tree, allocating zeroed
 *                    page-sized nodes on the way down
 *   chunklist-walk   walk a kho-v1 khoser_mem_chunk list and its bitmaps
 *   chunklist-build  kho-v1: per-order sparse array of bitmaps, set bits one
 *                    at a time, then serialize the chunk list
 *   selftest         worked examples of KHO-ABI.md 4.3 and file round trips
 *
 * Physical memory images are ELF64 little-endian cores whose PT_LOAD
 * segments carry p_paddr = physical address and p_filesz bytes of content.
 * Page lists are files of (u64 phys, u64 order) records.
 *
 * Little-endian hosts and images only.  Errors exit with status 2.
 *
 *   cc -O2 -Wall -o kho_baseline kho_baseline.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kho_baseline supports little-endian hosts only"
#endif

typedef uint64_t u64;
typedef uint32_t u32;
typedef uint16_t u16;
typedef uint8_t u8;

#define DEFAULT_ALLOC_BASE 0x100000000000ULL

/* ------------------------------------------------------------------ */
/* helpers                                                            */
/* ------------------------------------------------------------------ */

static const char *prog = "kho_baseline";

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		die("out of memory (%zu x %zu bytes)", n, size);
	return p;
}

static void *xrealloc(void *old, size_t n)
{
	void *p = realloc(old, n ? n : 1);

	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * Peak RSS in KiB.  VmHWM of /proc/self/status first: getrusage()'s
 * ru_maxrss survives exec, so a child forked from a large process (the
 * Python benchmark runner) would report the parent's RSS.  getrusage() is
 * the fallback where /proc is missing.
 */
static long peak_rss_kb(void)
{
	struct rusage ru;
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (f) {
		while (fgets(line, sizeof(line), f))
			if (!strncmp(line, "VmHWM:", 6)) {
				kb = strtol(line + 6, NULL, 10);
				break;
			}
		fclose(f);
	}
	if (kb > 0)
		return kb;
	if (getrusage(RUSAGE_SELF, &ru))
		return -1;
	return ru.ru_maxrss; /* kilobytes on Linux */
}

static u64 parse_u64(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-')
		die("bad %s: '%s'", what, s);
	return v;
}

static unsigned parse_page_shift(const char *s)
{
	u64 v = parse_u64(s, "PAGE_SHIFT");

	if (v != 12 && v != 14 && v != 16)
		die("PAGE_SHIFT must be 12, 14 or 16, not %llu", (unsigned long long)v);
	return (unsigned)v;
}

static u8 *read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	u8 *buf;
	size_t got = 0;

	if (!f)
		die("%s: %s", path, strerror(errno));
	if (fstat(fileno(f), &st))
		die("%s: %s", path, strerror(errno));
	buf = xmalloc((size_t)st.st_size);
	while (got < (size_t)st.st_size) {
		size_t n = fread(buf + got, 1, (size_t)st.st_size - got, f);

		if (!n)
			die("%s: short read", path);
		got += n;
	}
	fclose(f);
	*size = got;
	return buf;
}

static FILE *xfopen_w(const char *path)
{
	FILE *f = fopen(path, "wb");

	if (!f)
		die("%s: %s", path, strerror(errno));
	return f;
}

static void xfwrite(const void *p, size_t n, FILE *f, const char *path)
{
	if (n && fwrite(p, 1, n, f) != n)
		die("%s: write failed", path);
}

static void xfclose(FILE *f, const char *path)
{
	if (fclose(f))
		die("%s: %s", path, strerror(errno));
}

/* ------------------------------------------------------------------ */
/* collected pages                                                    */
/* ------------------------------------------------------------------ */

struct page_rec {
	u64 phys;
	u32 order;
};

struct page_vec {
	struct page_rec *v;
	size_t n, cap;
};

static int collect_page(u64 phys, unsigned int order, void *arg)
{
	struct page_vec *pv = arg;

	if (pv->n == pv->cap) {
		pv->cap = pv->cap ? pv->cap * 2 : 4096;
		pv->v = xrealloc(pv->v, pv->cap * sizeof(*pv->v));
	}
	pv->v[pv->n].phys = phys;
	pv->v[pv->n].order = order;
	pv->n++;
	return 0;
}

typedef int (*page_cb_t)(u64 phys, unsigned int order, void *arg);

/*
 * The kernel's own walk allocates nothing per page: its callback records
 * the page in state it already has.  This one only counts, and is kept out
 * of line so that each page still costs a real indirect call (the kernel
 * calls through a function pointer too); the decode happens all the same.
 */
static __attribute__((noinline)) int count_page(u64 phys, unsigned int order, void *arg)
{
	(void)phys;
	(void)order;
	++*(size_t *)arg;
	return 0;
}

/*
 * A preallocated array: as the kernel's callback stores into memory it
 * already has, every decoded page is written into an array sized (and
 * touched) before the walk starts, so no allocation or page fault falls in
 * the timed section.  Out of line, like count_page: one indirect call per
 * page.
 */
struct page_arr {
	struct page_rec *v;
	size_t n, cap;
};

static __attribute__((noinline)) int store_page(u64 phys, unsigned int order, void *arg)
{
	struct page_arr *pa = arg;

	if (pa->n == pa->cap)
		return -1; /* more pages than the counting walk found: cannot happen */
	pa->v[pa->n].phys = phys;
	pa->v[pa->n].order = order;
	pa->n++;
	return 0;
}

/* (u64 phys, u64 order) records */
static void write_pages_bin(const char *path, const struct page_vec *pv)
{
	FILE *f = xfopen_w(path);
	size_t i;

	for (i = 0; i < pv->n; i++) {
		u64 rec[2] = { pv->v[i].phys, pv->v[i].order };

		xfwrite(rec, sizeof(rec), f, path);
	}
	xfclose(f, path);
}

/* the whole file, checked to be a multiple of 16 bytes */
static u64 *read_pages_bin(const char *path, size_t *nrec)
{
	size_t size;
	u8 *buf = read_file(path, &size);

	if (size % 16)
		die("%s: size %zu is not a multiple of 16 (u64 phys, u64 order records)", path, size);
	*nrec = size / 16;
	return (u64 *)buf; /* malloc()ed, so suitably aligned */
}

/* ------------------------------------------------------------------ */
/* physical memory image: ELF64 LE core, PT_LOAD p_paddr -> content   */
/* ------------------------------------------------------------------ */

#define PT_LOAD 1
#define ET_CORE 4
#define EM_X86_64 62
#define PN_XNUM 0xffff

struct seg {
	u64 start, end;
	const u8 *data;
};

struct image {
	u8 *file;
	size_t file_size;
	struct seg *segs;
	size_t nsegs;
	u64 total; /* bytes of content */
};

static u16 ld16(const u8 *p) { u16 v; memcpy(&v, p, 2); return v; }
static u32 ld32(const u8 *p) { u32 v; memcpy(&v, p, 4); return v; }
static u64 ld64(const u8 *p) { u64 v; memcpy(&v, p, 8); return v; }

static int seg_cmp(const void *a, const void *b)
{
	const struct seg *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static void image_load(struct image *img, const char *path)
{
	const u8 *eh;
	u64 phoff, shoff;
	u32 phnum, phentsize, i;

	memset(img, 0, sizeof(*img));
	img->file = read_file(path, &img->file_size);
	eh = img->file;
	if (img->file_size < 64 || memcmp(eh, "\177ELF", 4))
		die("%s: not an ELF file", path);
	if (eh[4] != 2 || eh[5] != 1)
		die("%s: not ELF64 little-endian (class %u, data %u)", path, eh[4], eh[5]);
	phoff = ld64(eh + 32);
	shoff = ld64(eh + 40);
	phentsize = ld16(eh + 54);
	phnum = ld16(eh + 56);
	if (phnum == PN_XNUM) { /* real count in section header 0's sh_info */
		if (!shoff || shoff > img->file_size || img->file_size - shoff < 64)
			die("%s: e_phnum is PN_XNUM but there is no section header 0", path);
		phnum = ld32(img->file + shoff + 44);
	}
	if (phnum && phentsize < 56)
		die("%s: e_phentsize %u < 56", path, phentsize);
	if (phnum && (phoff > img->file_size || (img->file_size - phoff) / phentsize < phnum))
		die("%s: program headers run past the end of the file", path);

	img->segs = xcalloc(phnum, sizeof(*img->segs));
	for (i = 0; i < phnum; i++) {
		const u8 *ph = img->file + phoff + (u64)i * phentsize;
		u64 off = ld64(ph + 8), paddr = ld64(ph + 24), filesz = ld64(ph + 32);
		struct seg *s;

		if (ld32(ph) != PT_LOAD || !filesz)
			continue;
		if (off > img->file_size || img->file_size - off < filesz)
			die("%s: PT_LOAD %u (paddr 0x%llx) runs past the end of the file", path, i,
			    (unsigned long long)paddr);
		if (paddr + filesz < paddr)
			die("%s: PT_LOAD %u wraps around the address space", path, i);
		s = &img->segs[img->nsegs++];
		s->start = paddr;
		s->end = paddr + filesz;
		if (off % 8) { /* keep u64 loads aligned */
			u8 *copy = xmalloc(filesz);

			memcpy(copy, img->file + off, filesz);
			s->data = copy;
		} else {
			s->data = img->file + off;
		}
		img->total += filesz;
	}
	qsort(img->segs, img->nsegs, sizeof(*img->segs), seg_cmp);
	for (i = 1; i < img->nsegs; i++)
		if (img->segs[i].start < img->segs[i - 1].end)
			die("%s: PT_LOAD segments overlap at phys 0x%llx", path,
			    (unsigned long long)img->segs[i].start);
}

/* pointer to [phys, phys + len) or NULL if not all of it is in one segment */
static const void *image_ptr(const struct image *img, u64 phys, u64 len)
{
	size_t lo = 0, hi = img->nsegs;
	const struct seg *s;

	while (lo < hi) { /* first segment with start > phys */
		size_t mid = lo + (hi - lo) / 2;

		if (img->segs[mid].start <= phys)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!lo)
		return NULL;
	s = &img->segs[lo - 1];
	if (phys >= s->end || s->end - phys < len)
		return NULL;
	return s->data + (phys - s->start);
}

/* ------------------------------------------------------------------ */
/* page arena: zeroed page-sized nodes, phys from a bump allocator    */
/* ------------------------------------------------------------------ */

/*
 * One virtually contiguous reservation standing in for the kernel's direct
 * map: phys_to_virt() is a constant offset, as in the kernel.  The
 * reservation is PROT_NONE (costs nothing); it is made writable
 * ARENA_COMMIT_PAGES at a time as the bump allocator reaches it.
 */
#define ARENA_COMMIT_PAGES 512

struct arena {
	u64 base;		/* phys of the first page */
	unsigned int page_shift;
	u64 page_size;
	u8 *mem;		/* virt of the first page */
	u64 max_pages, committed, npages;
};

static void arena_init(struct arena *a, u64 base, unsigned int page_shift, u64 max_pages)
{
	memset(a, 0, sizeof(*a));
	a->page_shift = page_shift;
	a->page_size = 1ULL << page_shift;
	if (base & (a->page_size - 1))
		die("alloc base 0x%llx is not page aligned", (unsigned long long)base);
	a->base = base;
	if (max_pages < ARENA_COMMIT_PAGES)
		max_pages = ARENA_COMMIT_PAGES;
	if (max_pages > (1ULL << (46 - page_shift)))	/* 64 TiB of address space at most */
		max_pages = 1ULL << (46 - page_shift);
	if (base + (max_pages << page_shift) < base)
		die("alloc base 0x%llx leaves no room below 2^64", (unsigned long long)base);
	a->max_pages = max_pages;
	a->mem = mmap(NULL, max_pages << page_shift, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		      -1, 0);
	if (a->mem == MAP_FAILED)
		die("cannot reserve %llu bytes for the arena: %s",
		    (unsigned long long)(max_pages << page_shift), strerror(errno));
}

/* get_zeroed_page() */
static void *arena_alloc_page(struct arena *a, u64 *phys)
{
	u8 *page;

	if (a->npages == a->committed) {
		u64 n = a->max_pages - a->committed;

		if (!n)
			die("arena full (%llu pages)", (unsigned long long)a->max_pages);
		if (n > ARENA_COMMIT_PAGES)
			n = ARENA_COMMIT_PAGES;
		if (mprotect(a->mem + (a->committed << a->page_shift), n << a->page_shift, PROT_READ | PROT_WRITE))
			die("out of memory (arena): %s", strerror(errno));
		a->committed += n;
	}
	page = a->mem + (a->npages << a->page_shift);
	memset(page, 0, a->page_size);
	*phys = a->base + (a->npages << a->page_shift);
	a->npages++;
	return page;
}

/* phys_to_virt() for arena pages */
static inline void *arena_virt(const struct arena *a, u64 phys)
{
	return a->mem + (phys - a->base);
}

static void arena_free(struct arena *a)
{
	if (a->mem)
		munmap(a->mem, a->max_pages << a->page_shift);
	memset(a, 0, sizeof(*a));
}

/* one PT_LOAD: the arena pages are physically contiguous */
static void arena_write_elf(const struct arena *a, const char *path)
{
	u8 eh[64] = { 0 }, ph[56] = { 0 };
	u64 size = a->npages << a->page_shift;
	u64 data_off = 128; /* 64 + 56, rounded up to 16 */
	u16 v16;
	u32 v32;
	u64 v64;
	FILE *f = xfopen_w(path);
	static const u8 pad[8];

	memcpy(eh, "\177ELF", 4);
	eh[4] = 2; /* ELFCLASS64 */
	eh[5] = 1; /* ELFDATA2LSB */
	eh[6] = 1; /* EV_CURRENT */
	v16 = ET_CORE; memcpy(eh + 16, &v16, 2);
	v16 = EM_X86_64; memcpy(eh + 18, &v16, 2);
	v32 = 1; memcpy(eh + 20, &v32, 4);
	v64 = a->npages ? 64 : 0; memcpy(eh + 32, &v64, 8); /* e_phoff */
	v16 = 64; memcpy(eh + 52, &v16, 2);          /* e_ehsize */
	v16 = 56; memcpy(eh + 54, &v16, 2);          /* e_phentsize */
	v16 = a->npages ? 1 : 0; memcpy(eh + 56, &v16, 2); /* e_phnum */
	v16 = 64; memcpy(eh + 58, &v16, 2);          /* e_shentsize */
	xfwrite(eh, sizeof(eh), f, path);
	if (!a->npages) {
		xfclose(f, path);
		return;
	}
	v32 = PT_LOAD; memcpy(ph, &v32, 4);
	v32 = 6; memcpy(ph + 4, &v32, 4);            /* PF_R | PF_W */
	memcpy(ph + 8, &data_off, 8);
	memcpy(ph + 16, &a->base, 8);                /* p_vaddr */
	memcpy(ph + 24, &a->base, 8);                /* p_paddr */
	memcpy(ph + 32, &size, 8);                   /* p_filesz */
	memcpy(ph + 40, &size, 8);                   /* p_memsz */
	xfwrite(ph, sizeof(ph), f, path);
	xfwrite(pad, data_off - 64 - 56, f, path);
	xfwrite(a->mem, size, f, path);
	xfclose(f, path);
}

/* ------------------------------------------------------------------ */
/* kho-v2+ radix tree                                                 */
/* ------------------------------------------------------------------ */

struct radix_geom {
	unsigned int page_shift, depth;
	unsigned int order0_log2;  /* 64 - PAGE_SHIFT */
	unsigned int table_log2;   /* log2(PAGE_SIZE / 8) */
	unsigned int bitmap_log2;  /* PAGE_SHIFT + 3 */
	unsigned int key_bits;     /* key bits covered by the indexes (<= 64) */
	u64 page_size;
};

static unsigned int div_round_up(unsigned int a, unsigned int b)
{
	return (a + b - 1) / b;
}

/* depth formula A (v2) and B (v3+) of KHO-ABI.md 4.1 */
static unsigned int radix_depth_v2(unsigned int page_shift)
{
	return div_round_up((64 - page_shift) - (page_shift + 3), page_shift - 3) + 1;
}

static unsigned int radix_depth_v3(unsigned int page_shift)
{
	return div_round_up((64 - page_shift) + 1 - (page_shift + 3), page_shift - 3) + 1;
}

static void radix_geom_init(struct radix_geom *g, unsigned int page_shift, unsigned int depth)
{
	u64 bits;

	memset(g, 0, sizeof(*g));
	g->page_shift = page_shift;
	g->page_size = 1ULL << page_shift;
	g->order0_log2 = 64 - page_shift;
	g->table_log2 = page_shift - 3;
	g->bitmap_log2 = page_shift + 3;
	if (depth < 1 || depth > 16)
		die("DEPTH %u out of range", depth);
	/* the root's table index must start inside the key */
	if (depth > 1 && (depth - 2) * g->table_log2 + g->bitmap_log2 >= 64)
		die("DEPTH %u too deep for PAGE_SHIFT %u", depth, page_shift);
	g->depth = depth;
	bits = (u64)(depth - 1) * g->table_log2 + g->bitmap_log2;
	g->key_bits = bits > 64 ? 64 : (unsigned int)bits;
	if (depth != radix_depth_v2(page_shift) && depth != radix_depth_v3(page_shift))
		fprintf(stderr, "%s: note: DEPTH %u is neither the v2 (%u) nor the v3+ (%u) depth for PAGE_SHIFT %u\n",
			prog, depth, radix_depth_v2(page_shift), radix_depth_v3(page_shift), page_shift);
}

static inline u64 radix_encode_key(const struct radix_geom *g, u64 phys, unsigned int order)
{
	return (1ULL << (g->order0_log2 - order)) | (phys >> (g->page_shift + order));
}

/* returns 0, or -1 for a key that encodes no page (0, or order bit too high) */
static inline int radix_decode_key(const struct radix_geom *g, u64 key, u64 *phys, unsigned int *order)
{
	unsigned int hb;

	if (!key)
		return -1;
	hb = 63 - __builtin_clzll(key);
	if (hb > g->order0_log2)
		return -1;
	*order = g->order0_log2 - hb;
	*phys = key << (g->page_shift + *order); /* the order bit falls off the top */
	return 0;
}

static inline unsigned int radix_level_shift(const struct radix_geom *g, unsigned int level)
{
	return (level - 1) * g->table_log2 + g->bitmap_log2;
}

static inline u64 radix_table_index(const struct radix_geom *g, u64 key, unsigned int level)
{
	return (key >> radix_level_shift(g, level)) & ((1ULL << g->table_log2) - 1);
}

static inline u64 radix_leaf_bit(const struct radix_geom *g, u64 key)
{
	return key & ((1ULL << g->bitmap_log2) - 1);
}

/* --- walk ---------------------------------------------------------- */

struct radix_walk_ctx {
	const struct radix_geom *g;
	const struct image *img;
	page_cb_t cb;
	void *arg;
	u64 nodes, max_nodes;
};

static int radix_walk_node(struct radix_walk_ctx *w, u64 node_phys, unsigned int level, u64 start)
{
	const struct radix_geom *g = w->g;
	const u64 *node = image_ptr(w->img, node_phys, g->page_size);
	u64 i, nr = g->page_size / 8;
	int err;

	if (!node)
		die("radix node at phys 0x%llx (level %u) is not in the image",
		    (unsigned long long)node_phys, level);
	/* a tree visits each node once; more visits than pages means shared nodes or a loop */
	if (++w->nodes > w->max_nodes)
		die("radix tree visits more nodes than the image has pages (shared subtree at phys 0x%llx)",
		    (unsigned long long)node_phys);

	if (level == 0) { /* leaf: one bit per key */
		for (i = 0; i < nr; i++) {
			u64 word = node[i];

			while (word) {
				u64 key = start | (i * 64 + (u64)__builtin_ctzll(word));
				unsigned int order;
				u64 phys;

				word &= word - 1;
				if (radix_decode_key(g, key, &phys, &order))
					die("leaf at phys 0x%llx: key 0x%llx encodes no page",
					    (unsigned long long)node_phys, (unsigned long long)key);
				err = w->cb(phys, order, w->arg);
				if (err)
					return err;
			}
		}
		return 0;
	}

	for (i = 0; i < nr; i++) {
		if (!node[i])
			continue;
		err = radix_walk_node(w, node[i], level - 1, start | (i << radix_level_shift(g, level)));
		if (err)
			return err;
	}
	return 0;
}

static int radix_walk_tree(const struct image *img, u64 root_phys, const struct radix_geom *g,
			   page_cb_t cb, void *arg, u64 *nodes)
{
	struct radix_walk_ctx w = { .g = g, .img = img, .cb = cb, .arg = arg,
				    .max_nodes = img->total >> g->page_shift };
	int err = radix_walk_node(&w, root_phys, g->depth - 1, 0);

	if (nodes)
		*nodes = w.nodes;
	return err;
}

/* --- build --------------------------------------------------------- */

struct radix_tree {
	const struct radix_geom *g;
	struct arena *arena;
	u64 *root;
	u64 root_phys;
	u64 truncated; /* keys with bits above what the indexes cover */
};

/* an upper bound for the arena: the root plus one node per level per page */
static u64 radix_max_nodes(const struct radix_geom *g, u64 npages)
{
	if (npages > (1ULL << 40))
		return 1ULL << 40;
	return 1 + npages * (g->depth - 1);
}

static void radix_tree_init(struct radix_tree *t, const struct radix_geom *g, struct arena *a)
{
	memset(t, 0, sizeof(*t));
	t->g = g;
	t->arena = a;
	t->root = arena_alloc_page(a, &t->root_phys);
}

static void radix_add_page(struct radix_tree *t, u64 phys, unsigned int order)
{
	const struct radix_geom *g = t->g;
	u64 key = radix_encode_key(g, phys, order);
	u64 *node = t->root;
	unsigned int level;
	u64 bit;

	/* the kernel silently drops such bits (v2 with 16 KiB pages) */
	if (g->key_bits < 64 && (key >> g->key_bits))
		t->truncated++;

	for (level = g->depth - 1; level > 0; level--) {
		u64 idx = radix_table_index(g, key, level);

		if (!node[idx]) {
			u64 child_phys;

			arena_alloc_page(t->arena, &child_phys);
			node[idx] = child_phys;
		}
		node = arena_virt(t->arena, node[idx]);
	}
	bit = radix_leaf_bit(g, key);
	node[bit / 64] |= 1ULL << (bit % 64);
}

static void check_page(u64 phys, u64 order, unsigned int page_shift, size_t i)
{
	if (order >= 64 - page_shift)
		die("page record %zu: order %llu out of range", i, (unsigned long long)order);
	if (phys & ((1ULL << (page_shift + order)) - 1))
		die("page record %zu: phys 0x%llx not aligned to order %llu", i,
		    (unsigned long long)phys, (unsigned long long)order);
}

/* ------------------------------------------------------------------ */
/* kho-v1 chunk list                                                  */
/* ------------------------------------------------------------------ */

#define CHUNK_HDR_SIZE 16
#define CHUNK_ENTRY_SIZE 16

static u64 chunk_capacity(u64 page_size)
{
	return (page_size - CHUNK_HDR_SIZE) / CHUNK_ENTRY_SIZE;
}

/* --- walk ---------------------------------------------------------- */

static int chunklist_walk(const struct image *img, u64 first, unsigned int page_shift, u64 bitmap_bytes,
			  page_cb_t cb, void *arg, u64 *nchunks, u64 *nbitmaps)
{
	u64 page_size = 1ULL << page_shift;
	u64 cap = chunk_capacity(page_size);
	u64 max_chunks = img->total / page_size; /* more would mean a loop */
	u64 chunk_phys = first, chunks = 0, bitmaps = 0;
	int err;

	while (chunk_phys) {
		const u8 *chunk = image_ptr(img, chunk_phys, page_size);
		u64 next;
		u32 order, num, i;

		if (!chunk)
			die("chunk at phys 0x%llx is not in the image", (unsigned long long)chunk_phys);
		if (++chunks > max_chunks)
			die("chunk list does not end (loop through phys 0x%llx)", (unsigned long long)chunk_phys);
		next = ld64(chunk);
		order = ld32(chunk + 8);
		num = ld32(chunk + 12);
		if (num > cap)
			die("chunk at phys 0x%llx: num_elms %u > %llu", (unsigned long long)chunk_phys, num,
			    (unsigned long long)cap);
		if (order >= 64 - page_shift)
			die("chunk at phys 0x%llx: order %u out of range", (unsigned long long)chunk_phys, order);

		for (i = 0; i < num; i++) {
			const u8 *ent = chunk + CHUNK_HDR_SIZE + (u64)i * CHUNK_ENTRY_SIZE;
			u64 phys_start = ld64(ent), bm_phys = ld64(ent + 8), w;
			const u64 *bm = image_ptr(img, bm_phys, bitmap_bytes);

			if (!bm)
				die("bitmap at phys 0x%llx (chunk 0x%llx entry %u) is not in the image",
				    (unsigned long long)bm_phys, (unsigned long long)chunk_phys, i);
			bitmaps++;
			for (w = 0; w < bitmap_bytes / 8; w++) {
				u64 word = bm[w];

				while (word) {
					u64 bit = w * 64 + (u64)__builtin_ctzll(word);

					word &= word - 1;
					err = cb(phys_start + (bit << (order + page_shift)), order, arg);
					if (err)
						return err;
				}
			}
		}
		chunk_phys = next;
	}
	if (nchunks)
		*nchunks = chunks;
	if (nbitmaps)
		*nbitmaps = bitmaps;
	return 0;
}

/* --- build --------------------------------------------------------- */

/* one bitmap of an order, keyed by its index (xarray entry) */
struct bm_slot {
	u64 idx;
	u64 *bits; /* NULL: empty slot */
	u64 phys;
};

/* open-addressing hash standing in for the kernel's xarray */
struct bm_map {
	struct bm_slot *slots;
	u64 cap, n; /* cap: power of two */
};

struct v1_track {
	struct arena *arena;
	unsigned int page_shift;
	u64 page_size, bitmap_bytes, preserve_bits;
	struct bm_map orders[64];
	/* kmalloc-512 stand-in: carve arena pages into bitmap_bytes objects */
	u8 *slab;
	u64 slab_phys, slab_used;
	u64 nbitmaps;
};

static inline u64 bm_hash(u64 idx, u64 mask)
{
	return (idx * 0x9E3779B97F4A7C15ULL >> 17) & mask;
}

static void bm_map_grow(struct bm_map *m)
{
	u64 old_cap = m->cap, i;
	struct bm_slot *old = m->slots;

	m->cap = old_cap ? old_cap * 2 : 64;
	m->slots = xcalloc(m->cap, sizeof(*m->slots));
	for (i = 0; i < old_cap; i++) {
		u64 h;

		if (!old[i].bits)
			continue;
		for (h = bm_hash(old[i].idx, m->cap - 1); m->slots[h].bits; h = (h + 1) & (m->cap - 1))
			;
		m->slots[h] = old[i];
	}
	free(old);
}

static u64 *v1_alloc_bitmap(struct v1_track *t, u64 *phys)
{
	u64 *bits;

	if (t->bitmap_bytes == t->page_size)
		return arena_alloc_page(t->arena, phys);
	/* kzalloc(bitmap_bytes): the arena page is already zeroed */
	if (!t->slab || t->slab_used == t->page_size) {
		t->slab = arena_alloc_page(t->arena, &t->slab_phys);
		t->slab_used = 0;
	}
	bits = (u64 *)(t->slab + t->slab_used);
	*phys = t->slab_phys + t->slab_used;
	t->slab_used += t->bitmap_bytes;
	return bits;
}

static void v1_preserve(struct v1_track *t, u64 phys, unsigned int order)
{
	struct bm_map *m = &t->orders[order];
	u64 pfn_high = phys >> (order + t->page_shift);
	u64 idx = pfn_high / t->preserve_bits;
	u64 bit = pfn_high % t->preserve_bits;
	struct bm_slot *s;
	u64 h;

	if ((m->n + 1) * 2 > m->cap)
		bm_map_grow(m);
	for (h = bm_hash(idx, m->cap - 1);; h = (h + 1) & (m->cap - 1)) {
		s = &m->slots[h];
		if (!s->bits || s->idx == idx)
			break;
	}
	if (!s->bits) {
		s->idx = idx;
		s->bits = v1_alloc_bitmap(t, &s->phys);
		m->n++;
		t->nbitmaps++;
	}
	s->bits[bit / 64] |= 1ULL << (bit % 64);
}

static int bm_slot_cmp(const void *a, const void *b)
{
	const struct bm_slot *x = a, *y = b;

	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static u8 *v1_new_chunk(struct v1_track *t, u8 *prev, unsigned int order, u64 *first, u64 *nchunks)
{
	u64 phys;
	u8 *chunk = arena_alloc_page(t->arena, &phys);
	u32 o = order;

	memcpy(chunk + 8, &o, 4);
	if (prev)
		memcpy(prev, &phys, 8);
	else
		*first = phys;
	(*nchunks)++;
	return chunk;
}

/* orders ascending, bitmap indexes ascending; new chunk per order and when full */
static u64 v1_serialize(struct v1_track *t, u64 *nchunks)
{
	u64 cap = chunk_capacity(t->page_size), first = 0;
	struct bm_slot *sorted = NULL;
	u8 *chunk = NULL;
	unsigned int order;

	*nchunks = 0;
	for (order = 0; order < 64; order++) {
		struct bm_map *m = &t->orders[order];
		u64 i, n = 0;

		if (!m->n)
			continue;
		sorted = xrealloc(sorted, m->n * sizeof(*sorted));
		for (i = 0; i < m->cap; i++)
			if (m->slots[i].bits)
				sorted[n++] = m->slots[i];
		qsort(sorted, n, sizeof(*sorted), bm_slot_cmp);

		chunk = v1_new_chunk(t, chunk, order, &first, nchunks);
		for (i = 0; i < n; i++) {
			u32 num;
			u64 phys_start = (sorted[i].idx * t->preserve_bits) << (order + t->page_shift);
			u8 *ent;

			memcpy(&num, chunk + 12, 4);
			if (num == cap) {
				chunk = v1_new_chunk(t, chunk, order, &first, nchunks);
				num = 0;
			}
			ent = chunk + CHUNK_HDR_SIZE + (u64)num * CHUNK_ENTRY_SIZE;
			memcpy(ent, &phys_start, 8);
			memcpy(ent + 8, &sorted[i].phys, 8);
			num++;
			memcpy(chunk + 12, &num, 4);
		}
	}
	free(sorted);
	return first;
}

/* an upper bound for the arena: a bitmap (or slab page) and a chunk per page, a chunk per order */
static u64 v1_max_pages(u64 npages)
{
	if (npages > (1ULL << 40))
		return 1ULL << 40;
	return 2 * npages + 64;
}

static void v1_track_init(struct v1_track *t, struct arena *a, unsigned int page_shift, u64 bitmap_bytes)
{
	memset(t, 0, sizeof(*t));
	t->arena = a;
	t->page_shift = page_shift;
	t->page_size = 1ULL << page_shift;
	if (bitmap_bytes != 512 && bitmap_bytes != t->page_size)
		die("BITMAP_BYTES must be 512 or PAGE_SIZE (%llu), not %llu",
		    (unsigned long long)t->page_size, (unsigned long long)bitmap_bytes);
	t->bitmap_bytes = bitmap_bytes;
	t->preserve_bits = bitmap_bytes * 8;
}

static void v1_track_free(struct v1_track *t)
{
	unsigned int o;

	for (o = 0; o < 64; o++)
		free(t->orders[o].slots);
}

/* ------------------------------------------------------------------ */
/* subcommands                                                        */
/* ------------------------------------------------------------------ */

struct opts {
	const char *pos[8];
	int npos;
	const char *out;
	u64 alloc_base;
	int count;
	int prealloc;
};

static void parse_opts(int argc, char **argv, struct opts *o, int want)
{
	int i;

	memset(o, 0, sizeof(*o));
	o->alloc_base = DEFAULT_ALLOC_BASE;
	for (i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--out") && i + 1 < argc) {
			o->out = argv[++i];
		} else if (!strncmp(argv[i], "--out=", 6)) {
			o->out = argv[i] + 6;
		} else if (!strcmp(argv[i], "--alloc-base") && i + 1 < argc) {
			o->alloc_base = parse_u64(argv[++i], "--alloc-base");
		} else if (!strncmp(argv[i], "--alloc-base=", 13)) {
			o->alloc_base = parse_u64(argv[i] + 13, "--alloc-base");
		} else if (!strcmp(argv[i], "--count")) {
			o->count = 1;
		} else if (!strcmp(argv[i], "--prealloc")) {
			o->prealloc = 1;
		} else if (argv[i][0] == '-' && argv[i][1] == '-') {
			die("unknown option %s", argv[i]);
		} else {
			if (o->npos == (int)(sizeof(o->pos) / sizeof(o->pos[0])))
				die("too many arguments");
			o->pos[o->npos++] = argv[i];
		}
	}
	if (o->npos != want)
		die("expected %d arguments, got %d (try --help)", want, o->npos);
}

static int cmd_radix_walk(int argc, char **argv)
{
	struct opts o;
	struct image img;
	struct radix_geom g;
	struct page_vec pv = { 0 };
	struct page_arr pa = { 0 };
	size_t counted = 0;
	u64 root, nodes;
	double t0, t1;
	const char *cb_name;

	parse_opts(argc, argv, &o, 4);
	if (o.count && o.out)
		die("--count keeps no pages: it cannot be combined with --out");
	if (o.count && o.prealloc)
		die("--count and --prealloc are two different callbacks: give one");
	root = parse_u64(o.pos[1], "ROOT_PHYS");
	radix_geom_init(&g, parse_page_shift(o.pos[2]), (unsigned int)parse_u64(o.pos[3], "DEPTH"));
	image_load(&img, o.pos[0]);
	if (!image_ptr(&img, root, g.page_size))
		die("root 0x%llx is not in the image", (unsigned long long)root);

	if (o.prealloc) {
		/* untimed: a counting walk sizes the array, which is then touched */
		radix_walk_tree(&img, root, &g, count_page, &counted, &nodes);
		pa.cap = counted;
		pa.v = xmalloc((counted ? counted : 1) * sizeof(*pa.v));
		memset(pa.v, 0, (counted ? counted : 1) * sizeof(*pa.v));
		counted = 0;
	}
	cb_name = o.count ? "count" : o.prealloc ? "prealloc" : "collect";

	t0 = now();
	if (o.count) {
		radix_walk_tree(&img, root, &g, count_page, &counted, &nodes);
	} else if (o.prealloc) {
		if (radix_walk_tree(&img, root, &g, store_page, &pa, &nodes))
			die("the walk found more pages than the counting walk before it");
		counted = pa.n;
	} else {
		radix_walk_tree(&img, root, &g, collect_page, &pv, &nodes);
		counted = pv.n;
	}
	t1 = now();

	printf("{\"op\":\"radix-walk\",\"callback\":\"%s\",\"pages\":%zu,\"nodes\":%llu,\"seconds\":%.9f,"
	       "\"peak_rss_kb\":%ld}\n",
	       cb_name, counted, (unsigned long long)nodes, t1 - t0, peak_rss_kb());
	fflush(stdout);
	if (o.out && o.prealloc) {
		struct page_vec out = { .v = pa.v, .n = pa.n, .cap = pa.cap };

		write_pages_bin(o.out, &out);
	} else if (o.out) {
		write_pages_bin(o.out, &pv);
	}
	return 0;
}

static int cmd_radix_build(int argc, char **argv)
{
	struct opts o;
	struct radix_geom g;
	struct arena a;
	struct radix_tree t;
	size_t n, i;
	u64 *rec;
	long input_kb;
	double t0, t1;

	parse_opts(argc, argv, &o, 3);
	radix_geom_init(&g, parse_page_shift(o.pos[1]), (unsigned int)parse_u64(o.pos[2], "DEPTH"));
	rec = read_pages_bin(o.pos[0], &n);
	for (i = 0; i < n; i++)
		check_page(rec[2 * i], rec[2 * i + 1], g.page_shift, i);
	arena_init(&a, o.alloc_base, g.page_shift, radix_max_nodes(&g, n));
	input_kb = peak_rss_kb();

	t0 = now();
	radix_tree_init(&t, &g, &a);
	for (i = 0; i < n; i++)
		radix_add_page(&t, rec[2 * i], (unsigned int)rec[2 * i + 1]);
	t1 = now();

	if (t.truncated)
		fprintf(stderr, "%s: warning: %llu keys have bits above the %u the tree indexes (dropped, as the kernel does)\n",
			prog, (unsigned long long)t.truncated, g.key_bits);
	printf("{\"op\":\"radix-build\",\"pages\":%zu,\"nodes\":%llu,\"root\":%llu,\"seconds\":%.9f,"
	       "\"peak_rss_kb\":%ld,\"input_rss_kb\":%ld%s}\n",
	       n, (unsigned long long)a.npages, (unsigned long long)t.root_phys, t1 - t0, peak_rss_kb(), input_kb,
	       t.truncated ? ",\"truncated_keys\":true" : "");
	fflush(stdout);
	if (o.out)
		arena_write_elf(&a, o.out);
	arena_free(&a);
	free(rec);
	return 0;
}

static int cmd_chunklist_walk(int argc, char **argv)
{
	struct opts o;
	struct image img;
	struct page_vec pv = { 0 };
	unsigned int page_shift;
	u64 first, bitmap_bytes, chunks = 0, bitmaps = 0;
	double t0, t1;

	parse_opts(argc, argv, &o, 4);
	first = parse_u64(o.pos[1], "FIRST_CHUNK_PHYS");
	page_shift = parse_page_shift(o.pos[2]);
	bitmap_bytes = parse_u64(o.pos[3], "BITMAP_BYTES");
	if (bitmap_bytes != 512 && bitmap_bytes != (1ULL << page_shift))
		die("BITMAP_BYTES must be 512 or PAGE_SIZE (%llu)", 1ULL << page_shift);
	image_load(&img, o.pos[0]);

	t0 = now();
	chunklist_walk(&img, first, page_shift, bitmap_bytes, collect_page, &pv, &chunks, &bitmaps);
	t1 = now();

	printf("{\"op\":\"chunklist-walk\",\"pages\":%zu,\"chunks\":%llu,\"bitmaps\":%llu,\"seconds\":%.9f,"
	       "\"peak_rss_kb\":%ld}\n",
	       pv.n, (unsigned long long)chunks, (unsigned long long)bitmaps, t1 - t0, peak_rss_kb());
	fflush(stdout);
	if (o.out)
		write_pages_bin(o.out, &pv);
	return 0;
}

static int cmd_chunklist_build(int argc, char **argv)
{
	struct opts o;
	struct arena a;
	struct v1_track t;
	unsigned int page_shift;
	size_t n, i;
	u64 *rec, first, nchunks;
	long input_kb;
	double t0, t1;

	parse_opts(argc, argv, &o, 3);
	page_shift = parse_page_shift(o.pos[1]);
	rec = read_pages_bin(o.pos[0], &n);
	arena_init(&a, o.alloc_base, page_shift, v1_max_pages(n));
	v1_track_init(&t, &a, page_shift, parse_u64(o.pos[2], "BITMAP_BYTES"));
	for (i = 0; i < n; i++)
		check_page(rec[2 * i], rec[2 * i + 1], page_shift, i);
	input_kb = peak_rss_kb();

	t0 = now();
	for (i = 0; i < n; i++)
		v1_preserve(&t, rec[2 * i], (unsigned int)rec[2 * i + 1]);
	first = v1_serialize(&t, &nchunks);
	t1 = now();

	printf("{\"op\":\"chunklist-build\",\"pages\":%zu,\"chunks\":%llu,\"bitmaps\":%llu,\"nodes\":%llu,"
	       "\"root\":%llu,\"seconds\":%.9f,\"peak_rss_kb\":%ld,\"input_rss_kb\":%ld}\n",
	       n, (unsigned long long)nchunks, (unsigned long long)t.nbitmaps, (unsigned long long)a.npages,
	       (unsigned long long)first, t1 - t0, peak_rss_kb(), input_kb);
	fflush(stdout);
	if (o.out)
		arena_write_elf(&a, o.out);
	v1_track_free(&t);
	arena_free(&a);
	free(rec);
	return 0;
}

/* ------------------------------------------------------------------ */
/* selftest                                                           */
/* ------------------------------------------------------------------ */

static int st_failures;

#define ST_CHECK(cond, ...)                                              \
	do {                                                             \
		if (!(cond)) {                                           \
			fprintf(stderr, "selftest FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                    \
			fputc('\n', stderr);                             \
			st_failures++;                                   \
		}                                                        \
	} while (0)

static u64 st_rng = 0x2545F4914F6CDD1DULL;

static u64 st_rand(void) /* splitmix64 */
{
	u64 z = (st_rng += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static int rec_cmp(const void *a, const void *b)
{
	const struct page_rec *x = a, *y = b;

	if (x->order != y->order)
		return x->order < y->order ? -1 : 1;
	return x->phys < y->phys ? -1 : x->phys > y->phys;
}

static size_t sort_unique(struct page_rec *v, size_t n)
{
	size_t i, k = 0;

	qsort(v, n, sizeof(*v), rec_cmp);
	for (i = 0; i < n; i++)
		if (!k || rec_cmp(&v[k - 1], &v[i]))
			v[k++] = v[i];
	return k;
}

static void st_worked_examples(void)
{
	struct radix_geom g;
	u64 key, phys;
	unsigned int order, l, ps;

	/* 4 KiB, v3+ depth */
	radix_geom_init(&g, 12, 6);
	ST_CHECK(radix_depth_v2(12) == 6 && radix_depth_v3(12) == 6, "4K depths");
	ST_CHECK(radix_depth_v2(14) == 4 && radix_depth_v3(14) == 5, "16K depths");
	ST_CHECK(radix_depth_v2(16) == 4 && radix_depth_v3(16) == 4, "64K depths");

	key = radix_encode_key(&g, 0x100000000ULL, 0);
	ST_CHECK(key == 0x0010000000100000ULL, "key(0x1_0000_0000, 0) = 0x%llx", (unsigned long long)key);
	ST_CHECK(radix_table_index(&g, key, 5) == 2, "level 5 index");
	for (l = 4; l >= 2; l--)
		ST_CHECK(radix_table_index(&g, key, l) == 0, "level %u index", l);
	ST_CHECK(radix_table_index(&g, key, 1) == 32, "level 1 index = %llu",
		 (unsigned long long)radix_table_index(&g, key, 1));
	ST_CHECK(radix_leaf_bit(&g, key) == 0, "leaf bit");

	key = radix_encode_key(&g, 0x100000000ULL, 9);
	ST_CHECK(key == 0x0000080000000800ULL, "key(0x1_0000_0000, 9) = 0x%llx", (unsigned long long)key);
	ST_CHECK(radix_table_index(&g, key, 5) == 0 && radix_table_index(&g, key, 4) == 2, "order 9 levels 5,4");
	for (l = 3; l >= 1; l--)
		ST_CHECK(radix_table_index(&g, key, l) == 0, "order 9 level %u", l);
	ST_CHECK(radix_leaf_bit(&g, key) == 2048, "order 9 leaf bit");

	/* 16 KiB with the v2 depth: the order-0 bit is outside every index */
	radix_geom_init(&g, 14, 4);
	key = radix_encode_key(&g, 0x4000, 0);
	ST_CHECK(key == 0x0004000000000001ULL, "16K key = 0x%llx", (unsigned long long)key);
	ST_CHECK(g.key_bits == 50 && (key >> g.key_bits), "16K v2 covers %u bits", g.key_bits);

	/* decode(encode) for every order and page size */
	for (ps = 12; ps <= 16; ps += 2) {
		radix_geom_init(&g, ps, radix_depth_v3(ps));
		for (order = 0; order < g.order0_log2; order++) {
			int r;

			for (l = 0; l < 64; l++) {
				u64 p = st_rand() & ~((1ULL << (ps + order)) - 1), q = 0;
				unsigned int o2 = 99;

				if (l == 0)
					p = 0;
				if (l == 1)
					p = ~((1ULL << (ps + order)) - 1);
				key = radix_encode_key(&g, p, order);
				r = radix_decode_key(&g, key, &q, &o2);
				ST_CHECK(!r && q == p && o2 == order, "ps %u order %u phys 0x%llx -> 0x%llx/%u", ps,
					 order, (unsigned long long)p, (unsigned long long)q, o2);
			}
		}
	}
	(void)phys;
}

static char st_tmpdir[] = "/tmp/kho_baseline.XXXXXX";

static void st_compare(const char *what, struct page_rec *want, size_t nwant, struct page_vec *got)
{
	size_t ngot = sort_unique(got->v, got->n), i;

	ST_CHECK(got->n == nwant, "%s: walk gave %zu pages (%zu distinct), want %zu", what, got->n, ngot, nwant);
	if (ngot == nwant) {
		for (i = 0; i < nwant; i++)
			if (got->v[i].phys != want[i].phys || got->v[i].order != want[i].order)
				break;
		ST_CHECK(i == nwant, "%s: page %zu differs: got 0x%llx/%u want 0x%llx/%u", what, i,
			 (unsigned long long)got->v[i].phys, got->v[i].order, (unsigned long long)want[i].phys,
			 want[i].order);
	}
}

/* random pages: mostly order 0 in a 64 GiB window, some higher orders anywhere below 2^52 */
static size_t st_make_pages(struct page_rec *v, size_t n, unsigned int ps, unsigned int max_order)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned int order = (i % 4) ? 0 : (unsigned int)(st_rand() % (max_order + 1));
		u64 span = (i % 8 == 4) ? (1ULL << 52) : (64ULL << 30);
		u64 phys = (0x100000000ULL + st_rand() % span) & ~((1ULL << (ps + order)) - 1);

		v[i].phys = phys;
		v[i].order = order;
	}
	return sort_unique(v, n);
}

static void st_roundtrip(unsigned int ps, size_t n)
{
	struct page_rec *want = xmalloc(n * sizeof(*want));
	size_t nwant = st_make_pages(want, n, ps, 18), i;
	char path[sizeof(st_tmpdir) + 32];
	unsigned int d, depths[2] = { radix_depth_v2(ps), radix_depth_v3(ps) };
	u64 bb, bbs[2] = { 512, 1ULL << ps };

	for (d = 0; d < 2; d++) {
		struct radix_geom g;
		struct arena a;
		struct radix_tree t;
		struct image img;
		struct page_vec pv = { 0 };
		char what[64];

		if (d == 1 && depths[1] == depths[0])
			continue;
		radix_geom_init(&g, ps, depths[d]);
		arena_init(&a, DEFAULT_ALLOC_BASE, ps, radix_max_nodes(&g, nwant));
		radix_tree_init(&t, &g, &a);
		for (i = 0; i < nwant; i++)
			radix_add_page(&t, want[i].phys, want[i].order);
		snprintf(path, sizeof(path), "%s/radix-%u-%u.elf", st_tmpdir, ps, depths[d]);
		arena_write_elf(&a, path);
		image_load(&img, path);
		radix_walk_tree(&img, t.root_phys, &g, collect_page, &pv, NULL);
		snprintf(what, sizeof(what), "radix ps %u depth %u", ps, depths[d]);
		if (t.truncated) {
			/* v2 at 16 KiB: order-0 pages come back as something else */
			ST_CHECK(ps == 14 && d == 0, "%s: %llu truncated keys", what, (unsigned long long)t.truncated);
			ST_CHECK(pv.n == nwant, "%s: %zu pages back, want %zu", what, pv.n, nwant);
		} else {
			st_compare(what, want, nwant, &pv);
		}
		fprintf(stderr, "selftest: %s: %zu pages, %llu nodes%s\n", what, nwant,
			(unsigned long long)a.npages, t.truncated ? " (v2 16K: order-0 keys truncated, as expected)" : "");
		free(pv.v);
		free(img.file);
		free(img.segs);
		arena_free(&a);
		unlink(path);
	}

	for (d = 0; d < 2; d++) {
		struct arena a;
		struct v1_track t;
		struct image img;
		struct page_vec pv = { 0 };
		u64 first, nchunks, wchunks = 0, wbitmaps = 0;
		char what[64];

		bb = bbs[d];
		arena_init(&a, DEFAULT_ALLOC_BASE, ps, v1_max_pages(nwant));
		v1_track_init(&t, &a, ps, bb);
		for (i = 0; i < nwant; i++)
			v1_preserve(&t, want[i].phys, want[i].order);
		first = v1_serialize(&t, &nchunks);
		snprintf(path, sizeof(path), "%s/v1-%u-%llu.elf", st_tmpdir, ps, (unsigned long long)bb);
		arena_write_elf(&a, path);
		image_load(&img, path);
		chunklist_walk(&img, first, ps, bb, collect_page, &pv, &wchunks, &wbitmaps);
		snprintf(what, sizeof(what), "chunklist ps %u bitmap %llu", ps, (unsigned long long)bb);
		ST_CHECK(wchunks == nchunks && wbitmaps == t.nbitmaps, "%s: chunks %llu/%llu bitmaps %llu/%llu", what,
			 (unsigned long long)wchunks, (unsigned long long)nchunks, (unsigned long long)wbitmaps,
			 (unsigned long long)t.nbitmaps);
		st_compare(what, want, nwant, &pv);
		fprintf(stderr, "selftest: %s: %zu pages, %llu chunks, %llu bitmaps\n", what, nwant,
			(unsigned long long)nchunks, (unsigned long long)t.nbitmaps);
		free(pv.v);
		free(img.file);
		free(img.segs);
		v1_track_free(&t);
		arena_free(&a);
		unlink(path);
	}
	free(want);
}

static int cmd_selftest(int argc, char **argv)
{
	size_t n = argc > 0 ? (size_t)parse_u64(argv[0], "N") : 100000;
	unsigned int ps;

	if (!mkdtemp(st_tmpdir))
		die("mkdtemp: %s", strerror(errno));
	st_worked_examples();
	for (ps = 12; ps <= 16; ps += 2)
		st_roundtrip(ps, n);
	rmdir(st_tmpdir);
	if (st_failures) {
		fprintf(stderr, "selftest: %d failures\n", st_failures);
		return 1;
	}
	printf("{\"op\":\"selftest\",\"ok\":true}\n");
	return 0;
}

/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage:\n"
		"  %s radix-walk IMAGE.elf ROOT_PHYS PAGE_SHIFT DEPTH [--out pages.bin] [--count | --prealloc]\n"
		"  %s radix-build PAGES.bin PAGE_SHIFT DEPTH [--alloc-base PHYS] [--out IMAGE.elf]\n"
		"  %s chunklist-walk IMAGE.elf FIRST_CHUNK_PHYS PAGE_SHIFT BITMAP_BYTES [--out pages.bin]\n"
		"  %s chunklist-build PAGES.bin PAGE_SHIFT BITMAP_BYTES [--alloc-base PHYS] [--out IMAGE.elf]\n"
		"  %s selftest [N]\n"
		"PAGES.bin / pages.bin: (u64 phys, u64 order) little-endian records.\n"
		"Prints one JSON line; 'seconds' is CLOCK_MONOTONIC around the walk or build only.\n",
		prog, prog, prog, prog, prog);
}

int main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "radix-walk"))
		return cmd_radix_walk(argc - 2, argv + 2);
	if (!strcmp(cmd, "radix-build"))
		return cmd_radix_build(argc - 2, argv + 2);
	if (!strcmp(cmd, "chunklist-walk"))
		return cmd_chunklist_walk(argc - 2, argv + 2);
	if (!strcmp(cmd, "chunklist-build"))
		return cmd_chunklist_build(argc - 2, argv + 2);
	if (!strcmp(cmd, "selftest"))
		return cmd_selftest(argc - 2, argv + 2);
	usage(stderr);
	die("unknown subcommand '%s'", cmd);
}
