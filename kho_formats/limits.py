"""Resource bounds for walking untrusted input.

Every walker charges a :class:`Budget` for each metadata page it reads (radix
nodes, v1 chunks and bitmaps, vmalloc chunks, serialization blocks), for
each entry it expands and for each run of preserved pages it materializes
from a bitmap, so a hostile capture costs bounded time and memory.
The other bounds: sub-blob bytes materialized by a parse, findings one
check reports in detail, scratch areas and allocation regions accepted,
bytes a checksum may run over.
Exceeding a bound raises :class:`~kho_formats.errors.LimitExceeded`, which
names the flag that raises it.

What grows with what (measured by ``benchmarks/scale.py`` and
``benchmarks/extract.py``, docs/benchmarks.md):

* with the metadata read (``max_pages``): a parse holds about twice the
  map's own pages;
* with the folios and other entries decoded (``max_entries``): 19 bytes
  of arrays held per memfd folio record (its address and index, 8 bytes
  each, flags 2 and order 1: what the checks of the folio list need at
  once), about 50 at the decode's peak; ``kho luo extract`` adds 30-40
  per folio run while it sorts the runs by image address; ``inspect
  --json`` holds one JSON object per folio record, about 800 bytes (the
  document lists every record);
* with the runs materialized (``max_runs``, 16 bytes each) and with
  sub-blob bytes (``max_blob_bytes``).

It does not grow with the bytes of preserved memory (a 1 TiB handover of
order-9 folios checks in about 50 MiB), nor with memfd contents extracted:
``kho luo extract`` reads the image in address order with ``pread`` and
``copy_file_range`` (none of the image's pages stay mapped), so its
resident size, file pages included, is that of the decoded metadata and
an 8 MiB window, whatever the file size.  ``kho build`` of a memfd with
contents holds its folio list and what is allocated and preserved for
it (about 650 bytes per folio at peak: 356 MB for 524,288 order-0 folios;
``MAX_SPEC_FOLIOS`` bounds it), not the folios' bytes, which are generated
a few MiB at a time while the image is written.  A root-FDT scan of a full
dump keeps 12 bytes per page of the dump (the page's address and first
word), and a kdump reader maps its whole file; neither is bounded here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .errors import LimitExceeded


@dataclass(frozen=True)
class Limits:
    #: metadata pages one parse may read (1 Mi pages = 4 GiB of metadata at 4 KiB;
    #: a parse holds about twice the pages it read)
    max_pages: int = 1 << 20
    #: entries (vmalloc pages, folios, block entries) one parse may expand
    #: (memory: tens of bytes each in arrays; JSON documents hold an object each)
    max_entries: int = 1 << 26
    #: runs (start, count: 16 bytes each) one parse may materialize from the
    #: memory map's bitmaps; a maximally fragmented map makes one run per
    #: two bits, so this, not max_pages, bounds its memory (32 Mi runs:
    #: 512 MiB of runs, about 650 MiB peak RSS in ``inspect``/``check``)
    max_runs: int = 1 << 25
    #: sub-blob bytes one parse copies out of the image (each (phys, size) once)
    max_blob_bytes: int = 256 << 20
    #: findings one check reports one by one (the rest are summed up per code)
    max_findings: int = 4096
    #: scratch areas a handover may have
    max_scratch: int = 1 << 16
    #: free regions an allocation may be given (convert --alloc, fixture alloc)
    max_alloc_regions: int = 1 << 16
    #: bytes of memory image a bundle's segments may add up to (a file named
    #: N times counts N times: it is N times as much image to check or write)
    max_image_bytes: int = 1 << 40
    #: bytes a checksum (kho_test csum_partial) may run over
    max_csum_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise TypeError(f"Limits.{f.name} must be a non-negative int, not {v!r}")


DEFAULT_LIMITS = Limits()


def check_limits(limits: Limits | None, where: str) -> Limits:
    """``limits`` or the defaults; a ``TypeError`` naming ``where`` otherwise."""
    if limits is None:
        return DEFAULT_LIMITS
    if not isinstance(limits, Limits):
        raise TypeError(f"{where}: limits must be a Limits or None, not {type(limits).__name__}")
    return limits


class Budget:
    def __init__(self, limits: Limits | None = None) -> None:
        if limits is not None and not isinstance(limits, Limits):
            raise TypeError(f"limits must be a Limits or None, not {type(limits).__name__}")
        self.limits = limits or DEFAULT_LIMITS
        self.pages = 0
        self.entries = 0
        self.bytes = 0
        self.runs = 0

    def page(self, phys: int, what: str, count: int = 1) -> None:
        """Charge ``count`` metadata pages (``phys``: the first, for the error)."""
        self.pages += count
        if self.pages > self.limits.max_pages:
            raise LimitExceeded(
                f"more than {self.limits.max_pages} metadata pages read (at {what})",
                phys=phys,
                expected="raise it with --max-pages / Limits(max_pages=...)",
            )

    def count(self, n: int, limit: str, what: str) -> None:
        """Refuse ``n`` things of a kind bounded by ``Limits.<limit>`` (not cumulative)."""
        cap = getattr(self.limits, limit)
        if n > cap:
            raise LimitExceeded(f"{n} {what}: more than {cap}", expected=f"raise it with Limits({limit}=...)")

    def blob_bytes(self, n: int, what: str, phys: int | None = None) -> None:
        """Charge ``n`` sub-blob bytes copied out of the image."""
        self.bytes += n
        if self.bytes > self.limits.max_blob_bytes:
            raise LimitExceeded(
                f"more than {self.limits.max_blob_bytes} sub-blob bytes read (at {what})",
                phys=phys,
                expected="raise it with Limits(max_blob_bytes=...)",
            )

    def runs_add(self, n: int, what: str, phys: int | None = None) -> None:
        """Charge ``n`` preserved-page runs materialized from memory-map bitmaps."""
        self.runs += n
        if self.runs > self.limits.max_runs:
            raise LimitExceeded(
                f"more than {self.limits.max_runs} preserved-page runs materialized (at {what}): "
                "each costs 16 bytes of memory",
                phys=phys,
                expected="raise it with --max-runs / Limits(max_runs=...)",
            )

    def entries_add(self, n: int, what: str, phys: int | None = None) -> None:
        self.entries += n
        if self.entries > self.limits.max_entries:
            raise LimitExceeded(
                f"more than {self.limits.max_entries} entries expanded (at {what})",
                phys=phys,
                expected="raise it with --max-entries / Limits(max_entries=...)",
            )
