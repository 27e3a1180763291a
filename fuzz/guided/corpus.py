"""The seed corpus of the guided targets: ``fuzz/corpus/<target>/seed-*``, derived from the shipped
fixtures, captures and specs and from the fuzzer's built handovers (``fuzz/seeds.py``).

    python -m fuzz.guided.corpus            # (re)write the seeds into fuzz/corpus/<target>/
    python -m fuzz.guided.corpus --out DIR  # into DIR/<target>/ (the test compares the two)

The generator is deterministic; ``tests/test_fuzz_guided.py`` checks that every seed it writes is
committed byte for byte.  Beside the seeds each directory keeps the minimized corpus of the long
runs (libFuzzer's ``-merge=1`` output, files named by their SHA-1) and ``regress-*``, the inputs of
escapes that were fixed.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fuzz.guided import TARGETS  # noqa: E402

FIX = REPO / "fixtures"
CORPUS = REPO / "fuzz" / "corpus"
CAPTURES = ("linux-7.3-x86_64-kho-v4", "linux-7.3-x86_64-second-update")
#: fuzz-seed handovers for the memory-map target: every version at 4 KiB in both byte orders (and
#: both kho-v1 bitmaps), every version at 16 KiB, kho-v1 at 64 KiB
MEMMAP_CONFIGS = (
    [("kho-v1", 4096, bo, bm) for bo in ("little", "big") for bm in ("512", "page")]
    + [(v, 4096, bo, None) for v in ("kho-v2", "kho-v3", "kho-v4") for bo in ("little", "big")]
    + [
        ("kho-v1", 16384, "little", "512"),
        ("kho-v2", 16384, "big", None),
        ("kho-v3", 16384, "little", None),
        ("kho-v4", 16384, "big", None),
        ("kho-v1", 65536, "little", "page"),
    ]
)


def _fuzz_seed(version: str, ps: int, bo: str, bm: str | None) -> tuple[str, object]:
    from fuzz.guided.container import Handover
    from fuzz.seeds import build_seed

    s = build_seed(version, ps, bo, bm)
    c = Handover(
        version=None,
        page_size=ps,
        byteorder=bo,
        v1_bitmap=bm,
        root_fdt_phys=s.params["root_fdt_phys"],
        root=s.root,
        scratch=[tuple(x) for x in s.params["scratch"]],
        segments=[(p + o, d[o : o + ps]) for p, d in s.segments for o in range(0, len(d), ps)],
    )
    return s.name, c


def _fixture_dirs() -> list[Path]:
    return sorted(p.parent for p in FIX.glob("*/root.dtb")) + [FIX / "captures" / n for n in CAPTURES]


def fdt_seeds() -> Iterator[tuple[str, bytes]]:
    import kho_formats

    for d in _fixture_dirs() + [FIX / "captures" / "linux-7.3-x86_64-luo-v5-small"]:
        h = kho_formats.open(d)
        yield f"{d.name}-root.dtb", bytes(h.root_fdt)
        for sb in h.subblobs:
            if sb.data is not None and sb.data[:4] == b"\xd0\x0d\xfe\xed":
                yield f"{d.name}-{sb.name}.dtb", bytes(sb.data)


def memmap_seeds() -> Iterator[tuple[str, bytes]]:
    import kho_formats
    from fuzz.guided.container import from_fixture

    for cfg in MEMMAP_CONFIGS:
        name, c = _fuzz_seed(*cfg)
        yield name, c.dumps()  # type: ignore[attr-defined]
    for n in CAPTURES:
        yield n, from_fixture(kho_formats.open(FIX / "captures" / n)).dumps()
    # a received handover (the map released)
    name, c = _fuzz_seed("kho-v4", 4096, "little", None)
    c.received = True  # type: ignore[attr-defined]
    yield f"{name}-received", c.dumps()  # type: ignore[attr-defined]


def _images() -> Iterator[tuple[str, object, str]]:
    """(name, image, byte order) of the dump targets' seeds."""
    from fuzz.seeds import build_seed
    from kho_formats.memory.image import PhysImage

    for v, ps, bo, bm in (("kho-v1", 4096, "little", "512"), ("kho-v4", 4096, "big", None)):
        s = build_seed(v, ps, bo, bm)
        yield s.name, PhysImage(s.segments), bo
    for n in CAPTURES:
        yield n, PhysImage.from_elf(FIX / "captures" / n / "image.elf"), "little"


