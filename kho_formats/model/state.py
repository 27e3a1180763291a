"""A handover as data: :class:`KhoState`, and the generic :func:`parse` /
:func:`build` that turn root FDT bytes plus a physical memory image into one
and back.  Everything version-specific comes from the ABI description
(``schemas/kho-vN.toml``): property names, memory-map kind, radix depth.

Data flows one way on each path::

    parse:  root FDT --fdt--> (version, map phys, sub-nodes)
            + PhysImage --memmap reader--> PageSet --> KhoState
    build:  KhoState --memmap writer(allocator)--> pages --> PhysImage + root FDT
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import abi
from .._types import BYTES_LIKE, as_byteorder, check_type
from ..abi.fdt_header import has_fdt_magic
from ..abi.layout import Layout, layout
from ..abi.versions import AbiVersion
from ..errors import FdtError, KhoFormatError, PropertyError, ScratchError, VersionError
from ..findings import ERROR, WARNING
from ..limits import Budget, Limits
from ..memory.alloc import PageAllocator
from ..memory.image import BytesLike, PhysImage
from ..memory.pageset import PageSet
from ..text import fmt_strings
from .fdt import (
    RSVMAP_PACKED,
    RSVMAP_SEQUENTIAL,
    FdtNode,
    build_fdt,
    fdt_totalsize,
    get_strings,
    get_u64,
    parse_fdt,
    sequential_strings,
    str_bytes,
    u64_bytes,
)
from .memmap import MapCodec, MapContext, MemoryMap, codec_for

ROOT = "root FDT"

#: ``KhoState.fdt_history`` values (KHO-ABI.md 2.1):
#:
#: - ``"auto"``: what a kernel of the version leaves with these sub-trees:
#:   kho-v1 (``[fdt] style = "sequential-write"``) writes the whole FDT at
#:   finalize, ``"sequential"``; v2+ write it once at boot and edit it per
#:   sub-tree, ``"packed"`` when there is a sub-tree, else ``"sequential"``;
#: - ``"sequential"``: as ``fdt_create`` .. ``fdt_finish`` left it, never
#:   reopened (v2+: no ``kho_add_subtree``/``kho_remove_subtree`` call yet);
#: - ``"packed"``: reopened with ``fdt_open_into`` and packed with
#:   ``fdt_pack`` at least once; with no sub-node left, the sub-trees were
#:   added and removed again, and their property names stay in the strings block.
FDT_HISTORIES = ("auto", "sequential", "packed")


@dataclass
class SubBlob:
    """One root sub-node: a client's preserved blob."""

    name: str
    phys: int
    size: int | None = None
    data: bytes | None = None
    #: where ``size`` came from: "blob-size", "fdt-header" or "unknown"
    size_source: str = "unknown"
    #: properties of the sub-node this version does not define (kept, reported)
    extra_props: list[tuple[str, bytes]] = field(default_factory=list)
    #: values of the other sub-node properties the version declares (schema ``[[subnode.property]]``)
    values: dict[str, int] = field(default_factory=dict)

    def key(self) -> tuple[object, ...]:
        if self.values:
            return (self.name, self.phys, self.size, self.data, tuple(sorted(self.values.items())))
        return (self.name, self.phys, self.size, self.data)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "phys": self.phys,
            "size": self.size,
            "size_source": self.size_source,
            "in_image": self.data is not None,
            "extra_props": [n for n, _ in self.extra_props],
            **({"values": dict(self.values)} if self.values else {}),
        }


