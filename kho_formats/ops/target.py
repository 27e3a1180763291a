"""A handover checked against the kernel that will read it (``kho check --target``).

``kho check`` alone judges a handover as the format allows it; whether one
given kernel takes it depends on that kernel's configuration: its page size,
the KHO ABI it speaks (Linux 7.3: ``kho-v4``; ``luo-v5`` for LUO), whether it
has Live Update at all, which file handlers it registers, and which FLBs it
attaches to them.  :class:`TargetKernel` is that configuration, read from a
kernel ``.config`` (:func:`from_config`) or named (:data:`PROFILES`), and
:func:`target_findings` says what that kernel will do with the handover, in
the kernel's own terms:

* ``target-page-size``, ``target-arch`` (error): a kernel of another page
  size or architecture does not boot from it (``kho boot`` refuses);
* ``target-kho`` (error): no ``CONFIG_KEXEC_HANDOVER``; ``target-abi``
  (error): a root ``compatible`` other than the kernel's
  (``KHO: setup: handover FDT ... is incompatible with 'kho-v4'``);
* ``target-luo`` (warning): LUO state for a kernel without
  ``CONFIG_LIVEUPDATE`` (nothing retrieves it); ``target-luo-abi`` (error): a
  ``luo_ser`` compatible other than ``luo-v5`` (7.3 panics);
* ``target-handler`` (error): files of a handler the kernel does not register
  (``memfd-v2`` needs ``CONFIG_LIVEUPDATE_MEMFD``): retrieving them fails;
* ``target-flb-missing`` (error): an FLB the kernel attaches to a handler
  whose files the handover holds, absent from the handover: the first file
  that finishes drops a reference the incoming count never had
  (``liveupdate_flb_put_incoming`` ← ``luo_flb_file_finish``: a
  ``refcount_t: underflow`` WARNING);
* ``target-flb-underflow`` (error): its count below the number of files
  that will drop it (the same WARNING once the count is spent);
* ``target-flb-unfinished`` (warning): its count above that number
  (``finish()`` never runs);
* ``target-flb-unused`` (info): an FLB the kernel does not register
  (ignored);
* ``target-not-exercised`` (info): a client sub-blob the kernel has no
  client for (``kho_test`` without ``CONFIG_TEST_KEXEC_HANDOVER``).

``CONFIG_LIVEUPDATE_TEST`` (lib/tests/liveupdate.c) attaches three FLBs,
``liveupdate-test-flb-v0`` .. ``v2``, to every file handler it sees
registered; the selftests' own ``tools/testing/selftests/liveupdate/config``
sets it, so a handover for those tests must carry all three, each counting
every file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..abi.kexec_metadata import KHO_METADATA_NODE_NAME
from ..abi.luo import LUO_ABI_COMPATIBLE, liveupdate_test_flb_compatible
from ..abi.memblock import MEMBLOCK_KHO_FDT
from ..abi.memfd import MEMFD_LUO_FH_COMPATIBLE
from ..errors import KhoFormatError
from ..findings import ERROR, INFO, WARNING, Finding
from ..model.state import KhoState

__all__ = [
    "KHO_ABI",
    "LUO_ABI",
    "MEMFD_HANDLER",
    "TEST_FLBS",
    "TargetKernel",
    "PROFILES",
    "from_config",
    "parse_config",
    "profile",
    "target_findings",
]

#: what Linux 7.3 writes and accepts (include/linux/kho/abi/kexec_handover.h, luo.h, memfd.h)
KHO_ABI = "kho-v4"
LUO_ABI = LUO_ABI_COMPATIBLE
MEMFD_HANDLER = MEMFD_LUO_FH_COMPATIBLE
#: lib/tests/liveupdate.c: registered with every file handler under CONFIG_LIVEUPDATE_TEST
TEST_FLBS = tuple(liveupdate_test_flb_compatible(i) for i in range(3))
_MAX_CONFIG = 4 << 20
#: the KHO clients every KEXEC_HANDOVER kernel has, and lib/test_kho.c's (TEST_KEXEC_HANDOVER)
BASE_CLIENTS = (KHO_METADATA_NODE_NAME, MEMBLOCK_KHO_FDT)
KHO_TEST_FDT = "kho_test"


@dataclass(frozen=True)
class TargetKernel:
    """What a receiving kernel's configuration decides about a handover."""

    name: str
    #: "arm64" | "x86_64" | None (any)
    arch: str | None = None
    #: None: any (a profile that does not fix it)
    page_size: int | None = None
    kho: bool = True
    kho_abi: str = KHO_ABI
    liveupdate: bool = False
    luo_abi: str = LUO_ABI
    #: file handler compatibles it registers
    handlers: tuple[str, ...] = ()
    #: FLBs it attaches to every handler (CONFIG_LIVEUPDATE_TEST)
    handler_flbs: tuple[str, ...] = ()
    #: KHO clients it has (sub-node names)
    clients: tuple[str, ...] = BASE_CLIENTS
    #: the options it was read from (a .config), for reports
    options: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "page_size": self.page_size,
            "kho": self.kho,
            "kho_abi": self.kho_abi,
            "liveupdate": self.liveupdate,
            "luo_abi": self.luo_abi,
            "handlers": list(self.handlers),
            "handler_flbs": list(self.handler_flbs),
            "clients": list(self.clients),
        }


