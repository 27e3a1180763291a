#!/usr/bin/env bash
# Build the kernel of Linux 7.3's own KHO selftest exactly as the selftest builds it,
# by running the selftest itself: tools/testing/selftests/kho/vmtest.sh.
#
# vmtest.sh writes its config fragment (BLK_DEV_INITRD, KEXEC_HANDOVER, KEXEC_HANDOVER_DEBUG,
# KEXEC_HANDOVER_DEBUGFS, TEST_KEXEC_HANDOVER, DEBUG_KERNEL, DEBUG_VM, DEBUG_VM_PGFLAGS, SMP,
# DEFERRED_STRUCT_PAGE_INIT, plus arm64.conf's PL011 console or x86.conf's 8250 console) as the
# whole .config, runs `make olddefconfig` (every other option: its Kconfig default), builds
# Image / bzImage, then boots it twice under QEMU through its init.c (kexec_file_load of itself)
# and greps the serial log for "KHO restore succeeded".  This script runs it with -d into the
# cache (the kernel tree is only read: vmtest.sh builds out of tree, O=<build dir>) and copies
# what it built:
#
#   ${KHO_KERNEL_CACHE:-$HOME/.cache/kho-formats}/linux-7.3-<arch>-kho-vmtest/
#       Image (arm64) or bzImage (x86_64), config (the .config vmtest.sh made), VERSION,
#       vmtest.log (its whole output), vmtest.json (its KTAP result and exit status, the wall
#       time of the vmtest.sh run and of its QEMU run alone, the load average before and after)
#   build directory: $CACHE/work/build-<arch>-kho-vmtest
#
# Usage: scripts/build-kho-selftest-kernel.sh [arm64] [x86_64]     (default: both)
#
# Idempotent: an arch whose Image/bzImage, config and passing vmtest.json are there is skipped;
# KHO_KERNEL_REBUILD=1 runs vmtest.sh again (on a built tree make has nothing to do, so this
# re-times the selftest's own two-kernel run).  Refuses while another vmtest.sh works in the same
# build directory.  The QEMU run is timed through a wrapper named like QEMU first on PATH (it
# records start/end and runs the real binary with the same arguments); vmtest.sh is unchanged.
#
# Knobs: KSRC (the tree, default $CACHE/work/linux-source-7.3, from scripts/build-kernel.sh),
#        KHO_KERNEL_JOBS (make -j, default nproc), KHO_CROSS_COMPILE (arm64 on a non-arm64 host,
#        default aarch64-linux-gnu-), KHO_VMTEST_KVM=1 (let vmtest.sh's QEMU use /dev/kvm: by default
#        it is hidden in a private mount namespace, so QEMU runs TCG as kho boot does).  Needs what vmtest.sh needs: make, gcc (and the arm64 cross
#        gcc), flex, bison, bc, libelf-dev, libssl-dev, qemu-system-arm / qemu-system-x86.
set -euo pipefail
CACHE="${KHO_KERNEL_CACHE:-$HOME/.cache/kho-formats}"
KSRC="${KSRC:-$CACHE/work/linux-source-7.3}"
JOBS="${KHO_KERNEL_JOBS:-$(nproc)}"
VMTEST="$KSRC/tools/testing/selftests/kho/vmtest.sh"
log() { echo "[build-kho-selftest-kernel] $*" >&2; }

if [[ ! -f "$VMTEST" ]]; then
    log "no $VMTEST: run scripts/build-kernel.sh (it fetches and unpacks the Linux 7.3 tree) or set KSRC"
    exit 1
fi

