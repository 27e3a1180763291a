"""Validate a parsed handover against its version's rules.

:func:`check` returns every finding (severity, code, message, address or
path).  Parse errors are not findings: they raise before a state exists.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import numpy as np

from .._types import check_type
from ..findings import ERROR, INFO, WARNING, Finding
from ..limits import DEFAULT_LIMITS, Budget, Limits
from ..memory.image import PhysImage
from ..memory.pageset import END_OF_SPACE, _run_ends, merge_sorted_intervals
from ..model.clients import CheckContext, ClientReport, decode_clients
from ..model.state import KhoState, root_fdt_align_note, root_fdt_alignment

#: findings of one kind reported one by one before the rest are summed up
MAX_DETAILED = 64


class _OrderRuns:
    """One order's runs (already merged) with a binary search per query;
    ends are computed only for the runs a query lands on."""

    def __init__(self, starts: np.ndarray, counts: np.ndarray, unit: int) -> None:
        self.starts, self.counts, self.unit = starts, counts, unit

    def end(self, i: int) -> int:
        return int(self.starts[i]) + int(self.counts[i]) * self.unit

    def within(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Byte (starts, ends) of the runs intersecting ``[start, end)`` (ends
        up to 2**64 as Python-exact uint64 except END_OF_SPACE for 2**64)."""
        s = self.starts
        hi = s.size if end >= 1 << 64 else int(np.searchsorted(s, np.uint64(end), side="left"))
        lo = int(np.searchsorted(s, np.uint64(start), side="right")) - 1
        if lo < 0 or self.end(lo) <= start:
            lo += 1
        if lo >= hi:
            z = np.zeros(0, np.uint64)
            return z, z
        return s[lo:hi], _run_ends(s[lo:hi], self.counts[lo:hi], self.unit)

    def first_ending_after(self, at: np.ndarray) -> np.ndarray:
        """For each address, the index of the first run ending after it."""
        j = np.searchsorted(self.starts, at, side="right").astype(np.int64) - 1
        ok = j >= 0
        jj = np.where(ok, j, 0)
        e = self.starts[jj] + self.counts[jj] * np.uint64(self.unit)
        wrapped = e <= self.starts[jj]  # the run ending at 2**64
        return np.where(ok & ((e > at) | wrapped), j, j + 1)


class _Coverage:
    """Is a byte range inside preserved memory?  Binary searches in each
    order's runs (a per-query scan would make checking N vmalloc groups
    against R preserved ranges O(N * R)); nothing is built per run, so a
    map of tens of millions of runs costs no copy (the merged ranges across
    orders would cost 16 bytes per run).  Across orders, the runs a query
    touches are merged for that query only."""

    def __init__(self, state: KhoState) -> None:
        ps = state.page_size
        self.orders = [
            _OrderRuns(r.starts, r.counts, ps << r.order) for r in state.preserved.iter_runs() if r.starts.size
        ]

    @property
    def size(self) -> int:
        return sum(int(o.starts.size) for o in self.orders)

    def covers(self, start: int, end: int) -> bool:
        if not self.orders or not 0 <= start < 1 << 64:
            return False
        for o in self.orders:  # the usual case: one run holds the whole range
            i = int(np.searchsorted(o.starts, np.uint64(start), side="right")) - 1
            if i >= 0 and end <= o.end(i):
                return True
        if len(self.orders) == 1:
            return False
        parts = [o.within(start, end) for o in self.orders]
        s = np.concatenate([p[0] for p in parts])
        if s.size == 0:
            return False
        e = np.concatenate([p[1] for p in parts])
        idx = np.argsort(s, kind="stable")
        ms, me = merge_sorted_intervals(s[idx], e[idx])
        last = int(me[0])
        return int(ms[0]) <= start and end <= (1 << 64 if last == END_OF_SPACE else last)

    def intersecting(self, spans: list[tuple[int, int]]) -> list[int]:
        """Indexes of the ``[a, b)`` spans that intersect a preserved run."""
        at = np.array([min(a, (1 << 64) - 1) for a, _ in spans], dtype=np.uint64)
        hit = np.zeros(at.size, dtype=bool)
        for o in self.orders:
            j = o.first_ending_after(at)
            cand = np.flatnonzero(j < o.starts.size)
            for k in cand.tolist():
                if int(o.starts[j[k]]) < spans[k][1]:
                    hit[k] = True
        return np.flatnonzero(hit).tolist()


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
        rule = root_fdt_alignment(root, ps)  # the one rule: inspect notes the same words
        if rule is not None:
            out.append(Finding(ERROR if rule[0] == ERROR else WARNING, "root-fdt-align", rule[1], phys=root))
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
    align = root_fdt_align_note(state.root_fdt_phys, ps) if state.root_fdt_phys is not None else None
    for n in state.notes:
        if n != align:  # the root-fdt-align finding itself, below
            out.append(Finding(INFO, "note", n))
    _root_findings(state, image, root_phys_required, out)
    Budget(limits).count(len(state.scratch), "max_scratch", "scratch areas")
    if state.map_released:
        out.append(
            Finding(
                INFO,
                "map-released",
                "the receiving kernel released the memory map: neither it nor the clients' data was checked",
            )
        )
    elif not state.map_read:
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
    hits = cov.intersecting(meta) if meta and cov.size else []
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
        if area.alias_reason is not None:
            out.append(
                Finding(
                    ERROR,
                    "vmalloc-group-aliased",
                    f"{area.where or 'kho_vmalloc'}: {area.alias_reason}",
                    phys=area.desc.first,
                    path=path,
                )
            )
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
