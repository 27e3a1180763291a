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
from collections.abc import Sequence
from pathlib import Path

from . import abi
from ._version import __version__
from .ops import target

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad combination of arguments (exit 2)."""


class _Parser(argparse.ArgumentParser):
    # no prefix matching: "inspect --version" must not be read as --version-override
    #: the command line being parsed (set by main), for the hints of error()
    argv: Sequence[str] = ()
    #: the top-level parser (set by build_parser)
    root: argparse.ArgumentParser | None = None

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2
        moved = _misplaced_option(self.argv)
        if moved is not None:  # argparse's own message ("invalid choice: '3'") would mislead
            message, prog = moved
            hint = ""
        else:
            hint, prog = _usage_hint(self, message, self.argv)
        sys.stderr.write(f"kho: error: {message}{hint} (see '{prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's subcommands by name (empty without subcommands)."""
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")]


def _chain(argv: Sequence[str]) -> list[tuple[int, argparse.ArgumentParser]]:
    """The (sub)commands ``argv`` names, each with the index of the token after its name
    (``kho`` itself at 0): ``kho luo extract X`` -> kho, kho luo, kho luo extract."""
    root = _Parser.root
    if root is None:
        return []
    out: list[tuple[int, argparse.ArgumentParser]] = [(0, root)]
    for i, tok in enumerate(argv):
        sub = _commands(out[-1][1])
        if tok in sub:
            out.append((i + 1, sub[tok]))
    return out


def command_prog(argv: Sequence[str]) -> str:
    """``kho inspect``: the deepest (sub)command ``argv`` names (``kho`` when none)."""
    chain = _chain(argv)
    return chain[-1][1].prog if chain else "kho"


def _option_usage(parser: argparse.ArgumentParser, opt: str) -> str:
    """``--max-ranges N`` (``--all-ranges`` for a flag): how ``opt`` is written."""
    for a in parser._actions:
        if opt in a.option_strings:
            if a.nargs == 0:
                return opt
            return f"{opt} {a.metavar or a.dest.upper()}"
    return opt


def _misplaced_option(argv: Sequence[str]) -> tuple[str, str] | None:
    """``(message, prog)`` when ``argv`` gives an option where it is not accepted but another
    (sub)command takes it: before its command (``kho --max-ranges 3 inspect X``: it goes after
    ``inspect``), or to a command that has no such option (``kho inspect --strict X``: an option of
    ``kho check``).  None when every option is where it belongs, or is unknown everywhere."""
    chain = _chain(argv)
    if not chain:
        return None
    for i, tok in enumerate(argv):
        if tok == "--":
            break
        if not tok.startswith("--"):
            continue
        opt = tok.split("=", 1)[0]
        # the (sub)command the option was given to: the last one named before it
        here = [p for start, p in chain if start <= i][-1]
        if opt in _options(here):
            continue
        later = [p for start, p in chain if start > i and opt in _options(p)]
        if later:
            p = later[0]
            name = p.prog.split()[-1]
            return (
                f"{opt} is an option of '{p.prog}': give it after '{name}' ({p.prog} {_option_usage(p, opt)} ...)",
                p.prog,
            )
        if here is chain[0][1]:
            continue  # before any command: _usage_hint lists the commands that take it
        others = [sp for sp in _all_commands(chain[0][1]) if sp is not here and opt in _options(sp)]
        if others:
            names = ", ".join(f"'{sp.prog}'" for sp in others[:4]) + (" ..." if len(others) > 4 else "")
            own = [o for o in _options(here) if o.startswith(opt + "-")]  # diff --mem: --mem-a, --mem-b
            also = f"; '{here.prog}' takes {' and '.join(own)}" if own else ""
            return f"'{here.prog}' has no option {opt}: it is an option of {names}{also}", here.prog
    return None


