"""Blobs no registered client knows: passed through as bytes.

The registry's fallback: ``kind`` ``"unknown"`` in reports, ``type = "raw"``
in specs (the bytes come from ``file``, ``hex`` or ``text``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import SpecError
from ...memory.pageset import PageSet
from ..specfields import STR, SpecField, SpecRow, SpecTable, read_spec_file
from .base import BuildContext, BuiltBlob, Client, DecodeContext, page_round


@dataclass(frozen=True)
class RawBlob:
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def to_json(self) -> dict:
        return {"size": len(self.data), "head": self.data[:16].hex()}


@dataclass(frozen=True)
class RawParams:
    data: bytes


SPEC = SpecTable(
    "raw",
    (
        SpecField("file", STR, doc="file with the bytes, relative to the spec and inside its directory"),
        SpecField("hex", STR, doc="the bytes as hex digits"),
        SpecField("text", STR, doc="the bytes as UTF-8 text"),
    ),
    title='`type = "raw"`:',
    rows=(
        SpecRow(
            ("file", "hex", "text"),
            '`type = "raw"`: `file` (relative to the spec, inside its directory unless `kho build --allow-outside-files`), `hex` or `text`',
            "",
            "bytes passed through (kho-v1 needs FDT blobs)",
        ),
    ),
)


class RawClient(Client):
    kind = "unknown"
    spec_type = "raw"
    spec_table = SPEC

    def decode(self, blob: bytes, ctx: DecodeContext) -> RawBlob:
        return RawBlob(bytes(blob))

    def summary(self, decoded: Any) -> str:
        return f"{decoded['size']} bytes: {decoded['head']}..."

    def spec_params(self, values: dict[str, Any], where: str, base_dir: Path | None) -> RawParams:
        srcs = [k for k in ("file", "hex", "text") if values[k] is not None]
        if len(srcs) != 1:
            raise SpecError(f"{where}: a raw blob needs exactly one of file / hex / text")
        if values["file"] is not None:
            data = read_spec_file(values["file"], f"{where}.file", base_dir)
        elif values["hex"] is not None:
            try:
                data = bytes.fromhex(re.sub(r"\s+", "", values["hex"]))
            except ValueError:
                raise SpecError(f"{where}.hex: not hex digits") from None
        else:
            data = values["text"].encode()
        if not data:
            raise SpecError(f"{where}: empty raw blob")
        return RawParams(data)

    def build(self, entry: Any, ctx: BuildContext) -> BuiltBlob:
        data = bytes(entry.params.data)
        phys, seg = ctx.place(data, entry.phys, f"sub-blob {entry.name}")
        pres = PageSet.from_ranges(ctx.page_size, [(phys, phys + page_round(len(data), ctx.page_size))], max_order=0)
        return BuiltBlob(data, phys, [seg], pres)


CLIENT = RawClient()
