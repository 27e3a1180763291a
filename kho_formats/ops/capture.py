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

* a memory image alone (an ELF core such as a full ``vmcore``, or a kdump
  file): the root FDT is found in it (:mod:`kho_formats.ops.locate`).

Memory images given explicitly (``mem``: ELF core, kdump file, bundle
directory or ``RAW@BASE``, see :meth:`PhysImage.load`) replace the
directory's own ``image.elf``; several are merged.

The root FDT: a debugfs ``fdt`` that is only a prefix (its ``totalsize``
exceeds the file, as on every real Linux 7.3 system) is completed from the
image, at ``root_phys`` or wherever a page starts with the prefix;
``root_phys`` given explicitly reads the FDT from the image; with no FDT file
at all, the image is searched (``boot_info``: an arm64 boot DTB, an x86
``setup_data`` / ``boot_params`` copy, else a scan of every page).  A note
says what was done.

Every file is opened through :mod:`kho_formats.safeio`: regular files only,
sizes checked before reading, files under a capture directory confined to it
(a ``sub_fdts/<name>`` symlink leading out is refused), unused sub-FDT files
never read.  :func:`parse_capture` parses it into a
:class:`~kho_formats.model.state.KhoState`, filling sub-blobs that the memory image
lacks from ``sub_fdts/<name>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..abi.layout import layout
from ..errors import ImageError, KhoFormatError, input_value
from ..limits import Limits
from ..memory.image import LazyData, PhysImage, image_format_of
from ..model import memmap
from ..model.fdt import fdt_totalsize
from ..model.state import KhoState, parse
from ..safeio import read_regular
from . import locate

PathLike = str | os.PathLike


@dataclass
class Capture:
    """The raw inputs of one handover, before parsing."""

    root_fdt: bytes
    image: PhysImage | None = None
    root_fdt_phys: int | None = None
    scratch: list[tuple[int, int]] = field(default_factory=list)
    #: sub-blob bytes from debugfs ``sub_fdts/<name>`` (read on first use)
    sub_fdts: SubFdtFiles = field(default_factory=lambda: SubFdtFiles())
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
    #: the handover as its receiving kernel holds it after boot (debugfs ``kho/in``,
    #: ``kho capture --side in``): its memory map pages were released (``state.parse(map_released=True)``)
    received: bool = False
    #: debugfs ``kho/in/fdt`` beside a ``kho/out`` without ``fdt`` (a kernel booted through KHO):
    #: the root FDT this kernel received, which the search of the image for its own passes over
    incoming_root_fdt: bytes | None = None
    #: a debugfs ``kho/out`` without ``fdt``: the root FDT is searched for in the image, as the outgoing one
    search_outgoing: bool = False
    #: which file supplied what (for reports)
    sources: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


#: the largest side file read (scratch lists, JSON metadata)
SIDE_FILE_LIMIT = 16 << 20


def _read(path: Path, what: str, *, inside: Path | None = None, max_size: int = SIDE_FILE_LIMIT) -> bytes:
    """A regular file (see :mod:`kho_formats.safeio`), at most ``max_size`` bytes."""
    return read_regular(path, what, inside=inside, max_size=max_size)


class SubFdtFiles(Mapping[str, bytes]):
    """debugfs ``sub_fdts/<name>`` files, read when first asked for (an unused
    one is never read) and confined to the capture directory."""

    def __init__(self, directory: Path | None = None, inside: Path | None = None) -> None:
        self._paths: dict[str, Path] = {}
        self._data: dict[str, bytes] = {}
        self._inside = inside
        if directory is not None and directory.is_dir():
            for f in sorted(directory.iterdir()):
                if not f.is_dir():
                    self._paths[f.name] = f

    def __getitem__(self, name: str) -> bytes:
        if name not in self._data:
            path = self._paths[name]  # KeyError when absent, as a dict
            self._data[name] = _read(path, "sub-FDT", inside=self._inside, max_size=locate.MAX_SUB_BLOB)
        return self._data[name]

    def __setitem__(self, name: str, data: bytes) -> None:
        self._paths.setdefault(name, Path(name))
        self._data[name] = data

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def paths(self) -> dict[str, Path]:
        return dict(self._paths)


def _hex_lines(path: Path, inside: Path | None = None) -> list[int]:
    out = []
    for k, line in enumerate(_read(path, "scratch list", inside=inside).decode("ascii", "replace").splitlines()):
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


