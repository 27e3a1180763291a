"""Migrating a handover to another ABI version (``kho convert``).

:func:`convert_capture` keeps the preserved set and every sub-blob (bytes and
physical address) identical, rewrites the root FDT for the target version
(``fdt`` <-> ``preserved-data``, ``blob-size`` added where the target
requires it, compatible bumped) and writes a new memory map.  New map pages
go into memory that is neither preserved nor scratch nor used by the image:
the old map's own pages (v1 chunks and bitmaps, radix nodes and leaves, see
:meth:`KhoState.metadata_pages`), the free regions a fixture recorded in
``handover.json`` and any regions the caller names.  What the target cannot
hold is refused (:class:`~kho_formats.errors.UnrepresentableError`).

From a full memory dump only the handover is kept
(:func:`~kho_formats.ops.extract.handover_image`: root FDT page, map pages,
sub-blobs, client data, preserved contents), the arch comes from the dump's
ELF ``e_machine`` when nothing recorded it, and memory the dump shows but the
handover does not use is where the ``kho_scratch`` array (and, when the old
map's pages do not suffice, the new map) may go.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._types import check_type
from ..errors import KhoFormatError, LimitExceeded
from ..limits import DEFAULT_LIMITS, Limits
from ..model import memmap
from ..model.clients import decode_clients
from ..model.fixture import Fixture, disjoint_regions, make_fixture
from ..model.state import KhoState, _scratch_areas, build, convert
from ..text import plural
from .capture import Capture, strip_ranges
from .extract import handover_ranges, image_within, merge_ranges, spare_ranges, subtract


def _describe_props(st: KhoState) -> list[str]:
    ver = st.abi
    props = [ver.address_property]
    if ver.size_property and (ver.size_required or any(sb.size_source == ver.size_property for sb in st.subblobs)):
        props.append(ver.size_property)
    return props


def convert_capture(
    cap: Capture,
    state: KhoState,
    to_version: str,
    *,
    alloc: Sequence[tuple[int, int]] = (),
    v1_bitmap: str | None = None,
    arch: str | None = None,
    name: str = "converted",
    limits: Limits | None = None,
) -> tuple[Fixture, dict]:
    """``state`` (parsed from ``cap``) as ``to_version``: a fixture + a summary dict.

    Every failure is a :class:`KhoFormatError`; ``alloc`` regions must be
    ``(start, size)`` ints inside the 64-bit space (at most
    ``limits.max_alloc_regions`` of them)."""
    f = "convert_capture"
    check_type(cap, Capture, "cap", f)
    check_type(state, KhoState, "state", f)
    check_type(to_version, str, "to_version", f)
    check_type(name, str, "name", f)
    check_type(limits, Limits, "limits", f, optional=True)
    lim = limits or DEFAULT_LIMITS
    regs = _alloc_regions(alloc, "alloc")
    _scratch_areas(state.scratch)  # a state built by hand may hold areas no u64 can (ScratchError)
    for sb in state.subblobs:
        if not 0 <= sb.phys < 1 << 64 or (sb.size is not None and not 0 <= sb.size <= (1 << 64) - sb.phys):
            raise KhoFormatError(
                f"sub-blob {sb.name!r} at {sb.phys:#x}+{sb.size or 0:#x} is not inside the 64-bit space",
                path=f"/{sb.name}",
                expected="0 <= phys, phys + size <= 2**64",
            )
    if len(regs) + len(cap.alloc) > lim.max_alloc_regions:
        raise LimitExceeded(
            f"{len(regs) + len(cap.alloc)} free regions",
            expected=f"at most {lim.max_alloc_regions} (Limits.max_alloc_regions)",
        )
    try:
        return _convert(cap, state, to_version, regs, v1_bitmap, arch, name)
    except KhoFormatError:
        raise
    except (OverflowError, ValueError, MemoryError, RecursionError) as exc:
        raise KhoFormatError(f"cannot convert this handover ({type(exc).__name__}: {str(exc)[:200]})") from None


def _alloc_regions(alloc: object, what: str) -> list[tuple[int, int]]:
    try:
        regs = [(a, s) for a, s in alloc]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise TypeError(f"convert_capture: {what} must be a sequence of (start, size) pairs") from None
    for a, s in regs:
        if not isinstance(a, int) or not isinstance(s, int) or isinstance(a, bool) or isinstance(s, bool):
            raise TypeError(f"convert_capture: {what} must hold int (start, size) pairs, not {(a, s)!r}")
        if a < 0 or s < 0 or a + s > 1 << 64:
            raise KhoFormatError(
                f"free region {a:#x}+{s:#x} is not inside the 64-bit space",
                expected="0 <= start, start + size <= 2**64",
            )
    return regs


def _convert(
    cap: Capture,
    state: KhoState,
    to_version: str,
    alloc: list[tuple[int, int]],
    v1_bitmap: str | None,
    arch: str | None,
    name: str,
) -> tuple[Fixture, dict]:
    if state.map_released:
        raise KhoFormatError(
            "convert needs the memory map, and this is a receiving side after boot: that kernel released it",
            expected="a capture of the sending side (debugfs kho/out and a dump or /proc/kcore before the kexec)",
        )
    if cap.image is None or not state.map_read:
        raise KhoFormatError(
            "convert needs the memory image that holds the memory map",
            expected="a fixture/capture directory with image.elf, or --mem IMAGE",
        )
    target = convert(state, to_version, map_options={"v1_bitmap": v1_bitmap} if v1_bitmap else None)
    ps = state.page_size
    old_meta = state.metadata_pages()
    drop = list(old_meta) + list(cap.boot_ranges)
    root = state.root_fdt_phys
    if root is not None:
        drop.append((root, root + ps))
    clients = decode_clients(state, cap.image)
    keep = handover_ranges(state, clients)
    source = cap.image
    notes: list[str] = []
    spare: list[tuple[int, int]] = []
    boot_pages = [(a // ps * ps, -(-b // ps) * ps) for a, b in cap.boot_ranges]
    outside = subtract(merge_ranges(cap.image.covered()), merge_ranges(keep + boot_pages))
    if outside:  # a full dump: keep the handover, not the machine
        kept = image_within(cap.image, keep)
        source = kept
        spare = spare_ranges(cap.image, keep + list(cap.boot_ranges) + [(a, a + s) for a, s in state.scratch], ps)
        notes.append(
            f"kept the handover only: {kept.total_bytes} of the image's {cap.image.total_bytes} bytes "
            "(root FDT page, map pages, sub-blobs, client data, preserved pages)"
        )
    base = strip_ranges(source, drop)
    if root is not None:
        base.add(root, bytes(ps), what="root FDT page")
    regions: list[tuple[int, int]] = []
    for a, b in old_meta:
        regions.append((a, b - a))
    regions += alloc
    regions = disjoint_regions(regions + list(cap.alloc))
    if not regions and spare:
        regions = disjoint_regions(spare)
        notes.append("new map pages placed in memory the dump shows as unused by the handover")
    if not regions and (target.preserved or target.scratch):
        raise KhoFormatError(
            "no memory to place the new memory map in: the source has no map pages to reuse",
            expected="--alloc BASE:SIZE naming free memory",
        )
    built = build(target, alloc=regions, image=base)
    extra = {"converted_from": state.version, "source": cap.sources.get("root_fdt")}
    the_arch = arch or cap.arch or "arm64"
    fx = make_fixture(built, arch=the_arch, name=name, alloc=regions, extra=extra)
    if fx.scratch_array_phys is None and target.scratch and spare:
        fx = make_fixture(built, arch=the_arch, name=name, alloc=disjoint_regions(regions + spare), extra=extra)
        if fx.scratch_array_phys is not None:
            notes.append(f"kho_scratch array placed at {fx.scratch_array_phys:#x}, memory the dump shows as unused")
    if notes:
        fx.extra["notes"] = notes + list(fx.extra.get("notes", []))  # type: ignore[operator]
    changes = []
    if state.abi.compatible != target.abi.compatible:
        changes.append(f"compatible {state.abi.compatible} -> {target.abi.compatible}")
    if state.abi.memory_map != target.abi.memory_map:
        changes.append(f"memory map {state.abi.memory_map} -> {target.abi.memory_map}")
    else:
        changes += target.codec.changes(state.map_context, target.map_context)
    p0, p1 = _describe_props(state), _describe_props(built.state)
    if p0 != p1:
        changes.append(f"sub-node properties {'+'.join(p0) or '-'} -> {'+'.join(p1)}")
    new_meta = built.state.metadata_pages()
    summary = {
        "schema": "kho-formats/convert/1",
        "from": {
            "version": state.version,
            "memmap_phys": state.memmap_phys,
            "metadata_bytes": sum(b - a for a, b in old_meta),
            **memmap.params_json(state.codec, state.map_params),
        },
        "to": {
            "version": target.version,
            "memmap_phys": built.memmap_phys,
            "metadata_bytes": sum(b - a for a, b in new_meta),
            "metadata_blocks": len(built.metadata),
            **memmap.params_json(built.state.codec, built.state.map_params),
        },
        "page_size": ps,
        "byte_order": state.byteorder,
        "preserved_pages": target.preserved.num_pages,
        "preserved_bytes": target.preserved.total_bytes,
        "subblobs": [
            {"name": sb.name, "phys": sb.phys, "size": sb.size, "properties": p1} for sb in built.state.subblobs
        ],
        "changes": changes,
        "alloc": [[a, s] for a, s in regions],
        "root_fdt_phys": root,
        "notes": list(fx.extra.get("notes", [])),
    }
    return fx, summary


def render_convert(s: dict, outdir: str = "") -> str:
    f, t = s["from"], s["to"]
    lines = [
        f"converted {f['version']} -> {t['version']}" + (f" into {outdir}" if outdir else ""),
        f"  preserved: {plural(s['preserved_pages'], 'folio')} ({plural(s['preserved_bytes'], 'byte')}), unchanged",
        "  sub-blobs: "
        + (", ".join(f"{b['name']}@{b['phys']:#x}+{b['size']}" for b in s["subblobs"]) or "none")
        + (f" ({'+'.join(s['subblobs'][0]['properties'])})" if s["subblobs"] else ""),
        f"  memory map: {f['memmap_phys']:#x} ({f['metadata_bytes']} bytes) -> {t['memmap_phys']:#x} "
        f"({t['metadata_bytes']} bytes in {t['metadata_blocks']} blocks)",
    ]
    for c in s["changes"]:
        lines.append(f"  changed: {c}")
    for n in s.get("notes", []):
        lines.append(f"  note: {n}")
    return "\n".join(lines) + "\n"


__all__ = ["convert_capture", "render_convert"]
