/* SPDX-License-Identifier: MIT
 *
 * kexec_loader: /init of the first-stage kernel of `kho boot --via kexec`
 * (kho_formats/boot/kexec.py).  It hands a kho-formats fixture to a second
 * kernel the way a kexec'ing system does: kexec_load(2) with the segments the
 * harness prepared, then reboot(LINUX_REBOOT_CMD_KEXEC).
 *
 * The harness puts everything in the initramfs: /kexec/plan lists
 *
 *     entry <hex>                      where the second kernel starts (a tiny purgatory)
 *     seg <hex phys> <hex memsz> <file>   one kexec segment (file bytes, zero-filled to memsz)
 *     bootparams <hex phys> <file>     the zero page: its e820 table is taken from this
 *                                      kernel's own /sys/kernel/boot_params/data first
 *
 * Everything else (the zero page's setup header, command line and setup_data
 * pointer, the SETUP_KEXEC_KHO entry, the fixture's memory) was written by
 * the harness.  Output lines start with "KEXECLOAD"; on any failure it says
 * why and powers off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kexec.h>
#include <linux/reboot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_SEGS 16 /* KEXEC_SEGMENT_MAX */
#define E820_ENTRIES_OFF 0x1e8
#define E820_TABLE_OFF 0x2d0
#define E820_TABLE_SIZE (128 * 20)

static void fail(const char *what)
{
	printf("KEXECLOAD error %s: %s\n", what, strerror(errno));
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	_exit(1);
}

static void *slurp(const char *path, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	char *buf;
	size_t got = 0;

	if (fd < 0 || fstat(fd, &st) < 0)
		fail(path);
	buf = malloc(st.st_size ? st.st_size : 1);
	if (!buf)
		fail("malloc");
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, st.st_size - got);
		if (n <= 0)
			fail(path);
		got += n;
	}
	close(fd);
	*len = got;
	return buf;
}

int main(void)
{
	struct kexec_segment segs[MAX_SEGS];
	unsigned long entry = 0;
	int nsegs = 0;
	char line[512], path[400];
	FILE *plan;

	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	printf("KEXECLOAD begin\n");
	plan = fopen("/kexec/plan", "r");
	if (!plan)
		fail("/kexec/plan");
	while (fgets(line, sizeof(line), plan)) {
		unsigned long phys, memsz;
		size_t len;
		void *buf;

		if (sscanf(line, "entry %lx", &entry) == 1)
			continue;
		if (nsegs == MAX_SEGS) {
			errno = E2BIG;
			fail("more than 16 segments");
		}
		if (sscanf(line, "seg %lx %lx %399s", &phys, &memsz, path) == 3) {
			buf = slurp(path, &len);
		} else if (sscanf(line, "bootparams %lx %399s", &phys, path) == 2) {
			size_t own_len;
			unsigned char *own = slurp("/sys/kernel/boot_params/data", &own_len);

			buf = slurp(path, &len);
			if (len < E820_TABLE_OFF + E820_TABLE_SIZE || own_len < E820_TABLE_OFF + E820_TABLE_SIZE) {
				errno = EINVAL;
				fail("boot_params size");
			}
			((unsigned char *)buf)[E820_ENTRIES_OFF] = own[E820_ENTRIES_OFF];
			memcpy((unsigned char *)buf + E820_TABLE_OFF, own + E820_TABLE_OFF, E820_TABLE_SIZE);
			printf("KEXECLOAD e820 entries=%u (from this kernel's boot_params)\n", own[E820_ENTRIES_OFF]);
			memsz = (len + 4095) & ~4095UL;
		} else if (line[0] == '\n' || line[0] == '#') {
			continue;
		} else {
			errno = EINVAL;
			printf("KEXECLOAD bad plan line: %s", line);
			fail("/kexec/plan"); /* a dropped segment would boot something else */
		}
		segs[nsegs].buf = buf;
		segs[nsegs].bufsz = len;
		segs[nsegs].mem = (void *)phys;
		segs[nsegs].memsz = memsz;
		printf("KEXECLOAD segment %d phys=0x%lx memsz=0x%lx bytes=%zu %s\n", nsegs, phys, memsz, len, path);
		nsegs++;
	}
	fclose(plan);
	if (!entry) {
		errno = EINVAL;
		fail("no entry in /kexec/plan");
	}
	if (syscall(SYS_kexec_load, entry, nsegs, segs, KEXEC_ARCH_DEFAULT) != 0)
		fail("kexec_load");
	printf("KEXECLOAD loaded %d segments, entry 0x%lx: rebooting into it\n", nsegs, entry);
	fflush(stdout);
	sync();
	syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_KEXEC, NULL);
	fail("reboot(LINUX_REBOOT_CMD_KEXEC)");
	return 1;
}