now() { date +%s.%N; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

build_one() {
    local arch=$1 target karch image qemu cross=""
    case "$arch" in
        arm64) target=aarch64; karch=arm64; image=Image; qemu=qemu-system-aarch64
               [[ "$(uname -m)" == aarch64 ]] || cross="${KHO_CROSS_COMPILE:-aarch64-linux-gnu-}" ;;
        x86_64) target=x86_64; karch=x86; image=bzImage; qemu=qemu-system-x86_64
               [[ "$(uname -m)" == x86_64 ]] || cross="${KHO_CROSS_COMPILE:-x86_64-linux-gnu-}" ;;
        *) log "unknown arch '$arch' (arm64 or x86_64)"; return 2 ;;
    esac
    local out="$CACHE/linux-7.3-$arch-kho-vmtest" build="$CACHE/work/build-$arch-kho-vmtest"
    if [[ -f "$out/$image" && -f "$out/config" && -f "$out/vmtest.json" && "${KHO_KERNEL_REBUILD:-0}" != 1 ]] &&
        grep -q '"exit_status": 0' "$out/vmtest.json"; then
        log "already built and passed vmtest.sh: $out/$image"
        return 0
    fi
    local real_qemu
    real_qemu=$(command -v "$qemu") || { log "$qemu not on PATH (apt-get install qemu-system-arm / qemu-system-x86)"; return 1; }
    [[ -z "$cross" ]] || command -v "${cross}gcc" >/dev/null || { log "${cross}gcc not on PATH"; return 1; }
    if pgrep -f -- "vmtest.sh -d $build( |$)" >/dev/null; then
        log "another vmtest.sh is building or running in $build: wait for it (pgrep -fa vmtest.sh)"
        return 1
    fi
    mkdir -p "$out" "$build"
    exec {lock}>"$build.lock"
    flock -n "$lock" || { log "$build is locked by another run of this script"; return 1; }

    local shim times
    shim=$(mktemp -d /tmp/kho-vmtest-shim.XXXXXX)
    times="$shim/qemu-times"
    cat >"$shim/$qemu" <<EOF
#!/usr/bin/env bash
start=\$(date +%s.%N)
"$real_qemu" "\$@"
rc=\$?
echo "\$start \$(date +%s.%N) \$rc" >>"$times"
exit \$rc
EOF
    chmod +x "$shim/$qemu"

    log "$arch: vmtest.sh -d $build -j $JOBS -t $target (a fresh tree is a whole kernel build)"
    local load0 t0 t1 rc=0
    load0=$(loadavg)
    t0=$(now)
    # vmtest.sh asks QEMU for -accel kvm first; KVM nested in this VM died in emulation
    # ("KVM internal error. Suberror: 1", a lock cmpxchg16b), and kho boot runs TCG: hide /dev/kvm
    # in a private mount namespace so QEMU falls back to TCG (KHO_VMTEST_KVM=1 leaves it visible)
    local run=(env PATH="$shim:$PATH" CROSS_COMPILE="$cross" bash "$VMTEST" -d "$build" -j "$JOBS" -t "$target")
    local accel="as vmtest.sh picks it"
    if [[ -e /dev/kvm && "${KHO_VMTEST_KVM:-0}" != 1 ]]; then
        if [[ $(id -u) == 0 ]] && command -v unshare >/dev/null; then
            run=(unshare -m sh -c 'mount --bind /dev/null /dev/kvm && exec "$@"' sh "${run[@]}")
            accel="tcg (/dev/kvm hidden)"
        else
            log "/dev/kvm exists and this is not root: vmtest.sh will try KVM first"
        fi
    fi
    (cd / && "${run[@]}") >"$out/vmtest.log.tmp" 2>&1 || rc=$?
    t1=$(now)
    mv "$out/vmtest.log.tmp" "$out/vmtest.log"
    local result qemu_s="null"
    result=$(grep -E '^(ok|not ok) 1 ' "$out/vmtest.log" | head -n1 | tr -d '"\\' || true)
    [[ -s "$times" ]] && qemu_s=$(awk '{s += $2 - $1} END {printf "%.2f", s}' "$times")
    rm -rf "$shim"
    local kimage="$build/arch/$karch/boot/$image"
    if [[ -f "$kimage" && -f "$build/.config" ]]; then
        cp "$build/.config" "$out/config.tmp" && mv "$out/config.tmp" "$out/config"
        cp "$kimage" "$out/$image.tmp" && mv "$out/$image.tmp" "$out/$image"
        make -s -C "$KSRC" kernelversion >"$out/VERSION"
    fi
    cat >"$out/vmtest.json" <<EOF
{
 "arch": "$arch",
 "command": "CROSS_COMPILE=$cross bash $VMTEST -d $build -j $JOBS -t $target",
 "exit_status": $rc,
 "accel": "$accel",
 "result": "$result",
 "vmtest_seconds": $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}'),
 "qemu_seconds": $qemu_s,
 "loadavg_before": "$load0",
 "loadavg_after": "$(loadavg)",
 "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
    exec {lock}>&-
    if [[ $rc != 0 ]]; then
        log "$arch: vmtest.sh exited $rc (${result:-no KTAP result}): see $out/vmtest.log"
        return "$rc"
    fi
    log "$arch: $result; $out/$image ($(grep -E 'seconds' "$out/vmtest.json" | tr -d ' \n'))"
}

status=0
ARCHES=("$@")
((${#ARCHES[@]})) || ARCHES=(arm64 x86_64)
for arch in "${ARCHES[@]}"; do
    build_one "$arch" || status=$?
done
exit "$status"
