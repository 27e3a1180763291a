"""Long JSON lists of same-keyed integer records (a memfd's folios), held as
numpy columns instead of one dict per record.

A 256 GiB memfd in order-9 folios has 131,072 folio records; as dicts of
Python ints they take ~850 bytes each by the time ``kho inspect --json`` has
written them.  :class:`Records` keeps the columns the decoder already has and
makes a record's dict only when one is asked for; the JSON writer
(:func:`kho_formats.ops.report.write_json`) formats them a chunk at a time,
so writing the document holds no per-record objects.

Documents are plain JSON (lists of dicts) unless a caller asks for records
inside :func:`lazy_records`: ``kho inspect --json`` and
:meth:`kho_formats.Handover.write_json` do; :meth:`kho_formats.Handover.to_json`
does not, so ``json.dumps(h.to_json())`` keeps working.

Base layer: imports nothing of the package.

>>> import numpy as np
>>> cols = {"phys": np.array([4096, 8192], np.uint64), "order": np.array([0, -1])}
>>> records(cols, nulls={"order": -1})
[{'phys': 4096, 'order': 0}, {'phys': 8192, 'order': None}]
>>> with lazy_records():
...     r = records(cols, nulls={"order": -1})
>>> len(r), r[1], r.to_list() == records(cols, nulls={"order": -1})
(2, {'phys': 8192, 'order': None}, True)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

_LAZY: contextvars.ContextVar[bool] = contextvars.ContextVar("kho_formats_lazy_records", default=False)


@contextlib.contextmanager
def lazy_records() -> Iterator[None]:
    """Within this block, :func:`records` gives :class:`Records`, not lists."""
    token = _LAZY.set(True)
    try:
        yield
    finally:
        _LAZY.reset(token)


class Records(Sequence[dict[str, Any]]):
    """A read-only sequence of records ``{key: int or None}``, one numpy column
    per key (all of one length, integer dtypes); in column ``k``, the value
    ``nulls[k]`` stands for JSON ``null``.  Equal to the list of the same dicts."""

    __slots__ = ("columns", "nulls", "_n")

    def __init__(self, columns: Mapping[str, np.ndarray], nulls: Mapping[str, int] | None = None) -> None:
        if not columns:
            raise ValueError("Records need at least one column")
        cols = {str(k): np.asarray(v) for k, v in columns.items()}
        sizes = {c.shape for c in cols.values()}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(f"Records columns must be 1-D and of one length, not {sorted(sizes)}")
        for k, c in cols.items():
            if c.dtype.kind not in "iu":
                raise ValueError(f"Records column {k!r} is {c.dtype}, not an integer type")
        nul = dict(nulls or {})
        if not set(nul) <= set(cols):
            raise ValueError(f"null values for columns that are not there: {sorted(set(nul) - set(cols))}")
        self.columns: dict[str, np.ndarray] = cols
        self.nulls: dict[str, int] = nul
        self._n = int(next(iter(sizes))[0])

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> Records: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | Records:
        if isinstance(i, slice):
            return Records({k: c[i] for k, c in self.columns.items()}, self.nulls)
        if not -self._n <= i < self._n:
            raise IndexError("Records index out of range")
        return {k: self._value(k, c[i]) for k, c in self.columns.items()}

    def _value(self, k: str, v: Any) -> int | None:
        v = int(v)
        return None if k in self.nulls and v == self.nulls[k] else v

    def rows(self, start: int = 0, stop: int | None = None) -> list[tuple[Any, ...]]:
        """Records ``start..stop-1`` as value tuples in key order, nulls as
        ``None``: one ``tolist()`` per column, no Python loop per value."""
        cols: list[list[Any]] = []
        for k, c in self.columns.items():
            part = c[start:stop]
            vals = part.tolist()
            if k in self.nulls:
                for j in np.flatnonzero(part == self.nulls[k]).tolist():
                    vals[j] = None
            cols.append(vals)
        return list(zip(*cols))

    def to_list(self) -> list[dict[str, Any]]:
        """The records as a list of dicts (what :func:`records` gives outside
        :func:`lazy_records`)."""
        keys = self.keys
        return [dict(zip(keys, row)) for row in self.rows()]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        step = 4096
        keys = self.keys
        for a in range(0, self._n, step):
            for row in self.rows(a, a + step):
                yield dict(zip(keys, row))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Records):
            other = other.to_list()
        if isinstance(other, list):
            return self.to_list() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Records({self._n} x {', '.join(self.keys)})"


def records(
    columns: Mapping[str, np.ndarray], nulls: Mapping[str, int] | None = None
) -> Records | list[dict[str, Any]]:
    """The records of ``columns`` (see :class:`Records`): a :class:`Records`
    inside :func:`lazy_records`, else the plain list of dicts."""
    r = Records(columns, nulls)
    return r if _LAZY.get() else r.to_list()
