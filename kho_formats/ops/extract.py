"""The handover out of a whole machine: what ``kho capture --from-dump`` and
``kho convert`` keep of a full memory dump.

:func:`handover_ranges` lists the bytes a handover consists of: the root FDT
page, the memory map's pages, every sub-blob, what each client references
(asked of the client registry: :meth:`Client.referenced
<kho_formats.model.clients.base.Client.referenced>`, e.g. kho_test folios and
vmalloc chains) and, unless ``referenced_only``, the contents of every
preserved page.  :func:`handover_image` is the input image cut down to those
ranges (views of the mapped input: nothing is copied).  :func:`write_capture`
writes a compact capture directory (``root.dtb``, ``image.elf``, ``meta.json``)
that ``kho`` reads like the shipped captures; the image is streamed, so memory
stays bounded whatever the preserved size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import progress
from .._version import __version__
from ..errors import KhoFormatError
from ..memory.image import PhysImage
from ..memory.intervals import intersect
from ..model.state import KhoState
from ..safeio import refuse_touching_inputs
from .capture import Capture


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, coalesced ``[start, end)`` ranges (empty ones dropped)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in ranges if b > a):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract(ranges: Sequence[tuple[int, int]], cuts: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint ``ranges`` without sorted, disjoint ``cuts``."""
    out: list[tuple[int, int]] = []
    j = 0
    for a, b in ranges:
        while j < len(cuts) and cuts[j][1] <= a:
            j += 1
        k, cur = j, a
        while k < len(cuts) and cuts[k][0] < b:
            if cuts[k][0] > cur:
                out.append((cur, cuts[k][0]))
            cur = max(cur, cuts[k][1])
            k += 1
        if cur < b:
            out.append((cur, b))
    return out


def referenced_ranges(state: KhoState, clients: dict[str, Any] | None = None) -> list[tuple[int, int]]:
    """Root FDT page, map pages, sub-blobs and what each client references."""
    ps = state.page_size
    rng: list[tuple[int, int]] = []
    if state.root_fdt_phys is not None:
        rng.append((state.root_fdt_phys, state.root_fdt_phys + ps))
    rng += state.metadata_pages()
    for sb in state.subblobs:
        if sb.phys is not None and sb.size:
            rng.append((sb.phys, sb.phys + sb.size))
    for rep in (clients or {}).values():
        if rep.decoded is not None and rep.client is not None:
            rng += rep.client.referenced(rep.decoded, ps)
    return merge_ranges(rng)


def handover_ranges(
    state: KhoState, clients: dict[str, Any] | None = None, *, referenced_only: bool = False
) -> list[tuple[int, int]]:
    """Every page of the handover (see the module doc), as byte ranges."""
    rng = referenced_ranges(state, clients)
    if not referenced_only:
        rng = rng + state.preserved.ranges()
    ps = state.page_size
    return merge_ranges((a // ps * ps, min(1 << 64, -(-b // ps) * ps)) for a, b in rng)


def handover_image(
    image: PhysImage, state: KhoState, clients: dict[str, Any] | None = None, *, referenced_only: bool = False
) -> PhysImage:
    """``image`` restricted to :func:`handover_ranges` (zero-copy views)."""
    return image_within(image, handover_ranges(state, clients, referenced_only=referenced_only))


def image_within(image: PhysImage, ranges: Sequence[tuple[int, int]]) -> PhysImage:
    """``image`` restricted to the byte ranges ``[start, end)`` (zero-copy views)."""
    out = PhysImage()
    out.arch = image.arch
    for a, b in image.covered_within(ranges):
        for seg, off, n in image._locate(a, b - a, "handover range"):
            out.add(seg.phys + off, _view(seg.data, off, n))
    return out


def spare_ranges(image: PhysImage, keep: Sequence[tuple[int, int]], page_size: int) -> list[tuple[int, int]]:
    """Whole pages the input image shows as memory but the handover does not use:
    where a converted fixture may put new metadata (``(base, size)`` pairs)."""
    free = subtract(merge_ranges(image.covered()), merge_ranges(keep))
    out = []
    for a, b in free:
        a2, b2 = -(-a // page_size) * page_size, b // page_size * page_size
        if b2 > a2:
            out.append((a2, b2 - a2))
    return out


def _view(data: Any, off: int, n: int) -> Any:
    return data.sub(off, n) if hasattr(data, "sub") else data[off : off + n]


def write_capture(
    outdir: str | os.PathLike[str],
    cap: Capture,
    state: KhoState,
    image: PhysImage,
    *,
    referenced_only: bool = False,
    source: str | None = None,
    extra: dict[str, Any] | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> list[str]:
    """Write a compact capture directory (the one place files are written).

    ``image`` is what to keep (:func:`handover_image`); the ELF core is
    streamed.  ``extra`` adds keys to ``meta.json`` (a live capture records
    ``live``).  Returns the names written.
    """
    d = Path(outdir)
    refuse_touching_inputs(d, inputs)  # also every input file this command opened
    if d.exists() and not d.is_dir():
        raise KhoFormatError(f"{d}: exists and is not a directory")
    if d.is_dir() and any(d.iterdir()):
        raise KhoFormatError(f"{d}: exists and is not empty", expected="a new or empty output directory")
    d.mkdir(parents=True, exist_ok=True)
    arch = cap.arch or image.arch or "x86_64"
    meta = {
        "format": "kho-formats-capture",
        "generator": f"kho-formats {__version__}",
        "source": source,
        "compatible": state.abi.compatible,
        "version": state.version,
        "page_size": state.page_size,
        "byte_order": state.byteorder,
        "arch": arch,
        "root_fdt_phys": state.root_fdt_phys,
        "preserved_memory_map": state.memmap_phys,
        "scratch": [[a, s] for a, s in state.scratch],
        "subtrees": [{"name": sb.name, "phys": sb.phys, "size": sb.size} for sb in state.subblobs],
        "preserved_pages": state.preserved.num_pages,
        "preserved_contents": not referenced_only,
        # the receiving side after boot: the memory map was released by that kernel and is not in the image
        "received": cap.received,
        "image_bytes": image.total_bytes,
        "image_segments": len(image.covered()),
        "notes": list(state.notes),
    }
    meta.update(extra or {})
    (d / "root.dtb").write_bytes(cap.root_fdt)
    with open(d / "image.elf", "wb") as fh, progress.task("writing the capture", total=image.total_bytes):
        image.write_elf(fh, byteorder=state.byteorder, machine=arch)  # its chunks counted by the bar
    (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return ["root.dtb", "image.elf", "meta.json"]


__all__ = [
    "merge_ranges",
    "intersect",
    "subtract",
    "referenced_ranges",
    "handover_ranges",
    "handover_image",
    "spare_ranges",
    "write_capture",
]