def _all_commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every (sub)command under ``parser``, depth first."""
    out = []
    for sp in _commands(parser).values():
        out.append(sp)
        out += _all_commands(sp)
    return out


def _usage_hint(parser: argparse.ArgumentParser, message: str, argv: Sequence[str]) -> tuple[str, str]:
    """``(hint, prog)`` for a usage error: the help to point at is the
    (sub)command's that ``argv`` names, not ``kho``'s; an option the parser
    does not know that abbreviates known ones (abbreviations are not
    accepted) lists what it could mean, and an unknown command name its
    candidates."""
    parser = _Parser.root or parser
    if not argv:
        return "", parser.prog
    # the deepest (sub)command argv names
    cur, after = parser, 0
    for i, tok in enumerate(argv):
        sub = _commands(cur)
        if tok in sub:
            cur, after = sub[tok], i + 1
    prog = cur.prog
    bad = [t.split("=", 1)[0] for t in argv if t.startswith("--") and t.split("=", 1)[0] not in _options(cur)]
    bad = [t for t in bad if t != "--"]
    words = [t for t in argv[after:] if not t.startswith("-")]
    if "invalid choice" in message:
        sub = _commands(cur)
        for w in words:
            if w not in sub:
                cands = [c for c in sub if c.startswith(w)]
                if len(cands) == 1:
                    return f"; did you mean {cands[0]!r}?", f"{prog} {cands[0]}"
                if cands:
                    return f"; it could be {', '.join(map(repr, cands))}", prog
                break
    for t in bad:
        cands = [o for o in _options(cur) if o.startswith(t)]
        if cands:
            what = f"did you mean {cands[0]}?" if len(cands) == 1 else f"it could be {', '.join(cands)}"
            return f"; {t} is an abbreviation, which kho does not accept: {what}", prog
        if cur is parser:  # no command given: an option of a command, or a command written as an option
            stem = t.lstrip("-")
            named = [c for c in _commands(parser) if stem and c.startswith(stem)]
            if len(named) == 1:
                return f"; did you mean the command {named[0]!r}?", f"{prog} {named[0]}"
            owners = [f"{prog} {c} {o}" for c, sp in _commands(parser).items() for o in _options(sp) if o.startswith(t)]
            owners = [o for o in owners if o.split()[-1] not in _options(parser)]
            if not named and len(owners) == 1:
                return f"; {t} is an option of {' '.join(owners[0].split()[:-1])}", " ".join(owners[0].split()[:-1])
            if named or owners:
                cands = [f"the command {c!r}" for c in named] + owners[:8]
                return f"; {t} could be {', '.join(cands)}{' ...' if len(owners) > 8 else ''}", prog
    return "", prog


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
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=S,
        help="no progress bar (one is shown on stderr for long work when stderr is a terminal, never with --json)",
    )
    return p


def _opt(args: argparse.Namespace, name: str, default=None):
    return getattr(args, name, default)


def _reading(args) -> dict:
    """The common reading options as :func:`kho_formats.open` keywords."""
    received = _opt(args, "received", "auto")
    return {
        "version": _opt(args, "abi"),
        "page_size": _opt(args, "page_size"),
        "byteorder": _opt(args, "byte_order"),
        "v1_bitmap": _opt(args, "v1_bitmap"),
        "received": None if received == "auto" else received == "yes",
        "max_pages": _opt(args, "max_pages"),
        "max_entries": _opt(args, "max_entries"),
        "max_runs": _opt(args, "max_runs"),
    }


def _open(args, path: str, mem: Sequence[str] = (), root_phys: int | None = None):
    """INPUT (+ ``--mem``) through the library face, with the command line's reading options."""
    from .api import open as open_handover

    return open_handover(path, mem or (), root_phys=root_phys, boot_info=_opt(args, "boot_info"), **_reading(args))


def _emit(args, data: dict, text) -> None:
    """Write ``data`` as JSON (``--json``) or ``text`` (a string, or a
    callable that renders it: not called for JSON output)."""
    if _opt(args, "json"):
        from .ops.report import dumps_json

        sys.stdout.write(dumps_json(data) + "\n")
    else:
        sys.stdout.write(text() if callable(text) else text)


def c_header_opt(s) -> None:
    s.add_argument(
        "--c-header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write kho_fixture.h (C arrays of the image, for small selftest fixtures); default: only when the "
        "image holds at most 4 MiB, else a note on stderr (and in --json) says it was skipped",
    )


def _notes(notes: Sequence[str]) -> None:
    """Notes about what a command left out, on stderr (also in its JSON)."""
    for n in notes:
        _error(n, "note")


# -- subcommands: arguments -> the library face (kho_formats.api) -> a document -> print ----------------


