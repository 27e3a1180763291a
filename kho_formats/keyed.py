"""Pairing two keyed collections for a diff (base layer): the one "only in A / only in B / differs"
walk that every ``kho diff`` comparison uses (sub-blobs by name in :mod:`kho_formats.ops.report`,
LUO sessions by name, files by token and FLBs by name in :mod:`kho_formats.model.clients.luo.diff`).

>>> keyed_diff([("x", 1), ("y", 2)], [("y", 3), ("z", 4)], key=lambda t: t[0],
...            compare=lambda p, q: {"a": p[1], "b": q[1]} if p != q else None)
[{'name': 'x', 'change': 'only-a'}, {'name': 'y', 'change': 'differs', 'a': 2, 'b': 3}, {'name': 'z', 'change': 'only-b'}]
>>> only_side("only-b")
'B'
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

#: the ``change`` of an entry both sides have and :func:`keyed_diff`'s ``compare`` found different
DIFFERS = "differs"
ONLY_A = "only-a"
ONLY_B = "only-b"


def keyed_pairs(a: Iterable[T], b: Iterable[T], key: Callable[[T], K]) -> Iterator[tuple[K, T | None, T | None]]:
    """``(key, item of a or None, item of b or None)`` for every key, those of ``a`` first in their
    order, then those only ``b`` has; a key repeated on one side keeps its last item."""
    da = {key(x): x for x in a}
    db = {key(x): x for x in b}
    for k in list(da) + [k for k in db if k not in da]:
        yield k, da.get(k), db.get(k)


def only_change(x: object | None) -> str:
    """The ``change`` of a key one side lacks: ``only-b`` when ``x`` (A's item) is None, else ``only-a``."""
    return ONLY_B if x is None else ONLY_A


def only_side(change: str) -> str:
    """``"A"`` or ``"B"``: the side an ``only-a`` / ``only-b`` entry is on (for the text of a diff)."""
    if change not in (ONLY_A, ONLY_B):
        raise ValueError(f"not an only-a/only-b change: {change!r}")
    return change[-1].upper()


def keyed_diff(
    a: Iterable[T],
    b: Iterable[T],
    key: Callable[[T], K],
    compare: Callable[[T, T], Mapping[str, Any] | None],
    *,
    key_name: str = "name",
) -> list[dict[str, Any]]:
    """The entries of a keyed diff, in :func:`keyed_pairs` order: ``{key_name: k, "change": "only-a"}``
    (or ``"only-b"``) for a key one side lacks, ``{key_name: k, "change": "differs", **compare(x, y)}``
    for one both have when ``compare`` returns something (None or an empty mapping: the same)."""
    out: list[dict[str, Any]] = []
    for k, x, y in keyed_pairs(a, b, key):
        if x is None or y is None:
            out.append({key_name: k, "change": only_change(x)})
            continue
        what = compare(x, y)
        if what:
            out.append({key_name: k, "change": DIFFERS, **what})
    return out


__all__ = ["DIFFERS", "ONLY_A", "ONLY_B", "keyed_diff", "keyed_pairs", "only_change", "only_side"]
