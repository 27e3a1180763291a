"""``kexec-metadata`` (Linux 7.3, kho-v4): a raw packed struct, not an FDT.

``__packed { u32 version (= 1); char previous_release[65]; u32 kexec_count; }``
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...abi.kexec_metadata import KHO_METADATA_NODE_NAME
from ...abi.layout import KEXEC_METADATA_VERSION, KexecMetadata, Layout
from ...errors import ClientError, SpecError
from ...memory.pageset import PageSet
from ..specfields import INT, STR, SpecField, SpecRow, SpecTable
from .base import BootLog, BootRule, BuildContext, BuiltBlob, Client, DecodeContext, page_round

NAME = KHO_METADATA_NODE_NAME


def decode(blob: bytes, lay: Layout, *, where: str = NAME) -> KexecMetadata:
    size = lay.kexec_metadata.sizeof()
    if len(blob) < size:
        raise ClientError(f"{where}: {len(blob)} bytes", path=where, expected=f"{size} bytes")
    md = lay.kexec_metadata.parse(bytes(blob[:size]))
    if md.version != KEXEC_METADATA_VERSION:
        raise ClientError(f"{where}: version {md.version}", path=where, expected=str(KEXEC_METADATA_VERSION))
    return md


def encode(lay: Layout, previous_release: str, kexec_count: int, version: int = KEXEC_METADATA_VERSION) -> bytes:
    try:
        return lay.kexec_metadata.build(
            KexecMetadata(version=version, previous_release=previous_release, kexec_count=kexec_count)
        )
    except Exception as exc:  # construct errors on out-of-range values
        raise ClientError(f"{NAME}: cannot encode: {exc}", path=NAME) from None


def to_json(md: KexecMetadata) -> dict:
    return {"version": md.version, "previous_release": md.previous_release, "kexec_count": md.kexec_count}


# -- the client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KexecMetadataParams:
    previous_release: str = ""
    kexec_count: int = 0
    metadata_version: int = KEXEC_METADATA_VERSION


SPEC = SpecTable(
    NAME,
    (
        SpecField("previous_release", STR, "", doc="the release string (at most 64 bytes)"),
        SpecField("kexec_count", INT, 0, doc="kexec count"),
        SpecField("metadata_version", INT, KEXEC_METADATA_VERSION, doc="struct version"),
    ),
    title=f'`type = "{NAME}"`:',
    rows=(
        SpecRow(
            ("previous_release", "kexec_count", "metadata_version"),
            f'`type = "{NAME}"`: `previous_release`, `kexec_count`, `metadata_version`',
            '`""`, `0`, `1`',
            "the 73-byte struct",
        ),
    ),
)


def _judge_boot(log: BootLog) -> tuple[str, str | None]:
    """The next kernel prints where it was kexec'd from when it read the blob."""
    if any(line.startswith("KHO: exec from: ") for line in log.lines):
        return "ok", None
    if any(NAME in line for line in log.lines):
        return "failed", None
    return "not-reported", ("kexec-metadata was not read ('KHO: exec from:' missing)" if log.found else None)


class KexecMetadataClient(Client):
    name = NAME
    spec_type = NAME
    spec_table = SPEC
    boot_rule = BootRule(judge=_judge_boot)

    def decode(self, blob: bytes, ctx: DecodeContext) -> KexecMetadata:
        return decode(blob, ctx.layout, where=ctx.where or NAME)

    def to_json(self, result: KexecMetadata) -> dict:
        return to_json(result)

    def summary(self, decoded: Any) -> str:
        d = decoded
        return f"version {d['version']}, previous release {d['previous_release']!r}, kexec count {d['kexec_count']}"

    def spec_params(self, values: dict[str, Any], where: str, base_dir: Path | None) -> KexecMetadataParams:
        if len(values["previous_release"].encode()) > 64:
            raise SpecError(f"{where}.previous_release: longer than 64 bytes")
        return KexecMetadataParams(**values)

    def build(self, entry: Any, ctx: BuildContext) -> BuiltBlob:
        p: KexecMetadataParams = entry.params
        data = encode(ctx.layout, p.previous_release, p.kexec_count, p.metadata_version)
        phys, seg = ctx.place(data, entry.phys, f"sub-blob {entry.name}")
        pres = PageSet.from_ranges(ctx.page_size, [(phys, phys + page_round(len(data), ctx.page_size))], max_order=0)
        return BuiltBlob(data, phys, [seg], pres)


CLIENT = KexecMetadataClient()