def read_scratch(out_dir: Path, inside: Path | None = None) -> list[tuple[int, int]]:
    """``scratch_phys`` (addresses) + ``scratch_len`` (sizes) -> ``[(addr, size)]``."""
    pp, lp = out_dir / "scratch_phys", out_dir / "scratch_len"
    if not pp.exists() and not lp.exists():
        return []
    if not (pp.exists() and lp.exists()):
        raise KhoFormatError(f"{out_dir}: has only one of scratch_phys / scratch_len", expected="both files")
    addrs, sizes = _hex_lines(pp, inside), _hex_lines(lp, inside)
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
        data = json.loads(_read(path, "JSON file", inside=path.parent))
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
        raise KhoFormatError(f"{where}: {key} is {input_value(v)}", expected="an integer")
    return v


def load_images(specs: Sequence[str]) -> PhysImage | None:
    """Load and merge ``--mem`` images (ELF core, bundle dir, ``RAW@BASE``)."""
    img: PhysImage | None = None
    for spec in specs:
        one = PhysImage.load(spec)
        img = one if img is None else img.merged(one)
    return img


def _is_image_file(p: Path) -> bool:
    """An ELF core or a file of a registered image format (kdump ...), not a root FDT, given as the input."""
    try:
        with open(p, "rb", opener=lambda f, fl: os.open(f, fl | os.O_NONBLOCK)) as fh:
            head = fh.read(16)
    except OSError:
        return False
    return image_format_of(head) is not None


def load_capture(
    path: PathLike,
    mem: Sequence[str] = (),
    *,
    root_phys: int | None = None,
    boot_info: PathLike | None = None,
    resolve: bool = True,
) -> Capture:
    """Find root FDT, image, scratch and side files for ``path`` (see module doc);
    ``resolve=False`` leaves :func:`resolve_root_fdt` to the caller (an image added later)."""
    p = Path(path)
    if not p.exists():
        raise KhoFormatError(f"{p}: no such file or directory")
    cap: Capture | None = None
    if p.is_file() and _is_image_file(p):
        cap = Capture(root_fdt=b"", kind="image", sources={"images": [str(p)]})
        cap.image = PhysImage.load(str(p))
        if mem:
            cap.image = cap.image.merged(load_images(mem))  # type: ignore[arg-type]
            cap.sources["images"] = [str(p), *mem]
        mem = ()
    elif p.is_file() or not p.is_dir():
        cap = Capture(
            root_fdt=_read(p, "root FDT", max_size=locate.MAX_ROOT_FDT),
            kind="fdt-file",
            sources={"root_fdt": str(p)},
        )
    else:
        cap = _load_dir(p, use_own_image=not mem)
    if mem:
        cap.image = load_images(mem)
        cap.sources["images"] = list(mem)
    if cap.image is not None and cap.arch is None:
        cap.arch = cap.image.arch
    if cap.image is not None and cap.byte_order is None:  # a dump's own byte order is the handover's
        cap.byte_order = cap.image.byteorder
    binfo = _read(Path(boot_info), "boot info", max_size=1 << 20) if boot_info is not None else None
    if resolve:
        resolve_root_fdt(cap, root_phys=root_phys, boot_info=binfo)
    return cap


