"""Flattened device trees as KHO uses them.

* :func:`parse_fdt` is a validating reader for untrusted blobs: every header
  field, offset, token, name and string offset is bounds-checked before use,
  the walk is linear in the struct block, and every failure is an
  :class:`FdtError` with the FDT path and byte offset.
* :func:`build_fdt` writes an ordinary DTB v17 the way the kernel's libfdt
  calls leave it (sequential-write or read-write-then-packed layouts), so a
  rebuilt root FDT can match a captured one byte for byte.
* :func:`to_dts` renders DTS through ``pyfdt``, with its errors wrapped.

KHO stores u64 properties in the CPU's *native* byte order (``fdt_property``
with ``&u64, 8``); :func:`get_u64` / :func:`u64_bytes` take the byte order.
"""

from __future__ import annotations

import io
import re
import struct
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from .._types import BYTES_LIKE, as_byteorder, check_type
from ..abi.fdt_header import FDT_HEADER_SIZE, FDT_MAGIC, fdt_header, header_totalsize
from ..errors import FdtError, PropertyError

FDT_BEGIN_NODE = 1
FDT_END_NODE = 2
FDT_PROP = 3
FDT_NOP = 4
FDT_END = 9
HEADER_SIZE = FDT_HEADER_SIZE
MAX_DEPTH = 64


@dataclass
class FdtNode:
    name: str
    props: list[tuple[str, bytes]] = field(default_factory=list)
    children: list[FdtNode] = field(default_factory=list)
    #: the node this one is a child of (set by :meth:`add_child`); paths are
    #: computed from it on demand, so building a tree costs no path copies
    parent: FdtNode | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> str:
        """``/a/b`` (``/`` for a root or a node without a parent)."""
        parts: list[str] = []
        n: FdtNode | None = self
        while n is not None and n.parent is not None:
            parts.append(n.name)
            n = n.parent
        return "/" + "/".join(reversed(parts))

    def get(self, name: str) -> bytes | None:
        for n, v in self.props:
            if n == name:
                return v
        return None

    def has(self, name: str) -> bool:
        return self.get(name) is not None

    def set(self, name: str, value: bytes) -> None:
        for i, (n, _) in enumerate(self.props):
            if n == name:
                self.props[i] = (name, bytes(value))
                return
        self.props.append((name, bytes(value)))

    def child(self, name: str) -> FdtNode | None:
        for c in self.children:
            if c.name == name:
                return c
        return None

    def add_child(self, name: str) -> FdtNode:
        node = FdtNode(name, parent=self)
        self.children.append(node)
        return node

    def walk(self) -> Iterator[FdtNode]:
        stack = [self]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(n.children))


@dataclass
class Fdt:
    header: object
    root: FdtNode
    reserve_map: list[tuple[int, int]]
    size: int


def _err(
    msg: str,
    *,
    path: str = "/",
    off: int | None = None,
    expected: str | None = None,
    where: str = "FDT",
    phys: int | None = None,
) -> FdtError:
    loc = f"{where}:{path}" if path else where
    if off is not None:
        msg = f"{msg} at struct offset {off:#x}"
    return FdtError(msg, path=loc, expected=expected, phys=phys)


def _cstring(buf: bytes, start: int, end: int) -> int | None:
    """Index of the NUL terminating the string at ``start``, or None before ``end``."""
    nul = buf.find(b"\0", start, end)
    return None if nul < 0 else nul


