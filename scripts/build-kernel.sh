#!/usr/bin/env bash
# Build the arm64 Linux 7.3 kernel Image used by `kho boot` ("kernel in the loop").
#
# Source: Debian's linux-source-7.3 package from the trixie-backports suite,
# fetched with a *private* apt configuration (the system's apt sources are not
# touched). Cross-compiled with Debian's gcc-aarch64-linux-gnu.
#
# Output (outside the repo), one directory per page size / LUO combination:
#   ${KHO_KERNEL_CACHE:-$HOME/.cache/kho-formats}/linux-7.3-arm64/{Image,config,System.map}
#       4 KiB pages, no LUO (the default; the directory name predates the options)
#   .../linux-7.3-arm64-16k/, .../linux-7.3-arm64-64k/          other page sizes
#   .../linux-7.3-arm64-4k-luo/, ...-16k-luo/, ...-64k-luo/     with KHO_KERNEL_LUO=1
#   .../linux-7.3-arm64-4k-luo-test/, ...                        with KHO_KERNEL_LUO_TEST=1
# Each combination has its own out-of-tree build directory under work/
# (build-arm64 for the default, build-arm64-<suffix> for the others).
#
# Idempotent: exits at once when the Image already exists (set KHO_KERNEL_REBUILD=1
# to force a rebuild). Environment knobs:
#   KHO_KERNEL_PAGE_SIZE  4K (default), 16K or 64K
#   KHO_KERNEL_LUO     1 = also LIVEUPDATE + LIVEUPDATE_MEMFD (with SHMEM, TMPFS,
#                      MEMFD_CREATE, TRANSPARENT_HUGEPAGE for large memfd folios)
#   KHO_KERNEL_LUO_TEST 1 = LUO as above plus LIVEUPDATE_TEST (lib/tests/liveupdate.c: three
#                      test FLBs on every file handler), as the liveupdate selftests' own
#                      config sets it (implies KHO_KERNEL_LUO=1)
#   KHO_KERNEL_SEED    1 (default) = a new build directory starts as a copy of the
#                      same page size's non-LUO build directory when that exists,
#                      so Kbuild only recompiles what the extra options touch
#   KHO_KERNEL_CACHE   cache root (default $HOME/.cache/kho-formats)
#   KHO_KERNEL_JOBS    make -j value (default: nproc)
#   KHO_APT_MIRROR     Debian mirror URL (default: first deb.debian.org-like URI
#                      found in the system's apt sources, else http://deb.debian.org/debian)
#   KHO_INSTALL_DEPS   1 (default) = apt-get install missing host tools when root
set -euo pipefail

CACHE_ROOT="${KHO_KERNEL_CACHE:-$HOME/.cache/kho-formats}"
WORK="$CACHE_ROOT/work"
PAGE_SIZE="${KHO_KERNEL_PAGE_SIZE:-4K}"
PAGE_SIZE="${PAGE_SIZE^^}"
LUO="${KHO_KERNEL_LUO:-0}"
LUO_TEST="${KHO_KERNEL_LUO_TEST:-0}"
case "$LUO_TEST" in
    0) ;;
    1) LUO=1 ;;
    *) echo "[build-kernel] KHO_KERNEL_LUO_TEST must be 0 or 1 (got '$LUO_TEST')" >&2; exit 2 ;;
esac
case "$PAGE_SIZE" in
    4K|16K|64K) ;;
    *) echo "[build-kernel] KHO_KERNEL_PAGE_SIZE must be 4K, 16K or 64K (got '$PAGE_SIZE')" >&2; exit 2 ;;
esac
case "$LUO" in
    0|1) ;;
    *) echo "[build-kernel] KHO_KERNEL_LUO must be 0 or 1 (got '$LUO')" >&2; exit 2 ;;
esac
# Directory suffix: empty for the historical default (4K, no LUO).
SUFFIX=""
if [[ "$PAGE_SIZE" != 4K || "$LUO" == 1 ]]; then
    SUFFIX="-${PAGE_SIZE,,}"
    [[ "$LUO" == 1 ]] && SUFFIX="$SUFFIX-luo"
    [[ "$LUO_TEST" == 1 ]] && SUFFIX="$SUFFIX-test"
fi
OUT="$CACHE_ROOT/linux-7.3-arm64$SUFFIX"
SRCPKG="linux-source-7.3"
JOBS="${KHO_KERNEL_JOBS:-$(nproc)}"
CROSS="aarch64-linux-gnu-"

log() { echo "[build-kernel] $*" >&2; }

