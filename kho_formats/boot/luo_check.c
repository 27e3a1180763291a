// SPDX-License-Identifier: GPL-2.0-only
/*
 * luo_check: /init of the initramfs `kho boot` builds for a fixture that holds
 * Live Update Orchestrator (LUO) state.  It asks the booted kernel for every
 * session and memfd the fixture lists and prints what it got back, one
 * machine-readable line per file, for kho_formats.model.clients.luo to compare with
 * the fixture.
 *
 * Input: /luo-list (written by kho_formats.boot.initramfs), one item a line:
 *     S <name>          a session (name percent-escaped, see esc())
 *     F <token>         a file of the last session (token in hex)
 * Output on the console (stdout), every line starting with "LUOCHECK ":
 *     LUOCHECK begin list=<items>
 *     LUOCHECK session name=<name> fd=<n>                  | err=<errno> op=retrieve_session
 *     LUOCHECK file session=<name> token=0x<t> size=<n> seals=0x<s> pos=<n> fnv1a64=0x<h>
 *     LUOCHECK file session=<name> token=0x<t> err=<errno> op=<what>
 *     LUOCHECK end sessions=<n> files=<n> errors=<n>
 * then powers the machine off.
 *
 * Static, no dependency on kernel headers: the /dev/liveupdate ioctl numbers
 * and argument layouts below are the Linux 7.3 UAPI's
 * (include/uapi/linux/liveupdate.h): type 0xBA, _IO(type, nr), every argument
 * starting with its own u32 size.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

#define LU_TYPE 0xBA
#define LU_NAME_LEN 64
#define LU_RETRIEVE_SESSION _IO(LU_TYPE, 0x01)
#define LU_SESSION_RETRIEVE_FD _IO(LU_TYPE, 0x41)

struct lu_retrieve_session {
	uint32_t size;
	int32_t fd;
	uint8_t name[LU_NAME_LEN];
};

struct lu_retrieve_fd {
	uint32_t size;
	int32_t fd;
	uint64_t token __attribute__((aligned(8)));
};

#ifndef F_GET_SEALS
#define F_GET_SEALS 1034
#endif

static char out[1024];

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	int n;

	memcpy(out, "LUOCHECK ", 9);
	va_start(ap, fmt);
	n = vsnprintf(out + 9, sizeof(out) - 10, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	n += 9;
	if (n > (int)sizeof(out) - 2)
		n = sizeof(out) - 2;
	out[n++] = '\n';
	/* one write per line: the kernel's printk lines may come in between, not inside */
	(void)!write(1, out, n);
}

/* Percent-escape a name: bytes outside [A-Za-z0-9._-] become %XX. */
static void esc(const uint8_t *s, size_t n, char *dst)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n && s[i]; i++) {
		uint8_t c = s[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '_' || c == '-') {
			*dst++ = c;
		} else {
			*dst++ = '%';
			*dst++ = hex[c >> 4];
			*dst++ = hex[c & 15];
		}
	}
	*dst = 0;
}

static int unhex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Undo esc() into name[LU_NAME_LEN] (NUL padded); -1 if malformed or too long. */
static int unesc(const char *s, uint8_t *name)
{
	size_t n = 0;

	memset(name, 0, LU_NAME_LEN);
	while (*s && *s != '\n') {
		int c = (unsigned char)*s++;

		if (c == '%') {
			int a = unhex(s[0]), b = a < 0 ? -1 : unhex(s[1]);

			if (b < 0)
				return -1;
			c = a << 4 | b;
			s += 2;
		}
		if (n >= LU_NAME_LEN - 1)
			return -1;
		name[n++] = c;
	}
	return 0;
}

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static unsigned char buf[1 << 16];

static int nerr;

