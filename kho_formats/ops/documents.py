"""Every ``kho-formats/<command>/<N>`` JSON document, built in one module.

``kho --json`` prints these, and :class:`kho_formats.api.Handover` returns
them (``to_json()``, ``check().to_json()``, ``diff().to_json()``, ...).  The
keys are documented in the README ("JSON output"); within one schema version
keys are only ever added.

=====================  =================================================  ==========================
schema                 built by                                           command
=====================  =================================================  ==========================
``inspect/1``          :func:`inspect_document`                           ``kho inspect``
``check/1``            :func:`check_document`                             ``kho check``
``diff/2``             :func:`diff_document`                              ``kho diff``
``dts/1``              :func:`dts_document`                               ``kho dts``
``build/1``            :func:`build_document`                             ``kho build``
``convert/1``          :func:`convert_document`                           ``kho convert``
``capture/1``          :func:`capture_document`                           ``kho capture``
``luo-extract/1``      :func:`luo_extract_document` (also ``index.json``) ``kho luo extract``
``boot/1``             :func:`boot_document`                              ``kho boot``
``error/1``            :func:`error_document`                             every command, exit 1
=====================  =================================================  ==========================

The text renderings of the documents the report module does not render
(``render_*`` here) are what the command prints without ``--json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..text import plural

if TYPE_CHECKING:  # pragma: no cover
    from ..errors import KhoFormatError
    from ..findings import Finding
    from ..memory.image import PhysImage
    from ..model.clients import ClientReport
    from ..model.fixture import Fixture
    from ..model.state import KhoState

SCHEMA = "kho-formats/{}/1"
#: commands whose document is past version 1 (``diff/2``: preserved memory as byte ranges)
VERSIONS = {"diff": 2}


def schema(command: str) -> str:
    """The ``schema`` value of a command's document: ``kho-formats/<command>/<N>``.

    >>> schema("inspect"), schema("diff")
    ('kho-formats/inspect/1', 'kho-formats/diff/2')
    """
    return f"kho-formats/{command}/{VERSIONS.get(command, 1)}"


def inspect_document(
    state: KhoState,
    image: PhysImage | None,
    clients: dict[str, ClientReport],
    *,
    root_fdt: bytes = b"",
    sources: dict[str, Any] | None = None,
    max_ranges: int | None = None,
) -> dict[str, Any]:
    """``kho inspect --json`` (``kho-formats/inspect/1``)."""
    from .report import inspect_report

    return inspect_report(state, image, clients, root_fdt=root_fdt, sources=sources, max_ranges=max_ranges)


def check_document(findings: Sequence[Finding], *, source: str = "", strict: bool = False) -> dict[str, Any]:
    """``kho check --json`` (``kho-formats/check/1``); ``ok`` is the verdict."""
    from .report import check_report

    return check_report(list(findings), source=source, strict=strict)


def diff_document(
    a: KhoState,
    b: KhoState,
    *,
    names: Sequence[str] = ("A", "B"),
    images: Sequence[PhysImage | None] = (None, None),
    max_pages: int = 1000,
) -> dict[str, Any]:
    """``kho diff --json`` (``kho-formats/diff/2``)."""
    from .report import diff_report

    return diff_report(a, b, names=names, images=images, max_pages=max_pages)


class DtsDocument(NamedTuple):
    """One DTS text of ``kho dts``: the root FDT or a sub-FDT."""

    #: ``"root"`` or the sub-blob's name
    name: str
    #: where the FDT came from (a file, or ``sub-blob <name>``)
    source: str
    #: the sub-blob's physical address (None for the root FDT)
    phys: int | None
    dts: str


def dts_document(
    documents: Sequence[DtsDocument], skipped: Sequence[dict[str, str]], written: Sequence[str]
) -> dict[str, Any]:
    """``kho dts --json`` (``kho-formats/dts/1``)."""
    return {
        "schema": schema("dts"),
        "documents": [{"name": d.name, "source": d.source, "phys": d.phys, "dts": d.dts} for d in documents],
        "skipped": list(skipped),
        "written": list(written),
    }


def dts_file_name(name: str) -> str:
    """The file ``kho dts -o DIR`` writes a document to: ``root.dts``, ``sub-<name>.dts``."""
    return f"{name if name == 'root' else 'sub-' + name}.dts"


def render_dts(documents: Sequence[DtsDocument], skipped: Sequence[dict[str, str]]) -> str:
    """The documents one after another, each sub-FDT after a separator comment
    (unescaped: the caller escapes what goes to a terminal)."""
    parts = []
    for i, d in enumerate(documents):
        if i:
            parts.append(f"\n// ===== sub-FDT {d.name} at {d.phys:#x} (a separate DTS document) =====\n")
        parts.append(d.dts)
    for s in skipped:
        parts.append(f"// sub-blob {s['name']} skipped: {s['reason']}\n")
    return "".join(parts)


def build_document(fx: Fixture, outdir: str, files: Sequence[str]) -> dict[str, Any]:
    """``kho build --json`` (``kho-formats/build/1``): every ``handover.json`` key too."""
    return {"schema": schema("build"), "name": fx.name, "outdir": outdir, "files": list(files), **fx.handover()}


def render_build(fx: Fixture, outdir: str, files: Sequence[str]) -> str:
    st = fx.state
    return (
        f"built {fx.name}: {st.version}, {st.page_size // 1024} KiB pages, {st.byteorder}-endian, {fx.arch}\n"
        f"  root FDT {fx.fdt_phys:#x} ({len(fx.root_fdt)} bytes), memory map {st.memmap_phys:#x}\n"
        f"  {plural(st.preserved.num_pages, 'preserved folio')} ({plural(st.preserved.total_bytes // st.page_size, 'page')}), "
        f"{plural(len(st.subblobs), 'sub-blob')} "
        f"({', '.join(sb.name for sb in st.subblobs) or 'none'}), {plural(len(st.scratch), 'scratch area')}\n"
        f"  image: {plural(len(fx.image.covered()), 'segment')}, {plural(fx.image.total_bytes, 'byte')}\n"
        f"  wrote {plural(len(files), 'file')} into {outdir}\n"
    )


def convert_document(summary: dict[str, Any], outdir: str, files: Sequence[str]) -> dict[str, Any]:
    """``kho convert --json`` (``kho-formats/convert/1``): the conversion summary
    (:func:`kho_formats.ops.migrate.convert_capture`) plus where it was written."""
    return {**summary, "outdir": outdir, "files": list(files)}


def render_convert(summary: dict[str, Any], outdir: str = "") -> str:
    from .migrate import render_convert as render

    return render(summary, outdir)


def capture_document(
    *,
    outdir: str,
    files: Sequence[str],
    state: KhoState,
    kept: PhysImage,
    source: PhysImage,
    referenced_only: bool,
    live: dict[str, Any] | None,
) -> dict[str, Any]:
    """``kho capture --json`` (``kho-formats/capture/1``): ``kept`` is the image
    written (the handover's bytes), ``source`` the dump or RAM it was cut from."""
    return {
        "schema": schema("capture"),
        "outdir": outdir,
        "files": list(files),
        "root_fdt_phys": state.root_fdt_phys,
        "image_bytes": kept.total_bytes,
        "image_segments": len(kept.covered()),
        "source_bytes": source.total_bytes,
        "referenced_only": referenced_only,
        "live": live,
        "notes": list(state.notes),
    }


def _addr(v: int | None) -> str:
    return "an unknown address (not found in the image)" if v is None else f"{v:#x}"


def render_capture(doc: dict[str, Any], state: KhoState, *, live: bool) -> str:
    return (
        f"captured the {state.version} handover at {_addr(state.root_fdt_phys)} into {doc['outdir']}: "
        f"{plural(doc['image_bytes'], 'byte')} in {plural(doc['image_segments'], 'range')} "
        f"(of {doc['source_bytes']} in {'RAM' if live else 'the dump'})\n"
        + "".join(f"  note: {n}\n" for n in doc["notes"])
    )


def luo_extract_document(index: dict[str, Any]) -> dict[str, Any]:
    """``kho luo extract --json`` (``kho-formats/luo-extract/1``): the index
    :func:`kho_formats.ops.luo_extract.extract` wrote as ``index.json``."""
    return index


def render_luo_extract(index: dict[str, Any], outdir: str) -> str:
    lines = [f"wrote {plural(index['files_written'], 'file')} and index.json into {outdir}\n"]
    for s in index["sessions"]:
        for f in s["files"]:
            what = f["file"] or f"not extracted ({f['compatible']})"
            lines.append(f"  {s['name']!r} {f['token']:#018x}: {what}\n")
    lines += [f"note: {n}\n" for n in index["notes"]]
    return "".join(lines)


def boot_document(fixture: str | Path, result: Any) -> dict[str, Any]:
    """``kho boot --json`` (``kho-formats/boot/1``) of a :class:`~kho_formats.boot.runner.BootResult`."""
    return {
        "schema": schema("boot"),
        "fixture": str(fixture),
        "kernel": result.kernel,
        "verdict": result.verdict,
        "reason": result.reason,
        "kho_lines": list(result.kho_lines),
    }


def render_boot(result: Any) -> str:
    from ..text import safe_text

    text = "".join(f"  {safe_text(ln)}\n" for ln in result.kho_lines)
    return text + f"{result.verdict}{': ' + safe_text(result.reason) if result.reason else ''}\n"


def error_document(exc: KhoFormatError) -> dict[str, Any]:
    """``kho-formats/error/1``: what every command prints with ``--json`` when it fails (exit 1)."""
    return {"schema": schema("error"), **exc.to_json()}


__all__ = [
    "SCHEMA",
    "schema",
    "inspect_document",
    "check_document",
    "diff_document",
    "DtsDocument",
    "dts_document",
    "dts_file_name",
    "render_dts",
    "build_document",
    "render_build",
    "convert_document",
    "render_convert",
    "capture_document",
    "render_capture",
    "luo_extract_document",
    "render_luo_extract",
    "boot_document",
    "render_boot",
    "error_document",
]
