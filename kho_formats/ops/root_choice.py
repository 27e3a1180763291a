"""Which root KHO FDT in a memory image is the outgoing one.

A kernel that was itself booted through KHO holds two root FDTs: its own
(``kho_out``, what it will hand to the next kernel) and the one it received
(``kho_in``, from the previous update: debugfs ``kho/in/fdt`` shows it, and
its page stays in memory).  Linux 7.3 creates debugfs ``kho/out/fdt`` only in
a kernel that was not booted through KHO (``kho_init()`` adds it after the
``if (fdt)`` return), so a debugfs capture of such a kernel has ``kho/in/``
and a ``kho/out/`` without ``fdt``, and the outgoing root FDT must be found in
a memory dump.  :func:`choose_outgoing` ranks the candidates a scan found:

1. not the one ``kho/in/fdt`` describes (the same bytes);
2. then the most sub-blobs whose bytes in the image match the debugfs
   ``kho/out/sub_fdts/<name>`` files (the sub-trees this kernel added);
3. then the newest, as the image says it: the highest ``kexec_count`` of
   its ``kexec-metadata`` sub-blob (``kho_out_kexec_metadata()`` writes the
   count it received plus one, so the handover a kernel received has a
   lower count than the one it prepares), then the highest
   ``liveupdate_num`` of its ``LUO`` state (``luo_ser``: again the received
   number plus one); a candidate whose sub-blob is not in the image has no
   count and ranks after one that has;
4. then the lowest address (the scan's order).

A memory image alone (no debugfs) is ranked by 3 and 4.  When the only
candidates left are the one ``kho/in`` describes, there is no outgoing root
FDT in the image: :func:`choose_outgoing` refuses (a
:class:`~kho_formats.errors.KhoFormatError`) rather than hand back the stale
root of the previous update.  It says which candidate it took and why, for the
notes and ``--json``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import abi
from ..abi.fdt_header import header_totalsize
from ..abi.kexec_metadata import KHO_METADATA_NODE_NAME
from ..abi.layout import layout
from ..abi.luo import LUO_ABI_COMPATIBLE, LUO_KHO_ENTRY_NAME
from ..errors import KhoFormatError
from ..memory.image import PhysImage
from ..model.fdt import get_strings, get_u64, parse_fdt
from .locate import RootCandidate, read_fdt_at


@dataclass
class Ranked:
    """One candidate with what was found out about it."""

    candidate: RootCandidate
    #: its bytes are the root FDT of ``kho/in`` (the handover this kernel received)
    incoming: bool = False
    #: sub-nodes whose blob in the image matches ``kho/out/sub_fdts/<name>``
    matching: list[str] = field(default_factory=list)
    #: sub-nodes that also have a ``kho/out/sub_fdts`` file, but whose bytes differ or are not in the image
    differing: list[str] = field(default_factory=list)
    #: ``kexec_count`` of its ``kexec-metadata`` sub-blob (None: no such sub-node, or not in the image)
    kexec_count: int | None = None
    #: ``liveupdate_num`` of its ``LUO`` state (None: no LUO sub-node, or not in the image)
    liveupdate_num: int | None = None

    def rank(self) -> tuple[int, int]:
        """What rule 3 compares (higher is newer; -1: unknown)."""
        return (
            -1 if self.kexec_count is None else self.kexec_count,
            -1 if self.liveupdate_num is None else self.liveupdate_num,
        )

    def to_json(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "phys": c.phys,
            "size": c.size,
            "version": c.version,
            "incoming": self.incoming,
            "sub_fdts_matching": list(self.matching),
            "sub_fdts_differing": list(self.differing),
            "kexec_count": self.kexec_count,
            "liveupdate_num": self.liveupdate_num,
        }


@dataclass
class Choice:
    """The candidate taken (``phys``), every candidate ranked, and why, in words."""

    phys: int
    reason: str
    ranked: list[Ranked]

    def to_json(self) -> dict[str, Any]:
        return {"phys": self.phys, "reason": self.reason, "candidates": [r.to_json() for r in self.ranked]}


def _subnode_blobs(blob: bytes, byteorder: str) -> dict[str, tuple[int, int | None]]:
    """``name -> (phys, blob-size or None)`` of a root FDT's sub-nodes (empty if it does not read)."""
    try:
        root = parse_fdt(blob, where="candidate root FDT").root
        ver, _ = abi.by_compatible(get_strings(root, "compatible"))
        out: dict[str, tuple[int, int | None]] = {}
        for node in root.children:
            phys = get_u64(node, ver.address_property, byteorder, required=False)
            if phys is None:
                continue
            size = get_u64(node, ver.size_property, byteorder, required=False) if ver.size_property else None
            out[node.name] = (phys, size)
        return out
    except KhoFormatError:
        return {}


def _counts(
    image: PhysImage, subs: Mapping[str, tuple[int, int | None]], byteorder: str
) -> tuple[int | None, int | None]:
    """``(kexec_count, liveupdate_num)`` of a candidate, from its sub-blobs in ``image`` (None: unknown)."""
    lay = layout(byteorder=byteorder)
    count = num = None
    md = subs.get(KHO_METADATA_NODE_NAME)
    if md is not None:
        from ..model.clients.kexec_metadata import decode as decode_metadata

        n = lay.kexec_metadata.sizeof()
        if (md[1] is None or md[1] >= n) and image.has(md[0], n):
            try:
                count = decode_metadata(image.read(md[0], n), lay).kexec_count
            except KhoFormatError:
                pass
    luo = subs.get(LUO_KHO_ENTRY_NAME)
    if luo is not None:
        n = lay.luo_ser.sizeof()
        if (luo[1] is None or luo[1] >= n) and image.has(luo[0], n):
            ser = lay.luo_ser.parse(image.read(luo[0], n))
            if ser.compatible.rstrip(b"\0") == LUO_ABI_COMPATIBLE.encode():
                num = ser.liveupdate_num
    return count, num


