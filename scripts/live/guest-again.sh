#!/bin/sh
# /init of the two-updates-in-a-row guest (scripts/live/again.py).  The host's root file
# system is the guest's, shared read-only over 9p; the output directory is 9p tag "out"
# (mounted on /mnt).  Every kernel of the chain runs this script: kernel KHO_GEN copies
# its debugfs kho/ into /mnt/gen<KHO_GEN>/ and, below KHO_LAST, kexec_file_load()s
# KHO_KERNEL with the same command line (KHO_GEN counted up) and kexecs into it, so
# kernel 2 is itself booted through KHO and hands over again.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t debugfs debugfs /sys/kernel/debug
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /mnt
gen=${KHO_GEN:-1}
last=${KHO_LAST:-3}
echo "KHO-AGAIN-BOOTED gen=$gen $(uname -r)"
mkdir -p "/mnt/gen$gen"
cp -r /sys/kernel/debug/kho "/mnt/gen$gen/debugfs-kho"
cp /proc/cmdline "/mnt/gen$gen/cmdline"
sync
if [ "$gen" -lt "$last" ]; then
    next=$((gen + 1))
    cmdline=$(sed "s/KHO_GEN=$gen/KHO_GEN=$next/" /proc/cmdline)
    if kexec -s -l "$KHO_KERNEL" --command-line="$cmdline" >"/mnt/gen$gen/kexec.log" 2>&1; then
        echo "KHO-AGAIN-KEXEC gen=$gen"
        sync
        kexec -e
    fi
    echo "KHO-AGAIN-FAILED gen=$gen: kexec: $(cat "/mnt/gen$gen/kexec.log")"
else
    echo "KHO-AGAIN-DONE gen=$gen"
fi
sync
while :; do sleep 1000; done
