"""Building a fixture from a :class:`~.model.Spec`.

The builder does the generic work (allocation regions, the root FDT page,
preserved ranges, scratch, overlap checks, ``state.build`` and
``make_fixture``) and asks each blob's client to place and encode itself.
"""

from __future__ import annotations

import os

from ... import abi
from ...abi.fdt_header import header_totalsize
from ...abi.layout import layout
from ...errors import KhoFormatError, SpecError
from ...limits import DEFAULT_LIMITS
from ...memory.alloc import PageAllocator, merge_ranges
from ...memory.image import PhysImage
from ...memory.pageset import PageSet
from .. import memmap
from ..clients import BuildContext, BuiltBlob, Client, ClientRegistry, registry, vmalloc_area
from ..clients.base import gen_bytes
from ..fixture import Fixture, disjoint_regions, make_fixture
from ..state import KhoState, SubBlob, build
from .model import BlobSpec, Spec


def _is_fdt(data: bytes) -> bool:
    return header_totalsize(data) is not None


def _client(reg: ClientRegistry, b: BlobSpec, w: str) -> Client:
    client = reg.by_spec_type(b.type)
    if client is None:
        raise SpecError(f"{w}: blob {b.name!r} has type {b.type!r}, which no registered client builds")
    return client


#: pages one ``[[preserve]]`` entry (count x order), vmalloc area or folio may name
SPEC_MAX_PAGES = DEFAULT_LIMITS.max_entries


def build_spec(sp: Spec, *, clients: ClientRegistry | None = None) -> Fixture:
    """Build the handover a :class:`Spec` describes (deterministic).

    Every failure is a :class:`~kho_formats.errors.KhoFormatError`
    (mostly :class:`SpecError`); sizes that would need absurd memory are
    refused before anything is allocated."""
    if not isinstance(sp, Spec):
        raise TypeError(f"build_spec: sp must be a Spec, not {type(sp).__name__}")
    w = sp.source or sp.name
    _check_sizes(sp, w)
    try:
        return _build_spec(sp, clients)
    except KhoFormatError:
        raise
    except (MemoryError, OverflowError, ValueError, RecursionError) as exc:
        raise SpecError(f"{w}: cannot build this spec ({type(exc).__name__}: {str(exc)[:200]})") from None


def _check_sizes(sp: Spec, w: str) -> None:
    ps = sp.page_size
    if ps not in abi.PAGE_SIZES:
        raise SpecError(f"{w}.page_size: {ps!r}", expected="4096, 16384 or 65536")
    max_order = 64 - ps.bit_length()  # (ps << order) still fits the 64-bit space
    for i, p in enumerate(sp.preserve):
        pw = f"{w}.preserve[{i}]"
        if p.end is not None:
            if not 0 <= p.phys <= p.end <= 1 << 64:
                raise SpecError(f"{pw}: range {p.phys:#x}..{p.end:#x} is not inside the 64-bit space")
            continue
        if not 0 <= p.order <= max_order:
            raise SpecError(f"{pw}.order: {p.order}", expected=f"0..{max_order} for {ps}-byte pages")
        if not 1 <= p.count <= SPEC_MAX_PAGES >> p.order:
            raise SpecError(
                f"{pw}.count: {p.count}", expected=f"1..{SPEC_MAX_PAGES >> p.order} pages of order {p.order}"
            )
        if p.phys + (p.count * ps << p.order) > 1 << 64:
            raise SpecError(f"{pw}: {p.count} order-{p.order} pages at {p.phys:#x} run past 2**64")
    for i, v in enumerate(sp.vmalloc):
        vw = f"{w}.vmalloc[{i}]"
        if not 0 <= v.order <= max_order:
            raise SpecError(f"{vw}.order: {v.order}", expected=f"0..{max_order}")
        if v.pages > SPEC_MAX_PAGES:
            raise SpecError(f"{vw}.pages: {v.pages}", expected=f"at most {SPEC_MAX_PAGES}")
    for a, s in sp.alloc_regions() + sp.scratch_areas():
        if a + s > 1 << 64:
            raise SpecError(f"{w}: region {a:#x}+{s:#x} runs past 2**64")
    for b in sp.blobs:
        for f in getattr(b.params, "folios", ()) or ():
            order = getattr(f, "order", 0)
            if not 0 <= order <= max_order or (1 << order) > SPEC_MAX_PAGES:
                raise SpecError(f"{w}: blob {b.name!r} folio order {order}", expected="a folio of at most 64 Mi pages")