def cmd_inspect(args) -> int:
    from .model.state import root_fdt_alignment
    from .ops.report import render_inspect

    h = _open(args, args.input, args.mem, args.root_phys)
    if args.all_ranges:
        listed = None
    elif args.max_ranges is not None:
        listed = args.max_ranges
    else:
        listed = 100_000 if _opt(args, "json") else 32
    if _opt(args, "json"):
        h.write_json(sys.stdout, max_ranges=listed)  # folios written from their columns, a chunk at a time
    else:
        rep = h.to_json(max_ranges=listed)
        shown = len(rep["preserved"]["ranges"]) if rep["preserved"] else 0
        sys.stdout.write(render_inspect(rep, max_ranges=shown))
    st = h.state
    rule = root_fdt_alignment(st.root_fdt_phys, st.page_size) if st.root_fdt_phys is not None else None
    if rule is not None and rule[0] == "error":  # the rule kho check applies: a handover the kernel refuses
        _error(rule[1])
        return EXIT_PROBLEM
    bad = [r for r in h.clients.values() if r.error is not None]
    if bad and h.received:
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
    from .ops.documents import dts_document, dts_file_name, render_dts
    from .text import safe_text

    to_file = args.output not in (None, "-")  # dtc's convention: -o - is stdout
    if to_file and args.sub:
        raise UsageError(
            f"-o {args.output}: --sub gives several DTS documents, one file each: write them with "
            "-O/--outdir DIR, or print them (no -o, or -o -)"
        )
    h = _open(args, args.input, args.mem, args.root_phys)
    docs, skipped = h.dts_documents(sub=args.sub)
    inputs = [args.input, *(args.mem or ())]
    written = []
    if args.outdir:
        from .outdir import OutputDir

        with OutputDir(args.outdir, force=args.force, inputs=inputs) as out:
            for d in docs:
                out.write(dts_file_name(d.name), d.dts)
                written.append(str(Path(args.outdir) / dts_file_name(d.name)))
    elif to_file:
        from .outdir import write_output_file

        write_output_file(args.output, docs[0].dts, inputs=inputs)  # the root FDT (no --sub)
        written.append(str(args.output))
    if _opt(args, "json"):
        _emit(args, dts_document(docs, skipped, written), "")
    elif written:
        sys.stdout.write("".join(f"wrote {safe_text(w)}\n" for w in written))
    else:
        # the terminal gets escaped text; -o files and --json keep the bytes
        sys.stdout.write("".join(safe_text(ln) + "\n" for ln in render_dts(docs, skipped).splitlines()))
    return EXIT_OK


def cmd_build(args) -> int:
    from .api import build, load_spec
    from .model.specfields import check_name
    from .ops.documents import build_document, render_build

    sp = load_spec(args.spec, allow_outside_files=args.allow_outside_files)
    name = check_name(args.name, "--name") if args.name is not None else None
    h = build(
        sp, version=_opt(args, "abi"), page_size=_opt(args, "page_size"), byteorder=_opt(args, "byte_order"),
        name=name, arch=args.arch,
    )  # fmt: skip
    notes: list[str] = []
    files = h.write(args.output, force=args.force, c_header=args.c_header, notes=notes)
    _notes(notes)
    fx = h.fixture
    data, text = build_document(fx, args.output, files), render_build(fx, args.output, files)
    if notes:
        data["notes"] = [*data.get("notes", ()), *notes]
    if tgt := target.from_args(args):
        found = target.built_findings(fx, tgt)
        data["target"] = {**tgt.to_json(), "findings": [f.to_json() for f in found]}
        text += "".join(f"  target: {f}\n" for f in found) or f"  target {tgt.name}: nothing to report\n"
        _emit(args, data, text)
        return EXIT_PROBLEM if any(f.severity == "error" for f in found) else EXIT_OK
    _emit(args, data, text)
    return EXIT_OK


def cmd_convert(args) -> int:
    from .model.specfields import check_name, safe_name
    from .ops.documents import convert_document, render_convert
    from .outdir import check_output_target

    if args.output is not None and args.output_pos is not None:
        raise UsageError(f"two output directories ({args.output_pos} and -o {args.output}): give one")
    if args.output is None and args.output_pos is None:
        raise UsageError("no output directory: give OUTDIR or -o OUTDIR")
    if args.output is None:
        args.output = args.output_pos
    inputs = [args.input, *(args.mem or ())]
    check_output_target(args.output, force=args.force, inputs=inputs)  # refuse before the work
    name = check_name(args.name, "--name") if args.name is not None else safe_name(Path(args.output).name, "converted")
    h = _open(args, args.input, args.mem, args.root_phys)
    out = h.convert(args.to, alloc=args.alloc or (), v1_bitmap=args.v1_bitmap_out, arch=args.arch, name=name)
    notes: list[str] = []
    files = out.write(
        args.output, force=args.force, c_header=args.c_header, image_format=args.image_format, notes=notes
    )
    _notes(notes)
    doc = convert_document(out.conversion or {}, args.output, files)
    if notes:
        doc["notes"] = [*doc.get("notes", ()), *notes]
    _emit(args, doc, render_convert(doc, args.output))
    return EXIT_OK