def _same_fdt(blob: bytes, debugfs: bytes) -> bool:
    """``blob`` is the FDT a debugfs file shows (all of it, or the prefix debugfs sized at boot)."""
    if blob == debugfs:
        return True
    return 0 < len(debugfs) < len(blob) and blob.startswith(debugfs) and header_totalsize(debugfs) == len(blob)


def choose_outgoing(
    image: PhysImage,
    candidates: Sequence[RootCandidate],
    *,
    incoming_fdt: bytes | None = None,
    out_sub_fdts: Mapping[str, Callable[[], bytes]] | None = None,
    byteorder: str = "little",
) -> Choice:
    """Rank ``candidates`` (see the module doc); ``incoming_fdt``: the bytes of
    debugfs ``kho/in/fdt``; ``out_sub_fdts``: ``name -> reader`` of the
    ``kho/out/sub_fdts`` files."""
    if not candidates:
        raise KhoFormatError("no root FDT candidates to choose from")
    ranked: list[Ranked] = []
    for c in candidates:
        blob = read_fdt_at(image, c.phys)
        r = Ranked(c, incoming=incoming_fdt is not None and _same_fdt(blob, incoming_fdt))
        subs = _subnode_blobs(blob, byteorder)
        r.kexec_count, r.liveupdate_num = _counts(image, subs, byteorder)
        for name, (phys, size) in subs.items():
            reader = (out_sub_fdts or {}).get(name)
            if reader is None:
                continue
            try:
                want = reader()
            except KhoFormatError:
                continue
            n = len(want) if size is None else min(size, len(want))
            if n and image.has(phys, n) and image.read(phys, n) == want[:n]:
                r.matching.append(name)
            else:
                r.differing.append(name)
        ranked.append(r)
    best = min(ranked, key=_key)
    if best.incoming:
        where = ", ".join(f"{r.candidate.phys:#x}" for r in ranked)
        raise KhoFormatError(
            f"the only KHO root FDT{'s' if len(ranked) > 1 else ''} in the image ({where}) "
            f"{'are' if len(ranked) > 1 else 'is'} the one kho/in describes: the handover this kernel received "
            "from the previous update, whose page stays in memory; this kernel's own outgoing root FDT is not "
            "in the image, and the stale one is not taken in its place",
            phys=best.candidate.phys,
            expected="a memory image that holds this kernel's outgoing root FDT, or --root-phys ADDR",
        )
    return Choice(best.candidate.phys, _reason(best, ranked, incoming_fdt is not None), ranked)


def _key(r: Ranked) -> tuple[bool, int, int, int, int]:
    count, num = r.rank()
    return (r.incoming, -len(r.matching), -count, -num, r.candidate.phys)


def _count_words(r: Ranked) -> str:
    parts = []
    if r.kexec_count is not None:
        parts.append(f"kexec count {r.kexec_count}")
    if r.liveupdate_num is not None:
        parts.append(f"liveupdate number {r.liveupdate_num}")
    return ", ".join(parts) if parts else "no kexec-metadata or LUO count in the image"


def _reason(best: Ranked, ranked: list[Ranked], have_incoming: bool) -> str:
    c = best.candidate
    what = f"root FDT at {c.phys:#x} ({c.size} bytes, {c.version})"
    others = [r for r in ranked if r is not best]
    why: list[str] = []
    incoming = [r for r in others if r.incoming]
    if incoming:
        why.append(
            f"{', '.join(f'{r.candidate.phys:#x}' for r in incoming)} "
            f"{'is' if len(incoming) == 1 else 'are'} the root FDT of kho/in "
            "(the handover this kernel received, from the previous update)"
        )
    elif have_incoming and others:
        why.append("none of the candidates is the root FDT of kho/in")
    if best.matching:
        why.append(f"its sub-blobs {', '.join(best.matching)} match kho/out/sub_fdts")
    if best.differing:
        why.append(f"but {', '.join(best.differing)} differ from kho/out/sub_fdts")
    rivals = [r for r in others if not r.incoming and len(r.matching) == len(best.matching)]
    older = [r for r in rivals if r.rank() < best.rank()]
    if older:
        why.append(
            f"it is the newest by the image ({_count_words(best)}; "
            + "; ".join(f"{r.candidate.phys:#x}: {_count_words(r)}" for r in older)
            + "): a kernel writes the counts it received plus one"
        )
    ties = [r for r in rivals if r.rank() == best.rank()]
    if ties:
        why.append(
            f"{', '.join(f'{r.candidate.phys:#x}' for r in ties)} rank the same "
            f"({_count_words(best)}): the lowest address taken (give --root-phys to choose)"
        )
    head = f"{what} taken as the outgoing handover"
    if len(ranked) > 1:
        head += f" of {len(ranked)} KHO root FDTs in the image"
    return head + (": " + "; ".join(why) if why else "")


__all__ = ["Choice", "Ranked", "choose_outgoing"]