if [[ -f "$OUT/Image" && "${KHO_KERNEL_REBUILD:-0}" != 1 ]]; then
    log "kernel already built: $OUT/Image"
    exit 0
fi
mkdir -p "$OUT" "$WORK"

# --- host tools -------------------------------------------------------------
need_pkgs=()
command -v ${CROSS}gcc >/dev/null || need_pkgs+=(gcc-aarch64-linux-gnu)
command -v qemu-system-aarch64 >/dev/null || need_pkgs+=(qemu-system-arm)
command -v dtc >/dev/null || need_pkgs+=(device-tree-compiler)
for t in bc flex bison make xz; do command -v $t >/dev/null || need_pkgs+=("$t"); done
[[ -e /usr/include/openssl/ssl.h ]] || need_pkgs+=(libssl-dev)
[[ -e /usr/include/gelf.h ]] || need_pkgs+=(libelf-dev)
if ((${#need_pkgs[@]})); then
    if [[ "${KHO_INSTALL_DEPS:-1}" == 1 && $(id -u) == 0 ]]; then
        log "installing host packages: ${need_pkgs[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]/xz/xz-utils}"
    else
        log "missing host packages: ${need_pkgs[*]} (install them, or run as root)"
        exit 1
    fi
fi

# --- fetch linux-source-7.3 with a private apt configuration ----------------
find_mirror() {
    if [[ -n "${KHO_APT_MIRROR:-}" ]]; then echo "$KHO_APT_MIRROR"; return; fi
    local m
    # Only live entries: deb822 "URIs:" lines and one-line "deb ..." lines (not comments).
    m=$( { cat /etc/apt/sources.list 2>/dev/null; cat /etc/apt/sources.list.d/*.sources \
             /etc/apt/sources.list.d/*.list 2>/dev/null; } |
         grep -E '^[[:space:]]*(URIs:|deb[[:space:]])' | grep -oE 'https?://[^ ]+' |
         grep -E '/debian/?$' | head -n1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

DEB=$(ls "$WORK"/${SRCPKG}_*_all.deb 2>/dev/null | head -n1 || true)
if [[ -z "$DEB" ]]; then
    MIRROR=$(find_mirror)
    log "fetching $SRCPKG from $MIRROR trixie-backports (private apt config)"
    APT="$WORK/apt"
    mkdir -p "$APT/sources.list.d" "$APT/state/lists/partial" "$APT/cache/archives/partial"
    KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
    echo "deb [signed-by=$KEYRING] $MIRROR trixie-backports main" > "$APT/sources.list"
    APTOPTS=(-o "Dir::Etc::sourcelist=$APT/sources.list"
             -o "Dir::Etc::sourceparts=$APT/sources.list.d"
             -o "Dir::State=$APT/state" -o "Dir::Cache=$APT/cache"
             -o "Dir::State::status=/var/lib/dpkg/status"
             -o "APT::Sandbox::User=root")
    apt-get "${APTOPTS[@]}" update -q
    (cd "$WORK" && apt-get "${APTOPTS[@]}" download "$SRCPKG")
    DEB=$(ls "$WORK"/${SRCPKG}_*_all.deb | head -n1)
fi
log "source package: $DEB"

SRC="$WORK/linux-source-7.3"
if [[ ! -f "$SRC/Makefile" ]]; then
    log "unpacking kernel source"
    rm -rf "$WORK/unpack" "$SRC"
    mkdir -p "$WORK/unpack"
    dpkg-deb -x "$DEB" "$WORK/unpack"
    tar -xJf "$WORK"/unpack/usr/src/linux-source-7.3.tar.xz -C "$WORK"
    rm -rf "$WORK/unpack"
fi
KVER=$(make -s -C "$SRC" kernelversion)
log "kernel version: $KVER"

# --- configure --------------------------------------------------------------
BUILD="$WORK/build-arm64$SUFFIX"
if [[ ! -d "$BUILD" && "${KHO_KERNEL_SEED:-1}" == 1 ]]; then
    # Seed from the same page size without LUO (Kbuild's per-option dependency
    # tracking then rebuilds only the objects the LUO options reach).
    SEED="$WORK/build-arm64"
    [[ "$PAGE_SIZE" != 4K ]] && SEED="$WORK/build-arm64-${PAGE_SIZE,,}"
    # the LIVEUPDATE_TEST build: from the same page size's LUO build when there is one
    [[ "$LUO_TEST" == 1 && -f "$WORK/build-arm64-${PAGE_SIZE,,}-luo/.config" ]] && SEED="$WORK/build-arm64-${PAGE_SIZE,,}-luo"
    if [[ "$LUO" == 1 && -f "$SEED/.config" ]]; then
        log "seeding $BUILD from $SEED"
        cp -a "$SEED" "$BUILD.tmp" && mv "$BUILD.tmp" "$BUILD"
    fi
fi
mkdir -p "$BUILD"
MK=(make -C "$SRC" O="$BUILD" ARCH=arm64 CROSS_COMPILE="$CROSS")
"${MK[@]}" -s defconfig
CFG="$SRC/scripts/config --file $BUILD/.config"
# KHO and its self-test, built in.
$CFG --enable KEXEC_HANDOVER --enable KEXEC_HANDOVER_DEBUGFS --enable KEXEC_HANDOVER_DEBUG \
     --enable TEST_KEXEC_HANDOVER --enable DEBUG_FS \
     --enable SERIAL_AMBA_PL011 --enable SERIAL_AMBA_PL011_CONSOLE \
     --enable CPU_LITTLE_ENDIAN --disable CPU_BIG_ENDIAN
PAGE_OPT="ARM64_${PAGE_SIZE}_PAGES"
for ps in 4K 16K 64K; do
    if [[ "$ps" == "$PAGE_SIZE" ]]; then $CFG --enable "ARM64_${ps}_PAGES"
    else $CFG --disable "ARM64_${ps}_PAGES"; fi
done
LUO_OPTS=()
if [[ "$LUO" == 1 ]]; then
    # LIVEUPDATE depends on KEXEC_HANDOVER; LIVEUPDATE_MEMFD on MEMFD_CREATE and
    # SHMEM (7.3 kernel/liveupdate/Kconfig). TMPFS gives the shmem mount the
    # memfds live on; TRANSPARENT_HUGEPAGE lets a memfd hold (and get back)
    # large folios; DEVTMPFS provides /dev/liveupdate to the initramfs program.
    LUO_OPTS=(LIVEUPDATE LIVEUPDATE_MEMFD SHMEM TMPFS MEMFD_CREATE TRANSPARENT_HUGEPAGE
              DEVTMPFS BLK_DEV_INITRD)
    [[ "$LUO_TEST" == 1 ]] && LUO_OPTS+=(RUNTIME_TESTING_MENU LIVEUPDATE_TEST)
    for o in "${LUO_OPTS[@]}"; do $CFG --enable "$o"; done
fi
# Smaller, faster build: no debug info, no SoC platforms (QEMU virt needs none),
# no KVM, and only the Image target is built (modules are never compiled).
$CFG --enable DEBUG_INFO_NONE --disable DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT \
     --disable DEBUG_INFO_DWARF4 --disable DEBUG_INFO_DWARF5 --disable DEBUG_INFO_BTF \
     --disable KVM --disable VIRTUALIZATION \
     --disable DRM --disable SOUND --disable MEDIA_SUPPORT --disable WLAN \
     --disable BT --disable CAN --disable STAGING \
     --disable IPV6 --disable NETFILTER --disable WIRELESS --disable ETHERNET \
     --disable USB_SUPPORT --disable MTD --disable SCSI --disable ATA --disable MMC \
     --disable NFS_FS --disable INPUT_TOUCHSCREEN --disable IIO --disable HID
for p in $(grep -oE '^config ARCH_[A-Z0-9_]+' "$SRC/arch/arm64/Kconfig.platforms" | awk '{print $2}'); do
    $CFG --disable "$p"
done
"${MK[@]}" -s olddefconfig
# Verify the options that matter really stuck.
for opt in KEXEC_HANDOVER KEXEC_HANDOVER_DEBUGFS TEST_KEXEC_HANDOVER DEBUG_FS \
           SERIAL_AMBA_PL011_CONSOLE "$PAGE_OPT" "${LUO_OPTS[@]}"; do
    grep -q "^CONFIG_${opt}=y" "$BUILD/.config" || { log "CONFIG_$opt is not =y after olddefconfig"; exit 1; }
done

# --- build ------------------------------------------------------------------
log "building Image ($PAGE_SIZE pages, LUO=$LUO) in $BUILD with -j$JOBS (this takes a while)"
"${MK[@]}" -j"$JOBS" Image
cp "$BUILD/.config" "$OUT/config"
cp "$BUILD/System.map" "$OUT/System.map"
cp "$BUILD/arch/arm64/boot/Image" "$OUT/Image.tmp" && mv "$OUT/Image.tmp" "$OUT/Image"
echo "$KVER" > "$OUT/VERSION"
log "done: $OUT/Image"
