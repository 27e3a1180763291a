"""``kho``: inspect KHO captures, build selftest fixtures, migrate v1 dumps.

The command only parses arguments and prints; every format decision lives in
the library (:mod:`kho_formats.ops.capture`, :mod:`~kho_formats.model.spec`,
:mod:`~kho_formats.model.fixture`, :mod:`~kho_formats.ops.migrate`,
:mod:`~kho_formats.ops.report`, :mod:`~kho_formats.ops.check`).

Exit status: 0 ok, 1 a problem with the input (every ``KhoFormatError``,
unreadable files, check errors, differences), 2 usage errors.  Errors go to
stderr as one line: ``kho: error: <message>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from . import abi
from ._version import __version__

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad combination of arguments (exit 2)."""


class _Parser(argparse.ArgumentParser):
    # no prefix matching: "inspect --version" must not be read as --version-override
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2
        sys.stderr.write(f"kho: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def _int(text: str) -> int:
    from .errors import SpecError
    from .model.spec import parse_int

    try:
        return parse_int(text, "value")
    except SpecError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer (123, 0x7b, 16M)") from None


def _page_size(text: str) -> int:
    v = _int(text)
    if v not in abi.PAGE_SIZES:
        raise argparse.ArgumentTypeError(f"{text!r}: page size must be 4096, 16384 or 65536")
    return v


def _region(text: str):
    if ":" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected BASE:SIZE (e.g. 0x40000000:16M)")
    a, s = text.split(":", 1)
    return _int(a), _int(s)


def _common() -> argparse.ArgumentParser:
    """Options accepted before and after the subcommand (defaults suppressed
    here so a subcommand never overrides what was given before it)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"kho {__version__}")
    S = argparse.SUPPRESS
    g = p.add_argument_group("reading options")
    g.add_argument(
        "--page-size",
        type=_page_size,
        default=S,
        metavar="BYTES",
        help="the producer's PAGE_SIZE: 4096, 16384 or 65536 (default: recorded in the fixture/capture, else 4096)",
    )
    g.add_argument(
        "--byte-order",
        choices=abi.BYTE_ORDERS,
        default=S,
        help="the producer's byte order (default: recorded, else little)",
    )
    g.add_argument(
        "--abi",
        "--version-override",
        dest="abi",
        choices=abi.version_names(),
        default=S,
        metavar="VERSION",
        help=f"read as this ABI version whatever compatible says ({', '.join(abi.version_names())})",
    )
    g.add_argument(
        "--v1-bitmap",
        choices=("auto", "page", "512"),
        default=S,
        help="kho-v1 bitmap size: auto-detect (default), page-sized or 512-byte",
    )
    g.add_argument("--max-pages", type=_int, default=S, metavar="N", help="read at most N metadata pages (default 1Mi)")
    g.add_argument("--max-entries", type=_int, default=S, metavar="N", help="expand at most N entries (default 64Mi)")
    g.add_argument(
        "--max-runs",
        type=_int,
        default=S,
        metavar="N",
        help="materialize at most N runs of preserved pages from the map (default 32Mi, 16 bytes of memory each)",
    )
    g.add_argument(
        "--received",
        choices=("auto", "yes", "no"),
        default=S,
        help="whether INPUT is the handover as its receiving kernel holds it after boot, whose memory map that "
        "kernel no longer keeps (not read when yes). auto (default): yes for a debugfs kho/in directory, "
        "a live capture --side in, or a capture whose meta.json says so",
    )
    g.add_argument("--json", action="store_true", default=S, help="machine-readable JSON on stdout")
    return p


def _opt(args: argparse.Namespace, name: str, default=None):
    return getattr(args, name, default)


def _limits(args):
    from .limits import DEFAULT_LIMITS, Limits

    return Limits(
        max_pages=_opt(args, "max_pages") or DEFAULT_LIMITS.max_pages,
        max_entries=_opt(args, "max_entries") or DEFAULT_LIMITS.max_entries,
        max_runs=_opt(args, "max_runs") or DEFAULT_LIMITS.max_runs,
    )


def _emit(args, data: dict, text) -> None:
    """Write ``data`` as JSON (``--json``) or ``text`` (a string, or a
    callable that renders it: not called for JSON output)."""
    if _opt(args, "json"):
        from .ops.report import dumps_json

        sys.stdout.write(dumps_json(data) + "\n")
    else:
        sys.stdout.write(text() if callable(text) else text)


def _load(args, path: str, mem: Sequence[str] = (), root_phys: int | None = None):
    from .ops.capture import load_capture

    cap = load_capture(path, mem or (), root_phys=root_phys, boot_info=_opt(args, "boot_info"))
    with _naming_the_root_fdt(cap, path):
        st = _parse(args, cap)
    return cap, st


def _parse(args, cap):
    """A loaded capture parsed with the reading options of the command line."""
    from .ops.capture import parse_capture

    received = _opt(args, "received", "auto")
    if received != "auto":
        cap.received = received == "yes"
    return parse_capture(
        cap,
        version=_opt(args, "abi"),
        page_size=_opt(args, "page_size"),
        byteorder=_opt(args, "byte_order"),
        v1_bitmap=_opt(args, "v1_bitmap"),
        limits=_limits(args),
    )


@contextmanager
def _naming_the_root_fdt(cap, path: str) -> Iterator[None]:
    """A root FDT with a bad magic: say which file it came from, and what it
    looks like instead (an ELF core wants ``--mem``)."""
    from .errors import FdtError

    try:
        yield
    except FdtError as exc:
        if not exc.message.startswith("bad magic") or exc.path != "root FDT":
            raise
        src = cap.sources.get("root_fdt", path)
        head = bytes(cap.root_fdt[:4])
        if head == b"\x7fELF":
            hint = f"{src} is an ELF file (a memory image?): give the root FDT as INPUT and the image with --mem"
        else:
            hint = f"{src} is not a flattened device tree (magic 0xd00dfeed)"
        raise FdtError(f"{exc.message} ({hint})", path=f"root FDT {src}") from None


# -- subcommands ------------------------------------------------------------------------------


def cmd_inspect(args) -> int:
    from .limits import Budget
    from .model.clients import decode_clients
    from .ops.report import inspect_report, render_inspect

    cap, st = _load(args, args.input, args.mem, args.root_phys)
    clients = decode_clients(st, cap.image, budget=Budget(_limits(args)))
    if args.all_ranges:
        listed = None
    elif args.max_ranges is not None:
        listed = args.max_ranges
    else:
        listed = 100_000 if _opt(args, "json") else 32
    rep = inspect_report(st, cap.image, clients, root_fdt=cap.root_fdt, sources=cap.sources, max_ranges=listed)
    shown = len(rep["preserved"]["ranges"]) if rep["preserved"] else 0
    _emit(args, rep, lambda: render_inspect(rep, max_ranges=shown))
    bad = [r for r in clients.values() if r.error is not None]
    if bad and st.map_released:
        # the receiving side after boot: clients have restored their data and freed what they no longer
        # need (test_kho puts its folios and vfree()s folios_info; kho_restore_vmalloc frees the chunk pages)
        for r in bad:
            _error(
                f"sub-blob {r.name!r} no longer decodes ({r.error}): its client on the receiving "
                "side has restored it and may have freed what it pointed at",
                label="note",
            )
    elif bad:  # the report is complete, but a client blob did not decode: a problem
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        _error(f"sub-blob {bad[0].name!r} did not decode: {bad[0].error}{more}")
        return EXIT_PROBLEM
    return EXIT_OK


def cmd_dts(args) -> int:
    from .model.fdt import FDT_MAGIC, to_dts
    from .ops.capture import load_capture

    bo = _opt(args, "byte_order")
    cap = load_capture(args.input, args.mem or (), root_phys=args.root_phys, boot_info=_opt(args, "boot_info"))
    with _naming_the_root_fdt(cap, args.input):
        root_dts = to_dts(cap.root_fdt, byteorder=bo or cap.byte_order or "little", where="root FDT")
    docs = [("root", cap.sources.get("root_fdt", args.input), None, root_dts)]
    skipped = []
    if args.sub:
        _, st = _load(args, args.input, args.mem, args.root_phys)
        for sb in st.subblobs:
            if sb.data is None:
                skipped.append({"name": sb.name, "reason": "not in the memory image or debugfs"})
            elif len(sb.data) < 4 or int.from_bytes(sb.data[:4], "big") != FDT_MAGIC:
                skipped.append({"name": sb.name, "reason": "not an FDT (raw blob)"})
            else:
                docs.append(
                    (
                        sb.name,
                        f"sub-blob {sb.name}",
                        sb.phys,
                        to_dts(sb.data, byteorder=st.byteorder, where=f"sub-FDT {sb.name}"),
                    )
                )
    written = []
    if args.output:
        from .outdir import OutputDir

        with OutputDir(args.output, force=args.force, inputs=[args.input, *(args.mem or ())]) as out:
            for name, _, _, text in docs:
                fname = f"{name if name == 'root' else 'sub-' + name}.dts"
                out.write(fname, text)
                written.append(str(Path(args.output) / fname))
    if _opt(args, "json"):
        _emit(
            args,
            {
                "schema": "kho-formats/dts/1",
                "documents": [{"name": n, "source": s, "phys": p, "dts": t} for n, s, p, t in docs],
                "skipped": skipped,
                "written": written,
            },
            "",
        )
    elif args.output:
        from .ops.report import safe_text

        sys.stdout.write("".join(f"wrote {safe_text(w)}\n" for w in written))
    else:
        parts = []
        for i, (name, _src, phys, text) in enumerate(docs):
            if i:
                parts.append(f"\n// ===== sub-FDT {name} at {phys:#x} (a separate DTS document) =====\n")
            parts.append(text)
        for s in skipped:
            parts.append(f"// sub-blob {s['name']} skipped: {s['reason']}\n")
        from .ops.report import safe_text

        # the terminal gets escaped text; -o files and --json keep the bytes
        sys.stdout.write("".join(safe_text(ln) + "\n" for ln in "".join(parts).splitlines()))
    return EXIT_OK


def cmd_build(args) -> int:
    from .model.fixture import write_fixture
    from .model.spec import build_spec, load_spec
    from .model.specfields import check_name

    sp = load_spec(args.spec, allow_outside_files=args.allow_outside_files)
    if _opt(args, "abi"):
        sp.version = args.abi
    if _opt(args, "page_size"):
        sp.page_size = args.page_size
    if _opt(args, "byte_order"):
        sp.byte_order = args.byte_order
    if args.name is not None:
        sp.name = check_name(args.name, "--name")
    fx = build_spec(sp)
    files = write_fixture(fx, args.output, force=args.force, inputs=[args.spec])
    st = fx.state
    data = {"schema": "kho-formats/build/1", "name": fx.name, "outdir": args.output, "files": files, **fx.handover()}
    text = (
        f"built {fx.name}: {st.version}, {st.page_size // 1024} KiB pages, {st.byteorder}-endian, {fx.arch}\n"
        f"  root FDT {fx.fdt_phys:#x} ({len(fx.root_fdt)} bytes), memory map {st.memmap_phys:#x}\n"
        f"  {st.preserved.num_pages} preserved pages, {len(st.subblobs)} sub-blobs "
        f"({', '.join(sb.name for sb in st.subblobs) or 'none'}), {len(st.scratch)} scratch areas\n"
        f"  image: {len(fx.image.covered())} segments, {fx.image.total_bytes} bytes\n"
        f"  wrote {len(files)} files into {args.output}\n"
    )
    _emit(args, data, text)
    return EXIT_OK


def cmd_convert(args) -> int:
    from .model.fixture import write_fixture
    from .model.specfields import check_name, safe_name
    from .ops.migrate import convert_capture, render_convert
    from .outdir import check_output_target

    inputs = [args.input, *(args.mem or ())]
    check_output_target(args.output, force=args.force, inputs=inputs)  # refuse before the work
    name = check_name(args.name, "--name") if args.name is not None else safe_name(Path(args.output).name, "converted")
    cap, st = _load(args, args.input, args.mem, args.root_phys)
    fx, summary = convert_capture(
        cap, st, args.to, alloc=args.alloc or (), v1_bitmap=args.v1_bitmap_out, arch=args.arch, name=name
    )
    files = write_fixture(fx, args.output, force=args.force, inputs=inputs)
    summary["outdir"] = args.output
    summary["files"] = files
    _emit(args, summary, render_convert(summary, args.output))
    return EXIT_OK


def cmd_capture(args) -> int:
    from .errors import KhoFormatError
    from .limits import Budget
    from .model.clients import decode_clients
    from .ops.capture import load_capture
    from .ops.extract import handover_image, write_capture

    live = not args.from_dump
    extra: dict = {}
    if live:
        from .ops.live import default_debugfs, live_capture

        if args.debugfs:
            raise UsageError(
                f"{args.debugfs}: a DEBUGFS argument goes with --from-dump; live capture takes --debugfs DIR"
            )
        boot_info = None
        if args.boot_info is not None:
            from .safeio import read_regular

            boot_info = read_regular(args.boot_info, "boot info", max_size=1 << 20)
        side = args.side or "out"
        dbg = args.live_debugfs or default_debugfs(side)
        cap = live_capture(
            kcore=args.kcore or "/proc/kcore", debugfs=dbg, side=side, root_phys=args.root_phys, boot_info=boot_info
        )
        source = f"live: {args.kcore or '/proc/kcore'} + {dbg}"
        extra["live"] = {
            "side": side,
            "kcore": args.kcore or "/proc/kcore",
            "debugfs": str(dbg),
            "boot_info": cap.sources.get("boot_info"),
        }
    else:
        for opt, given in (("--kcore", args.kcore), ("--debugfs", args.live_debugfs), ("--side", args.side)):
            if given is not None:
                raise UsageError(f"{opt} is for live capture; with --from-dump give DEBUGFS as an argument")
        if args.debugfs:
            cap = load_capture(args.debugfs, [args.from_dump], root_phys=args.root_phys, boot_info=args.boot_info)
        else:
            cap = load_capture(args.from_dump, root_phys=args.root_phys, boot_info=args.boot_info)
        source = str(args.from_dump)
    st = _parse(args, cap)
    if cap.image is None:  # a dump or kcore always gives one; a loader that did not is a bug to report clearly
        raise KhoFormatError(f"{source}: no memory image was loaded", expected="a memory dump or /proc/kcore")
    clients = decode_clients(st, cap.image, budget=Budget(_limits(args)))
    keep = handover_image(cap.image, st, clients, referenced_only=args.referenced_only)
    inputs = [args.kcore or "/proc/kcore", dbg] if live else [args.from_dump, *([args.debugfs] if args.debugfs else [])]
    if args.boot_info is not None:
        inputs.append(args.boot_info)
    files = write_capture(
        args.output,
        cap,
        st,
        keep,
        referenced_only=args.referenced_only,
        source=source,
        extra=extra,
        inputs=inputs,
    )
    data = {
        "schema": "kho-formats/capture/1",
        "outdir": args.output,
        "files": files,
        "root_fdt_phys": st.root_fdt_phys,
        "image_bytes": keep.total_bytes,
        "image_segments": len(keep.covered()),
        "source_bytes": cap.image.total_bytes,
        "referenced_only": args.referenced_only,
        "live": extra.get("live"),
        "notes": list(st.notes),
    }
    text = (
        f"captured the {st.version} handover"
        + (f" at {st.root_fdt_phys:#x}" if st.root_fdt_phys is not None else "")
        + f" into {args.output}: "
        f"{keep.total_bytes} bytes in {len(keep.covered())} ranges "
        f"(of {cap.image.total_bytes} in {'RAM' if live else 'the dump'})\n"
        + "".join(f"  note: {n}\n" for n in st.notes)
    )
    _emit(args, data, text)
    return EXIT_OK


def cmd_check(args) -> int:
    from .limits import Budget
    from .model.clients import decode_clients
    from .ops.check import check
    from .ops.report import check_report, render_check

    cap, st = _load(args, args.input, args.mem, args.root_phys)
    clients = decode_clients(st, cap.image, budget=Budget(_limits(args)))
    findings = check(st, cap.image, limits=_limits(args), clients=clients, root_phys_required=cap.kind == "fixture")
    rep = check_report(findings, source=args.input, strict=args.strict)
    _emit(args, rep, lambda: render_check(rep))
    return EXIT_OK if rep["ok"] else EXIT_PROBLEM


def cmd_luo_extract(args) -> int:
    from .errors import KhoFormatError
    from .limits import Budget
    from .model.clients import decode_clients
    from .model.clients.luo import NAME, LuoState
    from .ops.luo_extract import extract

    cap, st = _load(args, args.input, args.mem, args.root_phys)
    rep = decode_clients(st, cap.image, budget=Budget(_limits(args))).get(NAME)
    if rep is None:
        raise KhoFormatError(f"{args.input}: no {NAME} sub-node", expected="a handover with Live Update state")
    if rep.error is not None:
        raise rep.error
    if cap.image is None or not isinstance(rep.decoded, LuoState):
        raise KhoFormatError(f"{args.input}: no memory image", expected="--mem IMAGE or a capture with image.elf")
    index = extract(
        rep.decoded,
        cap.image,
        args.output,
        page_size=st.page_size,
        force=args.force,
        source=args.input,
        inputs=[args.input, *(args.mem or ())],
    )
    lines = [f"wrote {index['files_written']} files and index.json into {args.output}\n"]
    for s in index["sessions"]:
        for f in s["files"]:
            what = f["file"] or f"not extracted ({f['compatible']})"
            lines.append(f"  {s['name']!r} {f['token']:#018x}: {what}\n")
    lines += [f"note: {n}\n" for n in index["notes"]]
    _emit(args, index, "".join(lines))
    return EXIT_OK


def cmd_diff(args) -> int:
    from .ops.report import diff_report, render_diff

    cap_a, a = _load(args, args.a, args.mem_a)
    cap_b, b = _load(args, args.b, args.mem_b)
    rep = diff_report(a, b, names=(args.a, args.b), images=(cap_a.image, cap_b.image))
    _emit(args, rep, lambda: render_diff(rep))
    return EXIT_OK if rep["identical"] else EXIT_PROBLEM


def cmd_boot(args) -> int:
    from . import boot

    fixture = Path(args.fixture)
    if not (fixture / "handover.json").is_file():
        _error(f"{fixture}: not a fixture directory (no handover.json; write one with kho build)")
        return EXIT_PROBLEM
    kw = {"via": args.via} if args.via != "loader" else {}
    res = boot.run_boot(str(fixture), args.kernel, args.timeout, **kw)  # BootError is a KhoFormatError: see main()
    data = {
        "schema": "kho-formats/boot/1",
        "fixture": str(fixture),
        "kernel": res.kernel,
        "verdict": res.verdict,
        "reason": res.reason,
        "kho_lines": list(res.kho_lines),
    }
    from .ops.report import safe_text

    text = "".join(f"  {safe_text(ln)}\n" for ln in res.kho_lines)
    text += f"{res.verdict}{': ' + safe_text(res.reason) if res.reason else ''}\n"
    _emit(args, data, text)
    return EXIT_OK if res.verdict == "accepted" else EXIT_PROBLEM


# -- parser ------------------------------------------------------------------------------------------

EPILOG = (
    "exit status: 0 ok, 1 problem (bad input, check errors, differences), 2 usage error. "
    "Errors are printed on stderr as one line 'kho: error: <message>'."
)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    p = _Parser(
        prog="kho",
        description="Inspect, build, check and convert Linux Kexec HandOver (KHO) handovers.",
        epilog=EPILOG,
        parents=[common],
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    where = (
        "INPUT is a root FDT file, a debugfs capture directory (containing kho/out, debugfs/kho/out or "
        "out/: fdt, sub_fdts/<name>, scratch_phys, scratch_len), a fixture directory written by "
        "kho build (root.dtb + image.elf + handover.json) or a memory dump alone (ELF core or kdump file: "
        "the root FDT is found in it). A debugfs fdt that is only a prefix is completed from the image."
    )

    def mem_opts(sp, root=True):
        sp.add_argument(
            "--mem",
            action="append",
            metavar="IMAGE",
            default=[],
            help="physical memory image: ELF core, bundle directory (manifest.json) or RAW@BASE; "
            "repeat to merge several (replaces a directory's own image.elf)",
        )
        if root:
            sp.add_argument(
                "--root-phys",
                type=_int,
                metavar="ADDR",
                help="physical address of the root FDT; read from the memory image when it holds it "
                "(default: handover.json / meta.json, else found in the image)",
            )
            sp.add_argument(
                "--boot-info",
                metavar="FILE",
                help="where the root FDT is, as the next kernel was told: an arm64 boot DTB (/chosen "
                "linux,kho-fdt), an x86 setup_data (SETUP_KEXEC_KHO) or kho_data blob, or a boot_params copy",
            )

    s = sub.add_parser(
        "inspect",
        parents=[common],
        help="show version, sub-blobs, vmalloc areas, preserved memory",
        description="Show a handover: ABI version, page size, byte order, sub-blobs (decoded for "
        "known clients), vmalloc areas, preserved memory as coalesced ranges with "
        "per-order counts. " + where,
        epilog=EPILOG,
    )
    s.add_argument("input", metavar="INPUT")
    mem_opts(s)
    s.add_argument(
        "--max-ranges",
        type=_int,
        default=None,
        metavar="N",
        help="ranges listed (default 32 in the table, 100000 with --json; the totals always count all)",
    )
    s.add_argument("--all-ranges", action="store_true", help="list every preserved range")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser(
        "dts",
        parents=[common],
        help="root FDT (and sub-FDTs) as DTS",
        description="Print the root FDT as DTS that dtc accepts, native-order u64 values decoded "
        "in comments. With --sub, also every sub-blob that is an FDT (each a separate "
        "DTS document). " + where,
        epilog=EPILOG,
    )
    s.add_argument("input", metavar="INPUT")
    mem_opts(s)
    s.add_argument("--sub", action="store_true", help="also the sub-FDTs found in the capture/image")
    s.add_argument("-o", "--output", metavar="DIR", help="write root.dts and sub-<name>.dts into DIR")
    s.add_argument(
        "--force",
        action="store_true",
        help="write into an existing non-empty directory (only the files written are replaced, nothing is deleted)",
    )
    s.set_defaults(func=cmd_dts)

    s = sub.add_parser(
        "build",
        parents=[common],
        help="build a fixture from a YAML/TOML spec",
        description="Build a handover fixture from a spec (see fixtures/specs/ and the README) and "
        "write root.dtb, image.elf, manifest.json + seg-*.bin, handover.json, "
        "qemu-args.txt, kho_fixture.h, setup_data.bin, chosen.json and chosen.dtsi "
        "into OUTDIR. --abi, --page-size and --byte-order override the spec.",
        epilog=EPILOG,
    )
    s.add_argument("spec", metavar="SPEC", help="spec file (.toml, .yaml, .yml or .json)")
    s.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    s.add_argument("--name", help="fixture name (default: the spec's name, else its file name)")
    s.add_argument(
        "--allow-outside-files",
        action="store_true",
        help="let raw blob files named by the spec lie outside the spec's directory (absolute, '..', symlinks)",
    )
    s.add_argument(
        "--force",
        action="store_true",
        help="write into an existing non-empty directory (only the files written are replaced, nothing is deleted)",
    )
    s.set_defaults(func=cmd_build)

    s = sub.add_parser(
        "convert",
        parents=[common],
        help="migrate a handover to another ABI version",
        description="Rewrite a handover for another ABI version with the identical preserved set "
        "and sub-blobs, into a fixture directory like kho build writes. New memory-map "
        "pages reuse the old map's pages, the free regions a fixture recorded and "
        "--alloc regions. " + where,
        epilog=EPILOG,
    )
    s.add_argument(
        "--to",
        required=True,
        choices=abi.version_names(),
        metavar="VERSION",
        help=f"target version: {', '.join(abi.version_names())}",
    )
    s.add_argument("input", metavar="INPUT")
    s.add_argument("output", metavar="OUTDIR")
    mem_opts(s)
    s.add_argument(
        "--alloc",
        action="append",
        type=_region,
        metavar="BASE:SIZE",
        help="more free memory for new map pages (repeatable)",
    )
    s.add_argument(
        "--v1-bitmap-out",
        choices=("page", "512"),
        help="bitmap size when converting to kho-v1 (default: the source's, else page)",
    )
    s.add_argument(
        "--arch",
        choices=("arm64", "x86_64"),
        help="ELF machine of the output (default: recorded, else the input ELF's e_machine, else arm64)",
    )
    s.add_argument("--name", help="fixture name (default: OUTDIR's name)")
    s.add_argument(
        "--force",
        action="store_true",
        help="write into an existing non-empty directory (only the files written are replaced, nothing is deleted)",
    )
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser(
        "capture",
        parents=[common],
        help="write the handover of the running system or of a memory dump as a compact capture directory",
        description="Write only the handover into a new directory: root.dtb, image.elf (root FDT page, "
        "memory-map pages, sub-blobs, the memory clients reference and the contents of every preserved "
        "page) and meta.json. Without --from-dump, of the running system (as root): debugfs kho/out "
        "(--side in: kho/in, the handover this kernel received) and physical memory read through "
        "/proc/kcore; the whole root FDT is found in memory (debugfs shows a prefix of it). With "
        "--from-dump DUMP (ELF core, kdump file, bundle or RAW@BASE): DEBUGFS, when given, is the "
        "debugfs capture (its fdt may be the prefix debugfs exposes); without it the root FDT is found "
        "in the dump.",
        epilog=EPILOG,
    )
    s.add_argument("--from-dump", metavar="DUMP", help="the memory dump to cut the handover out of")
    s.add_argument("debugfs", nargs="?", metavar="DEBUGFS")
    s.add_argument("-o", "--output", required=True, metavar="DIR", help="new (or empty) output directory")
    s.add_argument("--referenced-only", action="store_true", help="leave the preserved pages' contents out")
    s.add_argument("--root-phys", type=_int, metavar="ADDR", help="physical address of the root FDT in the dump")
    s.add_argument("--boot-info", metavar="FILE", help="boot DTB / setup_data / boot_params naming the root FDT")
    g = s.add_argument_group("live capture (without --from-dump)")
    g.add_argument("--kcore", metavar="PATH", help="physical memory as an ELF core (default /proc/kcore)")
    g.add_argument(
        "--debugfs",
        dest="live_debugfs",
        metavar="DIR",
        help="the debugfs kho/out (or kho/in) directory (default /sys/kernel/debug/kho/SIDE)",
    )
    g.add_argument(
        "--side",
        choices=("out", "in"),
        help="out: the handover this kernel prepares (default); in: the one it received "
        "(root FDT address from /sys/kernel/boot_params/setup_data type 10 or /sys/firmware/fdt)",
    )
    s.set_defaults(func=cmd_capture)

    s = sub.add_parser(
        "check",
        parents=[common],
        help="validate a handover against its version's rules",
        description="Run every check and print findings with their addresses; exit 1 when "
        "there is an error (or, with --strict, a warning). " + where,
        epilog=EPILOG,
    )
    s.add_argument("input", metavar="INPUT")
    mem_opts(s)
    s.add_argument("--strict", action="store_true", help="warnings fail too")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser(
        "luo",
        parents=[common],
        help="Live Update (LUO) state: extract memfd contents",
        description="Commands on the Live Update Orchestrator state of a handover.",
        epilog=EPILOG,
    )
    luo_sub = s.add_subparsers(dest="luo_command", metavar="LUO_COMMAND", parser_class=_Parser)
    luo_sub.required = True
    s = luo_sub.add_parser(
        "extract",
        parents=[common],
        help="write every preserved memfd's contents to DIR",
        description="Write the contents of every preserved memfd to DIR/<session>/<token as 16 hex digits>.bin "
        "(exactly size bytes; pages without a folio are zeros) and DIR/index.json. Session names are "
        "mapped to safe file names (percent-encoded, see the README); nothing is written outside DIR "
        "or through a symlink. " + where,
        epilog=EPILOG,
    )
    s.add_argument("input", metavar="INPUT")
    mem_opts(s)
    s.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (new or empty)")
    s.add_argument("--force", action="store_true", help="write into a non-empty DIR (replaces files there)")
    s.set_defaults(func=cmd_luo_extract)

    s = sub.add_parser(
        "diff",
        parents=[common],
        help="compare preserved sets and sub-blobs of two handovers",
        description="Compare the preserved sets (page by page, per order) and sub-blobs (name, "
        "address, size, bytes) of A and B; exit 0 when identical, 1 when different. "
        "Version, page size and byte order may differ. " + where,
        epilog=EPILOG,
    )
    s.add_argument("a", metavar="A")
    s.add_argument("b", metavar="B")
    s.add_argument("--mem-a", action="append", default=[], metavar="IMAGE", help="memory image for A")
    s.add_argument("--mem-b", action="append", default=[], metavar="IMAGE", help="memory image for B")
    s.set_defaults(func=cmd_diff)

    s = sub.add_parser(
        "boot",
        parents=[common],
        help="boot a kernel under QEMU with a fixture",
        description="Boot KERNEL under QEMU with the handover of FIXTURE (a kho build directory) "
        "and report whether the kernel accepted it (exit 0) or rejected it (exit 1). "
        "arm64 fixtures boot on QEMU virt (qemu-system-aarch64; the handover in the boot DTB's /chosen), "
        "x86_64 fixtures on QEMU pc (qemu-system-x86_64; the handover in a SETUP_KEXEC_KHO setup_data "
        "entry named by a patched copy of the bzImage's setup header).",
        epilog=EPILOG,
    )
    s.add_argument("fixture", metavar="FIXTURE")
    s.add_argument(
        "--kernel",
        metavar="IMAGE",
        help="kernel to boot: an arm64 Image or an x86 bzImage (default: the build of scripts/build-kernel.sh "
        "for the fixture's page size and LUO use, or of scripts/live/build-kernel.sh for x86_64)",
    )
    s.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="default 120")
    s.add_argument(
        "--via",
        choices=("loader", "kexec"),
        default="loader",
        help="how the handover reaches the kernel: 'loader' (default: QEMU loads it, the boot DTB or a patched "
        "bzImage setup header names it) or 'kexec' (x86_64: a first-stage kernel kexec_load()s the kernel "
        "with the fixture and a boot_params whose setup_data names it)",
    )
    s.set_defaults(func=cmd_boot)
    return p


def _error(message: str, label: str = "error") -> None:
    from .ops.report import safe_text

    one = safe_text(" ".join(str(message).split()))
    sys.stderr.write(f"kho: {label}: {one}\n")


def main(argv: list[str] | None = None) -> int:
    from .errors import KhoFormatError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or usage errors (2)
        return int(exc.code or 0)
    try:
        from .safeio import tracking_inputs

        with tracking_inputs():  # every input opened: the output guard refuses writing over, into or around one
            return args.func(args)
    except KhoFormatError as exc:
        _error(str(exc))
        if _opt(args, "json"):
            sys.stdout.write(json.dumps({"schema": "kho-formats/error/1", **exc.to_json()}, indent=2) + "\n")
        return EXIT_PROBLEM
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _error(f"{exc.filename + ': ' if getattr(exc, 'filename', None) else ''}{exc.strerror or exc}")
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:  # a bug: still one line, but say so
        if os.environ.get("KHO_DEBUG"):
            raise
        _error(f"internal error ({type(exc).__name__}: {exc}); rerun with KHO_DEBUG=1 for a traceback")
        return EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