def resolve_root_fdt(cap: Capture, *, root_phys: int | None = None, boot_info: bytes | None = None) -> None:
    """Complete or find the root FDT in ``cap.image`` (see the module doc); notes say what was done."""
    img = cap.image
    ps = cap.page_size or 4096
    if root_phys is not None:
        cap.root_fdt_phys = root_phys
    if not cap.root_fdt and img is None and cap.search_outgoing and root_phys is None:
        raise KhoFormatError(
            f"{cap.sources['debugfs']} has no fdt: this kernel was booted through KHO (Linux 7.3 creates "
            "kho/out/fdt only in a kernel that was not), so its own root FDT is only in its memory",
            expected="--mem IMAGE (a dump of this kernel's memory), or --root-phys ADDR with it",
        )
    if not cap.root_fdt and img is None:  # an empty root FDT file and nothing to search
        src = cap.sources.get("root_fdt", "the input")
        raise KhoFormatError(
            f"{src}: empty: no root FDT and no memory image to find one in",
            expected="a root FDT, an ELF core, a kdump file or a capture directory",
        )
    if not cap.root_fdt:  # an image alone: find the root FDT in it
        assert img is not None
        name = ", ".join(map(str, cap.sources.get("images", []))) or "the image"
        if root_phys is None and boot_info is not None:
            addrs = locate.from_boot_info(boot_info, img, byteorder=cap.byte_order or "little")
            root_phys = addrs[0]
            cap.notes.append(f"root FDT at {root_phys:#x}: from the boot info")
        if root_phys is not None:
            cap.root_fdt = locate.read_fdt_at(img, root_phys)
            cap.root_fdt_phys = root_phys
            cap.sources["root_fdt"] = f"{name} @ {root_phys:#x}"
            return
        found = locate.scan_root_fdts(img, 4096)
        skipped = locate.skipped_note(img, name)
        if not found:
            raise KhoFormatError(
                f"{name}: no KHO root FDT found in the image (no page-aligned FDT with a known compatible "
                "and preserved-memory-map)" + (f"; {skipped}" if skipped else ""),
                expected="--root-phys ADDR, --boot-info FILE or a debugfs capture",
            )
        if skipped:
            cap.notes.append(skipped)
        use = found[0]
        if cap.search_outgoing:  # kho/out without fdt: the outgoing one, not kho/in's
            from .root_choice import choose_outgoing

            subs = cap.sub_fdts
            choice = choose_outgoing(
                img, found, incoming_fdt=cap.incoming_root_fdt, byteorder=cap.byte_order or "little",
                out_sub_fdts={n: (lambda n=n: subs[n]) for n in subs},
            )  # fmt: skip
            use = next(c for c in found if c.phys == choice.phys)
            cap.notes.append(f"{cap.sources['debugfs']} has no fdt (a kernel booted through KHO): {choice.reason}")
            cap.sources["root_fdt_choice"] = choice.to_json()
            cap.sources["root_fdt_candidates"] = [c.phys for c in found]
            cap.root_fdt = locate.read_fdt_at(img, use.phys)
            cap.root_fdt_phys = use.phys
            cap.sources["root_fdt"] = f"{name} @ {use.phys:#x}"
            return
        if len(found) == 1:
            cap.notes.append(f"root FDT found in the image at {use.describe()}")
        else:  # several (a kernel booted through KHO also holds the root it received): the newest by the image
            from .root_choice import choose_outgoing

            choice = choose_outgoing(img, found, byteorder=cap.byte_order or "little")
            use = next(c for c in found if c.phys == choice.phys)
            cap.notes.append(
                f"{len(found)} KHO root FDTs found in the image: {'; '.join(c.describe() for c in found)}; "
                f"{choice.reason}"
            )
            cap.sources["root_fdt_choice"] = choice.to_json()
        cap.root_fdt = locate.read_fdt_at(img, use.phys)
        cap.root_fdt_phys = use.phys
        cap.sources["root_fdt"] = f"{name} @ {use.phys:#x}"
        cap.sources["root_fdt_candidates"] = [c.phys for c in found]
        return
    total = locate.header_totalsize(cap.root_fdt)
    prefix = total is not None and total > len(cap.root_fdt)
    src = cap.sources.get("root_fdt", "root FDT")
    if img is None:
        return
    if root_phys is not None:  # explicit: the image's FDT at that address wins
        if not img.has(root_phys, 8):
            if prefix:
                raise ImageError(
                    f"{src} is a prefix ({len(cap.root_fdt)} of {total} bytes) and the image has no memory "
                    f"at --root-phys {root_phys:#x}",
                    phys=root_phys,
                )
            return
        whole = locate.read_fdt_at(img, root_phys)
        if whole[: len(cap.root_fdt)] != cap.root_fdt[: len(whole)]:
            cap.notes.append(f"{src} differs from the FDT at {root_phys:#x} in the image: using the image's")
        elif prefix:
            cap.notes.append(
                f"{src} is a prefix ({len(cap.root_fdt)} of {total} bytes, as debugfs exposes it): "
                f"the whole root FDT read from the image at {root_phys:#x}"
            )
        cap.root_fdt = whole
        return
    if not prefix:
        # a whole debugfs root FDT and an image: where the image holds it (a fixture's address is
        # the one handover.json records: one without it is a problem check reports, not guessed here)
        if cap.root_fdt_phys is None and cap.sources.get("debugfs"):
            where = locate.find_prefix(img, cap.root_fdt, 4096 if ps % 4096 == 0 else ps)
            if where:
                more = f" (also at {', '.join(f'{a:#x}' for a in where[1:])})" if len(where) > 1 else ""
                cap.notes.append(f"root FDT at {where[0]:#x}: the image holds {src} there{more}")
                cap.root_fdt_phys = where[0]
        return
    at = cap.root_fdt_phys
    skipped = ""
    if at is not None and img.has(at, len(cap.root_fdt)) and img.read(at, len(cap.root_fdt)) == cap.root_fdt:
        where = [at]
    else:
        where = locate.find_prefix(img, cap.root_fdt, 4096 if ps % 4096 == 0 else ps)
        skipped = locate.skipped_note(img, "the image")
    if not where:
        raise KhoFormatError(
            f"{src} is a prefix ({len(cap.root_fdt)} of {total} bytes, as debugfs exposes it) and no page of "
            "the image starts with it" + (f"; {skipped}" if skipped else ""),
            expected="--root-phys ADDR naming the root FDT in the image",
        )
    if skipped:
        cap.notes.append(skipped)
    whole = locate.read_fdt_at(img, where[0])
    more = f" (also at {', '.join(f'{a:#x}' for a in where[1:])})" if len(where) > 1 else ""
    cap.notes.append(
        f"{src} is a prefix ({len(cap.root_fdt)} of {total} bytes, as debugfs exposes it): the whole root "
        f"FDT recovered from the image at {where[0]:#x}{more}"
    )
    cap.root_fdt = whole
    cap.root_fdt_phys = where[0]


