"""Fixture specs: a small declarative description of a handover (YAML or TOML)
and the builder that turns it into a :class:`~kho_formats.model.fixture.Fixture`.

Schema (every address and size is an integer, a ``"0x..."`` string, or a
string with a ``K``/``M``/``G``/``T`` suffix such as ``"16M"``)::

    name = "v4-4k"              # fixture name (default: the spec file's stem)
    version = "kho-v4"          # kho-v1 | kho-v2 | kho-v3 | kho-v4
    page_size = 4096            # 4096 | 16384 | 65536
    byte_order = "little"       # little | big
    arch = "arm64"              # arm64 | x86_64: ELF machine, default csum_partial
    v1_bitmap = "page"          # kho-v1 only: "page" (later kernels) | "512" (6.16)
    seed = 1                    # default seed for generated data
    root_fdt_phys = "0x70000000" # default: first free page of alloc
    preserve_root = true        # preserve the root FDT page (the kernel does)
    blob_size = true            # kho-v2: write blob-size (later v2 kernels do)
    extra_compatible = []       # more compatible entries after the version
    root_fdt_history = "auto"   # auto | sequential | packed: root FDT layout (KHO-ABI.md 2.1)

    [[alloc]]                   # free memory for everything placed automatically
    start = "0x70000000"        # (root page, client data, memory-map pages,
    size = "32M"                #  the kho_scratch array); default: see below

    [[scratch]]                 # scratch areas (never hold preserved pages)
    start = "0x50000000"        # ("addr" is accepted for "start"); default: see
    size = "256M"               # below; scratch = [] for none

    [[preserve]]                # preserved pages: phys + order (+ count) ...
    phys = "0x74000000"
    order = 2
    count = 3                   # consecutive pages of this order (default 1)

    [[preserve]]                # ... or a byte range split into aligned orders
    start = "0x75000000"
    size = "1M"                 # or: end = ...; optional max_order

    [[blob]]                    # sub-blobs, in root FDT node order
    name = "kho_test"
    type = "kho_test"           # kho_test | memblock | kexec-metadata | raw
    orders = [0, 1, 2]          # folios to allocate (or folios = [{order, phys}])
    seed = 7                    # folio data: deterministic bytes from the seed
    csum_arch = "arm64"         # csum_partial flavour (default: arch)
    # csum = 0x1234             # force a csum value instead
    # phys = ...                # FDT folio placement (default: allocated)
    # preserve = true           # preserve the blob's pages (default true)

    [[blob]]
    name = "memblock"
    type = "memblock"
    regions = [{name = "trace_buf", start = "0x7c000000", size = "4M"}]
    preserve_regions = true     # reserve_mem regions are preserved memory

    [[blob]]
    name = "kexec-metadata"
    type = "kexec-metadata"
    previous_release = "7.3.4"
    kexec_count = 1

    [[blob]]
    name = "mine"
    type = "raw"
    file = "blob.bin"           # relative to the spec; or hex = "..."; or text = "..."

    [[vmalloc]]                 # a vmalloc area whose 16-byte struct kho_vmalloc
    name = "area0"              # is the whole content of raw sub-blob "area0"
    pages = 3
    order = 0
    seed = 5

Everything is deterministic: the same spec gives the same bytes.

Placement defaults (``model.DEFAULT_ALLOC`` / ``DEFAULT_SCRATCH``): a spec
that gives no ``[[alloc]]`` / ``[[scratch]]`` gets ones a kernel boots with
as they are, per ``arch``:

- arm64: alloc 32 MiB at ``0x70000000``, scratch 256 MiB at ``0x50000000``;
- x86_64: alloc 32 MiB at ``0x20000000``, scratch 128 MiB at ``0x28000000``

(the root FDT page goes to the start of alloc).  arm64 is QEMU ``virt -m 1G`` (RAM ``0x40000000..0x80000000``): clear of
QEMU's boot stub at ``0x40000000``, the kernel at ``0x40200000`` (up to
~``0x41850000`` for a 64 KiB build), the DTB/initramfs at ``0x48000000``
and ``kho boot``'s scratch array slot at ``0x7ff00000``.  x86_64 is QEMU
``pc -m 1G`` (RAM from 0): clear of the kernel decompressed at 16 MiB
(~12 MiB ``init_size``).  The kernel needs >= 64 MiB of scratch (48 MiB
panics allocating the memmap).  So a spec of only ``version``,
``page_size``, ``arch`` and a ``kho_test`` blob builds a bootable fixture.

The package: :mod:`.model` (``Spec``, ``BlobSpec`` ...), :mod:`.tables` (the
field tables: every key, its type, default and doc; the README's spec table
is generated from them by ``scripts/gen_spec_docs.py``), :mod:`.load`
(validation driven by the tables), :mod:`.build` (``build_spec``: the
generic work; each blob's client builds itself).  A client's own ``[[blob]]``
keys are declared in its module (``spec_table``).

Every key (generated from the tables)::

"""

from __future__ import annotations

from ..clients import registry
from ..specfields import SpecField, SpecRow, SpecTable, indent, parse_int, text_table
from .build import build_spec, gen_bytes
from .load import load_spec, loads_spec, spec_from_dict
from .model import (
    DEFAULT_ALLOC,
    DEFAULT_SCRATCH,
    BlobSpec,
    FolioSpec,
    KhoTestParams,
    MemblockParams,
    PreserveSpec,
    RawParams,
    RegionSpec,
    Spec,
    VmallocSpec,
    default_alloc,
    default_scratch,
)
from .tables import doc_tables, readme_table

#: the ``[[blob]]`` types of the built-in clients (``registry.spec_types()`` is current)
BLOB_TYPES = tuple(registry.spec_types())

__doc__ = (__doc__ or "") + "\n" + indent(text_table(doc_tables()), "    ")

__all__ = [
    "Spec",
    "BlobSpec",
    "PreserveSpec",
    "FolioSpec",
    "RegionSpec",
    "VmallocSpec",
    "KhoTestParams",
    "MemblockParams",
    "RawParams",
    "DEFAULT_ALLOC",
    "DEFAULT_SCRATCH",
    "default_alloc",
    "default_scratch",
    "SpecField",
    "SpecRow",
    "SpecTable",
    "load_spec",
    "loads_spec",
    "spec_from_dict",
    "build_spec",
    "parse_int",
    "gen_bytes",
    "doc_tables",
    "readme_table",
    "BLOB_TYPES",
]
