#!/bin/sh
# /init of the live-capture test guest (scripts/live/run.py): the host's root file
# system is the guest's, shared read-only over 9p; an output directory is shared
# read-write as 9p tag "out" (mounted on /mnt).  Runs `kho capture` on the live
# system, prints KHO-LIVE-CAPTURED <rc> and waits: the host stops the VM and dumps
# its memory at that moment.  KHO_PY (python), KHO_SRC (the kho-formats tree) come
# from the kernel command line, and KHO_SIDE (out: what this kernel would hand
# over; in: what it received).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t debugfs debugfs /sys/kernel/debug
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# scratch space on /run, not /tmp: the kho-formats tree or the python running
# the test may live under the host's /tmp (a CI clone, a venv), which must stay visible
mount -t tmpfs tmpfs /run
export TMPDIR=/run
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /mnt
echo "KHO-LIVE-BOOTED $(uname -r)"
cp -r /sys/kernel/debug/kho /mnt/debugfs-kho
# x86 boot_params (setup_data entries: type 10 names the handover this kernel received)
cp -r /sys/kernel/boot_params /mnt/boot_params 2>/dev/null
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$KHO_SRC" "$KHO_PY" -m kho_formats.cli capture -o /mnt/capture --json \
    --side "${KHO_SIDE:-out}" \
    > /mnt/capture.json 2> /mnt/capture.err
rc=$?
echo "KHO-LIVE-CAPTURED $rc"
cat /mnt/capture.err
sync
# the host stops the VM now, dumps its memory and quits QEMU
while :; do sleep 1000; done
