"""Progress of long work, shown to a person watching a terminal.

Work that can take seconds (the root-FDT scan of a multi-GiB dump, ``kho luo
extract`` of large memfds, a QEMU boot) reports what it has done through
:func:`task`.  Nothing is shown unless progress was turned on with
:func:`configure`, which the ``kho`` command does when its standard error is
a terminal and neither ``--json`` nor ``--quiet`` was given.  A library user
turns it on the same way::

    >>> from kho_formats import progress
    >>> progress.configure(False)      # the default: silent
    >>> with progress.task("scanning", total=4096, unit="B") as bar:
    ...     bar.update(4096)
    >>> progress.enabled()
    False

The bar is tqdm's, on standard error, left on screen only while the work
runs (``leave=False``).  Callers update it once per chunk of work (a 64 MiB
scan chunk, a written file, a second of boot), never per page, so a shown
bar costs a few microseconds a chunk and a hidden one nothing measurable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

_state: dict[str, Any] = {"enabled": False, "file": None}
_active: list[Any] = []  # the bars of the tasks now running, innermost last


def configure(enabled: bool, file: IO[str] | None = None) -> None:
    """Turn progress bars on or off for this process (``file``: where they go, default ``sys.stderr``)."""
    _state["enabled"] = bool(enabled)
    _state["file"] = file


def enabled() -> bool:
    """Whether :func:`task` shows a bar."""
    return bool(_state["enabled"])


def wanted(*, quiet: bool = False, json: bool = False, stream: IO[str] | None = None) -> bool:
    """The ``kho`` command's rule: a bar only on a terminal, and never with ``--quiet`` or ``--json``."""
    if quiet or json:
        return False
    s = stream if stream is not None else sys.stderr
    try:
        return bool(s.isatty())
    except (AttributeError, ValueError):
        return False


class _Silent:
    """The bar when progress is off: every call is a no-op."""

    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass


class _Bar:
    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_description(self, desc: str) -> None:
        self._bar.set_description_str(desc, refresh=False)

    def set_total(self, total: int | None) -> None:
        self._bar.total = total
        self._bar.refresh()


Bar = _Silent | _Bar
_SILENT = _Silent()


def current() -> Bar:
    """The bar of the innermost running :func:`task` (a silent one outside any):
    lets a loop deep in a reader report work without a parameter for it."""
    return _active[-1] if _active else _SILENT


@contextmanager
def task(desc: str, total: int | None = None, unit: str = "B") -> Iterator[Bar]:
    """A progress bar for one piece of work: ``total`` units (None: unknown,
    the bar then counts and shows the rate).  ``unit="B"`` scales to KiB/MiB/GiB."""
    if not _state["enabled"]:
        yield _SILENT
        return
    from tqdm import tqdm

    scale = unit == "B"
    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=scale,
        unit_divisor=1024 if scale else 1000,
        file=_state["file"] or sys.stderr,
        leave=False,
        mininterval=0.2,
        dynamic_ncols=True,
    )
    shown = _Bar(bar)
    _active.append(shown)
    try:
        yield shown
    finally:
        _active.remove(shown)
        bar.close()


__all__ = ["configure", "current", "enabled", "task", "wanted", "Bar"]