def parse_fdt(data: bytes, *, where: str = "FDT", phys: int | None = None, max_depth: int = MAX_DEPTH) -> Fdt:
    """Parse and validate an FDT blob (``where`` names it in errors)."""
    check_type(data, BYTES_LIKE, "data", "parse_fdt")
    buf = bytes(data)

    def e(msg: str, **kw: Any) -> FdtError:
        return _err(msg, where=where, phys=phys, **kw)

    if len(buf) < HEADER_SIZE:
        raise e(f"blob of {len(buf)} bytes is shorter than the FDT header", path="", expected="at least 40 bytes")
    h = fdt_header.parse(buf[:HEADER_SIZE])
    if h.magic != FDT_MAGIC:
        raise e(f"bad magic {h.magic:#010x}", path="", expected=f"{FDT_MAGIC:#010x}")
    if h.version < 16 or h.last_comp_version > 17 or h.last_comp_version > h.version:
        raise e(
            f"unsupported version {h.version} (last_comp_version {h.last_comp_version})",
            path="",
            expected="version >= 16 and last_comp_version <= 17",
        )
    if h.totalsize < HEADER_SIZE or h.totalsize > len(buf):
        raise e(f"totalsize {h.totalsize} but blob has {len(buf)} bytes", path="", expected=f"40..{len(buf)}")
    total = h.totalsize
    size_struct = h.size_dt_struct if h.version >= 17 else total - h.off_dt_struct
    blocks = {
        "memory reserve map": (h.off_mem_rsvmap, None),
        "struct block": (h.off_dt_struct, size_struct),
        "strings block": (h.off_dt_strings, h.size_dt_strings),
    }
    for name, (off, size) in blocks.items():
        if off < HEADER_SIZE or off > total or (size is not None and off + size > total):
            raise e(
                f"{name} at {off:#x}+{size if size is not None else 0:#x} lies outside the blob",
                path="",
                expected=f"within {HEADER_SIZE:#x}..{total:#x}",
            )
    if h.off_dt_struct % 4 or h.off_mem_rsvmap % 8:
        raise e("misaligned struct block or reserve map", path="", expected="struct 4-aligned, rsvmap 8-aligned")
    s0, s1 = h.off_dt_struct, h.off_dt_struct + size_struct
    t0, t1 = h.off_dt_strings, h.off_dt_strings + h.size_dt_strings
    if s0 < t1 and t0 < s1 and size_struct and h.size_dt_strings:
        raise e("struct block and strings block overlap", path="", expected="disjoint blocks")
    # memory reserve map: (address, size) pairs up to a (0, 0) entry
    rsv: list[tuple[int, int]] = []
    off = h.off_mem_rsvmap
    while True:
        if off + 16 > total:
            raise e("memory reserve map is not terminated inside the blob", path="", expected="a 0,0 entry")
        if (off < s1 and s0 < off + 16 and s1 > s0) or (off < t1 and t0 < off + 16 and t1 > t0):
            raise e("memory reserve map runs into another block", path="", expected="disjoint blocks")
        a, s = struct.unpack_from(">QQ", buf, off)
        off += 16
        if a == 0 and s == 0:
            break
        rsv.append((a, s))

    def string_at(nameoff: int, pos: int, path: str) -> str:
        if nameoff >= h.size_dt_strings:
            raise e(
                f"property name offset {nameoff} is past the strings block ({h.size_dt_strings} bytes)",
                path=path,
                off=pos - s0,
            )
        nul = _cstring(buf, t0 + nameoff, t1)
        if nul is None:
            raise e("property name is not NUL-terminated inside the strings block", path=path, off=pos - s0)
        try:
            return buf[t0 + nameoff : nul].decode("ascii")
        except UnicodeDecodeError:
            raise e("property name is not ASCII", path=path, off=pos - s0) from None

    pos = s0
    stack: list[FdtNode] = []
    root: FdtNode | None = None
    ended = False
    while not ended:
        if pos + 4 > s1:
            raise e(
                "struct block ends without FDT_END",
                path=stack[-1].path if stack else "/",
                off=pos - s0,
                expected="FDT_END token",
            )
        (tok,) = struct.unpack_from(">I", buf, pos)
        tpos = pos
        pos += 4
        if tok == FDT_BEGIN_NODE:
            nul = _cstring(buf, pos, s1)
            if nul is None:
                raise e("node name is not NUL-terminated", path=stack[-1].path if stack else "/", off=tpos - s0)
            try:
                name = buf[pos:nul].decode("ascii")
            except UnicodeDecodeError:
                raise e("node name is not ASCII", path=stack[-1].path if stack else "/", off=tpos - s0) from None
            pos = (nul + 1 + 3) & ~3
            if root is None:
                if name != "":
                    raise e(f"root node is named {name!r}", off=tpos - s0, expected="an empty name")
                root = FdtNode("")
                stack.append(root)
            else:
                if not stack:
                    raise e("a second root node after the first one closed", off=tpos - s0, expected="FDT_END")
                if len(stack) >= max_depth:
                    raise e(f"nodes nested deeper than {max_depth}", path=stack[-1].path, off=tpos - s0)
                if not name or "/" in name:
                    raise e(f"bad node name {name!r}", path=stack[-1].path, off=tpos - s0)
                stack.append(stack[-1].add_child(name))
        elif tok == FDT_END_NODE:
            if not stack:
                raise e("FDT_END_NODE without an open node", off=tpos - s0)
            stack.pop()
        elif tok == FDT_PROP:
            if not stack:
                raise e("property outside any node", off=tpos - s0)
            if pos + 8 > s1:
                raise e("property header runs past the struct block", path=stack[-1].path, off=tpos - s0)
            plen, nameoff = struct.unpack_from(">II", buf, pos)
            pos += 8
            if plen > s1 - pos:
                raise e(
                    f"property length {plen} runs past the struct block",
                    path=stack[-1].path,
                    off=tpos - s0,
                    expected=f"<= {s1 - pos}",
                )
            name = string_at(nameoff, tpos, stack[-1].path)
            stack[-1].props.append((name, buf[pos : pos + plen]))
            pos = (pos + plen + 3) & ~3
        elif tok == FDT_NOP:
            continue
        elif tok == FDT_END:
            if stack or root is None:
                raise e(
                    "FDT_END with nodes still open" if stack else "FDT_END before any node",
                    path=stack[-1].path if stack else "/",
                    off=tpos - s0,
                )
            ended = True
        else:
            raise e(
                f"bad token {tok:#x}",
                path=stack[-1].path if stack else "/",
                off=tpos - s0,
                expected="BEGIN_NODE, END_NODE, PROP, NOP or END",
            )
    if root is None:  # the loop above ends only at FDT_END, which needs a root
        raise e("no root node", path="/")
    return Fdt(header=h, root=root, reserve_map=rsv, size=total)