def cmd_capture(args) -> int:
    from .errors import KhoFormatError
    from .ops.documents import capture_document, render_capture

    live = not args.from_dump
    if live:
        from .api import open_live

        if args.debugfs:
            raise UsageError(
                f"{args.debugfs}: a DEBUGFS argument goes with --from-dump; live capture takes --debugfs DIR"
            )
        h = open_live(
            kcore=args.kcore or None,
            debugfs=args.live_debugfs or None,
            side=args.side or "out",
            root_phys=args.root_phys,
            boot_info=args.boot_info,
            **_reading(args),
        )
        source = h.source
    else:
        for opt, given in (("--kcore", args.kcore), ("--debugfs", args.live_debugfs), ("--side", args.side)):
            if given is not None:
                raise UsageError(f"{opt} is for live capture; with --from-dump give DEBUGFS as an argument")
        if args.debugfs:
            h = _open(args, args.debugfs, [args.from_dump], root_phys=args.root_phys)
        else:
            h = _open(args, args.from_dump, root_phys=args.root_phys)
        source = str(args.from_dump)
    st = h.state
    if h.image is None:  # a dump or kcore always gives one; a loader that did not is a bug to report clearly
        raise KhoFormatError(f"{source}: no memory image was loaded", expected="a memory dump or /proc/kcore")
    keep = h.handover_image(referenced_only=args.referenced_only)
    extra = {"live": h.live} if h.live is not None else {}
    files = h.write(args.output, referenced_only=args.referenced_only, image=keep, source=source, meta=extra)
    doc = capture_document(
        outdir=args.output,
        files=files,
        state=st,
        kept=keep,
        source=h.image,
        referenced_only=args.referenced_only,
        live=h.live,
    )
    _emit(args, doc, lambda: render_capture(doc, st, live=live))
    return EXIT_OK


def cmd_check(args) -> int:
    from .ops.report import render_check

    h = _open(args, args.input, args.mem, args.root_phys)
    rep = h.check(strict=args.strict, target=target.from_args(args)).to_json()
    _emit(args, rep, lambda: render_check(rep))
    return EXIT_OK if rep["ok"] else EXIT_PROBLEM


def cmd_luo_extract(args) -> int:
    from .errors import KhoFormatError
    from .model.clients.luo import NAME
    from .ops.documents import luo_extract_document, render_luo_extract

    h = _open(args, args.input, args.mem, args.root_phys)
    if NAME not in h.clients:
        raise KhoFormatError(f"{args.input}: no {NAME} sub-node", expected="a handover with Live Update state")
    luo = h.luo  # a LUO blob that did not decode raises its error
    if h.image is None or luo is None:
        raise KhoFormatError(f"{args.input}: no memory image", expected="--mem IMAGE or a capture with image.elf")
    index = luo_extract_document(luo.extract(args.output, force=args.force))
    _emit(args, index, render_luo_extract(index, args.output))
    return EXIT_OK


def cmd_diff(args) -> int:
    from .ops.report import render_diff

    a = _open(args, args.a, args.mem_a)
    a.state  # noqa: B018 - A is read (and its errors raised) before B is opened
    b = _open(args, args.b, args.mem_b)
    rep = a.diff(b).to_json()
    _emit(args, rep, lambda: render_diff(rep))
    return EXIT_OK if rep["identical"] else EXIT_PROBLEM