@dataclass(eq=False)
class KhoState:
    version: str
    page_size: int = 4096
    byteorder: str = "little"
    preserved: PageSet = field(default_factory=PageSet)
    subblobs: list[SubBlob] = field(default_factory=list)
    scratch: list[tuple[int, int]] = field(default_factory=list)  # (addr, size)
    root_fdt_phys: int | None = None
    extra_compatible: list[str] = field(default_factory=list)
    #: parameters of the memory map that the root FDT does not record
    #: (``memmap.param_names()``; kho-v1: ``v1_bitmap_bytes``)
    map_params: dict[str, int] = field(default_factory=dict)
    #: what the kernel did to the root FDT since writing it, which decides its
    #: layout (:data:`FDT_HISTORIES`, :func:`root_fdt_bytes`); a parse records
    #: what the blob's layout shows
    fdt_history: str = "auto"
    # what the parse saw (not part of equality)
    memmap_phys: int = 0
    map_read: bool = True
    #: the handover as its receiving kernel holds it after boot: the map's pages were released (not read)
    map_released: bool = False
    #: the map a parse walked or a build wrote (its pages and their placement)
    memmap: MemoryMap | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def abi(self) -> AbiVersion:
        return abi.get_version(self.version)

    @property
    def layout(self) -> Layout:
        return layout(self.page_size, self.byteorder, self.version)

    @property
    def map_context(self) -> MapContext:
        return MapContext(self.abi, self.page_size, self.byteorder)

    @property
    def codec(self) -> MapCodec:
        """The codec of this version's memory-map kind."""
        return codec_for(self.abi)

    def subblob(self, name: str) -> SubBlob | None:
        for s in self.subblobs:
            if s.name == name:
                return s
        return None

    def metadata_pages(self) -> list[tuple[int, int]]:
        """Byte ranges of the memory map's own pages (nodes, chunks, bitmaps)."""
        return self.memmap.metadata_ranges(self.page_size) if self.memmap is not None else []

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KhoState):
            return NotImplemented
        return (
            self.version == other.version
            and self.page_size == other.page_size
            and self.byteorder == other.byteorder
            and self.preserved == other.preserved
            and [s.key() for s in self.subblobs] == [s.key() for s in other.subblobs]
            and list(self.scratch) == list(other.scratch)
        )

    def copy(self) -> KhoState:
        """Independent copy (the preserved set's read-only run arrays are shared)."""
        return dataclasses.replace(
            self,
            preserved=self.preserved.copy(),
            subblobs=[
                dataclasses.replace(s, extra_props=list(s.extra_props), values=dict(s.values)) for s in self.subblobs
            ],
            scratch=list(self.scratch),
            extra_compatible=list(self.extra_compatible),
            notes=list(self.notes),
            map_params=dict(self.map_params),
            memmap=self.memmap.copy() if self.memmap is not None else None,
        )


# -- parse -------------------------------------------------------------------------