def _is_kho_out(dbg: Path) -> bool:
    """``dbg`` is a debugfs ``kho/out`` (named so, or with the scratch files only ``out`` has)."""
    return dbg.resolve().name == "out" or (dbg / "scratch_phys").is_file()


def _load_dir(d: Path, *, use_own_image: bool) -> Capture:
    dbg = find_debugfs_dir(d)
    root_path: Path | None = d / "root.dtb"
    if not root_path.is_file():
        if dbg is not None and not (dbg / "fdt").is_file() and _is_kho_out(dbg):
            root_path = None  # a kernel booted through KHO: its root FDT is found in the image (resolve_root_fdt)
        elif dbg is None or not (dbg / "fdt").is_file():
            raise KhoFormatError(f"{d}: no root FDT found", expected="root.dtb, or a debugfs capture with kho/out/fdt")
        else:
            root_path = dbg / "fdt"
    if root_path is None:
        assert dbg is not None
        cap = Capture(root_fdt=b"", kind="debugfs", sources={}, search_outgoing=True)
        incoming = dbg.parent / "in" / "fdt"
        if incoming.is_file():
            cap.incoming_root_fdt = _read(incoming, "kho/in/fdt", inside=dbg.parent, max_size=locate.MAX_ROOT_FDT)
            cap.sources["incoming_root_fdt"] = str(incoming)
    else:
        cap = Capture(
            root_fdt=_read(root_path, "root FDT", inside=d, max_size=locate.MAX_ROOT_FDT),
            sources={"root_fdt": str(root_path)},
        )
        cap.kind = "debugfs" if root_path.name == "fdt" else "fixture"
    if dbg is not None:
        cap.sources["debugfs"] = str(dbg)
        # debugfs kho/in (the receiving side): named "in", and without the scratch_phys /
        # scratch_len files only kho/out has (kernel/liveupdate/kexec_handover_debugfs.c)
        cap.received = (
            cap.kind == "debugfs"
            and dbg.resolve().name == "in"
            and not (dbg / "scratch_phys").exists()
            and not (dbg / "scratch_len").exists()
        )
        cap.sub_fdts = SubFdtFiles(dbg / "sub_fdts", inside=d)
        cap.scratch = read_scratch(dbg, inside=d)
        if cap.kind == "fixture" and root_path is not None and (dbg / "fdt").is_file():
            if _read(dbg / "fdt", "root FDT", inside=d, max_size=locate.MAX_ROOT_FDT) != cap.root_fdt:
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
    if meta.get("received") is True:  # a kho capture --side in: no memory map in it
        cap.received = True
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
            cap.image = PhysImage.from_elf(d / "image.elf")  # mapped, not read
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
        map_released=cap.received,
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
    out.arch = image.arch
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
        for s, e in pieces:  # views, not copies: a mapped dump stays mapped
            d = seg.data
            part = d.sub(s - seg.phys, e - s) if isinstance(d, LazyData) else d[s - seg.phys : e - seg.phys]
            out.add(s, part)
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
