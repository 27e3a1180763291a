"""Finding a handover on disk: root FDT, memory image(s) and side files.

:func:`load_capture` accepts what the ``kho`` command accepts as input:

* a root FDT file (``root.dtb``, debugfs ``kho/out/fdt``);
* a debugfs capture directory: the directory holding ``kho/``, or
  ``debugfs/kho/...``, or ``out/`` (or ``in/``), or the ``out/`` directory
  itself, with ``fdt``, ``sub_fdts/<name>``, ``scratch_phys`` and
  ``scratch_len`` (text, one hex number a line: addresses, then sizes);
* a fixture directory written by ``kho build`` / ``kho convert``
  (``root.dtb`` + ``image.elf`` + ``handover.json``) or a capture directory
  such as ``fixtures/captures/linux-7.3-x86_64-kho-v4`` (``root.dtb`` +
  ``image.elf`` + ``meta.json`` + ``debugfs/``).

Memory images given explicitly (``mem``: ELF core, bundle directory or
``RAW@BASE``, see :meth:`PhysImage.load`) replace the directory's own
``image.elf``; several are merged.  :func:`parse_capture` parses it into a
:class:`~kho_formats.state.KhoState`, filling sub-blobs that the memory image
lacks from ``sub_fdts/<name>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import memmap
from .errors import ImageError, KhoFormatError
from .fdt import fdt_totalsize
from .image import PhysImage
from .layout import layout
from .limits import Limits
from .state import KhoState, parse

PathLike = str | os.PathLike


@dataclass
class Capture:
    """The raw inputs of one handover, before parsing."""

    root_fdt: bytes
    image: PhysImage | None = None
    root_fdt_phys: int | None = None
    scratch: list[tuple[int, int]] = field(default_factory=list)
    #: sub-blob bytes from debugfs ``sub_fdts/<name>``
    sub_fdts: dict[str, bytes] = field(default_factory=dict)
    #: hints from handover.json / meta.json (None: not recorded)
    page_size: int | None = None
    byte_order: str | None = None
    #: memory-map parameters the root FDT does not record (``memmap.param_names()``)
    map_params: dict[str, int] = field(default_factory=dict)
    arch: str | None = None
    #: free regions recorded by a fixture (usable for new metadata pages)
    alloc: list[tuple[int, int]] = field(default_factory=list)
    #: image ranges that are boot plumbing, not handover content (the scratch array)
    boot_ranges: list[tuple[int, int]] = field(default_factory=list)
    #: "fdt-file" | "debugfs" | "fixture"
    kind: str = "fdt-file"
    #: which file supplied what (for reports)
    sources: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise KhoFormatError(f"{path}: is a directory, expected {what}") from None
    except OSError as exc:
        raise KhoFormatError(f"cannot read {what} {path}: {exc.strerror}") from None


def _hex_lines(path: Path) -> list[int]:
    out = []
    for k, line in enumerate(_read(path, "scratch list").decode("ascii", "replace").splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            out.append(int(line, 16))
        except ValueError:
            raise KhoFormatError(
                f"{path}:{k + 1}: {line!r} is not a hex number", expected="one hex number a line"
            ) from None
    return out


def read_scratch(out_dir: Path) -> list[tuple[int, int]]:
    """``scratch_phys`` (addresses) + ``scratch_len`` (sizes) -> ``[(addr, size)]``."""
    pp, lp = out_dir / "scratch_phys", out_dir / "scratch_len"
    if not pp.exists() and not lp.exists():
        return []
    if not (pp.exists() and lp.exists()):
        raise KhoFormatError(f"{out_dir}: has only one of scratch_phys / scratch_len", expected="both files")
    addrs, sizes = _hex_lines(pp), _hex_lines(lp)
    if len(addrs) != len(sizes):
        raise KhoFormatError(
            f"{out_dir}: scratch_phys has {len(addrs)} lines, scratch_len {len(sizes)}", expected="one size per address"
        )
    return list(zip(addrs, sizes))


def find_debugfs_dir(d: Path) -> Path | None:
    """The debugfs ``kho/out`` (or ``kho/in``) directory under ``d``, if any."""
    for rel in ("kho/out", "debugfs/kho/out", "out", "kho/in", "debugfs/kho/in", "in", "."):
        cand = (d / rel) if rel != "." else d
        if cand.is_dir() and ((cand / "fdt").is_file() or (cand / "sub_fdts").is_dir()):
            return cand
    return None


def _json(path: Path) -> dict:
    try:
        data = json.loads(_read(path, "JSON file"))
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise KhoFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise KhoFormatError(f"{path}: not a JSON object")
    return data


def _pairs(value, where: str) -> list[tuple[int, int]]:
    try:
        return [(int(a), int(s)) for a, s in value]
    except (TypeError, ValueError, OverflowError):
        raise KhoFormatError(f"{where}: expected a list of [address, size] pairs") from None


def _meta_int(meta: dict, key: str, where: Path) -> int | None:
    """An integer hint from handover.json / meta.json (None when absent)."""
    v = meta.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise KhoFormatError(f"{where}: {key} is {v!r}", expected="an integer")
    return v


def load_images(specs: Sequence[str]) -> PhysImage | None:
    """Load and merge ``--mem`` images (ELF core, bundle dir, ``RAW@BASE``)."""
    img: PhysImage | None = None
    for spec in specs:
        one = PhysImage.load(spec)
        img = one if img is None else img.merged(one)
    return img


def load_capture(path: PathLike, mem: Sequence[str] = (), *, root_phys: int | None = None) -> Capture:
    """Find root FDT, image, scratch and side files for ``path`` (see module doc)."""
    p = Path(path)
    if not p.exists():
        raise KhoFormatError(f"{p}: no such file or directory")
    cap: Capture | None = None
    if p.is_file():
        cap = Capture(root_fdt=_read(p, "root FDT"), kind="fdt-file", sources={"root_fdt": str(p)})
    else:
        cap = _load_dir(p, use_own_image=not mem)
    if mem:
        cap.image = load_images(mem)
        cap.sources["images"] = list(mem)
    if root_phys is not None:
        cap.root_fdt_phys = root_phys
    return cap


def _load_dir(d: Path, *, use_own_image: bool) -> Capture:
    dbg = find_debugfs_dir(d)
    root_path = d / "root.dtb"
    if not root_path.is_file():
        if dbg is None or not (dbg / "fdt").is_file():
            raise KhoFormatError(f"{d}: no root FDT found", expected="root.dtb, or a debugfs capture with kho/out/fdt")
        root_path = dbg / "fdt"
    cap = Capture(root_fdt=_read(root_path, "root FDT"), sources={"root_fdt": str(root_path)})
    cap.kind = "debugfs" if root_path.name == "fdt" else "fixture"
    if dbg is not None:
        cap.sources["debugfs"] = str(dbg)
        sub = dbg / "sub_fdts"
        if sub.is_dir():
            for f in sorted(sub.iterdir()):
                if f.is_file():
                    cap.sub_fdts[f.name] = _read(f, "sub-FDT")
        cap.scratch = read_scratch(dbg)
        if cap.kind == "fixture" and (dbg / "fdt").is_file():
            if _read(dbg / "fdt", "root FDT") != cap.root_fdt:
                cap.notes.append(f"{root_path} and {dbg / 'fdt'} differ: using {root_path}")
    meta: dict = {}
    for name in ("handover.json", "meta.json"):
        if (d / name).is_file():
            meta = _json(d / name)
            cap.sources["metadata"] = str(d / name)
            break
    mpath = Path(cap.sources.get("metadata", d))
    fdt_phys = _meta_int(meta, "fdt_phys", mpath)
    fdt_phys = _meta_int(meta, "root_fdt_phys", mpath) if fdt_phys is None else fdt_phys
    if fdt_phys is not None:
        cap.root_fdt_phys = fdt_phys
    if meta.get("page_size"):
        cap.page_size = _meta_int(meta, "page_size", mpath)
    bo = meta.get("byte_order")
    if bo in ("little", "big"):
        cap.byte_order = bo
    for name in memmap.param_names():
        value = _meta_int(meta, name, mpath)
        if value:
            cap.map_params[name] = value
    if meta.get("arch"):
        cap.arch = str(meta["arch"])
    if "scratch" in meta:
        cap.scratch = _pairs(meta["scratch"], f"{d}/handover.json: scratch")
    if meta.get("alloc"):
        cap.alloc = _pairs(meta["alloc"], f"{d}/handover.json: alloc")
    sa = _meta_int(meta, "scratch_array_phys", mpath)
    if sa is not None:
        n = len(cap.scratch) * layout(byteorder=cap.byte_order or "little").kho_scratch_size  # struct kho_scratch[]
        if n:
            cap.boot_ranges.append((int(sa), int(sa) + n))
    if use_own_image:
        if (d / "image.elf").is_file():
            cap.image = PhysImage.from_elf(d / "image.elf")
            cap.sources["images"] = [str(d / "image.elf")]
        elif (d / PhysImage.MANIFEST).is_file():
            cap.image = PhysImage.from_bundle(d)
            cap.sources["images"] = [str(d / PhysImage.MANIFEST)]
    return cap


def parse_capture(
    cap: Capture,
    *,
    version: str | None = None,
    page_size: int | None = None,
    byteorder: str | None = None,
    v1_bitmap: str | None = None,
    limits: Limits | None = None,
) -> KhoState:
    """Parse a :class:`Capture`; explicit arguments win over recorded hints.

    Sub-blobs the memory image lacks are taken from debugfs ``sub_fdts/<name>``
    (trimmed to ``blob-size`` when the root FDT gives one).
    """
    ps = page_size or cap.page_size or 4096
    bo = byteorder or cap.byte_order or "little"
    st = parse(
        cap.root_fdt,
        cap.image,
        version=version,
        page_size=ps,
        byteorder=bo,
        v1_bitmap=v1_bitmap,  # explicit "auto" detects; None uses what a fixture recorded
        map_params=cap.map_params,
        limits=limits,
        root_fdt_phys=cap.root_fdt_phys,
        scratch=cap.scratch,
    )
    st.notes[:0] = cap.notes
    for sb in st.subblobs:
        if sb.data is not None or sb.name not in cap.sub_fdts:
            continue
        data = cap.sub_fdts[sb.name]
        if sb.size is None:
            try:
                sb.size = fdt_totalsize(data, where=f"sub_fdts/{sb.name}")
                sb.size_source = "fdt-header"
            except KhoFormatError:
                sb.size = len(data)
                sb.size_source = "debugfs"
        if len(data) < sb.size:
            st.notes.append(f"sub_fdts/{sb.name}: {len(data)} bytes, but the blob is {sb.size} bytes: not used")
            continue
        sb.data = data[: sb.size]
        st.notes.append(f"sub-blob {sb.name!r}: bytes taken from debugfs sub_fdts/{sb.name}")
    return st


def strip_ranges(image: PhysImage, ranges: Sequence[tuple[int, int]]) -> PhysImage:
    """A copy of ``image`` without the byte ranges ``[start, end)``."""
    cuts = sorted((int(a), int(b)) for a, b in ranges if b > a)
    out = PhysImage()
    for seg in image:
        pieces = [(seg.phys, seg.end)]
        for a, b in cuts:
            nxt = []
            for s, e in pieces:
                if b <= s or a >= e:
                    nxt.append((s, e))
                    continue
                if s < a:
                    nxt.append((s, a))
                if b < e:
                    nxt.append((b, e))
            pieces = nxt
        for s, e in pieces:
            out.add(s, bytes(seg.data[s - seg.phys : e - seg.phys]))
    return out


__all__ = [
    "Capture",
    "load_capture",
    "parse_capture",
    "load_images",
    "read_scratch",
    "find_debugfs_dir",
    "strip_ranges",
    "ImageError",
]
