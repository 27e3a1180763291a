"""Validate a parsed handover against its version's rules.

:func:`check` returns every finding (severity, code, message, address or
path).  Parse errors are not findings: they raise before a state exists.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import numpy as np

from ._types import check_type
from .clients import CheckContext, ClientReport, decode_clients
from .findings import ERROR, INFO, WARNING, Finding
from .image import PhysImage
from .limits import DEFAULT_LIMITS, Budget, Limits
from .pageset import END_OF_SPACE
from .state import KhoState

#: findings of one kind reported one by one before the rest are summed up
MAX_DETAILED = 64


class _Coverage:
    """The preserved set's merged byte ranges, computed once per check, with
    a binary search per query (a per-query scan would make checking N vmalloc
    groups against R preserved ranges O(N * R))."""

    def __init__(self, state: KhoState) -> None:
        self.starts, self.ends = state.preserved.range_arrays()

    def covers(self, start: int, end: int) -> bool:
        if self.starts.size == 0 or not 0 <= start < 1 << 64:
            return False
        i = int(np.searchsorted(self.starts, np.uint64(start), side="right")) - 1
        if i < 0:
            return False
        e = int(self.ends[i])
        # a range ending at 2**64 ends at END_OF_SPACE (or, wrapped, at 0)
        return end <= (e if int(self.starts[i]) < e < END_OF_SPACE else 1 << 64)


def _covered(state: KhoState, phys: int, size: int, cov: _Coverage | None = None) -> bool:
    """Is every page of [phys, phys+size) inside a preserved range?"""
    ps = state.page_size
    start = phys - phys % ps
    end = -(-(phys + max(size, 1)) // ps) * ps
    return (cov or _Coverage(state)).covers(start, end)


class _Findings(list):
    """The findings list, capped at ``Limits.max_findings`` entries: the rest
    are counted per (severity, code) and summed up by :meth:`close`."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap
        self.dropped: dict[tuple[str, str], tuple[int, int | None]] = {}

    def append(self, f: Finding) -> None:  # type: ignore[override]
        if len(self) < self.cap:
            super().append(f)
            return
        n, phys = self.dropped.get((f.severity, f.code), (0, f.phys))
        self.dropped[(f.severity, f.code)] = (n + 1, phys)

    def extend(self, fs: Iterable[Finding]) -> None:  # type: ignore[override]
        for f in fs:
            self.append(f)

    def close(self) -> list[Finding]:
        out = list(self)
        for (sev, code), (n, phys) in self.dropped.items():
            out.append(
                Finding(sev, code, f"... and {n} more {code} findings (Limits.max_findings = {self.cap})", phys=phys)
            )
        return out


def check(
    state: KhoState,
    image: PhysImage | None = None,
    *,
    limits: Limits | None = None,
    clients: dict | None = None,
    root_phys_required: bool = False,
) -> list[Finding]:
    """Every finding for ``state``.  ``root_phys_required``: the input says
    where it hands the root FDT to a kernel (a fixture directory), so an
    unknown root FDT address is an error, not a warning.  At most
    ``limits.max_findings`` findings are listed; the rest are summed up per
    code (one more finding each)."""
    check_type(state, KhoState, "state", "check")
    check_type(image, PhysImage, "image", "check", optional=True)
    check_type(limits, Limits, "limits", "check", optional=True)
    lim = limits or DEFAULT_LIMITS
    out = _Findings(lim.max_findings)
    _check(state, image, lim, clients, root_phys_required, out)
    return out.close()


