"""The boot DT: QEMU's ``virt`` DTB with the handover in ``/chosen``.

Read with the library's FDT reader and written back with its writer
(:func:`~kho_formats.model.fdt.build_fdt`), which writes a compact blob: QEMU
dumps its DTB padded to 1 MiB (``totalsize`` covers the padding), and
handed back with ``-dtb`` as is, neither 7.3 nor 6.1 kernels print
anything, not even earlycon (``docs/kernel-notes.md`` section 7).
"""

from __future__ import annotations

from ..errors import BootError
from ..model.fdt import Fdt, FdtNode, build_fdt, get_u32, parse_fdt

__all__ = ["patch_chosen", "repack_dtb", "root_cells", "cells_bytes", "fdt_nodes", "VIRT_DTB"]

VIRT_DTB = "QEMU virt DTB"


def _write(fdt: Fdt) -> bytes:
    return build_fdt(
        fdt.root,
        style="read-write",
        reserve_map=fdt.reserve_map,
        boot_cpuid_phys=int(getattr(fdt.header, "boot_cpuid_phys", 0)),
    )


def root_cells(root: FdtNode, *, where: str = VIRT_DTB) -> tuple[int, int]:
    """The root's ``(#address-cells, #size-cells)`` (DT defaults 2 and 1 when absent)."""
    out = []
    for name, default in (("#address-cells", 2), ("#size-cells", 1)):
        n = get_u32(root, name, "big", where=where) if root.has(name) else default
        if not 1 <= n <= 2:
            raise BootError(f"{where}: /{name} is {n}", expected="1 or 2 cells")
        out.append(n)
    return out[0], out[1]


def cells_bytes(value: int, n: int, what: str) -> bytes:
    """``value`` as ``n`` big-endian 32-bit cells."""
    if not 0 <= value < 1 << (32 * n):
        raise BootError(f"{what} {value:#x} does not fit {n} cell(s)", expected=f"< {1 << (32 * n):#x}")
    return value.to_bytes(4 * n, "big")


def patch_chosen(dtb: bytes, fdt: tuple[int, int], scratch: tuple[int, int], *, where: str = VIRT_DTB) -> bytes:
    """``dtb`` with ``/chosen/linux,kho-fdt = <fdt_addr fdt_size>`` and
    ``linux,kho-scratch = <array_addr array_size>`` in the root's cells
    (``/chosen`` is created when missing), written compact."""
    tree = parse_fdt(dtb, where=where)
    ac, sc = root_cells(tree.root, where=where)
    chosen = tree.root.child("chosen") or tree.root.add_child("chosen")
    for prop, (addr, size) in (("linux,kho-fdt", fdt), ("linux,kho-scratch", scratch)):
        chosen.set(prop, cells_bytes(addr, ac, f"{prop} address") + cells_bytes(size, sc, f"{prop} size"))
    return _write(tree)


def repack_dtb(dtb: bytes, *, where: str = VIRT_DTB) -> bytes:
    """``dtb`` unchanged but written compact (a cold boot's DTB)."""
    return _write(parse_fdt(dtb, where=where))


def fdt_nodes(blob: bytes, *, where: str = "FDT") -> dict[str, dict[str, bytes]]:
    """``{path: {property: value}}`` for every node of an FDT (read with
    :func:`~kho_formats.model.fdt.parse_fdt`: a malformed blob raises FdtError)."""
    root = parse_fdt(blob, where=where).root
    return {n.path: dict(n.props) for n in root.walk()}
