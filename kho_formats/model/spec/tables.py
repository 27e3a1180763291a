"""The spec's field tables: the top level, ``[[preserve]]``, ``[[blob]]`` (the
keys every blob has; each client declares its own) and ``[[vmalloc]]``.

:func:`doc_tables` lists every table in README order (clients' tables from
the registry) and :func:`readme_table` renders the README's spec table.
"""

from __future__ import annotations

from ... import abi
from ..clients import ClientRegistry, registry
from ..clients.vmalloc_area import SPEC as VMALLOC
from ..fixture import ARCHS
from ..specfields import (
    ANY,
    BOOL,
    INT,
    RANGE,
    STR,
    ListOf,
    SpecField,
    SpecRow,
    SpecTable,
    StrType,
    markdown_table,
)
from ..state import FDT_HISTORIES


def _list(key: str) -> str:
    return f"a list (TOML [[{key}]] / YAML sequence)"


def _arm64(arch: str) -> str:
    return "arm64" if arch == "aarch64" else arch


TOP = SpecTable(
    "top",
    (
        SpecField("name", StrType(coerce=True), doc="fixture name", default_doc="file name"),
        SpecField("version", STR, "kho-v4", doc="`kho-v1` .. `kho-v4`", choices=abi.version_names),
        SpecField("page_size", INT, 4096, doc="4096, 16384 or 65536", choices=abi.PAGE_SIZES),
        SpecField("byte_order", STR, "little", doc="`little` or `big`", choices=abi.BYTE_ORDERS),
        SpecField(
            "arch",
            STR,
            "arm64",
            doc="`arm64` or `x86_64` (ELF machine; default `csum_partial` flavour)",
            convert=_arm64,
            choices=ARCHS,
        ),
        SpecField("v1_bitmap", StrType(coerce=True), "page", doc="kho-v1 bitmap size: `page` or `512`"),
        SpecField("seed", INT, 1, doc="default seed for generated data"),
        SpecField("root_fdt_phys", INT, doc="where the root FDT page goes", default_doc="first free page"),
        SpecField("preserve_root", BOOL, True, doc="preserve the root FDT page, as the kernel does"),
        SpecField("blob_size", BOOL, True, doc="kho-v2: write `blob-size` (later v2 kernels do; v3+ always)"),
        SpecField(
            "extra_compatible", ListOf(STR, "a list of strings"), [], doc="more `compatible` entries after the version"
        ),
        SpecField(
            "root_fdt_history",
            STR,
            "auto",
            doc="root FDT layout: `auto` (the version's kernel), `sequential` (never reopened: 0x30 reserve map), "
            "`packed` (after `kho_add_subtree`/`kho_remove_subtree`: 0x28; with no blob, sub-trees were removed)",
            choices=FDT_HISTORIES,
        ),
        SpecField("alloc", ListOf(RANGE, _list("alloc")), doc="free memory for everything placed automatically"),
        SpecField(
            "scratch",
            ListOf(RANGE, _list("scratch")),
            doc="scratch areas (`scratch = []`: none)",
            default_doc="the arch's default",
        ),
        SpecField("preserve", ListOf(ANY, _list("preserve")), [], doc="preserved pages"),
        SpecField("blob", ListOf(ANY, _list("blob")), [], doc="sub-blobs"),
        SpecField("blobs", ListOf(ANY, _list("blobs")), [], doc="more sub-blobs (after blob)"),
        SpecField("vmalloc", ListOf(ANY, _list("vmalloc")), [], doc="vmalloc areas"),
    ),
    rows=(
        SpecRow(
            ("alloc",),
            "`[[alloc]]` `start`, `size`",
            "arm64: `32M` at `0x70000000`; x86_64: `32M` at `0x20000000`",
            "free memory for everything placed automatically (root page, client data, map pages, scratch array); "
            'also `"BASE:SIZE"` or `[base, size]`. The defaults boot as they are: arm64 inside QEMU virt `-m 1G` '
            "RAM (`0x40000000..0x80000000`) clear of the boot stub, the kernel (`0x40200000`+), the DTB/initrd "
            "(`0x48000000`) and `kho boot`'s scratch array slot (`0x7ff00000`); x86_64 above the kernel "
            "decompressed at 16 MiB",
        ),
        SpecRow(
            ("scratch",),
            "`[[scratch]]` `start` (or `addr`), `size` (or `end`)",
            "arm64: `256M` at `0x50000000`; x86_64: `128M` at `0x28000000`",
            "scratch areas (the kernel needs >= 64 MiB; 48 MiB panics); `scratch = []` for none",
        ),
        # documented by their own tables
        SpecRow(("preserve", "blob", "blobs", "vmalloc"), "", "", ""),
    ),
)

PRESERVE = SpecTable(
    "preserve",
    (
        SpecField("phys", INT, doc="first page"),
        SpecField("order", INT, 0, doc="page order"),
        SpecField("count", INT, 1, doc="consecutive pages of this order"),
        SpecField("start", INT, doc="first byte of a range"),
        SpecField("size", INT, doc="range size"),
        SpecField("end", INT, doc="first byte after the range"),
        SpecField("max_order", INT, 63, doc="largest order a range is split into"),
    ),
    title="`[[preserve]]`",
    rows=(
        SpecRow(
            ("phys", "order", "count"),
            "`[[preserve]]` `phys`, `order`, `count`",
            "",
            "`count` consecutive pages of one order",
        ),
        SpecRow(
            ("start", "size", "end", "max_order"),
            "`[[preserve]]` `start`, `size` (or `end`), `max_order`",
            "",
            "a byte range split into the largest aligned orders",
        ),
    ),
)

BLOB = SpecTable(
    "blob",
    (
        SpecField("name", STR, doc="sub-node name", required=True),
        SpecField("type", STR, doc="the client that builds it", default_doc="name when known, else `raw`"),
        SpecField("phys", INT, doc="placement of the blob", default_doc="allocated"),
        SpecField("preserve", BOOL, True, doc="preserve the blob's pages"),
        SpecField("seed", INT, doc="seed for its generated data", default_doc="the spec's seed"),
    ),
    title="`[[blob]]`",
    rows=(
        SpecRow(
            ("name", "type", "phys", "preserve", "seed"),
            "`[[blob]]` `name`, `type`, `phys`, `preserve`, `seed`",
            "type = name when known, else `raw`",
            "sub-blobs in root node order; their pages are preserved unless `preserve = false`",
        ),
    ),
)


def doc_tables(clients: ClientRegistry | None = None) -> list[SpecTable]:
    reg = registry if clients is None else clients
    own = [c.spec_table for c in reg.everyone() if c.spec_type and c.spec_table is not None]
    return [TOP, PRESERVE, BLOB, *own, VMALLOC]


def readme_table(clients: ClientRegistry | None = None) -> str:
    """The README's spec table (``scripts/gen_spec_docs.py`` writes it)."""
    return markdown_table(doc_tables(clients))


__all__ = ["TOP", "PRESERVE", "BLOB", "VMALLOC", "doc_tables", "readme_table"]
