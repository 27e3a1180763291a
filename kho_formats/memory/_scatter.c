/* Pieces of an input file copied to their places in an output file, in the
 * input's order (kho_formats/memory/scatter.py says why and how it is used).
 *
 * Written for kho-formats.  Built on first use by kho_formats/memory/native.py;
 * without it scatter.py runs the same loop in Python.
 *
 * kho_scatter_copy: entries [0, n) sorted by src (offset in in_fd); entry i
 * is len[i] bytes from src[i] to dst[i] in out_fd.  Entries whose source
 * ranges lie at most maxgap bytes apart and fit in bufsize bytes together
 * are read with one pread (the gaps read through), then written from the
 * buffer with one pwrite each (one pwritev for entries that follow each other
 * in the output as well).  Before writing a window the next KHO_AHEAD are
 * asked for (POSIX_FADV_WILLNEED), so the disk reads them while it is written.
 *
 * Returns the number of entries copied (n when all were).  When it stops
 * early, *err is the errno (-1: the input ended before a source range did)
 * and *err_write is 1 when the output failed, 0 when the input did.  Every
 * entry must satisfy len[i] <= bufsize.
 *
 * kho_fallocate_ranges: fallocate(2) each [start[i], start[i] + len[i]) of
 * fd (mode 0); returns 0, or the errno of the first that failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif
#define KHO_IOV 256
/* windows asked for ahead of the one being written */
#define KHO_AHEAD 8

static int write_all(int fd, struct iovec *iov, int cnt, uint64_t off)
{
    while (cnt > 0) {
        ssize_t w = cnt == 1 ? pwrite(fd, iov[0].iov_base, iov[0].iov_len, (off_t)off)
                             : pwritev(fd, iov, cnt, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (w == 0)
            return ENOSPC;
        off += (uint64_t)w;
        while (cnt > 0 && (size_t)w >= iov[0].iov_len) {
            w -= (ssize_t)iov[0].iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0 && w > 0) {
            iov[0].iov_base = (char *)iov[0].iov_base + w;
            iov[0].iov_len -= (size_t)w;
        }
    }
    return 0;
}

int64_t kho_scatter_copy(int in_fd, int out_fd, const uint64_t *src, const uint64_t *dst, const uint64_t *len,
                         int64_t n, uint8_t *buf, int64_t bufsize, int64_t maxgap, int64_t *err, int64_t *err_write)
{
    struct iovec iov[KHO_IOV];
    int64_t i = 0;

    *err = 0;
    *err_write = 0;
    while (i < n) {
        uint64_t lo = src[i], hi = src[i] + len[i];
        int64_t j = i + 1;
        /* the window: entries close to each other in the input, that fit the buffer */
        while (j < n) {
            uint64_t end = src[j] + len[j];
            uint64_t top = end > hi ? end : hi;
            if (src[j] > hi + (uint64_t)maxgap || top - lo > (uint64_t)bufsize)
                break;
            hi = top;
            j++;
        }
        uint64_t got = 0;
        while (got < hi - lo) {
            ssize_t r = pread(in_fd, buf + got, (size_t)(hi - lo - got), (off_t)(lo + got));
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                *err = errno;
                return i;
            }
            if (r == 0) {
                *err = -1;
                return i;
            }
            got += (uint64_t)r;
        }
        if (j < n) /* the next windows: read by the disk while this one is written */
            (void)posix_fadvise(in_fd, (off_t)src[j], (off_t)(KHO_AHEAD * bufsize), POSIX_FADV_WILLNEED);
        int64_t k = i;
        while (k < j) {
            /* entries that follow each other in the output too: one pwritev */
            int cnt = 0;
            uint64_t at = dst[k];
            int64_t first = k;
            while (k < j && cnt < KHO_IOV && dst[k] == at) {
                iov[cnt].iov_base = buf + (src[k] - lo);
                iov[cnt].iov_len = (size_t)len[k];
                at += len[k];
                cnt++;
                k++;
            }
            int e = write_all(out_fd, iov, cnt, dst[first]);
            if (e) {
                *err = e;
                *err_write = 1;
                return first;
            }
        }
        i = j;
    }
    return n;
}

int64_t kho_fallocate_ranges(int fd, const uint64_t *start, const uint64_t *len, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (fallocate(fd, 0, (off_t)start[i], (off_t)len[i]) != 0)
            return errno;
    }
    return 0;
}