def _luo(name: str, test: bool, **kw: Any) -> TargetKernel:
    return TargetKernel(
        name,
        liveupdate=True,
        handlers=(MEMFD_HANDLER,),
        handler_flbs=TEST_FLBS if test else (),
        **kw,
    )


#: named targets (``kho check --target NAME``)
PROFILES: dict[str, TargetKernel] = {
    # tools/testing/selftests/liveupdate/config: LIVEUPDATE, LIVEUPDATE_TEST, memfd (default y)
    "selftest-liveupdate": _luo("selftest-liveupdate", True),
    # tools/testing/selftests/kho/vmtest.sh: its fragment (KHO, KHO_DEBUG(FS), TEST_KEXEC_HANDOVER,
    # DEBUG_VM, DEBUG_VM_PGFLAGS, DEFERRED_STRUCT_PAGE_INIT, ...) + olddefconfig: no LIVEUPDATE, and
    # the Kconfig default page size, 4 KiB on arm64 as on x86_64 (scripts/build-kho-selftest-kernel.sh
    # builds it; tests/test_kernel_kho_selftest.py checks its .config reads as this profile).  The
    # debug options change checks inside the kernel, not the handover format.
    "selftest-kho": TargetKernel("selftest-kho", page_size=4096, clients=(*BASE_CLIENTS, KHO_TEST_FDT)),
    # a LUO kernel without LIVEUPDATE_TEST (KHO_KERNEL_LUO=1 scripts/build-kernel.sh: arm64 4 KiB)
    "luo": _luo("luo", False, clients=(*BASE_CLIENTS, KHO_TEST_FDT)),
    # a LUO kernel with LIVEUPDATE_TEST (scripts/live/build-kernel.sh: x86_64)
    "luo-test": _luo("luo-test", True, clients=(*BASE_CLIENTS, KHO_TEST_FDT)),
}


def profile(name: str) -> TargetKernel:
    try:
        return PROFILES[name]
    except KeyError:
        raise KhoFormatError(f"target {name!r}", expected=" or ".join(sorted(PROFILES))) from None