def _root_findings(state: KhoState, image: PhysImage | None, root_phys_required: bool, out: _Findings) -> None:
    """Addresses a kernel is handed or follows: the root FDT, the memory map, sub-blobs."""
    ps = state.page_size
    root = state.root_fdt_phys
    if root is None:
        if image is not None or root_phys_required:
            out.append(
                Finding(
                    ERROR if root_phys_required else INFO,
                    "root-fdt-address",
                    "the root FDT's physical address is not recorded: a fixture without it hands "
                    "the kernel address 0 (setup_data / linux,kho-fdt)",
                )
            )
    elif root == 0:
        out.append(Finding(ERROR, "root-fdt-address", "the root FDT is at physical address 0", phys=0))
    elif not 0 < root < 1 << 64:
        out.append(Finding(ERROR, "root-fdt-address", f"root FDT address {root:#x} is outside the 64-bit space"))
    else:
        if root % ps:
            out.append(
                Finding(
                    ERROR, "root-fdt-align", f"the root FDT at {root:#x} is not aligned to {ps}-byte pages", phys=root
                )
            )
        if image is not None and not image.has(root, 8):
            out.append(
                Finding(ERROR, "root-fdt-outside", f"the root FDT at {root:#x} is not in the memory image", phys=root)
            )
    mp = state.memmap_phys
    if mp is not None and mp != 0:
        if not 0 < mp < 1 << 64:
            out.append(Finding(ERROR, "memmap-address", f"memory map address {mp:#x} is outside the 64-bit space"))
        elif mp % 8:
            out.append(Finding(ERROR, "memmap-align", f"memory map pointer {mp:#x} is not 8-byte aligned", phys=mp))
    for sb in state.subblobs:
        end = sb.phys + (sb.size or 0)
        if sb.phys == 0 or end > 1 << 64:
            out.append(
                Finding(
                    ERROR,
                    "blob-address",
                    f"sub-blob {sb.name!r} at {sb.phys:#x}+{sb.size or 0:#x} "
                    + ("is at address 0" if sb.phys == 0 else "runs past the 64-bit space"),
                    phys=sb.phys if sb.phys < 1 << 64 else None,
                    path=f"/{sb.name}",
                )
            )


