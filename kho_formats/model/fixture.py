"""Fixture directories: everything a next kernel (or a test) needs to receive
one handover, written deterministically from a built handover.

``write_fixture(fixture, outdir)`` writes:

===================  ===========================================================
``root.dtb``         the root KHO FDT
``image.elf``        ELF64 core, one ``PT_LOAD`` per contiguous range,
                     ``p_paddr`` = ``p_vaddr`` = physical address
``manifest.json``    the same ranges as raw files ``seg-<phys>.bin``
                     (``{"segments": [{"file", "phys", "size"}]}``)
``handover.json``    ``version``, ``page_size``, ``byte_order``, ``fdt_phys``,
                     ``fdt_size``, ``scratch``, ``scratch_array_phys``,
                     ``memmap_phys`` (+ ``arch``, ``fdt_len``, ``alloc``, ...)
``qemu-args.txt``    ``-device loader,file=seg-...,addr=...,force-raw=on`` per segment
``kho_fixture.h``    C arrays + ``#define``\\ d addresses for KUnit-style tests
                     (for small selftest fixtures: written when the image holds
                     at most :data:`C_HEADER_MAX_IMAGE` bytes, or on request)
``setup_data.bin``   x86 ``struct setup_data`` (type 10, ``SETUP_KEXEC_KHO``) +
                     ``struct kho_data``
``chosen.json``      arm64 ``/chosen`` ``linux,kho-fdt`` / ``linux,kho-scratch``
``chosen.dtsi``      the same as a DTS fragment (2 + 2 big-endian cells)
===================  ===========================================================

``image_format`` replaces ``image.elf`` by ``image.kdump``: makedumpfile's
kdump-compressed format (``"kdump"``, what ``crash`` reads) or its flattened
form (``"kdump-flat"``, what ``makedumpfile -F`` pipes and ``makedumpfile -R``
turns back into the former).  The fixture still reads back (through
``manifest.json`` and the segments).

The ``struct kho_scratch[]`` array that ``kho_data.scratch_addr`` and
``linux,kho-scratch`` point at is placed in memory (an image segment outside
preserved memory and scratch) by :func:`make_fixture`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import progress
from .._version import __version__
from ..abi.layout import KhoData, KhoScratch
from ..errors import AllocationError, KhoFormatError
from ..memory.alloc import PageAllocator, disjoint_regions
from ..memory.image import PhysImage
from ..outdir import OutputDir
from . import memmap
from .specfields import check_name
from .state import Built, KhoState

ARCHS = ("arm64", "x86_64")

#: formats of the fixture's whole-image file: the file each writes
IMAGE_FORMATS = {"elf": "image.elf", "kdump": "image.kdump", "kdump-flat": "image.kdump"}

#: above this many image bytes ``kho_fixture.h`` is skipped unless asked for:
#: the header spells every non-zero byte as C (about 6 bytes of text per byte),
#: which suits small selftest fixtures, not multi-MiB images
C_HEADER_MAX_IMAGE = 4 << 20

#: every file :func:`write_fixture` writes (besides the ``seg-*.bin`` segments)
FIXTURE_FILES = (
    "root.dtb",
    "image.elf",
    "manifest.json",
    "handover.json",
    "qemu-args.txt",
    "kho_fixture.h",
    "setup_data.bin",
    "chosen.json",
    "chosen.dtsi",
)


@dataclass
class Fixture:
    """A built handover plus the boot plumbing that delivers it."""

    state: KhoState
    root_fdt: bytes
    image: PhysImage
    arch: str = "arm64"
    name: str = "fixture"
    alloc: list[tuple[int, int]] = field(default_factory=list)
    scratch_array_phys: int | None = None
    #: free-form provenance for handover.json ("spec", "converted_from", ...)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def page_size(self) -> int:
        return self.state.page_size

    @property
    def fdt_phys(self) -> int | None:
        return self.state.root_fdt_phys

    def scratch_array(self) -> bytes:
        lay = self.state.layout
        return b"".join(lay.kho_scratch.build(KhoScratch(a, s)) for a, s in self.state.scratch)

    def kho_data(self) -> KhoData:
        return KhoData(
            fdt_addr=self.fdt_phys or 0,
            fdt_size=self.page_size,  # the kernel passes PAGE_SIZE (arch/x86/kernel/kexec-bzimage64.c)
            scratch_addr=self.scratch_array_phys or 0,
            scratch_size=len(self.scratch_array()),
        )

    def setup_data(self) -> bytes:
        return self.state.layout.setup_data_kho(self.kho_data())

    def chosen(self) -> dict:
        kd = self.kho_data()

        def prop(addr: int, size: int) -> dict:
            cells = [addr >> 32, addr & 0xFFFFFFFF, size >> 32, size & 0xFFFFFFFF]
            return {
                "address": addr,
                "size": size,
                "cells": cells,
                "bytes": b"".join(c.to_bytes(4, "big") for c in cells).hex(),
            }

        return {
            "#address-cells": 2,
            "#size-cells": 2,
            "linux,kho-fdt": prop(kd.fdt_addr, kd.fdt_size),
            "linux,kho-scratch": prop(kd.scratch_addr, kd.scratch_size),
        }

    def chosen_dtsi(self) -> str:
        ch = self.chosen()

        def cells(p: dict) -> str:
            return " ".join(f"{c:#x}" for c in p["cells"])

        return (
            f"// arm64 /chosen for KHO fixture {self.name} (generated by kho-formats {__version__})\n"
            "// root node: #address-cells = <2>; #size-cells = <2>;\n"
            "/ {\n"
            "\tchosen {\n"
            f"\t\tlinux,kho-fdt = <{cells(ch['linux,kho-fdt'])}>;\n"
            f"\t\tlinux,kho-scratch = <{cells(ch['linux,kho-scratch'])}>;\n"
            "\t};\n"
            "};\n"
        )

    def handover(self) -> dict:
        st = self.state
        out = {
            "version": st.version,
            "page_size": st.page_size,
            "byte_order": st.byteorder,
            "arch": self.arch,
            "fdt_phys": self.fdt_phys,
            "fdt_size": self.page_size,
            "fdt_len": len(self.root_fdt),
            "scratch": [[a, s] for a, s in st.scratch],
            "scratch_array_phys": self.scratch_array_phys,
            "scratch_array_size": len(self.scratch_array()),
            "memmap_phys": st.memmap_phys,
            **memmap.params_json(st.codec, st.map_params),
            "alloc": [[a, s] for a, s in self.alloc],
            "subblobs": [{"name": sb.name, "phys": sb.phys, "size": sb.size} for sb in st.subblobs],
            "preserved_pages": st.preserved.num_pages,
            "generator": f"kho-formats {__version__}",
        }
        out.update(self.extra)
        return out


def make_fixture(
    built: Built,
    *,
    arch: str = "arm64",
    name: str = "fixture",
    alloc: Sequence[tuple[int, int]] = (),
    extra: dict | None = None,
) -> Fixture:
    """Wrap a :class:`Built` handover and place its ``kho_scratch[]`` array.

    The array goes into the first free page of ``alloc`` that holds nothing
    of the image, no preserved page and no scratch area.
    """
    if arch not in ARCHS:
        raise KhoFormatError(f"unknown arch {arch!r}", expected=" or ".join(ARCHS))
    check_name(name, "fixture name")
    st = built.state
    fx = Fixture(
        state=st,
        root_fdt=built.root_fdt,
        image=built.image,
        arch=arch,
        name=name,
        alloc=[(int(a), int(s)) for a, s in alloc],
        extra=dict(extra or {}),
    )
    arr = fx.scratch_array()
    if arr:
        ps = st.page_size
        avoid = list(built.image.covered()) + [(a, a + s) for a, s in st.scratch]
        ps_s, ps_e = st.preserved.range_arrays()
        size = -(-len(arr) // ps) * ps
        try:
            pa = PageAllocator(alloc, ps, avoid=avoid, avoid_merged=[(ps_s, ps_e)])
            fx.scratch_array_phys = pa.alloc(size, what="kho_scratch array")
        except AllocationError:
            fx.extra.setdefault("notes", []).append(
                "no free page for the kho_scratch array: not placed (scratch_array_phys is null; "
                "setup_data.bin and chosen.* say 0; give more free memory with alloc / --alloc)"
            )
            return fx
        img = built.image.copy()
        img.add(fx.scratch_array_phys, arr.ljust(size, b"\0"), what="kho_scratch array")
        fx.image = img
    return fx


# -- writers ------------------------------------------------------------------------


def _c_ident(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _c_bytes(data: bytes, indent: str = "\t") -> str:
    lines = []
    for i in range(0, len(data), 12):
        lines.append(indent + " ".join(f"0x{b:02x}," for b in data[i : i + 12]))
    return "\n".join(lines)


def islands(data: bytes, gap: int = 32) -> list[tuple[int, bytes]]:
    """``(offset, bytes)`` runs of ``data`` holding every non-zero byte; runs
    separated by at most ``gap`` zero bytes are joined.  (Vectorized: a
    folio-sized fixture has megabytes of these.)"""
    nz = np.flatnonzero(np.frombuffer(data, dtype=np.uint8))
    if nz.size == 0:
        return []
    cut = np.flatnonzero(np.diff(nz) - 1 > gap)
    starts = nz[np.concatenate(([0], cut + 1))].tolist()
    ends = (nz[np.concatenate((cut, [nz.size - 1]))] + 1).tolist()
    return [(a, data[a:b]) for a, b in zip(starts, ends)]


def c_header(fx: Fixture, segments: Sequence[tuple[int, int]]) -> str:
    """``kho_fixture.h``: the root FDT and the image's bytes as C arrays.

    One array per image segment (the same ranges as ``manifest.json``),
    declared with its full size and initialised with C99 designated
    initialisers for its non-zero runs only (C zero-fills the rest), so
    mostly empty pages (radix nodes, leaves) cost a few lines each.
    """
    st = fx.state
    d = [
        "/* SPDX-License-Identifier: GPL-2.0 */",
        f"/* KHO fixture {fx.name!r}: {st.version}, {st.page_size}-byte pages, {st.byteorder}-endian, {fx.arch}.",
        f" * Generated by kho-formats {__version__}; do not edit.",
        " * Load: copy each kho_fixture_segments[] entry to its phys. */",
        "#ifndef KHO_FIXTURE_H",
        "#define KHO_FIXTURE_H",
        "",
        "#ifdef __KERNEL__",
        "#include <linux/types.h>",
        "#else",
        "#include <stdint.h>",
        "typedef uint8_t u8;",
        "typedef uint64_t u64;",
        "#endif",
        "",
        f'#define KHO_FIXTURE_NAME "{fx.name}"',
        f'#define KHO_FIXTURE_VERSION "{st.version}"',
        f"#define KHO_FIXTURE_PAGE_SIZE {st.page_size}UL",
        f"#define KHO_FIXTURE_BIG_ENDIAN {1 if st.byteorder == 'big' else 0}",
        f"#define KHO_FIXTURE_FDT_PHYS {fx.fdt_phys or 0:#x}ULL",
        f"#define KHO_FIXTURE_FDT_SIZE {st.page_size}UL",
        f"#define KHO_FIXTURE_FDT_LEN {len(fx.root_fdt)}UL",
        f"#define KHO_FIXTURE_MEMMAP_PHYS {st.memmap_phys:#x}ULL",
        f"#define KHO_FIXTURE_SCRATCH_ARRAY_PHYS {fx.scratch_array_phys or 0:#x}ULL",
        f"#define KHO_FIXTURE_SCRATCH_ARRAY_SIZE {len(fx.scratch_array())}UL",
        f"#define KHO_FIXTURE_NR_SCRATCH {len(st.scratch)}",
    ]
    for i, (a, s) in enumerate(st.scratch):
        d.append(f"#define KHO_FIXTURE_SCRATCH{i}_ADDR {a:#x}ULL")
        d.append(f"#define KHO_FIXTURE_SCRATCH{i}_SIZE {s:#x}ULL")
    d.append(f"#define KHO_FIXTURE_NR_SUBBLOBS {len(st.subblobs)}")
    for sb in st.subblobs:
        n = _c_ident(sb.name).upper()
        d.append(f"#define KHO_FIXTURE_BLOB_{n}_PHYS {sb.phys:#x}ULL")
        d.append(f"#define KHO_FIXTURE_BLOB_{n}_SIZE {sb.size or 0}UL")
    d.append(f"#define KHO_FIXTURE_NR_SEGMENTS {len(segments)}")
    for i, (a, b) in enumerate(segments):
        d.append(f"#define KHO_FIXTURE_SEG{i}_PHYS {a:#x}ULL")
        d.append(f"#define KHO_FIXTURE_SEG{i}_SIZE {b - a:#x}UL")
    d += [
        "",
        f"/* root KHO FDT ({len(fx.root_fdt)} bytes) */",
        f"static const u8 kho_fixture_root_fdt[{len(fx.root_fdt)}] = {{",
        _c_bytes(fx.root_fdt),
        "};",
    ]
    for i, (a, b) in enumerate(segments):
        data = fx.image.read(a, b - a)
        isl = islands(data)
        d += [
            "",
            f"/* segment {i}: phys {a:#x}, {b - a} bytes; only non-zero runs are initialised */",
            f"static const u8 kho_fixture_seg{i}[{b - a}] = {{",
        ]
        for off, run in isl:
            d.append(f"\t[{off:#x}] =")
            d.append(_c_bytes(run, "\t\t"))
        if not isl:
            d.append("\t0")
        d.append("};")
    d += [
        "",
        "struct kho_fixture_segment {",
        "\tu64 phys;",
        "\tu64 size;",
        "\tconst u8 *data;",
        "};",
        "",
        "static const struct kho_fixture_segment kho_fixture_segments[] = {",
    ]
    for i, (a, b) in enumerate(segments):
        d.append(f"\t{{ {a:#x}ULL, {b - a:#x}UL, kho_fixture_seg{i} }},")
    d += ["};", "", "#endif /* KHO_FIXTURE_H */", ""]
    return "\n".join(d)


def write_fixture(
    fx: Fixture,
    outdir: str | os.PathLike,
    *,
    force: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
    with_c_header: bool | None = None,
    image_format: str = "elf",
    notes: list[str] | None = None,
) -> list[str]:
    """Write every fixture file into ``outdir`` through :class:`~kho_formats.outdir.OutputDir`:
    a non-empty ``outdir`` is refused unless ``force`` (then only these files
    are replaced, nothing is deleted), files are staged next to it and
    renamed into place, an ``outdir`` equal to or inside one of ``inputs`` is
    refused.  Returns the names of the files written.

    ``with_c_header``: ``True`` writes ``kho_fixture.h``, ``False`` does not,
    ``None`` (the default) writes it when the image holds at most
    :data:`C_HEADER_MAX_IMAGE` bytes and otherwise appends a note saying so to
    ``notes``.  ``image_format``: a key of :data:`IMAGE_FORMATS`."""
    check_name(fx.name, "fixture name")
    if image_format not in IMAGE_FORMATS:
        raise KhoFormatError(f"unknown image format {image_format!r}", expected=", ".join(IMAGE_FORMATS))
    st = fx.state
    machine = "arm64" if fx.arch == "arm64" else "x86_64"
    if with_c_header is None:
        with_c_header = fx.image.total_bytes <= C_HEADER_MAX_IMAGE
        if not with_c_header and notes is not None:
            notes.append(
                f"kho_fixture.h not written: the image holds {fx.image.total_bytes} bytes, more than "
                f"{C_HEADER_MAX_IMAGE} (the C header is for small selftest fixtures; --c-header writes it anyway)"
            )
    image_file = IMAGE_FORMATS[image_format]
    files = [n for n in FIXTURE_FILES if (n != "kho_fixture.h" or with_c_header) and n != "image.elf"]
    files.insert(1, image_file)
    with OutputDir(outdir, force=force, inputs=inputs) as out:
        assert out.path is not None
        out.write("root.dtb", fx.root_fdt)
        if image_format == "elf":
            with progress.task("writing image.elf", total=fx.image.total_bytes):  # write_elf counts its chunks
                out.write_with(image_file, lambda f: fx.image.write_elf(f, byteorder=st.byteorder, machine=machine))
        else:
            import io

            from ..memory.kdump import write_kdump

            buf = io.BytesIO()
            write_kdump(
                fx.image, buf, block_size=st.page_size, byteorder=st.byteorder, flattened=image_format == "kdump-flat"
            )
            out.write(image_file, buf.getvalue())
        manifest = fx.image.to_bundle(out.path)
        segs = [(s["phys"], s["phys"] + s["size"]) for s in manifest["segments"]]
        out.write("handover.json", json.dumps(fx.handover(), indent=1, sort_keys=True) + "\n")
        qemu = [f"-device loader,file={s['file']},addr={s['phys']:#x},force-raw=on" for s in manifest["segments"]]
        out.write("qemu-args.txt", "\n".join(qemu) + "\n")
        if with_c_header:
            out.write("kho_fixture.h", c_header(fx, segs))
        out.write("setup_data.bin", fx.setup_data())
        out.write("chosen.json", json.dumps(fx.chosen(), indent=1, sort_keys=True) + "\n")
        out.write("chosen.dtsi", fx.chosen_dtsi())
    return files + [s["file"] for s in manifest["segments"]]


__all__ = [
    "disjoint_regions",
    "Fixture",
    "make_fixture",
    "write_fixture",
    "c_header",
    "islands",
    "FIXTURE_FILES",
    "IMAGE_FORMATS",
    "C_HEADER_MAX_IMAGE",
    "ARCHS",
]