def parse_config(text: str, where: str = ".config") -> dict[str, str]:
    """``CONFIG_X=value`` lines (``# CONFIG_X is not set`` is simply absent)."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if not eq or not key.startswith("CONFIG_") or not key[7:].replace("_", "").isalnum():
            raise KhoFormatError(f"{where}:{n}: {line[:80]!r}", expected="CONFIG_NAME=value lines")
        out[key[7:]] = value.strip().strip('"')
    return out


def from_config(path: str | os.PathLike[str]) -> TargetKernel:
    """The target a kernel ``.config`` describes."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise KhoFormatError(f"{p}: {exc.strerror or exc}", expected="a kernel .config") from None
    if size > _MAX_CONFIG:
        raise KhoFormatError(f"{p}: {size} bytes", expected=f"a kernel .config (at most {_MAX_CONFIG})")
    opts = parse_config(p.read_text(errors="replace"), str(p))
    if not opts:
        raise KhoFormatError(f"{p}: no CONFIG_ lines", expected="a kernel .config")

    def y(name: str) -> bool:
        return opts.get(name) == "y"

    arch = "arm64" if y("ARM64") else "x86_64" if y("X86_64") else None
    page_size: int | None = 4096 if arch == "x86_64" else None
    if arch == "arm64":
        for k, ps in (("ARM64_4K_PAGES", 4096), ("ARM64_16K_PAGES", 16384), ("ARM64_64K_PAGES", 65536)):
            if y(k):
                page_size = ps
    live = y("KEXEC_HANDOVER") and y("LIVEUPDATE")
    handlers = (MEMFD_HANDLER,) if live and y("LIVEUPDATE_MEMFD") else ()
    clients = list(BASE_CLIENTS) if y("KEXEC_HANDOVER") else []
    if y("TEST_KEXEC_HANDOVER"):
        clients.append(KHO_TEST_FDT)
    return TargetKernel(
        str(p),
        arch=arch,
        page_size=page_size,
        kho=y("KEXEC_HANDOVER"),
        liveupdate=live,
        handlers=handlers,
        handler_flbs=TEST_FLBS if live and y("LIVEUPDATE_TEST") and handlers else (),
        clients=tuple(clients),
        options=opts,
    )


def resolve(config: str | None, name: str | None) -> TargetKernel | None:
    """``--target-config PATH`` / ``--target NAME`` (a .config wins; both: the profile's name on it)."""
    if config:
        t = from_config(config)
        return replace(t, name=f"{name} ({config})") if name else t
    return profile(name) if name else None


