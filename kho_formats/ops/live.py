"""Live capture: the handover of the running system (``kho capture -o DIR``).

:func:`live_capture` gathers what ``kho capture --from-dump`` gets from a dump,
from the running kernel instead:

* debugfs ``kho/out`` (the handover this kernel is preparing) or ``kho/in``
  (the one it received): ``fdt`` (on the sending side only a prefix of the
  root FDT, Linux 7.3 sizes the file at ``kho_init()``), ``sub_fdts/<name>``,
  ``scratch_phys`` / ``scratch_len``;
* physical memory through ``/proc/kcore`` (:mod:`kho_formats.memory.kcore`): the
  RAM segments, read on demand;
* on the receiving side the root FDT's address: x86
  ``/sys/kernel/boot_params/setup_data/<N>`` of type 10 (``SETUP_KEXEC_KHO``),
  or the arm64 boot DTB ``/sys/firmware/fdt`` (``/chosen/linux,kho-fdt``).
  On the sending side nothing names it: the page starting with the debugfs
  prefix is searched for (four bytes read per page of RAM).

The result is a :class:`~kho_formats.ops.capture.Capture` like
:func:`~kho_formats.ops.capture.load_capture` returns, so parsing, client
decoding and :func:`~kho_formats.ops.extract.write_capture` are the same as for a
dump. Missing debugfs, missing kcore and missing privileges raise
:class:`~kho_formats.errors.LiveCaptureError` saying what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..abi.layout import SETUP_KEXEC_KHO
from ..errors import KhoFormatError, LiveCaptureError
from ..memory.kcore import KCORE_PATH, KcoreFile
from ..safeio import read_regular
from .capture import Capture, load_capture, resolve_root_fdt

DEBUGFS_KHO = "/sys/kernel/debug/kho"
BOOT_PARAMS_SETUP_DATA = "/sys/kernel/boot_params/setup_data"
FIRMWARE_FDT = "/sys/firmware/fdt"
SIDES = ("out", "in")


def default_debugfs(side: str) -> str:
    return f"{DEBUGFS_KHO}/{side}"


def _check_debugfs(path: Path, side: str) -> None:
    if path.is_dir() and (path / "fdt").is_file():
        return
    try:
        os.stat(path)
    except PermissionError:
        raise LiveCaptureError(
            f"cannot read {path}: permission denied (live capture needs root)", expected="running as root"
        ) from None
    except OSError:
        pass
    hint = (
        "debugfs mounted (mount -t debugfs none /sys/kernel/debug) and a kernel with "
        "CONFIG_KEXEC_HANDOVER_DEBUGFS booted with kho=on"
    )
    if side == "in":
        hint += ", booted by a KHO kexec (kho/in exists only on the receiving side)"
    if path.is_dir():
        raise LiveCaptureError(f"{path}: no fdt file: not a debugfs kho/{side} directory", expected=hint)
    raise LiveCaptureError(f"{path}: no such directory", expected=hint)


def setup_data_kho(root: str | os.PathLike[str] = BOOT_PARAMS_SETUP_DATA) -> bytes | None:
    """The payload of the ``SETUP_KEXEC_KHO`` entry under ``/sys/kernel/boot_params/setup_data``
    (``None`` when there is none or it cannot be read)."""
    d = Path(root)
    try:
        entries = sorted(d.iterdir(), key=lambda p: (len(p.name), p.name))
    except OSError:
        return None
    for e in entries:
        try:
            # a sysfs attribute: stat says 4096 (one page) whatever it holds ("0xa\n")
            raw = read_regular(e / "type", "setup_data type", max_size=4096).rstrip(b"\0")
            kind = int(raw.decode("ascii").strip(), 0)
        except (KhoFormatError, ValueError, UnicodeDecodeError):
            continue
        if kind == SETUP_KEXEC_KHO:
            try:
                return read_regular(e / "data", "setup_data", max_size=1 << 20)
            except KhoFormatError:
                return None
    return None


def receiving_boot_info(
    *, setup_data: str | os.PathLike[str] = BOOT_PARAMS_SETUP_DATA, firmware_fdt: str | os.PathLike[str] = FIRMWARE_FDT
) -> tuple[bytes, str] | None:
    """What names the received root FDT on this system: (boot info bytes, where they came from)."""
    data = setup_data_kho(setup_data)
    if data is not None:
        return data, f"{setup_data} (type {SETUP_KEXEC_KHO}, SETUP_KEXEC_KHO)"
    fdt = Path(firmware_fdt)
    if fdt.is_file():
        try:
            blob = read_regular(fdt, "boot DTB", max_size=4 << 20)
        except KhoFormatError:
            return None
        from ..model.fdt import parse_fdt

        try:
            chosen = parse_fdt(blob, where=str(fdt)).root.child("chosen")
        except KhoFormatError:
            return None
        if chosen is not None and chosen.get("linux,kho-fdt") is not None:
            return blob, f"{fdt} (/chosen/linux,kho-fdt)"
    return None


def live_capture(
    *,
    kcore: str | os.PathLike[str] = KCORE_PATH,
    debugfs: str | os.PathLike[str] | None = None,
    side: str = "out",
    root_phys: int | None = None,
    boot_info: bytes | None = None,
    setup_data: str | os.PathLike[str] = BOOT_PARAMS_SETUP_DATA,
    firmware_fdt: str | os.PathLike[str] = FIRMWARE_FDT,
) -> Capture:
    """The running system's handover as a :class:`Capture` (see the module doc).

    ``boot_info`` (a boot DTB / setup_data / boot_params copy) and ``root_phys``
    name the root FDT explicitly; without them the receiving side looks at
    ``setup_data`` / ``firmware_fdt``, the sending side searches memory for
    the debugfs prefix.
    """
    if side not in SIDES:
        raise LiveCaptureError(f"side {side!r}", expected="'out' (sending) or 'in' (receiving)")
    dbg = Path(debugfs if debugfs is not None else default_debugfs(side))
    _check_debugfs(dbg, side)
    try:
        kf = KcoreFile(kcore)
    except KhoFormatError as exc:
        raise LiveCaptureError(str(exc)) from None
    try:
        cap = load_capture(dbg)  # the debugfs files; no image yet
    except BaseException:
        kf.close()
        raise
    cap.image = kf.image()
    cap.arch = cap.arch or kf.arch
    cap.page_size = cap.page_size or kf.page_size
    cap.byte_order = cap.byte_order or kf.byteorder
    cap.kind = "live"
    cap.received = side == "in"  # that kernel has released the memory map's pages (state.parse: map_released)
    cap.sources["images"] = [str(kcore)]
    cap.sources["live"] = {"side": side, "kcore": str(kcore), "debugfs": str(dbg)}
    if root_phys is None and boot_info is None and side == "in":
        found = receiving_boot_info(setup_data=setup_data, firmware_fdt=firmware_fdt)
        if found is not None:
            boot_info, origin = found
            cap.sources["boot_info"] = origin
    if root_phys is None and boot_info is not None:
        from .locate import from_boot_info

        root_phys = from_boot_info(boot_info, cap.image, byteorder=cap.byte_order or "little")[0]
        cap.notes.append(f"root FDT at {root_phys:#x}: from {cap.sources.get('boot_info', 'the boot info')}")
    resolve_root_fdt(cap, root_phys=root_phys)
    if cap.root_fdt_phys is None:  # a whole debugfs fdt (kho/in): find where it lies, to keep its page
        from .locate import find_prefix

        hits = find_prefix(cap.image, cap.root_fdt, 4096)
        if hits:
            cap.root_fdt_phys = hits[0]
            cap.notes.append(f"root FDT found in memory at {hits[0]:#x}")
    return cap


__all__ = [
    "DEBUGFS_KHO",
    "BOOT_PARAMS_SETUP_DATA",
    "FIRMWARE_FDT",
    "SIDES",
    "default_debugfs",
    "setup_data_kho",
    "receiving_boot_info",
    "live_capture",
]
