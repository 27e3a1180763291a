"""Pairing two keyed collections for a diff (base layer): the one "only in A / only in B / both"
walk that ``kho diff`` uses for sub-blobs, LUO sessions, files and FLBs."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def keyed_pairs(a: Iterable[T], b: Iterable[T], key: Callable[[T], K]) -> Iterator[tuple[K, T | None, T | None]]:
    """``(key, item of a or None, item of b or None)`` for every key, those of ``a`` first in their
    order, then those only ``b`` has; a key repeated on one side keeps its last item."""
    da = {key(x): x for x in a}
    db = {key(x): x for x in b}
    for k in list(da) + [k for k in db if k not in da]:
        yield k, da.get(k), db.get(k)


def only_change(x: object | None) -> str:
    """The ``change`` of a key one side lacks: ``only-b`` when ``x`` (A's item) is None, else ``only-a``."""
    return "only-" + ("b" if x is None else "a")


__all__ = ["keyed_pairs", "only_change"]
