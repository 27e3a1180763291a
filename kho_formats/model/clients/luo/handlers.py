"""The LUO file-handler protocol: :class:`FileHandler` (decode, JSON, contents, build) and the registry
:data:`FILE_HANDLERS` keyed by ``luo_file_ser.compatible``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ....abi.layout import Layout
from ....abi.luo import LuoFileSer
from ....errors import SpecError
from ....findings import Finding
from ....memory.alloc import PageAllocator
from ....memory.image import PhysImage
from ....memory.pageset import PageSet
from ...specfields import SpecField
from ..base import CheckContext, DecodeContext, Registry, Segment
from ..vmalloc import VmallocArea


@dataclass
class FileBuildContext:
    """What a file handler's ``build_file`` gets from the LUO builder."""

    layout: Layout
    alloc: PageAllocator
    #: the seed of generated data (the blob's, or the spec's)
    seed: int
    #: a label unique to the file (``<blob>/<session>/<token>``): generated data depends on it
    label: str
    #: spec path for error messages
    where: str

    @property
    def page_size(self) -> int:
        return self.layout.page_size


@dataclass
class FileBuilt:
    """A built file: its ``luo_file_ser.data`` handle, the segments to put in
    the image and the pages it preserves."""

    data: int
    segments: list[Segment]
    preserve: PageSet


class FileHandler:
    """Decodes the ``data`` handle of a ``luo_file_ser`` whose ``compatible``
    is :attr:`compatible`.  Subclass and register in :data:`FILE_HANDLERS`."""

    compatible: ClassVar[str] = ""
    #: the key of every file's JSON that holds this handler's decoded form
    #: (``null`` for files of other handlers); None: no key
    json_key: ClassVar[str | None] = None

    def decode(self, file: LuoFileSer, ctx: DecodeContext) -> Any:
        return None

    def to_json(self, result: Any) -> Any:
        return None

    def areas(self, result: Any) -> list[VmallocArea]:
        return []

    def findings(self, result: Any, ctx: CheckContext, path: str) -> list[Finding]:
        return []

    def referenced(self, result: Any, page_size: int) -> list[tuple[int, int]]:
        """Byte ranges the file's data lives in (``kho capture`` keeps them)."""
        return []

    def summary(self, file_json: dict[str, Any]) -> tuple[str, str, str]:
        """(size, folios, seals) columns of the text report."""
        return ("", "", "")

    def index_json(self, result: Any) -> dict[str, Any]:
        """What ``kho luo extract`` records of the file in ``index.json``."""
        return {}

    def content_size(self, result: Any) -> int | None:
        """Bytes of file contents ``extract`` writes (None: not extractable)."""
        return None

    def contents(self, result: Any, image: PhysImage, page_size: int) -> Iterator[tuple[int, memoryview]]:
        """``(file offset, bytes)`` pieces of the contents, each at most a few
        MiB, never the whole file at once; offsets not covered are zeros."""
        return iter(())

    def content_runs(self, result: Any, page_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The pieces :meth:`contents` gives as ``(file offset, phys, length)``
        arrays (ascending offsets, each byte once), for a copy that reads the
        image in address order; None: this handler has only :meth:`contents`."""
        return None

    # building (a handler with ``spec_fields`` can be built from a LUO spec)

    #: the keys of a spec file of this handler, besides ``token`` and ``handler`` (None: not buildable)
    spec_fields: ClassVar[tuple[SpecField, ...] | None] = None

    def spec_params(self, values: dict[str, Any], where: str, base_dir: Path | None) -> Any:
        """The validated keys of :attr:`spec_fields` -> the handler's params."""
        return values

    def folio_orders(self, params: Any, page_size: int, where: str) -> list[int]:
        """Orders of the data folios the file holds before LUO preserves it
        (the builder allocates them first, largest first, and passes their
        addresses to :meth:`build_file` in this order)."""
        return []

    def folio_demand(self, params: Any, page_size: int) -> tuple[int, int]:
        """``(folios, bytes)`` :meth:`folio_orders` will list, in closed form
        (checked against the free regions before anything is listed)."""
        return 0, 0

    def build_file(self, params: Any, ctx: FileBuildContext, folio_phys: Sequence[int]) -> FileBuilt:
        raise SpecError(f"{ctx.where}: LUO file handler {self.compatible!r} cannot be built from a spec")

    def reencode(self, result: Any, lay: Layout) -> list[tuple[int, bytes]]:
        """The handler's own pages of a decoded file, encoded again at the
        addresses the decode recorded (not the file's data folios)."""
        return []


class UnknownFileHandler(FileHandler):
    """The fallback: a handler this library does not know (the file is
    shown with its compatible, token and data handle)."""


#: LUO file handlers keyed by ``compatible``; unknown ones fall back to :class:`UnknownFileHandler`
FILE_HANDLERS: Registry[FileHandler] = Registry("LUO file handlers", lambda h: h.compatible, UnknownFileHandler())
