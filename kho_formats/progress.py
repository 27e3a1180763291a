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

``configure(..., delay=s)`` draws a bar only once its task has run for ``s``
seconds (the ``kho`` command: :data:`CLI_DELAY`, or ``KHO_PROGRESS_DELAY``
from the environment).  Until then nothing is imported or drawn: tqdm
itself takes some 40 ms to import and set up, which a command of half a
second would pay as 10% for a bar no one had time to read.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

_state: dict[str, Any] = {"enabled": False, "file": None, "delay": 0.0}
_active: list[Any] = []  # the bars of the tasks now running, innermost last

#: seconds of work before the ``kho`` command draws a bar (``KHO_PROGRESS_DELAY`` overrides it)
CLI_DELAY = 1.0


def configure(enabled: bool, file: IO[str] | None = None, *, delay: float = 0.0) -> None:
    """Turn progress bars on or off for this process (``file``: where they go,
    default ``sys.stderr``; ``delay``: seconds a task runs before its bar is drawn)."""
    _state["enabled"] = bool(enabled)
    _state["file"] = file
    _state["delay"] = max(0.0, float(delay))


def cli_delay() -> float:
    """The ``kho`` command's delay: ``KHO_PROGRESS_DELAY`` (seconds) if set and valid, else :data:`CLI_DELAY`."""
    raw = os.environ.get("KHO_PROGRESS_DELAY")
    try:
        return max(0.0, float(raw)) if raw is not None else CLI_DELAY
    except ValueError:
        return CLI_DELAY


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
    """A shown bar: the tqdm bar, made (and tqdm imported) once the task has
    run for the configured delay; what was counted before is its start."""

    def __init__(self, desc: str, total: int | None, unit: str, delay: float) -> None:
        self._args = (desc, total, unit)
        self._count = 0
        self._due = time.monotonic() + delay
        self._bar: Any = None
        if delay <= 0:
            self._show()

    def _show(self) -> None:
        from tqdm import tqdm

        desc, total, unit = self._args
        scale = unit == "B"
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=scale,
            unit_divisor=1024 if scale else 1000,
            file=_state["file"] or sys.stderr,
            leave=False,
            mininterval=0.2,
            dynamic_ncols=True,
            initial=self._count,
        )

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)
            return
        self._count += n
        if time.monotonic() >= self._due:
            self._show()

    def set_description(self, desc: str) -> None:
        if self._bar is None:
            self._args = (desc, *self._args[1:])
        else:
            self._bar.set_description_str(desc, refresh=False)

    def set_total(self, total: int | None) -> None:
        if self._bar is None:
            self._args = (self._args[0], total, self._args[2])
            return
        self._bar.total = total
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


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
    shown = _Bar(desc, total, unit, _state["delay"])
    _active.append(shown)
    try:
        yield shown
    finally:
        _active.remove(shown)
        shown.close()


__all__ = ["configure", "current", "enabled", "task", "wanted", "Bar", "CLI_DELAY", "cli_delay"]