def elf_seeds() -> Iterator[tuple[str, bytes]]:
    from fuzz.dumps import build_kcore

    for name, img, bo in _images():
        yield f"{name}.elf", img.to_elf(byteorder=bo, machine="aarch64" if bo == "big" else "x86_64")  # type: ignore[attr-defined]
        if bo == "little" and name.startswith("kho-v1"):
            yield f"{name}.kcore", build_kcore(img)  # type: ignore[arg-type]


def kdump_seeds() -> Iterator[tuple[str, bytes]]:
    from fuzz.dumps import flatten
    from kho_formats.memory.kdump import write_kdump

    for name, img, bo in _images():
        comps = ("none", "zlib", "snappy", "zstd") if name.startswith("kho-v1") else ("zlib",)
        for comp in comps:
            buf = io.BytesIO()
            write_kdump(img, buf, compression=comp, byteorder=bo)  # type: ignore[arg-type]
            yield f"{name}-{comp}.kdump", buf.getvalue()
            if comp == "zlib" and name.startswith("kho-v1"):
                yield f"{name}-{comp}-flat.kdump", flatten(buf.getvalue())


SPEC_PREFIX = {"toml": b"\x00", "yaml": b"\x01", "json": b"\x02"}


def spec_seeds() -> Iterator[tuple[str, bytes]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the package's own dependency on 3.10
        import tomli as tomllib

    specs = sorted((FIX / "specs").rglob("*.toml")) + sorted((FIX / "specs").rglob("*.yaml"))
    for p in specs:
        if p.stat().st_size > 16384:  # the selftests' stress specs: slow to build, nothing new to mutate
            continue
        rel = "-".join(p.relative_to(FIX / "specs").with_suffix("").parts)
        fmt = p.suffix.lstrip(".")
        yield f"{rel}.{fmt}", SPEC_PREFIX[fmt] + p.read_bytes()
        if fmt == "toml":
            doc = tomllib.loads(p.read_text())
            yield f"{rel}.json", SPEC_PREFIX["json"] + json.dumps(doc, sort_keys=True).encode()
    # small LUO specs: a file that names blob.bin, folio lists, a sparse memfd, FLBs, serialized = false
    small = [
        'version = "kho-v4"\n[[blob]]\nname = "LUO"\ntype = "LUO"\n[[blob.sessions]]\nname = "a"\n'
        'files = [{token = 1, file = "blob.bin", fill = "zero", size = 9000}]\n',
        'version = "kho-v4"\npage_size = 16384\nbyte_order = "big"\n[[blob]]\nname = "LUO"\ntype = "LUO"\n'
        'flbs = [{name = "f", data = 1, count = 2}]\n[[blob.sessions]]\nname = "s"\n'
        'files = [{token = 2, size = "64K", folios = [{index = 1, order = 1, flags = 1}]}]\n',
        'version = "kho-v4"\n[[blob]]\nname = "LUO"\ntype = "LUO"\nserialized = false\nliveupdate_num = 9\n'
        '[[blob.sessions]]\nname = "x"\nfiles = [{token = 5, size = 4096, hex = "00ff", fill = "seed"}]\n',
    ]
    for i, text in enumerate(small):
        yield f"luo-small-{i}.toml", SPEC_PREFIX["toml"] + text.encode()


def luo_seeds() -> Iterator[tuple[str, bytes]]:
    """FuzzedDataProvider inputs: each base untouched, then pseudo-random edit lists."""
    for b in range(3):
        yield f"base-{b}", bytes([b])
    rng = random.Random("kho-formats luo seeds")
    for i in range(24):
        yield f"edits-{i:02d}", bytes(rng.getrandbits(8) for _ in range(rng.choice([16, 64, 200, 600])))


GENERATORS = {
    "fdt": fdt_seeds,
    "memmap": memmap_seeds,
    "kdump": kdump_seeds,
    "elf": elf_seeds,
    "spec": spec_seeds,
    "luo": luo_seeds,
}
assert set(GENERATORS) == set(TARGETS)


def generate(out: Path, targets: tuple[str, ...] = TARGETS) -> dict[str, list[Path]]:
    """Write every target's seeds under ``out/<target>/seed-<name>``; returns the files written."""
    written: dict[str, list[Path]] = {}
    for t in targets:
        d = out / t
        d.mkdir(parents=True, exist_ok=True)
        written[t] = []
        for name, data in GENERATORS[t]():
            p = d / f"seed-{name}"
            p.write_bytes(data)
            written[t].append(p)
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=CORPUS)
    ap.add_argument("targets", nargs="*", default=list(TARGETS))
    a = ap.parse_args()
    for t, files in generate(a.out, tuple(a.targets)).items():
        print(f"{t}: {len(files)} seeds, {sum(p.stat().st_size for p in files)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
