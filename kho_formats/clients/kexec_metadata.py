"""``kexec-metadata`` (Linux 7.3, kho-v4): a raw packed struct, not an FDT.

``__packed { u32 version (= 1); char previous_release[65]; u32 kexec_count; }``
"""

from __future__ import annotations

from ..errors import ClientError
from ..layout import KEXEC_METADATA_VERSION, KexecMetadata, Layout

NAME = "kexec-metadata"


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