def cmd_boot(args) -> int:
    from . import boot
    from .ops.documents import boot_document, render_boot

    fixture = Path(args.fixture)
    if not (fixture / "handover.json").is_file():
        _error(f"{fixture}: not a fixture directory (no handover.json; write one with kho build)")
        return EXIT_PROBLEM
    kw: dict = {"via": args.via} if args.via != "loader" else {}
    if args.init or getattr(args, "init_args", None):
        kw["workload"] = boot.workload_of(args.init, args.init_args)
    res = boot.run_boot(str(fixture), args.kernel, args.timeout, **kw)  # BootError is a KhoFormatError: see main()
    _emit(args, boot_document(fixture, res), render_boot(res))
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
    _Parser.root = p
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
    g = s.add_mutually_exclusive_group()
    g.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the root FDT's DTS to FILE, as dtc -o does (an existing file is replaced); "
        "'-' (the default) is stdout",
    )
    g.add_argument(
        "-O",
        "--outdir",
        metavar="DIR",
        help="write one file per document into DIR: root.dts and, with --sub, sub-<name>.dts",
    )
    s.add_argument(
        "--force",
        action="store_true",
        help="with --outdir: write into an existing non-empty directory (only the files written are replaced, "
        "nothing is deleted)",
    )
    s.set_defaults(func=cmd_dts)

    s = sub.add_parser(
        "build",
        parents=[common],
        help="build a fixture from a YAML/TOML spec",
        description="Build a handover fixture from a spec (see fixtures/specs/ and the README) and "
        "write root.dtb, image.elf, manifest.json + seg-*.bin, handover.json, "
        "qemu-args.txt, kho_fixture.h, setup_data.bin, chosen.json and chosen.dtsi "
        "into OUTDIR (kho_fixture.h only for images up to 4 MiB unless --c-header). "
        "--abi, --page-size and --byte-order override the spec.",
        epilog=EPILOG,
    )
    s.add_argument("spec", metavar="SPEC", help="spec file (.toml, .yaml, .yml or .json)")
    s.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    s.add_argument("--name", help="fixture name (default: the spec's name, else its file name)")
    s.add_argument("--arch", choices=("arm64", "x86_64"), help="override the spec's arch (and its default placement)")
    target.add_arguments(s)
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
    c_header_opt(s)
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
    s.add_argument("output_pos", nargs="?", metavar="OUTDIR", help="the output directory (or give it with -o)")
    s.add_argument("-o", "--output", metavar="OUTDIR", help="the output directory, as kho build and capture take it")
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
    s.add_argument(
        "--image-format",
        choices=("elf", "kdump", "kdump-flat"),
        default="elf",
        help="the whole-image file: image.elf (ELF core, default), or image.kdump in makedumpfile's "
        "kdump-compressed format (kdump: what crash reads) or its flattened form (kdump-flat: "
        "'makedumpfile -R DUMPFILE < image.kdump' rebuilds the former)",
    )
    c_header_opt(s)
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
        "there is an error (or, with --strict, a warning). Output, as linters do: every finding goes to "
        "stdout, one a line ('SEVERITY: [CODE] PATH @ ADDR: MESSAGE', severity error, warning or info), "
        "then one summary line on stdout ('INPUT: OK|FAILED: N errors, M warnings'); with --json the same "
        "findings (findings: [{severity, code, message, phys, path}]) and the summary (ok, errors, warnings) "
        "are one JSON document on stdout. stderr gets only an input that could not be read at all "
        "('kho: error: ...', exit 1) and usage errors (exit 2). " + where,
        epilog=EPILOG,
    )
    s.add_argument("input", metavar="INPUT")
    mem_opts(s)
    s.add_argument("--strict", action="store_true", help="warnings fail too")
    target.add_arguments(s)
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
    s.add_argument("--init", metavar="PROGRAM", help="a static program: the second kernel's workload and judge")
    s.epilog = "kho boot FIXTURE --init PROGRAM -- ARGS: what follows '--' is PROGRAM's arguments. " + EPILOG
    s.set_defaults(func=cmd_boot)
    return p


def _error(message: str, label: str = "error") -> None:
    from .text import safe_text

    one = safe_text(" ".join(str(message).split()))
    sys.stderr.write(f"kho: {label}: {one}\n")


def main(argv: list[str] | None = None) -> int:
    from .boot.workload import split_program_args
    from .errors import KhoFormatError

    parser = build_parser()
    argv, init_args = split_program_args(sys.argv[1:] if argv is None else list(argv))
    _Parser.argv = list(argv)
    try:
        args = parser.parse_args(argv)
        args.init_args = init_args
    except SystemExit as exc:  # --help / --version (0) or usage errors (2)
        return int(exc.code or 0)
    from . import progress

    progress.configure(
        progress.wanted(quiet=_opt(args, "quiet", False), json=_opt(args, "json", False)), delay=progress.cli_delay()
    )
    try:
        from .safeio import tracking_inputs

        with tracking_inputs():  # every input opened: the output guard refuses writing over, into or around one
            return args.func(args)
    except KhoFormatError as exc:
        _error(str(exc))
        if _opt(args, "json"):
            from .ops.documents import error_document

            sys.stdout.write(json.dumps(error_document(exc), indent=2) + "\n")
        return EXIT_PROBLEM
    except UsageError as exc:  # the same hint as argparse's usage errors
        _error(f"{exc} (see '{command_prog(argv)} --help')")
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
