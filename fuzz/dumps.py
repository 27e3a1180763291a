"""Fuzz targets for the memory-dump readers: ``kdump``, ``elf`` and ``kcore``.

Each target mutates a valid dump file, writes it to disk and runs what a
user's file reaches; anything but a :class:`~kho_formats.errors.KhoFormatError`
is an escape (and so is an input that grows the process's peak RSS by more
than ``fuzz.targets.MEMORY_GROWTH_MIB``, or runs past the harness timeout):

==========  =================================================================================
``kdump``   ``load_capture(path)`` (detection, root-FDT scan) + ``parse_capture`` +
            ``decode_clients``; ``load_kdump`` + page reads.  Seeds: the real QEMU 7.2 kdump
            (``tests/data``, flattened zlib) and :func:`~kho_formats.memory.kdump.write_kdump` output
            of fixture images in every compression (none, zlib, snappy, zstd), plain and
            flattened, both byte orders
``elf``     ``load_capture(path)`` + ``parse_capture`` + ``decode_clients``;
            ``PhysImage.from_elf`` + segment reads.  Seeds: ``fixtures/*/image.elf``,
            ``fixtures/captures/*/image.elf`` and a big-endian rewrite of one
``kcore``   ``KcoreFile(path)`` + ``describe``/``page_size`` + ``image()`` + reads, then the
            root-FDT search of an image alone + ``parse_capture``.  Seeds: kcore-like
            files (``fs/proc/kcore.c`` layout: notes with VMCOREINFO, kernel text, vmalloc,
            RAM, vmemmap) holding fixture images
==========  =================================================================================

Mutations are replayable JSON ops (``[layer, kind, ...]``) on the file bytes:
header / program-header / page-descriptor / flattened-record fields set to
extreme values (0, 1, all ones, the sign bit, 2^31, 2^32 - 1, the file size
and around it, doubled, a random offset), bitmaps filled with ones (every
page dumped), whole program headers copied over others (overlapping
segments), byte flips, truncation, deletions, insertions, garbage appended,
and for kcore a sparse extension of the file.  A kdump seed is mutated as its
plain file (layer ``"logical"``) and, when the seed is flattened, flattened
afterwards and mutated again (layer ``"file"``: record headers, truncation).

    python fuzz/fuzz_kho.py --target kdump --runs 20000
    python -c "from fuzz.dumps import replay; replay('kdump', SEED, OPS)"   # one case again
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.kcore_layout import NO_PADDR, PAGE_OFFSET, TEXT_VADDR, VMALLOC_START, VMEMMAP_START, core_ehdr, elf_note
from kho_formats.memory.image import PhysImage, elf_structs

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "fixtures"
QEMU_KDUMP = REPO / "tests" / "data" / "qemu-7.2-x86_64-firmware-16m.kdump"
#: page reads per input (kdump pages decompress on access)
READ_BUDGET = 64

Op = list


@dataclass
class Field:
    """A number in the seed file: where, how wide, which byte order, what it is."""

    off: int
    width: int
    byteorder: str
    name: str


@dataclass
class DumpSeed:
    name: str
    data: bytes  # the plain file (kdump: before flattening)
    fields: list[Field]
    #: (offset, length, name) of byte regions worth filling (bitmaps) or flipping (FDT pages)
    regions: list[tuple[int, int, str]] = field(default_factory=list)
    flattened: bool = False
    #: the flattened file as a seed of its own (the real QEMU one), mutated at the file layer only
    raw: bool = False


# -- byte ops --------------------------------------------------------------------------------------


def _set(b: bytearray, off: int, width: int, value: int, byteorder: str) -> None:
    if 0 <= off and off + width <= len(b):
        b[off : off + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, byteorder)  # type: ignore[arg-type]


def apply_op(b: bytearray, op: Op) -> bytearray:
    kind = op[1]
    if kind == "set":
        _, _, off, width, value, bo = op
        _set(b, off, width, value, bo)
    elif kind == "flip":
        _, _, off, x = op
        if b:
            b[off % len(b)] ^= x
    elif kind == "trunc":
        del b[op[2] :]
    elif kind == "del":
        _, _, off, n = op
        del b[off : off + n]
    elif kind == "ins":
        _, _, off, hexdata = op
        b[off:off] = bytes.fromhex(hexdata)
    elif kind == "fill":
        _, _, off, n, byte = op
        end = min(len(b), off + n)
        if off < end:
            b[off:end] = bytes([byte]) * (end - off)
    elif kind == "copy":
        _, _, src, dst, n = op
        chunk = b[src : src + n]
        if dst + len(chunk) <= len(b):
            b[dst : dst + len(chunk)] = chunk
    elif kind == "append":
        _, _, hexdata, times = op
        b += bytes.fromhex(hexdata) * times
    elif kind == "rec":  # flattened record header k: field "off" or "size"
        _, _, k, which, value = op
        recs = flat_records(bytes(b))
        if recs:
            pos = recs[k % len(recs)]
            _set(b, pos + (0 if which == "off" else 8), 8, value, "big")
    return b


def flat_records(buf: bytes) -> list[int]:
    """File offsets of the record headers of a flattened kdump (as far as they walk)."""
    out, pos = [], 4096
    while pos + 16 <= len(buf) and len(out) < 100000:
        out.append(pos)
        vo = int.from_bytes(buf[pos : pos + 8], "big", signed=True)
        size = int.from_bytes(buf[pos + 8 : pos + 16], "big", signed=True)
        if vo == -1 or size < 0:
            break
        pos += 16 + size
    return out


def flatten(plain: bytes, chunk: int = 65536, header_last: bool = True) -> bytes:
    """``plain`` as ``makedumpfile -F`` writes it (records of ``chunk`` bytes, header last)."""
    from kho_formats.memory.kdump import FLAT_HEADER_SIZE, FLAT_SIGNATURE

    out = io.BytesIO()
    out.write(FLAT_SIGNATURE.ljust(16, b"\0") + (1).to_bytes(8, "big") + (1).to_bytes(8, "big"))
    out.write(bytes(FLAT_HEADER_SIZE - 32))
    chunks = [(o, plain[o : o + chunk]) for o in range(0, len(plain), chunk)]
    if header_last and chunks:
        chunks.append(chunks.pop(0))
    for o, c in chunks:
        out.write(o.to_bytes(8, "big", signed=True) + len(c).to_bytes(8, "big") + c)
    out.write((-1).to_bytes(8, "big", signed=True) + (0).to_bytes(8, "big"))
    return out.getvalue()


def unflatten(flat: bytes) -> bytes:
    """The plain file a (valid) flattened kdump stands for; gaps between records are zeros."""
    out = bytearray()
    for pos in flat_records(flat):
        vo = int.from_bytes(flat[pos : pos + 8], "big", signed=True)
        size = int.from_bytes(flat[pos + 8 : pos + 16], "big")
        if vo < 0:
            break
        if len(out) < vo + size:
            out += bytes(vo + size - len(out))
        out[vo : vo + size] = flat[pos + 16 : pos + 16 + size]
    return bytes(out)


def materialize(seed: DumpSeed, ops: list[Op]) -> bytes:
    """The mutated file: logical ops on the plain bytes, flattening, file ops."""
    b = bytearray(seed.data)
    flat_params = {"chunk": 65536, "header_last": True}
    for op in ops:
        if op[0] == "logical":
            apply_op(b, op)
        elif op[0] == "flatten":
            flat_params = {"chunk": op[1], "header_last": op[2]}
    if seed.flattened and not seed.raw:
        b = bytearray(flatten(bytes(b), **flat_params))  # type: ignore[arg-type]
    for op in ops:
        if op[0] == "file":
            apply_op(b, op)
    return bytes(b)


# -- value and op generation ------------------------------------------------------------------------


def extreme(rng: random.Random, width: int, orig: int, size: int) -> int:
    bits = 8 * width
    choices = [
        0,
        1,
        (1 << bits) - 1,  # -1
        1 << (bits - 1),  # the sign bit
        (1 << (bits - 1)) - 1,
        1 << 31,
        (1 << 32) - 1,
        1 << 32,
        size,
        size - 1,
        size + 1,
        rng.randrange(max(1, size)),
        orig * 2,
        orig + 1,
        orig - 1,
        orig + 4096,
        orig ^ (1 << rng.randrange(bits)),
        4096,
        65536,
        rng.getrandbits(bits),
        (1 << bits) - 4096,
    ]
    return rng.choice(choices) & ((1 << bits) - 1)


def gen_ops(rng: random.Random, seed: DumpSeed, size: int) -> list[Op]:
    layer = "file" if seed.raw else "logical"
    ops: list[Op] = []
    for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 6])):
        r = rng.random()
        if r < 0.45 and seed.fields:
            f = rng.choice(seed.fields)
            orig = int.from_bytes(seed.data[f.off : f.off + f.width], f.byteorder)  # type: ignore[arg-type]
            ops.append([layer, "set", f.off, f.width, extreme(rng, f.width, orig, size), f.byteorder])
        elif r < 0.55 and seed.regions:
            off, n, _ = rng.choice(seed.regions)
            if rng.random() < 0.5:
                ops.append([layer, "fill", off, n, rng.choice([0xFF, 0x00, 0xAA, 0x01])])
            else:
                for _ in range(rng.randrange(1, 8)):
                    ops.append([layer, "flip", off + rng.randrange(max(1, n)), 1 << rng.randrange(8)])
        elif r < 0.65:
            for _ in range(rng.randrange(1, 8)):
                ops.append([layer, "flip", rng.randrange(max(1, size)), rng.randrange(1, 256)])
        elif r < 0.75:
            cut = rng.choice(
                [rng.randrange(max(1, size)), rng.randrange(min(size, 8192) + 1), size - rng.randrange(64)]
            )
            ops.append([layer, "trunc", max(0, cut)])
        elif r < 0.8:
            ops.append([layer, "del", rng.randrange(max(1, size)), rng.choice([1, 8, 16, 100, 4096])])
        elif r < 0.85:
            junk = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 8, 16, 64])))
            ops.append([layer, "ins", rng.randrange(size + 1), junk.hex()])
        elif r < 0.9:
            ops.append(
                [layer, "append", rng.choice(["00", "ff", "4b44554d50202020", "d00dfeed"]), rng.randrange(1, 5000)]
            )
        else:
            n = rng.choice([8, 16, 56, 64, 4096])
            ops.append([layer, "copy", rng.randrange(max(1, size)), rng.randrange(max(1, size)), n])
    if seed.flattened and not seed.raw and rng.random() < 0.5:
        ops.append(["flatten", rng.choice([4096, 65536, 1 << 20, 1000]), rng.random() < 0.7])
        for _ in range(rng.randrange(0, 3)):
            k = rng.randrange(64)
            which = rng.choice(["off", "size"])
            ops.append(["file", "rec", k, which, extreme(rng, 8, 4096, size)])
        if rng.random() < 0.2:
            ops.append(["file", "trunc", max(0, size + 4096 - rng.randrange(size + 4096))])
    if seed.raw and rng.random() < 0.4:
        ops.append(["file", "rec", rng.randrange(64), rng.choice(["off", "size"]), extreme(rng, 8, 4096, size)])
    return ops


# -- seeds ---------------------------------------------------------------------------------------


def _fdt_regions(data: bytes, limit: int = 8) -> list[tuple[int, int, str]]:
    out = []
    i = data.find(b"\xd0\x0d\xfe\xed")
    while i >= 0 and len(out) < limit:
        out.append((i, 256, "fdt"))
        i = data.find(b"\xd0\x0d\xfe\xed", i + 4)
    return out


def elf_fields(data: bytes) -> list[Field]:
    bo = "little" if data[5] == 1 else "big"
    fields = [
        Field(4, 1, bo, "EI_CLASS"),
        Field(5, 1, bo, "EI_DATA"),
        Field(16, 2, bo, "e_type"),
        Field(18, 2, bo, "e_machine"),
        Field(32, 8, bo, "e_phoff"),
        Field(52, 2, bo, "e_ehsize"),
        Field(54, 2, bo, "e_phentsize"),
        Field(56, 2, bo, "e_phnum"),
    ]
    phoff = int.from_bytes(data[32:40], bo)  # type: ignore[arg-type]
    phnum = int.from_bytes(data[56:58], bo)  # type: ignore[arg-type]
    for k in range(min(phnum, 64)):
        at = phoff + 56 * k
        for rel, width, name in ((0, 4, "p_type"), (8, 8, "p_offset"), (16, 8, "p_vaddr"), (24, 8, "p_paddr")):
            fields.append(Field(at + rel, width, bo, f"ph{k}.{name}"))
        fields.append(Field(at + 32, 8, bo, f"ph{k}.p_filesz"))
        fields.append(Field(at + 40, 8, bo, f"ph{k}.p_memsz"))
    return fields


def elf_regions(data: bytes) -> list[tuple[int, int, str]]:
    bo = "little" if data[5] == 1 else "big"
    phoff = int.from_bytes(data[32:40], bo)  # type: ignore[arg-type]
    phnum = int.from_bytes(data[56:58], bo)  # type: ignore[arg-type]
    return [(phoff, 56 * phnum, "program headers"), *_fdt_regions(data)]


def kdump_fields(data: bytes, bo: str, bs: int) -> tuple[list[Field], list[tuple[int, int, str]]]:
    hdr = [
        (8, 4, "header_version"),
        (424, 4, "status"),
        (428, 4, "block_size"),
        (432, 4, "sub_hdr_size"),
        (436, 4, "bitmap_blocks"),
        (440, 4, "max_mapnr"),
        (460, 4, "nr_cpus"),
    ]
    fields = [Field(o, w, bo, n) for o, w, n in hdr]
    sub = [(0, 8, "phys_base"), (80, 8, "start_pfn_64"), (88, 8, "end_pfn_64"), (96, 8, "max_mapnr_64")]
    fields += [Field(bs + o, w, bo, n) for o, w, n in sub]
    sub_hdr = int.from_bytes(data[432:436], bo, signed=True)  # type: ignore[arg-type]
    bm_blocks = int.from_bytes(data[436:440], bo)  # type: ignore[arg-type]
    bm_off = (1 + sub_hdr) * bs
    half = bm_blocks * bs // 2
    pd_off = bm_off + 2 * half
    regions = [(bm_off, half, "1st bitmap"), (bm_off + half, half, "2nd bitmap")]
    bits = int.from_bytes(data[bm_off + half : bm_off + 2 * half], "little").bit_count()
    picks = sorted({0, 1, bits - 1, *random.Random(len(data)).sample(range(bits), min(bits, 24))})
    for k in picks:
        at = pd_off + 24 * k
        fields += [
            Field(at, 8, bo, f"desc{k}.offset"),
            Field(at + 8, 4, bo, f"desc{k}.size"),
            Field(at + 12, 4, bo, f"desc{k}.flags"),
        ]
    regions.append((pd_off, 24 * bits, "page descriptors"))
    return fields, regions + _fdt_regions(data)


def _kdump_seed(name: str, plain: bytes, flattened: bool) -> DumpSeed:
    from kho_formats.memory.kdump import KdumpFile

    f = KdumpFile(plain, name)
    fields, regions = kdump_fields(plain, f.byteorder, f.block_size)
    return DumpSeed(name, plain, fields, regions, flattened=flattened)


def kdump_seeds() -> list[DumpSeed]:
    from kho_formats.memory.kdump import write_kdump

    seeds = []
    qemu = QEMU_KDUMP.read_bytes()
    seeds.append(_kdump_seed("qemu-7.2", unflatten(qemu), True))
    raw = DumpSeed("qemu-7.2-raw", qemu, [], [(4096, 64, "first record")], flattened=True, raw=True)
    seeds.append(raw)
    imgs = {
        "v4-4k": PhysImage.from_elf(FIX / "v4-4k" / "image.elf"),
        "kho-v4": PhysImage.from_elf(FIX / "captures" / "linux-7.3-x86_64-kho-v4" / "image.elf"),
        "v3-16k": PhysImage.from_elf(FIX / "v3-16k" / "image.elf"),
    }
    combos = [
        (img, comp, bo, flat)
        for img in imgs
        for comp in ("none", "zlib", "snappy", "zstd")
        for bo in ("little", "big")
        for flat in (False, True)
    ]
    for img, comp, bo, flat in combos:
        if img != "v4-4k" and (bo == "big" or flat):
            continue  # every combination on one image, the zlib/snappy/zstd plain LE ones on the others
        buf = io.BytesIO()
        write_kdump(imgs[img], buf, compression=comp, byteorder=bo, block_size=16384 if img == "v3-16k" else 4096)
        seeds.append(_kdump_seed(f"{img}-{comp}-{bo}{'-flat' if flat else ''}", buf.getvalue(), flat))
    return seeds


ELF_SEEDS = (
    "v1-512-4k",
    "v1-page-4k",
    "v2-4k",
    "v3-16k",
    "v4-4k",
    "v4-4k-x86",
    "v4-64k",
    "v4-4k-luo",
    "captures/linux-7.3-x86_64-kho-v4",
    "captures/linux-7.3-x86_64-luo-v5-small",
)


def elf_seeds() -> list[DumpSeed]:
    seeds = []
    for n in ELF_SEEDS:
        data = (FIX / n / "image.elf").read_bytes()
        seeds.append(DumpSeed(n, data, elf_fields(data), elf_regions(data)))
    big = PhysImage.from_elf(FIX / "v4-4k" / "image.elf").to_elf(byteorder="big", machine="aarch64")
    seeds.append(DumpSeed("v4-4k-big", big, elf_fields(big), elf_regions(big)))
    return seeds


def build_kcore(image: PhysImage, *, page_size: int = 4096) -> bytes:
    """A compact kcore-like ELF (``fs/proc/kcore.c`` program headers, packed offsets)
    whose RAM segments hold ``image``."""
    elf = elf_structs("little")
    vmci = f"OSRELEASE=7.3.4-fuzz\nPAGESIZE={page_size}\n".encode()
    notes = elf_note(b"CORE", 1, bytes(336)) + elf_note(b"VMCOREINFO", 0, vmci)
    ram = [(a, b - a) for a, b in image.covered()]
    text_phys, text_size = ram[0][0], min(ram[0][1], 8192)
    loads: list[tuple[int, int, int, bytes]] = [
        (TEXT_VADDR, text_phys, text_size, image.read(text_phys, text_size)),
        (VMALLOC_START, NO_PADDR, 8192, b"\xd0\x0d\xfe\xed" * 8),
    ]
    for phys, size in ram:
        loads.append((PAGE_OFFSET + phys, phys, size, image.read(phys, size)))
        loads.append((VMEMMAP_START + (phys >> 12) * 64, NO_PADDR, 4096, b""))
    nph = 1 + len(loads)
    note_off = 64 + 56 * nph
    data_off = -(-(note_off + len(notes)) // 4096) * 4096
    offsets, cur = [], data_off
    for _va, _pa, size, _ in loads:
        offsets.append(cur)
        cur += -(-size // 4096) * 4096
    out = bytearray(core_ehdr(nph))
    phdrs = [(4, 0, note_off, 0, 0, len(notes))]
    phdrs += [(1, 7, off, va, pa, size) for (va, pa, size, _), off in zip(loads, offsets)]
    for pt, fl, off, va, pa, size in phdrs:
        out += elf.phdr.build(
            dict(p_type=pt, p_flags=fl, p_offset=off, p_vaddr=va, p_paddr=pa, p_filesz=size, p_memsz=size, p_align=4096)
        )
    out += notes
    out += bytes(cur - len(out))
    for (_va, _pa, _size, data), off in zip(loads, offsets):
        out[off : off + len(data)] = data
    return bytes(out)


def kcore_seeds() -> list[DumpSeed]:
    seeds = []
    for n in ("v4-4k", "captures/linux-7.3-x86_64-kho-v4", "v1-page-4k"):
        data = build_kcore(PhysImage.from_elf(FIX / n / "image.elf"))
        regions = elf_regions(data)
        regions.append((64 + 56 * int.from_bytes(data[56:58], "little"), 64, "notes"))
        seeds.append(DumpSeed(f"kcore-{n.split('/')[-1]}", data, elf_fields(data), regions))
    return seeds


# -- running an input -------------------------------------------------------------------------------


def _read_some(img: PhysImage, rng: random.Random) -> None:
    """Reads a parse would make: each segment's first page, last bytes, a page
    across segment boundaries, random spots (at most :data:`READ_BUDGET` pages)."""
    budget = READ_BUDGET
    for seg in img.segments[:16]:
        n = min(len(seg.data), 4096)
        img.read(seg.phys, n)
        img.read(seg.end - min(8, len(seg.data)), min(8, len(seg.data)))
        budget -= 1
    for a, b in img.covered()[:8]:
        for _ in range(min(4, max(0, budget))):
            at = a + rng.randrange(max(1, b - a))
            img.read(at, min(4096, b - at))
            budget -= 1


def _inspect(path: Path) -> None:
    """What ``kho inspect DUMP`` does up to the report: find the root FDT, parse, decode clients."""
    from kho_formats.model.clients import decode_clients
    from kho_formats.ops.capture import load_capture, parse_capture

    cap = load_capture(path)
    st = parse_capture(cap)
    decode_clients(st, cap.image)


class DumpTarget:
    """Base: seeds, a file in the work directory, op generation and replay."""

    name = "dump"
    suffix = ".bin"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"input{self.suffix}"
        self.seeds = self.make_seeds()

    def make_seeds(self) -> list[DumpSeed]:  # pragma: no cover - abstract
        raise NotImplementedError

    def make(self, rng: random.Random) -> tuple[str, Callable[[], object]]:
        seed = rng.choice(self.seeds)
        ops = gen_ops(rng, seed, len(seed.data))
        data = materialize(seed, ops)
        sub = random.Random(rng.getrandbits(32))
        desc = f"{seed.name} {json.dumps(ops)}"

        def run() -> object:
            self.path.write_bytes(data)
            return self.run(self.path, sub, ops)

        return desc, run

    def run(self, path: Path, rng: random.Random, ops: list[Op]) -> object:  # pragma: no cover - abstract
        raise NotImplementedError

    def case(self, seed_name: str, ops: list[Op]) -> Callable[[], object]:
        seed = next(s for s in self.seeds if s.name == seed_name)
        data = materialize(seed, ops)

        def run() -> object:
            self.path.write_bytes(data)
            return self.run(self.path, random.Random(0), ops)

        return run


class KdumpTarget(DumpTarget):
    name = "kdump"
    suffix = ".kdump"

    def make_seeds(self) -> list[DumpSeed]:
        return kdump_seeds()

    def run(self, path: Path, rng: random.Random, ops: list[Op]) -> object:
        from kho_formats.errors import KhoFormatError
        from kho_formats.memory.kdump import load_kdump

        try:
            img = load_kdump(path)
            _read_some(img, rng)
        except KhoFormatError:
            pass
        return _inspect(path)


class ElfTarget(DumpTarget):
    name = "elf"
    suffix = ".elf"

    def make_seeds(self) -> list[DumpSeed]:
        return elf_seeds()

    def run(self, path: Path, rng: random.Random, ops: list[Op]) -> object:
        from kho_formats.errors import KhoFormatError

        try:
            img = PhysImage.from_elf(path)
            _read_some(img, rng)
        except KhoFormatError:
            pass
        return _inspect(path)


class KcoreTarget(DumpTarget):
    name = "kcore"
    suffix = ""

    def make_seeds(self) -> list[DumpSeed]:
        return kcore_seeds()

    def make(self, rng: random.Random) -> tuple[str, Callable[[], object]]:
        desc, run = super().make(rng)
        if rng.random() < 0.05:  # a sparse tail: offsets far out that the file now has
            extra = rng.choice([1 << 20, 16 << 20, 64 << 20])
            desc += f" +sparse {extra}"

            def run_sparse(run: Callable[[], object] = run) -> object:
                self.extend = extra
                try:
                    return run()
                finally:
                    self.extend = 0

            return desc, run_sparse
        return desc, run

    extend = 0

    def run(self, path: Path, rng: random.Random, ops: list[Op]) -> object:
        from kho_formats.memory.kcore import KcoreFile
        from kho_formats.ops.capture import Capture, parse_capture, resolve_root_fdt

        if self.extend:
            with open(path, "r+b") as fh:
                fh.truncate(os.path.getsize(path) + self.extend)
        with KcoreFile(path, cache_pages=rng.choice([0, 4, 1024])) as kf:
            kf.describe()
            _ = kf.page_size
            img = kf.image()
            _read_some(img, rng)
            cap = Capture(root_fdt=b"", image=img, kind="image", sources={"images": [str(path)]})
            cap.arch, cap.page_size, cap.byte_order = kf.arch, kf.page_size, kf.byteorder
            resolve_root_fdt(cap)
            return parse_capture(cap)


DUMP_TARGETS = {"kdump": KdumpTarget, "elf": ElfTarget, "kcore": KcoreTarget}


def replay(target: str, seed_name: str, ops: list[Op]) -> None:
    """Run one recorded case (the seed name and ops a fuzz run printed) and show the traceback."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        DUMP_TARGETS[target](Path(tmp)).case(seed_name, ops)()


__all__ = ["DUMP_TARGETS", "KdumpTarget", "ElfTarget", "KcoreTarget", "materialize", "replay", "build_kcore"]