def _build_spec(sp: Spec, clients: ClientRegistry | None) -> Fixture:
    reg = registry if clients is None else clients
    ver = abi.get_version(sp.version)
    ps = sp.page_size
    lay = layout(ps, sp.byte_order, ver.name)
    w = sp.source or sp.name
    map_ctx = memmap.MapContext(ver, ps, sp.byte_order)
    codec = memmap.codec_for(ver)
    # every placement the spec leaves out is the arch's boot-aware default (model.DEFAULT_*)
    scratch = sp.scratch_areas()
    scratch_note = (
        ""
        if sp.scratch is not None
        else f" (the default scratch of {sp.arch}: give [[scratch]], or scratch = [] for none)"
    )
    # -- what the spec places explicitly: the allocator must avoid it ------------------
    preserved = PageSet(ps)
    for i, p in enumerate(sp.preserve):
        try:
            if p.end is not None:
                preserved.update(PageSet.from_ranges(ps, [(p.phys, p.end)], max_order=p.max_order))
            else:
                if p.count < 1:
                    raise SpecError(f"{w}.preserve[{i}]: count {p.count} < 1")
                unit = ps << p.order
                if p.phys % unit:
                    raise SpecError(
                        f"{w}.preserve[{i}]: phys {p.phys:#x} is not aligned to order {p.order}",
                        expected=f"a multiple of {unit:#x}",
                    )
                preserved.update(PageSet.from_runs(ps, {p.order: ([p.phys], [p.count])}))
        except SpecError:
            raise
        except KhoFormatError as exc:
            raise SpecError(f"{w}.preserve[{i}]: {exc}") from None
    explicit: list[tuple[int, int]] = [(a, a + s) for a, s in scratch]
    explicit += preserved.ranges()
    if sp.root_fdt_phys is not None:
        if sp.root_fdt_phys % ps:
            raise SpecError(f"{w}.root_fdt_phys: {sp.root_fdt_phys:#x} is not page aligned")
        explicit.append((sp.root_fdt_phys, sp.root_fdt_phys + ps))
    clients = {b.name: _client(reg, b, w) for b in sp.blobs}
    for b in sp.blobs:
        if b.phys is not None:
            if b.phys % ps:
                raise SpecError(f"{w}: blob {b.name!r} phys {b.phys:#x} is not page aligned")
            explicit.append((b.phys, b.phys + ps))  # at least its first page
        explicit += clients[b.name].fixed_ranges(b, ps)
    for v in sp.vmalloc:
        if v.phys is not None:
            explicit.append((v.phys, v.phys + ps))
    regions = disjoint_regions(sp.alloc_regions())
    alloc = PageAllocator(regions, ps, avoid=merge_ranges(explicit))
    image = PhysImage()

    # -- the root FDT page (filled by state.build) -------------------------------------
    root_phys = sp.root_fdt_phys if sp.root_fdt_phys is not None else alloc.alloc(what="root FDT page")
    image.add(root_phys, bytes(ps), what="root FDT page")
    if sp.preserve_root:
        preserved.add(root_phys, 0)
    # -- sub-blobs: each client places and encodes its own ----------------------------------
    ctx = BuildContext(layout=lay, alloc=alloc, seed=sp.seed, arch=sp.arch, where=w)
    subblobs: list[SubBlob] = []

    def add(name: str, built: BuiltBlob, preserve: bool) -> None:
        for phys, data, what in built.segments:
            image.add(phys, data, what=what)
        if preserve:
            preserved.update(built.preserve)
        subblobs.append(_subblob(sp, ver, name, built.phys, built.data, w))

    for b in sp.blobs:
        add(b.name, clients[b.name].build(b, ctx), b.preserve)
    # -- vmalloc areas (raw sub-blobs holding one struct kho_vmalloc), always preserved ----------
    for v in sp.vmalloc:
        add(v.name, vmalloc_area.CLIENT.build(v, ctx), True)
    # -- the handover -------------------------------------------------------------------------
    codec.check_representable(preserved, map_ctx)
    ov = preserved.find_overlap()
    if ov:
        raise SpecError(f"{w}: order-{ov[1]} page {ov[0]:#x} overlaps order-{ov[3]} page {ov[2]:#x}", phys=ov[2])
    for a, s in scratch:
        hit = preserved.overlaps_range(a, a + s)
        if hit:
            raise SpecError(
                f"{w}: preserved order-{hit[1]} page {hit[0]:#x} lies in scratch area {a:#x}+{s:#x}{scratch_note}",
                phys=hit[0],
            )
    state = KhoState(
        version=ver.name,
        page_size=ps,
        byteorder=sp.byte_order,
        preserved=preserved,
        subblobs=subblobs,
        scratch=scratch,
        root_fdt_phys=root_phys,
        extra_compatible=list(sp.extra_compatible),
        fdt_history=sp.root_fdt_history,
        map_params=codec.params_for(map_ctx, {}, {"v1_bitmap": sp.v1_bitmap}),
    )
    built = build(state, alloc=regions, image=image, avoid=[(a, b) for a, b in alloc.allocated])
    extra = {"spec": os.path.basename(sp.source) if sp.source else None}
    return make_fixture(built, arch=sp.arch, name=sp.name, alloc=regions, extra=extra)


def _subblob(sp: Spec, ver: abi.AbiVersion, name: str, phys: int, data: bytes, w: str) -> SubBlob:
    is_fdt = _is_fdt(data)
    if ver.blob_is_fdt and not is_fdt:
        raise SpecError(
            f"{w}: sub-blob {name!r} is not an FDT, but {ver.name} sub-nodes point at FDTs",
            expected="an FDT blob, or version kho-v2+",
        )
    if ver.size_property and (ver.size_required or sp.blob_size):
        src = ver.size_property
    elif is_fdt:
        src = "fdt-header"
    else:
        raise SpecError(f"{w}: sub-blob {name!r} is not an FDT and blob_size = false: a reader could not size it")
    return SubBlob(name=name, phys=phys, size=len(data), data=data, size_source=src)


__all__ = ["build_spec", "gen_bytes"]
