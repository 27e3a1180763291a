// SPDX-License-Identifier: GPL-2.0-only
/*
 * workload_init: /init of the initramfs `kho boot FIXTURE --init PROGRAM [-- ARGS]`
 * builds.  It prepares what a test program expects of a booted system (devtmpfs on
 * /dev, so /dev/liveupdate exists; proc, sysfs, debugfs at /sys/kernel/debug and
 * /debugfs), runs /workload (PROGRAM) with the arguments listed in /workload-args
 * (one a line), waits for it and prints how it ended, then powers the machine off.
 *
 * Output on the console, every line of its own starting with "KHOINIT ":
 *     KHOINIT begin argc=<n>
 *     KHOINIT end status=<exit status>       | end signal=<n>
 *     KHOINIT error op=<what> err=<errno>
 * The workload's own output (KTAP lines of a kselftest) goes to the console between
 * begin and end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ARGS 64

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	memcpy(buf, "KHOINIT ", 8);
	va_start(ap, fmt);
	n = vsnprintf(buf + 8, sizeof(buf) - 9, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	n += 8;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	/* on a line of its own: a kernel message may have left the console mid-line */
	(void)!write(1, "\n", 1);
	(void)!write(1, buf, n);
}

static void fs(const char *src, const char *dir, const char *type)
{
	mkdir(dir, 0755);
	if (mount(src, dir, type, 0, NULL) < 0 && errno != EBUSY)
		say("warn op=mount_%s err=%d", type, errno);
}

static void off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

int main(void)
{
	static char args[4096];
	char *argv[MAX_ARGS + 2];
	int argc = 0, status;
	FILE *f;
	pid_t pid;

	fs("devtmpfs", "/dev", "devtmpfs");
	fs("proc", "/proc", "proc");
	fs("sysfs", "/sys", "sysfs");
	fs("debugfs", "/sys/kernel/debug", "debugfs");
	fs("debugfs", "/debugfs", "debugfs");

	argv[argc++] = "/workload";
	f = fopen("/workload-args", "r");
	if (f) {
		size_t n = fread(args, 1, sizeof(args) - 1, f);
		char *p = args, *nl;

		fclose(f);
		args[n] = 0;
		while (*p && argc <= MAX_ARGS && (nl = strchr(p, '\n'))) {
			*nl = 0;
			argv[argc++] = p;
			p = nl + 1;
		}
	}
	argv[argc] = NULL;
	say("begin argc=%d", argc - 1);

	pid = fork();
	if (pid < 0) {
		say("error op=fork err=%d", errno);
		off();
	}
	if (pid == 0) {
		char *envp[] = { "PATH=/", "TERM=dumb", NULL };

		execve("/workload", argv, envp);
		say("error op=exec err=%d", errno);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			say("error op=wait err=%d", errno);
			off();
		}
	}
	if (WIFEXITED(status))
		say("end status=%d", WEXITSTATUS(status));
	else
		say("end signal=%d", WTERMSIG(status));
	off();
	return 0;
}
