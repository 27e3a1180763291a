"""Resource bounds for walking untrusted input.

Every walker charges a :class:`Budget` for each metadata page it reads (radix
nodes, v1 chunks and bitmaps, vmalloc chunks, serialization blocks) and for
each entry it expands, so a hostile capture costs bounded time and memory.
Exceeding a bound raises :class:`~kho_formats.errors.LimitExceeded`, which
names the flag that raises it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LimitExceeded


@dataclass(frozen=True)
class Limits:
    #: metadata pages one parse may read (1 Mi pages = 4 GiB of metadata at 4 KiB)
    max_pages: int = 1 << 20
    #: entries (vmalloc pages, folios, block entries) one parse may expand
    max_entries: int = 1 << 26


DEFAULT_LIMITS = Limits()


class Budget:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or DEFAULT_LIMITS
        self.pages = 0
        self.entries = 0

    def page(self, phys: int, what: str, count: int = 1) -> None:
        """Charge ``count`` metadata pages (``phys``: the first, for the error)."""
        self.pages += count
        if self.pages > self.limits.max_pages:
            raise LimitExceeded(
                f"more than {self.limits.max_pages} metadata pages read (at {what})",
                phys=phys,
                expected="raise it with --max-pages / Limits(max_pages=...)",
            )

    def entries_add(self, n: int, what: str, phys: int | None = None) -> None:
        self.entries += n
        if self.entries > self.limits.max_entries:
            raise LimitExceeded(
                f"more than {self.limits.max_entries} entries expanded (at {what})",
                phys=phys,
                expected="raise it with --max-entries / Limits(max_entries=...)",
            )