def _scratch_areas(scratch: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``kho_scratch`` (addr, size) pairs as ints, refusing ones no u64 can hold."""
    out = []
    for k, area in enumerate(scratch):
        try:
            a, s = (int(x) for x in area)
        except (TypeError, ValueError):
            raise ScratchError(f"scratch area #{k} is not an (addr, size) pair: {area!r}") from None
        if a < 0 or s < 0 or a + s > 1 << 64:
            raise ScratchError(
                f"scratch area #{k} ({a:#x} + {s:#x}) is outside the 64-bit physical space",
                phys=a if 0 <= a < 1 << 64 else None,
                expected="0 <= addr, addr + size <= 2**64",
            )
        out.append((a, s))
    return out


def _check_parse_args(
    root_fdt: object,
    image: object,
    version: object,
    page_size: object,
    byteorder: object,
    root_fdt_phys: object,
    limits: object,
) -> None:
    f = "parse"
    check_type(root_fdt, BYTES_LIKE, "root_fdt", f)
    check_type(image, PhysImage, "image", f, optional=True)
    check_type(version, str, "version", f, optional=True)
    check_type(page_size, int, "page_size", f)
    check_type(byteorder, str, "byteorder", f)
    check_type(root_fdt_phys, int, "root_fdt_phys", f, optional=True)
    check_type(limits, Limits, "limits", f, optional=True)


#: the history a root FDT's reserve-map offset shows (anything else: "auto")
_LAYOUT_HISTORY = {RSVMAP_SEQUENTIAL: "sequential", RSVMAP_PACKED: "packed"}


#: the finding code of :func:`root_fdt_alignment` (``kho check``; ``kho inspect`` notes the same words)
ROOT_FDT_ALIGN = "root-fdt-align"


def root_fdt_alignment(phys: int, page_size: int) -> tuple[str, str] | None:
    """``(severity, message)`` of the one rule on the root FDT's address, or None when it is aligned.

    What Linux 7.3 does with it (``kho_populate()``, kernel/liveupdate/kexec_handover.c): it maps the
    root FDT with ``early_memremap()``, which keeps the offset into the page, and calls libfdt's
    ``fdt_check_header()``, which refuses an FDT that is not 8-byte aligned (``-FDT_ERR_ALIGNMENT``):
    "disabling KHO revival", an error.  No other check of the address is made, so an 8-byte aligned
    root FDT inside a page is read, but a kernel never hands one over (it allocates the root FDT as
    a whole page, ``kho_alloc_preserve(PAGE_SIZE)``): a warning.  ``kho inspect`` and ``kho check``
    both say this, in these words."""
    if phys % 8:
        return (
            ERROR,
            f"the root FDT at {phys:#x} is not 8-byte aligned: Linux 7.3 refuses it (kho_populate(): "
            "fdt_check_header() returns -FDT_ERR_ALIGNMENT) and disables KHO revival",
        )
    if phys % page_size:
        return (
            WARNING,
            f"the root FDT at {phys:#x} is not aligned to {page_size}-byte pages: Linux 7.3 reads it "
            "(kho_populate() checks no more than libfdt's 8-byte alignment) but never hands one over so "
            "(it allocates the root FDT as a whole page)",
        )
    return None


def root_fdt_align_note(phys: int, page_size: int) -> str | None:
    """The note ``kho inspect`` gives for :func:`root_fdt_alignment` (None when aligned)."""
    rule = root_fdt_alignment(phys, page_size)
    return None if rule is None else f"{rule[0]}: [{ROOT_FDT_ALIGN}] {rule[1]}"


def _plausible_phys(v: int, page_size: int) -> bool:
    return v % page_size == 0 and v < (1 << 52)


#: why the receiving side's memory map is not read (``parse(map_released=True)``)
MAP_RELEASED_NOTE = (
    "preserved memory map at {phys:#x} not read: this is the handover as the receiving kernel holds it after "
    "boot, and that kernel keeps the map's pages only until it has read them (they are not themselves preserved: "
    "they go to the page allocator), so the memory there has been reused; the root FDT, sub-blobs and what the "
    "clients reference are read "
    "(what a client consumed at boot no longer decodes: LUO frees luo_ser in its early init, test_kho puts "
    "its folios and frees folios_info, kho_restore_vmalloc() frees the chunk pages)"
)


def parse(
    root_fdt: bytes,
    image: PhysImage | None = None,
    *,
    version: str | None = None,
    page_size: int = 4096,
    byteorder: str = "little",
    v1_bitmap: str | None = None,
    map_params: Mapping[str, int] | None = None,
    limits: Limits | None = None,
    root_fdt_phys: int | None = None,
    scratch: Sequence[tuple[int, int]] = (),
    map_released: bool = False,
) -> KhoState:
    """Root FDT bytes (+ physical memory image) -> :class:`KhoState`.

    ``version`` overrides what ``compatible`` says; ``page_size`` and
    ``byteorder`` are the producer's (a note says when they look wrong).
    ``map_params`` are memory-map parameters a fixture recorded (see
    :func:`kho_formats.model.memmap.param_names`); ``v1_bitmap`` (``"auto"``,
    ``"page"``, ``"512"``) is the caller's choice for a kho-v1 chunk list
    and wins over them.  Without an image only the FDT is read (``map_read``
    is False).

    ``map_released``: the handover as its *receiving* kernel holds it after
    boot (debugfs ``kho/in``, a live capture ``--side in``).  That kernel
    reads the memory map early and then lets its pages go (they are not
    themselves preserved: kernel/liveupdate/kexec_handover.c), so the image
    no longer holds the map; it is not read (``map_read`` is False, a note
    says why) instead of being parsed from reused pages.
    """
    _check_parse_args(root_fdt, image, version, page_size, byteorder, root_fdt_phys, limits)
    budget = Budget(limits)
    budget.count(len(scratch), "max_scratch", "scratch areas")
    layout(page_size, byteorder)  # refuses a bad page size or byte order before anything is read
    fdt = parse_fdt(root_fdt, where=ROOT, phys=root_fdt_phys)
    root = fdt.root
    notes: list[str] = []
    compat = get_strings(root, "compatible", where=ROOT) if root.has("compatible") else []
    if version is not None:
        ver = abi.get_version(version)
        extra = list(compat[1:]) if compat else []
        if not compat or compat[0] != ver.compatible:
            notes.append(f"compatible {fmt_strings(compat)} overridden: reading as {ver.name}")
    else:
        ver, extra = abi.by_compatible(compat)
        if compat[0] != ver.compatible:
            notes.append(
                f"compatible {fmt_strings(compat)}: {ver.compatible!r} is not the first entry (Linux 7.3 accepts "
                "it anywhere in the list, as fdt_node_check_compatible does)"
            )
    if extra:
        notes.append(f"unknown compatible entries after {ver.compatible!r}: {fmt_strings(extra)}")
    layout(page_size, byteorder, ver.name)  # refuses a version whose struct variants are not declared
    for prop in ver.root_required:
        if not root.has(prop):
            raise PropertyError(
                "missing required root property", path=f"{ROOT}:/{prop}", expected=f"{prop} ({ver.name})"
            )
    known_root = set(ver.root_required) | set(ver.root_optional)
    for name, _ in root.props:
        if name not in known_root:
            notes.append(f"root property {name!r} is not defined by {ver.name}")
    map_phys = get_u64(root, "preserved-memory-map", byteorder, where=ROOT)
    other = "big" if byteorder == "little" else "little"
    if map_phys and not _plausible_phys(map_phys, page_size):
        swapped = int.from_bytes(map_phys.to_bytes(8, as_byteorder(byteorder)), as_byteorder(other))
        if _plausible_phys(swapped, page_size):
            notes.append(
                f"byte order looks wrong: preserved-memory-map reads {map_phys:#x} as {byteorder}-endian "
                f"but {swapped:#x} as {other}-endian"
            )
        elif map_phys % page_size and map_phys % 4096 == 0:
            notes.append(
                f"page size looks wrong: preserved-memory-map {map_phys:#x} is not aligned to "
                f"{page_size} bytes; try --page-size 4096"
            )
    if root_fdt_phys is not None and (align := root_fdt_align_note(root_fdt_phys, page_size)):
        notes.append(align)
    if fdt.size > page_size:
        notes.append(f"root FDT is {fdt.size} bytes: more than one page (the kernel creates it in one page)")
    state = KhoState(
        version=ver.name,
        page_size=page_size,
        byteorder=byteorder,
        root_fdt_phys=root_fdt_phys,
        extra_compatible=extra,
        fdt_history=_LAYOUT_HISTORY.get(getattr(fdt.header, "off_mem_rsvmap", 0), "auto"),
        memmap_phys=map_phys,
        scratch=_scratch_areas(scratch),
        notes=notes,
    )
    # sub-nodes
    blob_cache: dict[tuple[int, int], bytes] = {}
    for child in root.children:
        where = f"{ROOT}:{child.path}"
        phys = get_u64(child, ver.address_property, byteorder, where=ROOT)
        size = None
        src = "unknown"
        if ver.size_property:
            size = get_u64(child, ver.size_property, byteorder, where=ROOT, required=ver.size_required)
            if size is not None:
                src = ver.size_property
        values: dict[str, int] = {}
        for vprop in ver.value_properties:  # declared u64 properties (schema)
            val = get_u64(child, vprop.name, byteorder, where=ROOT, required=vprop.required)
            if val is not None:
                values[vprop.name] = val
        declared = {p.name for p in ver.subnode_properties}
        extras = [(n, v) for n, v in child.props if n not in declared]
        for n, _ in extras:
            notes.append(f"{where}: property {n!r} is not defined by {ver.name}")
        if child.children:
            notes.append(f"{where}: has child nodes, which {ver.name} does not define")
        data = None
        if image is not None:
            if size is None and (ver.blob_is_fdt or image.has(phys, 8)):
                if image.has(phys, 8):
                    try:
                        size = fdt_totalsize(image.read(phys, 8, f"sub-FDT {child.name}"), where=where, phys=phys)
                        src = "fdt-header"
                    except FdtError:
                        if ver.blob_is_fdt:
                            raise
            if size is not None and image.has(phys, size):
                # one copy per (phys, size): 200 sub-nodes naming one blob share its bytes
                data = blob_cache.get((phys, size))
                if data is None:
                    budget.blob_bytes(size, f"sub-blob {child.name}", phys)
                    data = blob_cache[(phys, size)] = image.read(phys, size, f"sub-blob {child.name}")
            elif size is not None:
                notes.append(f"{where}: blob ({size} bytes at {phys:#x}) is not in the memory image")
        state.subblobs.append(SubBlob(child.name, phys, size, data, src, extras, values))
    # the memory map
    if map_released:
        state.map_read = False
        state.map_released = True
        notes.append(MAP_RELEASED_NOTE.format(phys=map_phys))
        return state
    if image is None:
        state.map_read = False
        notes.append("no memory image given: the preserved memory map was not read")
        return state
    options = {"v1_bitmap": v1_bitmap} if v1_bitmap is not None else {}
    got = state.codec.read(image, map_phys, state.map_context, budget=budget, params=map_params or {}, options=options)
    state.preserved, state.memmap, state.map_params = got.pages, got.map, got.params
    notes += got.notes
    return state


# -- build -------------------------------------------------------------------------


@dataclass
class Built:
    """The bytes of a handover: root FDT plus the memory image."""

    state: KhoState
    root_fdt: bytes
    image: PhysImage
    memmap_phys: int
    metadata: list[tuple[int, bytes | memoryview]]
    #: the map written (its pages and their placement)
    memmap: MemoryMap | None = None


def root_fdt_tree(state: KhoState, memmap_phys: int) -> FdtNode:
    ver = state.abi
    bo = state.byteorder
    root = FdtNode("")
    root.set("compatible", str_bytes(ver.compatible, *state.extra_compatible))
    root.set("preserved-memory-map", u64_bytes(memmap_phys, bo))
    for sb in state.subblobs:
        node = root.add_child(sb.name)
        values = {ver.address_property: u64_bytes(sb.phys, bo)}
        if ver.size_property:
            write_size = ver.size_required or sb.size_source == ver.size_property
            if write_size:
                if sb.size is None:
                    raise VersionError(
                        f"{ver.name} requires {ver.size_property} but sub-blob {sb.name!r} has no size",
                        path=f"{ROOT}:/{sb.name}",
                    )
                values[ver.size_property] = u64_bytes(sb.size, bo)
        for vp in ver.value_properties:
            val = sb.values.get(vp.name, vp.default)
            if val is None:
                if vp.required:
                    raise VersionError(
                        f"{ver.name} requires {vp.name} but sub-blob {sb.name!r} has no value for it",
                        path=f"{ROOT}:/{sb.name}",
                    )
                continue
            values[vp.name] = u64_bytes(val, bo)
        for prop in ver.property_order:
            if prop in values:
                node.set(prop, values.pop(prop))
        for prop, v in values.items():
            node.set(prop, v)
        for n, v in sb.extra_props:
            node.set(n, v)
    return root


def fdt_history(state: KhoState) -> str:
    """``state.fdt_history`` with ``"auto"`` resolved (:data:`FDT_HISTORIES`)."""
    h = state.fdt_history
    if h not in FDT_HISTORIES:
        raise VersionError(f"unknown root FDT history {h!r}", path=ROOT, expected=", ".join(FDT_HISTORIES))
    if h != "auto":
        return h
    if state.abi.fdt_style == "sequential-write":  # kho-v1: written whole at finalize
        return "sequential"
    return "packed" if state.subblobs else "sequential"


def root_fdt_bytes(state: KhoState, memmap_phys: int) -> bytes:
    """The root FDT as the kernel leaves it after the history
    ``state.fdt_history`` (KHO-ABI.md 2.1).

    ``"sequential"``: libfdt's sequential-write layout of the whole tree.
    ``"packed"``: the kernel wrote the root properties with sequential-write
    (``kho_out_fdt_setup``), then each ``kho_add_subtree`` reopened the blob
    (``fdt_open_into``), inserted a node and its properties (``fdt_setprop``
    appends their names to the strings block) and packed it (``fdt_pack``
    moves the reserve map from 0x30 to 0x28); ``kho_remove_subtree`` deletes a
    node, but not the names its properties added.  Node and property order
    are the tree's (:func:`root_fdt_tree`: the kernel inserts each node and
    property first, so both come out in reverse order of addition).
    """
    ver = state.abi
    tree = root_fdt_tree(state, memmap_phys)
    if fdt_history(state) == "sequential":
        return build_fdt(tree, style="sequential-write")
    order = sequential_strings([n for n, _ in tree.props])
    order += [n for n in ver.strings_order if n not in order]
    # names every kho_add_subtree of this version writes, in the order it sets
    # them (the reverse of property_order): they stay in the table after the
    # sub-trees that had them were removed
    set_order = list(reversed(ver.property_order))
    added = sorted(
        (p.name for p in ver.subnode_properties if p.required),
        key=lambda n: set_order.index(n) if n in set_order else len(set_order),
    )
    order += [n for n in added if n not in order]
    return build_fdt(tree, style="read-write", strings_order=order, kept_strings=() if state.subblobs else added)


def build(
    state: KhoState,
    *,
    alloc: Sequence[tuple[int, int]] = (),
    image: PhysImage | None = None,
    reuse_placement: bool = False,
    avoid: Sequence[tuple[int, int]] = (),
) -> Built:
    """:class:`KhoState` -> root FDT bytes + memory image.

    Metadata pages are placed in the ``alloc`` regions (``(start, size)``),
    never over preserved memory, scratch, sub-blobs, the root FDT page, the
    ``image`` given (client data) or ``avoid``.  ``reuse_placement`` puts
    the map's pages where ``state.memmap`` had them (a parsed capture then
    rebuilds byte for byte).
    """
    ps = state.page_size
    base = image.copy() if image is not None else PhysImage()
    forbid: list[tuple[int, int]] = [(a, a + s) for a, s in state.scratch]
    forbid += [(sb.phys, sb.phys + max(sb.size or 0, 1)) for sb in state.subblobs]
    if state.root_fdt_phys is not None:
        forbid.append((state.root_fdt_phys, state.root_fdt_phys + ps))
    forbid += [(s.phys, s.end) for s in base]
    forbid += list(avoid)
    ps_s, ps_e = state.preserved.range_arrays()
    allocator = None
    if alloc:
        allocator = PageAllocator(alloc, ps, avoid=forbid, avoid_merged=[(ps_s, ps_e)])
    made = state.codec.build(
        state.preserved,
        state.map_context,
        allocator,
        params=state.map_params,
        placement=state.memmap if reuse_placement else None,
        keep_empty=reuse_placement,
    )
    memmap_phys, pages = made.first, made.pages
    _write_map_pages(base, pages)
    for sb in state.subblobs:
        if sb.data is not None and not base.has(sb.phys, len(sb.data)):
            base.write(sb.phys, sb.data, what=f"sub-blob {sb.name}")
    fdt = root_fdt_bytes(state, memmap_phys)
    if len(fdt) > ps:
        raise KhoFormatError(
            f"root FDT would be {len(fdt)} bytes, more than one {ps}-byte page",
            path=ROOT,
            expected="the kernel's one-page root FDT",
        )
    if state.root_fdt_phys is not None:
        base.write(state.root_fdt_phys, fdt, what="root FDT")
    out_state = state.copy()
    out_state.memmap_phys = memmap_phys
    out_state.memmap = made.map
    return Built(out_state, fdt, base, memmap_phys, pages, made.map)


def _write_map_pages(image: PhysImage, pages: Sequence[tuple[int, BytesLike]]) -> None:
    """The map's pages into ``image``: pages at consecutive addresses are
    joined into one segment where the image holds nothing yet (a map of 30k
    leaves is then a few segments, read where it lies, not 30k of them);
    a page over memory the image already has is written page by page."""
    held = [(s.phys, s.end) for s in image]
    starts = [a for a, _ in held]

    def free(lo: int, hi: int) -> bool:
        i = bisect.bisect_right(starts, lo) - 1
        if i >= 0 and held[i][1] > lo:
            return False
        return i + 1 >= len(held) or held[i + 1][0] >= hi

    k = 0
    while k < len(pages):
        phys, data = pages[k]
        end = phys + len(data)
        j = k + 1
        while j < len(pages) and pages[j][0] == end:
            end += len(pages[j][1])
            j += 1
        if j - k > 1 and free(phys, end):
            image.add(phys, b"".join(d for _, d in pages[k:j]), what="memory-map pages")
        else:
            for q, d in pages[k:j]:
                image.write(q, d, what="memory-map page")
        k = j


def convert(state: KhoState, to_version: str, *, map_options: Mapping[str, Any] | None = None) -> KhoState:
    """The same preserved set and sub-blobs under another ABI version.

    Sub-blob sizes the target requires come from what the source had
    (``blob-size`` or the sub-FDT's own header).  What the target cannot hold
    is refused (e.g. kho-v2, 16 KiB pages, order 0).  ``map_options`` are
    the target map's choices (``{"v1_bitmap": "512"}``).
    """
    ver = abi.get_version(to_version)
    out = state.copy()
    out.version = ver.name
    out.memmap = None
    out.notes = []
    out.fdt_history = "auto"  # the target version's kernel writes its root FDT its own way
    for sb in out.subblobs:
        if ver.size_property and ver.size_required and sb.size is None:
            raise VersionError(
                f"{ver.name} requires {ver.size_property}, but the size of sub-blob {sb.name!r} "
                "is unknown (its blob is not in the image)",
                path=f"{ROOT}:/{sb.name}",
            )
        if ver.blob_is_fdt and sb.data is not None and not has_fdt_magic(sb.data):
            raise VersionError(
                f"{ver.name} sub-nodes point at FDTs, but sub-blob {sb.name!r} is {len(sb.data)} bytes of raw data, "
                f"not an FDT: {ver.name} sizes a sub-blob by its FDT header, so it cannot hold this one",
                path=f"{ROOT}:/{sb.name}",
                expected="an FDT blob, or a target version with blob-size",
            )
        if ver.size_property and sb.size is not None:
            sb.size_source = ver.size_property
        elif not ver.size_property:
            sb.size_source = "fdt-header" if sb.size is not None else "unknown"
        sb.extra_props = []
        sb.values = {n: v for n, v in sb.values.items() if any(p.name == n for p in ver.value_properties)}
    codec = out.codec
    codec.check_representable(out.preserved, out.map_context)
    out.map_params = codec.params_for(out.map_context, state.map_params, map_options or {})
    return out