def target_findings(
    state: KhoState, clients: Mapping[str, Any] | None, target: TargetKernel, *, arch: str | None = None
) -> list[Finding]:
    """What ``target`` will do with ``state`` (its decoded ``clients``,
    :func:`kho_formats.clients.decode_clients`); ``arch``: the handover's
    (a fixture's ``handover.json``), None if unknown."""
    from ..model.clients.luo import LuoState

    out: list[Finding] = []
    t = target
    who = f"target kernel {t.name}"
    if t.page_size is not None and state.page_size != t.page_size:
        out.append(
            Finding(
                ERROR,
                "target-page-size",
                f"{who} has {t.page_size // 1024} KiB pages; the handover has {state.page_size // 1024} KiB",
            )
        )
    if arch is not None and t.arch is not None and arch != t.arch:
        out.append(Finding(ERROR, "target-arch", f"{who} is {t.arch}; the handover is for {arch}"))
    if not t.kho:
        out.append(Finding(ERROR, "target-kho", f"{who} has no CONFIG_KEXEC_HANDOVER: the handover is not read"))
        return out
    if state.version != t.kho_abi:
        out.append(
            Finding(
                ERROR,
                "target-abi",
                f"{who} accepts {t.kho_abi!r} handovers; this one is {state.version!r} "
                f"(KHO: setup: handover FDT ... is incompatible with '{t.kho_abi}')",
                state.root_fdt_phys,
                "/",
            )
        )
    reports = dict(clients or {})
    for sb in state.subblobs:
        if sb.name == "LUO":
            continue
        if sb.name not in t.clients:
            out.append(
                Finding(
                    INFO, "target-not-exercised", f"{who} has no client for sub-node {sb.name!r}", path=f"/{sb.name}"
                )
            )
    rep = reports.get("LUO")
    luo = getattr(rep, "decoded", None)
    if rep is None and not any(sb.name == "LUO" for sb in state.subblobs):
        return out
    if not t.liveupdate:
        out.append(
            Finding(
                WARNING,
                "target-luo",
                f"{who} has no CONFIG_LIVEUPDATE: the LUO state is never retrieved",
                path="/LUO",
            )
        )
        return out
    if not isinstance(luo, LuoState):
        return out
    if luo.compatible != t.luo_abi:
        out.append(
            Finding(
                ERROR,
                "target-luo-abi",
                f"{who} reads {t.luo_abi!r} LUO state; this is {luo.compatible!r} "
                f"(luo: LUO state is incompatible with '{t.luo_abi}': a panic in 7.3)",
                luo.phys,
                "/LUO",
            )
        )
        return out
    files_by_handler: dict[str, int] = {}
    for si, s in enumerate(luo.sessions):
        for fi, f in enumerate(s.files):
            files_by_handler[f.compatible] = files_by_handler.get(f.compatible, 0) + 1
            if f.compatible not in t.handlers:
                out.append(
                    Finding(
                        ERROR,
                        "target-handler",
                        f"{who} registers no file handler {f.compatible!r} (token {f.token:#x}): "
                        "retrieving the file fails",
                        f.entry_phys,
                        f"/LUO/sessions/{si}/files/{fi}",
                    )
                )
    # every handler the kernel has carries handler_flbs: each of its files drops one reference on each
    users = sum(n for h, n in files_by_handler.items() if h in t.handlers)
    have = {fl.name: fl for fl in luo.flbs}
    for name in t.handler_flbs:
        fl = have.get(name)
        if users == 0:
            continue
        if fl is None:
            out.append(
                Finding(
                    ERROR,
                    "target-flb-missing",
                    f"{who} attaches FLB {name!r} to its file handlers and {users} files will drop it, "
                    "but the handover has no such FLB: the first finish underflows its refcount "
                    "(WARNING in liveupdate_flb_put_incoming)",
                    luo.ser.flbs_pa or None,
                    "/LUO",
                )
            )
        elif fl.ser.count < users:
            out.append(
                Finding(
                    ERROR,
                    "target-flb-underflow",
                    f"FLB {name!r} count {fl.ser.count}: {who} drops it once for each of {users} files, "
                    "so its refcount underflows (WARNING in liveupdate_flb_put_incoming)",
                    fl.entry_phys,
                    "/LUO",
                )
            )
        elif fl.ser.count > users:
            out.append(
                Finding(
                    WARNING,
                    "target-flb-unfinished",
                    f"FLB {name!r} count {fl.ser.count}: {who} drops it only {users} times, so its finish() never runs",
                    fl.entry_phys,
                    "/LUO",
                )
            )
    for fl in luo.flbs:
        if fl.name not in t.handler_flbs:
            out.append(
                Finding(
                    INFO,
                    "target-flb-unused",
                    f"{who} registers no FLB {fl.name!r}: ignored",
                    fl.entry_phys,
                    "/LUO",
                )
            )
    return out


def add_arguments(parser: Any) -> None:
    """``--target-config PATH`` and ``--target NAME`` on an argparse (sub)parser."""
    parser.add_argument(
        "--target-config",
        metavar="PATH",
        help="check against the kernel this .config builds: its page size, KHO/LUO ABI, handlers and FLBs",
    )
    parser.add_argument(
        "--target", choices=sorted(PROFILES), help="check against a named kernel configuration (see docs/selftests.md)"
    )


def from_args(args: Any) -> TargetKernel | None:
    return resolve(getattr(args, "target_config", None), getattr(args, "target", None))


def built_findings(fx: Any, target: TargetKernel) -> list[Finding]:
    """:func:`target_findings` for a fixture just built (``kho build --target``)."""
    from ..model.clients import decode_clients
    from ..model.state import parse

    st = parse(fx.root_fdt, fx.image, page_size=fx.page_size, byteorder=fx.state.byteorder)
    return target_findings(st, decode_clients(st, fx.image), target, arch=fx.arch)
