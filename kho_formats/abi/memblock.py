"""``include/linux/kho/abi/memblock.h``: memblock's ``reserve_mem=`` regions across kexec.

Not a struct: an FDT sub-blob named ``MEMBLOCK_KHO_FDT``, root ``compatible =
MEMBLOCK_KHO_NODE_COMPATIBLE``, one child per region (named by the user) with ``compatible =
RESERVE_MEM_KHO_NODE_COMPATIBLE`` and the u64 properties ``start`` and ``size`` (native byte order).
:mod:`kho_formats.model.clients.memblock` decodes, checks and builds it."""

from __future__ import annotations

#: the KHO sub-blob (and FDT) name
MEMBLOCK_KHO_FDT = "memblock"
#: ``compatible`` of the memblock FDT's root node
MEMBLOCK_KHO_NODE_COMPATIBLE = "memblock-v1"
#: ``compatible`` of each reserve_mem region node
RESERVE_MEM_KHO_NODE_COMPATIBLE = "reserve-mem-v1"
#: the u64 properties of a region node: its physical address and its size in bytes
RESERVE_MEM_START = "start"
RESERVE_MEM_SIZE = "size"
