#!/usr/bin/env bash
# Build the x86_64 Linux 7.3 kernel of the live-capture test (tests/test_live_kernel.py).
#
# The LUO capture kernel (../shared/luo-capture/luo-x86_64.config) plus /proc/kcore and a 9p
# root (scripts/live/live-x86_64.config), from the Linux 7.3 source scripts/build-kernel.sh
# fetches (Debian linux-source-7.3), built out of tree: the source is only read.
#
# Output (outside the repo): ${KHO_KERNEL_CACHE:-$HOME/.cache/kho-formats}/linux-7.3-x86_64-live/{bzImage,config}
# Knobs: KSRC (default: $CACHE/work/linux-source-7.3), KHO_KERNEL_JOBS (default nproc),
#        KHO_KERNEL_REBUILD=1 to rebuild.  Needs gcc, make, flex, bison, bc, libelf-dev, libssl-dev.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE="${KHO_KERNEL_CACHE:-$HOME/.cache/kho-formats}"
KSRC="${KSRC:-$CACHE/work/linux-source-7.3}"
BUILD="$CACHE/work/build-x86_64-live"
OUT="$CACHE/linux-7.3-x86_64-live"
JOBS="${KHO_KERNEL_JOBS:-$(nproc)}"
FRAG="$HERE/live-x86_64.config"
log() { echo "[build-live-kernel] $*" >&2; }

stale=0  # a built kernel whose config lacks a line the fragment now asks for is rebuilt
if [[ -f "$OUT/config" ]]; then
    while read -r line; do
        grep -qxF "$line" "$OUT/config" || { stale=1; log "config of the built kernel lacks '$line': rebuilding"; }
    done < <(grep -E '^CONFIG_' "$FRAG")
fi
if [[ -f "$OUT/bzImage" && "$stale" == 0 && "${KHO_KERNEL_REBUILD:-0}" != 1 ]]; then
    log "already built: $OUT/bzImage"
    exit 0
fi
if [[ ! -f "$KSRC/Makefile" ]]; then
    log "no Linux 7.3 source at $KSRC: run scripts/build-kernel.sh (it fetches and unpacks it) or set KSRC"
    exit 1
fi
mkdir -p "$BUILD" "$OUT"
make -C "$KSRC" O="$BUILD" KCONFIG_ALLCONFIG="$FRAG" allnoconfig >/dev/null
# every option of the fragment must survive allnoconfig's dependency resolution
missing=0
while read -r line; do
    grep -qxF "$line" "$BUILD/.config" || { log "config: missing '$line'"; missing=1; }
done < <(grep -E '^(CONFIG_|# CONFIG_)' "$FRAG")
((missing == 0)) || exit 1
make -C "$KSRC" O="$BUILD" -j"$JOBS" bzImage
cp "$BUILD/arch/x86/boot/bzImage" "$OUT/bzImage.tmp" && mv "$OUT/bzImage.tmp" "$OUT/bzImage"
cp "$BUILD/.config" "$OUT/config"
log "built $OUT/bzImage"
