#!/usr/bin/env bash
# Build the Linux 7.3 kernel's own Live Update / KHO selftests as static programs,
# for `kho boot FIXTURE --init PROGRAM` (docs/selftests.md).
#
# From the Linux 7.3 tree scripts/build-kernel.sh fetches (Debian linux-source-7.3),
# which is only read: the project never copies the selftests' code, it builds it.
# Built exactly as the tree's own tools/testing/selftests/liveupdate/vmtest.sh and
# tools/testing/selftests/kho/vmtest.sh build them: static, against tools/include/nolibc
# and the tree's own UAPI headers (`make headers_install` for the target arch, out of tree).
#
# Programs, per arch (x86_64 with the host gcc, arm64 with Debian's aarch64-linux-gnu-gcc):
#   luo_kexec_simple luo_multi_session luo_stress_files luo_stress_sessions
#                         tools/testing/selftests/liveupdate/<name>.c + lib/lu_utils.c
#   liveupdate-init       tools/testing/selftests/liveupdate/init.c (the selftests' own /init)
#   kho-init              tools/testing/selftests/kho/init.c
# Output: ${KHO_KERNEL_CACHE:-$HOME/.cache/kho-formats}/selftests-7.3-<arch>/
#   <program>..., include/ (the UAPI headers), BUILDINFO (source hash, compiler, flags)
#
# Idempotent: a directory whose BUILDINFO matches the sources, compiler and flags is
# kept (KHO_SELFTESTS_REBUILD=1 forces a rebuild).  Knobs: KSRC (the tree, default
# $CACHE/work/linux-source-7.3), KHO_SELFTESTS_ARCHES (default "x86_64 arm64"),
# KHO_CC_X86_64 / KHO_CROSS_CC (compilers).
set -euo pipefail
CACHE="${KHO_KERNEL_CACHE:-$HOME/.cache/kho-formats}"
KSRC="${KSRC:-$CACHE/work/linux-source-7.3}"
ARCHES="${KHO_SELFTESTS_ARCHES:-x86_64 arm64}"
LU="tools/testing/selftests/liveupdate"
KHO="tools/testing/selftests/kho"
TESTS="luo_kexec_simple luo_multi_session luo_stress_files luo_stress_sessions"
# vmtest.sh's flags (liveupdate: the test binary; kho and liveupdate: init)
TEST_CFLAGS="-static -O2 -nostdinc -nostdlib"
INIT_CFLAGS="-s -static -Os -nostdinc -nostdlib -fno-asynchronous-unwind-tables -fno-ident -fno-stack-protector"
log() { echo "[build-selftests] $*" >&2; }

if [[ ! -f "$KSRC/$LU/lib/lu_utils.c" || ! -f "$KSRC/$KHO/init.c" ]]; then
    log "no Linux 7.3 tree with $LU and $KHO at $KSRC: run scripts/build-kernel.sh (it fetches and unpacks it) or set KSRC"
    exit 1
fi

build_arch() {
    local arch=$1 karch cc
    case "$arch" in
        x86_64) karch=x86; cc="${KHO_CC_X86_64:-gcc}" ;;
        arm64) karch=arm64; cc="${KHO_CROSS_CC:-aarch64-linux-gnu-gcc}" ;;
        *) log "unknown arch '$arch' (x86_64 or arm64)"; return 2 ;;
    esac
    if ! command -v "$cc" >/dev/null; then
        if [[ "$arch" == arm64 && $(id -u) == 0 && "${KHO_INSTALL_DEPS:-1}" == 1 ]]; then
            log "installing gcc-aarch64-linux-gnu"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc-aarch64-linux-gnu >/dev/null
        else
            log "$cc not found (arm64: apt-get install gcc-aarch64-linux-gnu)"
            return 1
        fi
    fi
    local out="$CACHE/selftests-7.3-$arch" hdrbuild="$CACHE/work/selftests-headers-$arch"
    # what the programs are built from: the sources, the UAPI and nolibc trees, the compiler, the flags
    local key
    key=$( {
        cat "$KSRC/Makefile" "$KSRC/$LU"/*.c "$KSRC/$LU"/lib/*.c "$KSRC/$LU"/lib/include/*.h "$KSRC/$KHO"/init.c \
            "$KSRC/tools/testing/selftests/kselftest.h"
        find "$KSRC/include/uapi" "$KSRC/arch/$karch/include/uapi" "$KSRC/tools/include/nolibc" -type f -print0 \
            | sort -z | xargs -0 cat
        "$cc" --version | head -1
        echo "$TEST_CFLAGS|$INIT_CFLAGS|$TESTS"
    } | sha256sum | cut -c1-16)
    if [[ -f "$out/BUILDINFO" && "${KHO_SELFTESTS_REBUILD:-0}" != 1 ]] && grep -qx "key=$key" "$out/BUILDINFO"; then
        log "$arch: already built: $out"
        return 0
    fi
    mkdir -p "$hdrbuild"
    local tmp="$out.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    if command -v rsync >/dev/null; then
        log "$arch: UAPI headers (make ARCH=$karch headers_install, out of tree)"
        make -s -C "$KSRC" O="$hdrbuild" ARCH="$karch" headers_install INSTALL_HDR_PATH="$tmp" >&2 || return 1
    else
        # headers_install is `make headers` then an rsync of usr/include: the same without rsync
        log "$arch: UAPI headers (make ARCH=$karch headers, out of tree; no rsync for headers_install)"
        make -s -C "$KSRC" O="$hdrbuild" ARCH="$karch" headers >&2 || return 1
        cp -a "$hdrbuild/usr/include" "$tmp/include" || return 1
    fi
    local inc=(-I "$tmp/include" -I "$KSRC/tools/include/nolibc")
    for t in $TESTS; do
        log "$arch: $t"
        # shellcheck disable=SC2086
        "$cc" $TEST_CFLAGS "${inc[@]}" -I "$KSRC/$LU/lib/include" -o "$tmp/$t" "$KSRC/$LU/$t.c" "$KSRC/$LU/lib/lu_utils.c" || return 1
    done
    log "$arch: liveupdate-init, kho-init"
    # shellcheck disable=SC2086
    "$cc" $INIT_CFLAGS "${inc[@]}" -o "$tmp/liveupdate-init" "$KSRC/$LU/init.c" || return 1
    # shellcheck disable=SC2086
    "$cc" $INIT_CFLAGS "${inc[@]}" -o "$tmp/kho-init" "$KSRC/$KHO/init.c" || return 1
    {
        echo "key=$key"
        echo "source=$KSRC ($(sed -n 's/^VERSION = //p;s/^PATCHLEVEL = //p;s/^SUBLEVEL = //p' "$KSRC/Makefile" | paste -sd.))"
        echo "arch=$arch"
        echo "cc=$("$cc" --version | head -1)"
        echo "test_cflags=$TEST_CFLAGS"
        echo "init_cflags=$INIT_CFLAGS"
        echo "programs=$TESTS liveupdate-init kho-init"
    } >"$tmp/BUILDINFO" || return 1
    rm -rf "$out" && mv "$tmp" "$out" || return 1
    log "$arch: built $out"
}

rc=0
for a in $ARCHES; do build_arch "$a" || rc=1; done
exit $rc