def _check(
    state: KhoState,
    image: PhysImage | None,
    limits: Limits,
    clients: dict | None,
    root_phys_required: bool,
    out: _Findings,
) -> None:
    ps = state.page_size
    for n in state.notes:
        out.append(Finding(INFO, "note", n))
    _root_findings(state, image, root_phys_required, out)
    Budget(limits).count(len(state.scratch), "max_scratch", "scratch areas")
    if not state.map_read:
        out.append(Finding(WARNING, "no-image", "no memory image: the preserved memory map was not checked"))
    ov = state.preserved.find_overlap()
    if ov:
        out.append(
            Finding(
                ERROR,
                "overlap-orders",
                f"order-{ov[1]} page at {ov[0]:#x} overlaps order-{ov[3]} page at {ov[2]:#x}",
                phys=ov[2],
            )
        )
    # scratch
    sc = sorted(state.scratch)
    for i, (a, s) in enumerate(sc):
        if a % ps or s % ps:
            out.append(Finding(ERROR, "scratch-align", f"scratch area {a:#x}+{s:#x} is not page aligned", phys=a))
        hit = state.preserved.overlaps_range(a, a + s)
        if hit:
            out.append(
                Finding(
                    ERROR,
                    "scratch-overlap",
                    f"preserved order-{hit[1]} page at {hit[0]:#x} lies in scratch area {a:#x}+{s:#x}",
                    phys=hit[0],
                )
            )
        if i and sc[i - 1][0] + sc[i - 1][1] > a:
            out.append(Finding(ERROR, "scratch-overlap", f"scratch areas overlap at {a:#x}", phys=a))
    # metadata pages inside preserved memory or scratch (a vectorized
    # prefilter against the merged preserved ranges; details for the first
    # few hits only, so a hostile map cannot make this O(pages * runs))
    cov = _Coverage(state)
    meta = state.metadata_pages()
    if meta and cov.starts.size:
        ma = np.array([min(a, (1 << 64) - 1) for a, _ in meta], dtype=np.uint64)
        j = np.searchsorted(cov.ends, ma, side="right")
        hits = np.flatnonzero(j < cov.starts.size)
        hits = [int(k) for k in hits.tolist() if int(cov.starts[j[k]]) < meta[k][1]]
    else:
        hits = []
    for k in hits[:MAX_DETAILED]:
        a, b = meta[k]
        hit = state.preserved.overlaps_range(a, b)
        if hit:
            out.append(
                Finding(
                    ERROR,
                    "map-in-preserved",
                    f"memory-map page {a:#x} lies inside preserved order-{hit[1]} page {hit[0]:#x}",
                    phys=a,
                )
            )
    if len(hits) > MAX_DETAILED:
        out.append(
            Finding(
                ERROR,
                "map-in-preserved",
                f"... and {len(hits) - MAX_DETAILED} more memory-map ranges lie inside preserved memory",
                phys=meta[hits[MAX_DETAILED]][0],
            )
        )
    if meta and sc:  # sorted scratch starts + running max of ends: a binary search per map range
        s_starts = [a for a, _ in sc]
        run_end, best = [], 0
        for a, s in sc:
            best = max(best, a + s)
            run_end.append(best)
        for a, b in meta:
            i = bisect.bisect_left(s_starts, b) - 1  # last scratch area starting below b
            if i >= 0 and run_end[i] > a:
                out.append(Finding(ERROR, "map-in-scratch", f"memory-map page {a:#x} lies in scratch", phys=a))
    if not state.map_read:
        return
    # what the version's map kind requires (its codec's policy)
    codec = state.codec
    if codec.root_fdt_must_be_preserved:
        if state.root_fdt_phys is not None and not _covered(state, state.root_fdt_phys, ps, cov):
            out.append(
                Finding(
                    WARNING,
                    "root-not-preserved",
                    "the root FDT page is not in the preserved set: the next kernel may reuse it "
                    "before clients read their sub-nodes",
                    phys=state.root_fdt_phys,
                )
            )
    for sb in state.subblobs:
        if sb.size is not None and not _covered(state, sb.phys, sb.size, cov):
            out.append(
                Finding(
                    codec.unpreserved_blob_severity,
                    "blob-not-preserved",
                    f"sub-blob {sb.name!r} ({sb.size} bytes) is not fully preserved",
                    phys=sb.phys,
                    path=f"/{sb.name}",
                )
            )
    reports = clients if clients is not None else decode_clients(state, image, budget=Budget(limits))
    for _name, rep in reports.items():
        out.extend(_client_findings(state, rep, cov))


def _client_findings(state: KhoState, rep: ClientReport, cov: _Coverage | None = None) -> list[Finding]:
    cov = cov or _Coverage(state)
    out: list[Finding] = []
    path = f"/{rep.name}"
    if rep.error is not None:
        out.append(Finding(ERROR, "client", str(rep.error), phys=rep.error.phys, path=path))
        return out
    if rep.kind == "missing":
        out.append(Finding(INFO, "blob-missing", "blob not in the memory image", path=path))
    for area in rep.vmalloc:
        for c in area.chunks:
            if not state.preserved.contains(c, 0):
                out.append(
                    Finding(
                        ERROR,
                        "vmalloc-chunk-not-preserved",
                        "kho_vmalloc_chunk page is not preserved",
                        phys=c,
                        path=path,
                    )
                )
        grp = state.page_size << area.desc.order
        for g in area.groups.tolist():
            if not _covered(state, int(g), grp, cov):
                out.append(
                    Finding(
                        ERROR,
                        "vmalloc-group-not-preserved",
                        "vmalloc page group is not preserved",
                        phys=int(g),
                        path=path,
                    )
                )
    if rep.client is not None and rep.decoded is not None:
        ctx = CheckContext(state, path, lambda phys, size: _covered(state, phys, size, cov))
        out.extend(rep.client.findings(rep.decoded, ctx))
    return out


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == ERROR for f in findings)


__all__ = ["check", "has_errors", "Finding", "ERROR", "WARNING", "INFO"]
