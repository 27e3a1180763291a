"""Reading a fixture directory for ``kho boot`` (the contract is in the
package docstring).

Every refusal is a :class:`~kho_formats.errors.BootError` naming the file
(or an :class:`~kho_formats.errors.FdtError` for a ``root.dtb`` the FDT
reader refuses): a segment file must be a regular file inside the fixture
directory, named by a relative path without ``..``; symlinks are followed
only as long as they stay inside the directory.  Nothing is opened before
it has been checked, so a FIFO cannot block the harness.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..abi.layout import KhoScratch, layout
from ..abi.versions import PAGE_SIZES
from ..errors import BootError, ImageError, KhoFormatError, SpecError, input_value
from ..memory.image import PhysImage
from ..model.fdt import FdtNode, parse_fdt
from ..model.spec import parse_int
from ..safeio import SMALL_FILE_LIMIT, map_regular, read_regular

__all__ = ["BootFixture", "SegmentFile", "load_fixture", "PathLike"]

PathLike = str | os.PathLike

#: fixture ``arch`` -> the machine kho boot runs it on (arm64: QEMU virt; x86_64: QEMU pc)
BOOT_ARCHS = {"arm64": "arm64", "aarch64": "arm64", "x86_64": "x86_64", "x86-64": "x86_64", "amd64": "x86_64"}
BOOT_PAGE_SIZE = 4096
_U64 = 1 << 64


@dataclass(frozen=True)
class SegmentFile:
    """One ``manifest.json`` entry: raw bytes QEMU loads at ``phys``."""

    file: str  # as the manifest names it
    path: Path  # resolved, inside the fixture directory
    phys: int
    size: int


@dataclass
class BootFixture:
    """What ``kho boot`` takes from a fixture directory."""

    directory: Path
    segments: list[SegmentFile]
    #: the segments' bytes at their physical addresses
    image: PhysImage
    fdt_phys: int
    fdt_size: int
    scratch: list[tuple[int, int]]
    scratch_array_phys: int | None
    byte_order: str = "little"
    page_size: int = BOOT_PAGE_SIZE
    cmdline: str = ""
    #: "arm64" or "x86_64"
    arch: str = "arm64"
    #: the root KHO FDT (``root.dtb``, else the bytes at ``fdt_phys``), None if unreadable in memory
    root_fdt: FdtNode | None = None
    #: its bytes
    root_fdt_bytes: bytes | None = None
    #: the root FDT's sub-node names (KHO clients), in order
    clients: list[str] = field(default_factory=list)

    def scratch_array(self) -> bytes:
        """The ``struct kho_scratch[]`` array ``/chosen/linux,kho-scratch`` points at."""
        st = layout(self.page_size, self.byte_order).kho_scratch
        return b"".join(st.build(KhoScratch(a, n)) for a, n in self.scratch)

    def client_node(self, name: str) -> FdtNode | None:
        return self.root_fdt.child(name) if self.root_fdt is not None else None

    def decoded_clients(self) -> dict[str, Any]:
        """Each client sub-blob decoded by its registered client (typed
        result), from the fixture's memory; clients that do not decode are
        left out (the kernel judges those bytes)."""
        if self.root_fdt_bytes is None:
            return {}
        from ..model.clients import decode_clients
        from ..model.state import parse

        # with the image, so the preserved memory map is read (a client's boot
        # truth needs folio orders: LUO memfd contents); without it if the map does not parse
        try:
            st = parse(self.root_fdt_bytes, self.image, page_size=self.page_size, byteorder=self.byte_order)
        except KhoFormatError:
            try:
                st = parse(self.root_fdt_bytes, None, page_size=self.page_size, byteorder=self.byte_order)
            except KhoFormatError:
                return {}
        for sb in st.subblobs:
            if sb.size is not None and self.image.has(sb.phys, sb.size):
                sb.data = self.image.read(sb.phys, sb.size, f"sub-blob {sb.name}")
        reports = decode_clients(st, self.image)
        return {n: r.decoded for n, r in reports.items() if r.error is None and r.decoded is not None}


# -- files -------------------------------------------------------------------------------------------------------


def _checked_file(d: Path, name: str, what: str) -> Path:
    """``d/name`` resolved, refused unless it is a regular file inside ``d``."""
    rel = PurePosixPath(name)
    if not name or "\0" in name or rel.is_absolute() or ".." in rel.parts or os.path.isabs(name):
        raise BootError(f"{what} {input_value(name)}: not a relative path inside the fixture directory {d}")
    p = d / name
    try:
        base = d.resolve(strict=True)
        real = p.resolve(strict=True)
    except FileNotFoundError:
        raise BootError(f"{what} {p} missing") from None
    except (OSError, RuntimeError) as exc:  # symlink loops, permissions
        raise BootError(f"{what} {p} cannot be resolved ({exc})") from None
    if base not in real.parents:
        raise BootError(f"{what} {p} leads outside the fixture directory (to {real})")
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise BootError(f"{what} {p}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise BootError(f"{what} {p} is not a regular file")
    return real


def _read(d: Path, path: Path, what: str, max_size: int) -> bytes:
    """A checked file's bytes through :mod:`~kho_formats.safeio`: a regular
    file inside ``d`` (stat-ed again when opened, without blocking, so a
    FIFO swapped in after :func:`_checked_file` cannot hang the read), at
    most ``max_size`` bytes, refused before reading a byte."""
    return read_regular(path, what, inside=d, max_size=max_size, error=BootError)


#: largest handover.json / manifest.json read (bytes)
JSON_MAX_BYTES = 4 << 20
#: largest root.dtb read (the kernel's own limit for the KHO FDT is far smaller)
FDT_MAX_BYTES = SMALL_FILE_LIMIT


def _json(d: Path, name: str) -> Any:
    if not (d / name).exists() and not (d / name).is_symlink():
        raise BootError(f"fixture directory {d}: missing {d / name}")
    path = _checked_file(d, name, name)
    size = path.stat().st_size
    if size > JSON_MAX_BYTES:  # checked before reading: handover.json and manifest.json are small
        raise BootError(f"{d / name}: {size} bytes", expected=f"at most {JSON_MAX_BYTES} bytes of JSON")
    try:
        return json.loads(_read(d, path, name, JSON_MAX_BYTES))
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise BootError(f"fixture directory {d}: bad JSON in {name} ({str(exc)[:200]})") from None


def _int(value: Any, where: str, *, lo: int = 0, hi: int = _U64) -> int:
    try:
        v = parse_int(value, where)
    except SpecError as exc:
        raise BootError(exc.message, expected=exc.expected) from None
    if not lo <= v < hi:
        raise BootError(f"{where}: {v:#x} is out of range", expected=f"{lo:#x} <= value < {hi:#x}")
    return v


# -- the fixture ------------------------------------------------------------------------------------------------


def _segments(d: Path, manifest: Any) -> tuple[list[SegmentFile], PhysImage]:
    raw = manifest.get("segments") if isinstance(manifest, dict) else manifest
    if not isinstance(raw, list):
        raise BootError(f"{d / 'manifest.json'}: no segment list", expected='{"segments": [{"file", "phys", "size"}]}')
    out: list[SegmentFile] = []
    image = PhysImage()
    mapped: dict[Path, memoryview] = {}  # one mapping per file, however often the manifest names it
    for k, s in enumerate(raw):
        where = f"manifest.json: segment #{k}"
        if not isinstance(s, dict) or not isinstance(s.get("file"), str):
            raise BootError(f"{where} is malformed", expected='{"file": NAME, "phys": ADDR, "size": BYTES}')
        path = _checked_file(d, s["file"], "segment file")
        phys = _int(s.get("phys"), f"{where} ({s['file']}): phys")
        actual = path.stat().st_size
        size = _int(s["size"], f"{where} ({s['file']}): size") if "size" in s else actual
        if actual != size:
            raise BootError(f"segment {d / s['file']}: size {actual} != manifest {size}")
        data = mapped.get(path)
        if data is None:
            data = mapped[path] = memoryview(map_regular(path, "segment file", inside=d, error=BootError))
        if len(data) != size:  # changed under us
            raise BootError(f"segment {d / s['file']}: size {len(data)} != manifest {size}")
        try:
            image.add(phys, data, what=f"segment {s['file']}")
        except ImageError as exc:
            raise BootError(exc.message, phys=exc.phys, path=str(d / s["file"])) from None
        out.append(SegmentFile(s["file"], path, phys, size))
    return out, image


def load_fixture(fixture_dir: PathLike) -> BootFixture:
    """Read and check a fixture directory (see the package docstring)."""
    d = Path(fixture_dir)
    if not d.is_dir():
        raise BootError(f"{d}: not a fixture directory")
    manifest = _json(d, "manifest.json")
    handover = _json(d, "handover.json")
    if not isinstance(handover, dict):
        raise BootError(f"{d / 'handover.json'}: not a JSON object")
    arch = BOOT_ARCHS.get(str(handover.get("arch", "arm64")))
    if arch is None:
        raise BootError(
            f"fixture is for {input_value(handover.get('arch'))}: kho boot boots arm64 and x86_64 kernels",
            expected='arch "arm64" or "x86_64"',
        )
    page_size = _int(handover.get("page_size", BOOT_PAGE_SIZE), "handover.json: page_size")
    if page_size not in PAGE_SIZES:
        raise BootError(f"fixture page_size {page_size}", expected="4096, 16384 or 65536 (arm64 page sizes)")
    byte_order = handover.get("byte_order", "little")
    if byte_order not in ("little", "big"):
        raise BootError(f"handover.json: byte_order {input_value(byte_order)}", expected='"little" or "big"')
    if arch == "x86_64" and (page_size != 4096 or byte_order != "little"):
        raise BootError(
            f"fixture is x86_64 with {page_size // 1024} KiB {byte_order}-endian pages",
            expected="4 KiB little-endian pages (the only x86_64 kind)",
        )
    if "fdt_phys" not in handover:
        raise BootError("handover.json: missing field fdt_phys")
    fdt_phys = _int(handover["fdt_phys"], "handover.json: fdt_phys")
    fdt_size = _int(handover.get("fdt_size") or page_size, "handover.json: fdt_size", lo=1)
    pairs = handover.get("scratch")
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise BootError("handover.json: scratch is missing or malformed", expected="[[address, size], ...]")
    scratch = [
        (_int(a, f"handover.json: scratch[{i}] address"), _int(n, f"handover.json: scratch[{i}] size"))
        for i, (a, n) in enumerate(pairs)
    ]
    sap = handover.get("scratch_array_phys")
    scratch_array_phys = None if sap is None else _int(sap, "handover.json: scratch_array_phys")
    cmdline = handover.get("cmdline") or ""
    if isinstance(cmdline, list) and all(isinstance(a, str) for a in cmdline):
        cmdline = " ".join(cmdline)
    if not isinstance(cmdline, str):
        raise BootError(f"handover.json: cmdline {input_value(cmdline)}", expected="a string or a list of strings")

    segments, image = _segments(d, manifest)
    fx = BootFixture(
        directory=d,
        segments=segments,
        image=image,
        fdt_phys=fdt_phys,
        fdt_size=fdt_size,
        scratch=scratch,
        scratch_array_phys=scratch_array_phys,
        byte_order=byte_order,
        page_size=page_size,
        cmdline=cmdline,
        arch=arch,
    )
    if (d / "root.dtb").exists() or (d / "root.dtb").is_symlink():
        # the harness's own view of the handover: refused when unreadable
        path = _checked_file(d, "root.dtb", "root FDT")
        fx.root_fdt_bytes = _read(d, path, "root FDT", FDT_MAX_BYTES)
        fx.root_fdt = parse_fdt(fx.root_fdt_bytes, where=str(d / "root.dtb")).root
    elif image.has(fdt_phys, fdt_size):
        # the bytes under test: the kernel judges them, an unreadable FDT only lists no clients
        try:
            fx.root_fdt_bytes = image.read(fdt_phys, fdt_size)
            fx.root_fdt = parse_fdt(fx.root_fdt_bytes, where="root FDT", phys=fdt_phys).root
        except KhoFormatError:
            fx.root_fdt = fx.root_fdt_bytes = None
    if fx.root_fdt is not None:
        fx.clients = list(dict.fromkeys(c.name for c in fx.root_fdt.children))
    return fx