static void check_file(int sfd, const char *sname, uint64_t token)
{
	struct lu_retrieve_fd arg = { .size = sizeof(arg), .fd = -1, .token = token };
	struct stat st;
	uint64_t h = FNV_OFFSET;
	off_t pos, off = 0;
	int seals;

	if (ioctl(sfd, LU_SESSION_RETRIEVE_FD, &arg) < 0) {
		nerr++;
		say("file session=%s token=0x%llx err=%d op=retrieve_fd", sname, (unsigned long long)token, errno);
		return;
	}
	if (fstat(arg.fd, &st) < 0 || (pos = lseek(arg.fd, 0, SEEK_CUR)) < 0 ||
	    (seals = fcntl(arg.fd, F_GET_SEALS)) < 0) {
		nerr++;
		say("file session=%s token=0x%llx err=%d op=stat", sname, (unsigned long long)token, errno);
		close(arg.fd);
		return;
	}
	while (off < st.st_size) {
		size_t want = sizeof(buf);
		ssize_t got;

		if ((off_t)want > st.st_size - off)
			want = st.st_size - off;
		got = pread(arg.fd, buf, want, off);
		if (got <= 0) {
			nerr++;
			say("file session=%s token=0x%llx err=%d op=read at=%lld", sname, (unsigned long long)token,
			    got < 0 ? errno : 0, (long long)off);
			close(arg.fd);
			return;
		}
		for (ssize_t i = 0; i < got; i++) {
			h ^= buf[i];
			h *= FNV_PRIME;
		}
		off += got;
	}
	say("file session=%s token=0x%llx size=%lld seals=0x%x pos=%lld fnv1a64=0x%016llx", sname,
	    (unsigned long long)token, (long long)st.st_size, seals, (long long)pos, (unsigned long long)h);
	close(arg.fd);
}

static void finish(int sessions, int files)
{
	say("end sessions=%d files=%d errors=%d", sessions, files, nerr);
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

int main(void)
{
	static char line[512];
	static char sname[3 * LU_NAME_LEN + 1];
	int dev, sfd = -1, sessions = 0, files = 0, items = 0;
	FILE *list;

	mkdir("/dev", 0755);
	mkdir("/proc", 0755);
	if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) < 0 && errno != EBUSY)
		say("warn err=%d op=mount_devtmpfs", errno);
	if (mount("proc", "/proc", "proc", 0, NULL) < 0)
		say("warn err=%d op=mount_proc", errno);

	list = fopen("/luo-list", "r");
	if (!list) {
		nerr++;
		say("error err=%d op=open_list", errno);
		finish(0, 0);
	}
	while (fgets(line, sizeof(line), list))
		if (line[0] == 'S' || line[0] == 'F')
			items++;
	rewind(list);
	say("begin list=%d", items);

	dev = open("/dev/liveupdate", O_RDWR);
	if (dev < 0) {
		nerr++;
		say("error err=%d op=open_dev", errno);
		finish(0, 0);
	}
	sname[0] = 0;
	while (fgets(line, sizeof(line), list)) {
		if (line[0] == 'S' && line[1] == ' ') {
			struct lu_retrieve_session arg = { .size = sizeof(arg), .fd = -1 };

			if (sfd >= 0)
				close(sfd);
			sfd = -1;
			if (unesc(line + 2, arg.name) < 0) {
				nerr++;
				say("error op=bad_list line=%d", sessions + files);
				continue;
			}
			esc(arg.name, LU_NAME_LEN, sname);
			sessions++;
			if (ioctl(dev, LU_RETRIEVE_SESSION, &arg) < 0) {
				nerr++;
				say("session name=%s err=%d op=retrieve_session", sname, errno);
				continue;
			}
			sfd = arg.fd;
			say("session name=%s fd=%d", sname, sfd);
		} else if (line[0] == 'F' && line[1] == ' ') {
			uint64_t token = strtoull(line + 2, NULL, 16);

			files++;
			if (sfd < 0) {
				nerr++;
				say("file session=%s token=0x%llx err=%d op=no_session", sname,
				    (unsigned long long)token, ENOENT);
				continue;
			}
			check_file(sfd, sname, token);
		}
	}
	finish(sessions, files);
	return 0;
}