def fdt_totalsize(data: bytes, *, where: str = "FDT", phys: int | None = None) -> int:
    """``totalsize`` from an FDT header, validated against magic only."""
    if len(data) < 8:
        raise _err("too short for an FDT header", path="", where=where, phys=phys)
    total = header_totalsize(data)
    if total is None:
        magic = int.from_bytes(data[:4], "big")
        raise _err(f"bad magic {magic:#010x}", path="", where=where, phys=phys, expected=f"{FDT_MAGIC:#010x}")
    return total


# -- property helpers ---------------------------------------------------------


@overload
def get_u64(node: FdtNode, name: str, byteorder: str, *, where: str = ..., required: Literal[True] = ...) -> int: ...
@overload
def get_u64(node: FdtNode, name: str, byteorder: str, *, where: str = ..., required: bool) -> int | None: ...
def get_u64(node: FdtNode, name: str, byteorder: str, *, where: str = "FDT", required: bool = True) -> int | None:
    """A native-order u64 property; a missing one raises unless not ``required`` (then ``None``)."""
    v = node.get(name)
    path = f"{where}:{node.path.rstrip('/')}/{name}" if node.path != "/" else f"{where}:/{name}"
    if v is None:
        if required:
            raise PropertyError("missing property", path=path, expected="a u64 (8 bytes, native order)")
        return None
    if len(v) != 8:
        raise PropertyError(f"property is {len(v)} bytes", path=path, expected="8 bytes (u64, native order)")
    return int.from_bytes(v, as_byteorder(byteorder))


def get_u32(node: FdtNode, name: str, byteorder: str, *, where: str = "FDT") -> int:
    v = node.get(name)
    path = f"{where}:{node.path.rstrip('/')}/{name}"
    if v is None:
        raise PropertyError("missing property", path=path, expected="a u32")
    if len(v) != 4:
        raise PropertyError(f"property is {len(v)} bytes", path=path, expected="4 bytes (u32, native order)")
    return int.from_bytes(v, as_byteorder(byteorder))


def get_strings(node: FdtNode, name: str, *, where: str = "FDT") -> list[str]:
    v = node.get(name)
    path = f"{where}:{node.path.rstrip('/')}/{name}"
    if v is None:
        raise PropertyError("missing property", path=path, expected="a string list")
    if not v.endswith(b"\0"):
        raise PropertyError("string property is not NUL-terminated", path=path)
    try:
        return [s.decode("ascii") for s in v[:-1].split(b"\0")]
    except UnicodeDecodeError:
        raise PropertyError("string property is not ASCII", path=path) from None


def u64_bytes(value: int, byteorder: str) -> bytes:
    return int(value).to_bytes(8, as_byteorder(byteorder))


def u32_bytes(value: int, byteorder: str) -> bytes:
    return int(value).to_bytes(4, as_byteorder(byteorder))


def str_bytes(*values: str) -> bytes:
    return b"".join(v.encode() + b"\0" for v in values)


# -- writer -----------------------------------------------------------------------


class _Strings:
    """libfdt's string table, in either of its two growth directions.

    Both look a name up in the whole table first (``fdt_find_string_``), so a
    name that is the tail of one already there (``data`` in
    ``preserved-data``) points into it instead of being added again.
    Sequential-write (``fdt_create`` .. ``fdt_finish``) adds new names at the
    front, so the finished table is in reverse order of first use;
    read-write (``fdt_setprop`` after ``fdt_open_into``) appends them.
    """

    def __init__(self, style: str, initial: Sequence[str] = ()):
        self.style = style
        self.tab = b""
        for s in initial:
            self.add(s)

    def add(self, s: str) -> int:
        needle = s.encode() + b"\0"
        found = self.tab.find(needle)
        if self.style == "sequential-write":
            if found < 0:
                self.tab = needle + self.tab
                found = 0
            return -(len(self.tab) - found)  # negative: resolved at finish
        if found < 0:
            found = len(self.tab)
            self.tab += needle
        return found

    def resolve(self, off: int) -> int:
        return len(self.tab) + off if off < 0 else off

    def names(self) -> list[str]:
        return [n.decode() for n in self.tab.split(b"\0")[:-1]]


def sequential_strings(names: Sequence[str]) -> list[str]:
    """The strings block ``fdt_create`` .. ``fdt_finish`` leave for properties
    named ``names`` (in the order they were written), entry by entry."""
    return _Strings("sequential-write", names).names()


#: ``off_mem_rsvmap`` of the two layouts: ``fdt_create`` puts the reserve map at
#: the header size aligned to a reserve entry (16), ``fdt_pack`` right after the
#: header aligned to 8
RSVMAP_SEQUENTIAL = (HEADER_SIZE + 15) & ~15
RSVMAP_PACKED = (HEADER_SIZE + 7) & ~7


def build_fdt(
    root: FdtNode,
    *,
    style: str = "read-write",
    strings_order: Sequence[str] = (),
    kept_strings: Collection[str] = (),
    reserve_map: Sequence[tuple[int, int]] = (),
    boot_cpuid_phys: int = 0,
) -> bytes:
    """Serialize a tree as libfdt would leave it.

    ``style="sequential-write"``: ``fdt_create`` .. ``fdt_finish``: reserve
    map at 0x30 (:data:`RSVMAP_SEQUENTIAL`), strings in reverse order of first
    use, ``totalsize`` the end of the strings block.

    ``style="read-write"``: a tree edited after ``fdt_open_into`` and packed
    with ``fdt_pack``: reserve map at 0x28 (:data:`RSVMAP_PACKED`), the
    strings block starting with ``strings_order`` (the table as it stood
    before the edits: only the names some property uses, and those in
    ``kept_strings``, which stay although nothing uses them any more: libfdt
    never removes a string, not even when ``fdt_del_node`` deletes the last
    property naming it), then new names appended in order of first use.
    Both layouts have no free space: ``totalsize`` ends the strings block.
    """
    if style not in ("sequential-write", "read-write"):
        raise ValueError(f"unknown FDT style {style!r}")
    used = {name for node in root.walk() for name, _ in node.props}
    # the kernel only adds a string when a property first uses it
    initial = [n for n in strings_order if n in used or n in kept_strings] if style == "read-write" else []
    strings = _Strings(style, initial)
    parts: list[bytes] = []
    fixups: list[tuple[int, int]] = []  # (index into parts, raw name offset)

    def emit(node: FdtNode) -> None:
        name = node.name.encode() + b"\0"
        parts.append(struct.pack(">I", FDT_BEGIN_NODE) + name + bytes((-len(name)) % 4))
        for pname, value in node.props:
            off = strings.add(pname)
            fixups.append((len(parts), off))
            parts.append(struct.pack(">III", FDT_PROP, len(value), 0) + bytes(value) + bytes((-len(value)) % 4))
        for c in node.children:
            emit(c)
        parts.append(struct.pack(">I", FDT_END_NODE))

    stack_root = FdtNode("", root.props, root.children)
    emit(stack_root)
    parts.append(struct.pack(">I", FDT_END))
    for idx, off in fixups:
        p = parts[idx]
        parts[idx] = p[:8] + struct.pack(">I", strings.resolve(off)) + p[12:]
    dt_struct = b"".join(parts)
    rsv_off = RSVMAP_SEQUENTIAL if style == "sequential-write" else RSVMAP_PACKED
    rsv = b"".join(struct.pack(">QQ", a, s) for a, s in reserve_map) + bytes(16)
    off_struct = rsv_off + len(rsv)
    off_strings = off_struct + len(dt_struct)
    total = off_strings + len(strings.tab)
    hdr = fdt_header.build(
        dict(
            magic=FDT_MAGIC,
            totalsize=total,
            off_dt_struct=off_struct,
            off_dt_strings=off_strings,
            off_mem_rsvmap=rsv_off,
            version=17,
            last_comp_version=16,
            boot_cpuid_phys=boot_cpuid_phys,
            size_dt_strings=len(strings.tab),
            size_dt_struct=len(dt_struct),
        )
    )
    return hdr + bytes(rsv_off - HEADER_SIZE) + rsv + dt_struct + strings.tab


# -- DTS through pyfdt ---------------------------------------------------------------


_TWO_CELLS = re.compile(r"^\S+ = <(0x[0-9a-fA-F]{1,8}) (0x[0-9a-fA-F]{1,8})>;$")


_PYFDT_LOCK = threading.Lock()


def _no_duplicate(self: object, name: str) -> bool:
    return False


def _refuse_duplicate_names(fdt: Fdt, where: str) -> None:
    """Two properties, two sub-nodes or a property and a sub-node with one
    name in a node (dtc refuses them; pyfdt did too, in quadratic time)."""
    for node in fdt.root.walk():
        seen: set[str] = set()
        for name in [n for n, _ in node.props] + [c.name for c in node.children]:
            if name in seen:
                raise FdtError(
                    f"duplicate name {name!r}", path=f"{where}:{node.path}", expected="unique names in a node"
                )
            seen.add(name)


def to_dts(blob: bytes, *, byteorder: str = "little", where: str = "FDT") -> str:
    """DTS text (via pyfdt) with every 8-byte property annotated with its
    native-order u64 value as a comment.  The blob is validated first."""
    check_type(blob, BYTES_LIKE, "blob", "to_dts")
    fdt = parse_fdt(blob, where=where)  # our checks first: pyfdt trusts its input
    _refuse_duplicate_names(fdt, where)
    try:
        from pyfdt.pyfdt import FdtBlobParse
        from pyfdt.pyfdt import FdtNode as PyFdtNode

        # pyfdt checks every appended name against all earlier siblings
        # (quadratic: 20k siblings took 15 s); the names were checked above
        # in linear time, so its check is switched off for this call
        with _PYFDT_LOCK:
            attr = "_FdtNode__check_name_duplicate"
            saved = PyFdtNode.__dict__[attr]
            setattr(PyFdtNode, attr, _no_duplicate)
            try:
                text = FdtBlobParse(io.BytesIO(bytes(blob[: fdt.size]))).to_fdt().to_dts()
            finally:
                setattr(PyFdtNode, attr, saved)
    except Exception as exc:  # pyfdt raises bare struct.error / TypeError / ...
        raise FdtError(f"pyfdt could not render the blob: {type(exc).__name__}: {exc}", path=where) from None
    u64_props = {}
    for node in fdt.root.walk():
        for name, value in node.props:
            if len(value) == 8:
                u64_props[name] = True
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        key = stripped.split(" = ", 1)[0] if " = " in stripped else None
        # only a two-cell rendering: a string value that happens to contain
        # "<...>" (e.g. b"a<x>cde\0") must not be taken for cells
        m = _TWO_CELLS.match(stripped) if key in u64_props else None
        if m:
            raw = struct.pack(">II", int(m.group(1), 16) & 0xFFFFFFFF, int(m.group(2), 16) & 0xFFFFFFFF)
            line += f" /* u64 {byteorder}-endian: {int.from_bytes(raw, as_byteorder(byteorder)):#x} */"
        out.append(line)
    return "\n".join(out) + "\n"
