"""Reports on parsed handovers, as stable JSON-able dicts and as text tables.

* :func:`inspect_report` / :func:`render_inspect` -- ``kho inspect``
* :func:`diff_report` / :func:`render_diff` -- ``kho diff``
* :func:`check_report` / :func:`render_check` -- ``kho check``

The JSON keys are documented in the README ("JSON output"); integers are
plain JSON numbers (addresses included), ``null`` means "unknown".
Every report carries ``"schema": "kho-formats/<command>/<N>"`` (``diff/2``,
the others ``/1``); keys are only ever added within one schema version.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, islice

from .._version import __version__
from ..findings import ERROR, WARNING, Finding
from ..keyed import DIFFERS, keyed_diff, only_side
from ..memory.image import PhysImage
from ..memory.intervals import range_bytes, range_difference, range_list
from ..memory.pageset import END_OF_SPACE
from ..model import memmap
from ..model.clients import ClientReport, decode_clients, registry
from ..model.state import KhoState, SubBlob
from ..records import Records
from ..text import fmt_addr as _fmt_addr
from ..text import fmt_range, human_size, plain_value, plural, safe_text
from ..text import safe_lines as _lines
from ..text import table as _table

SCHEMA = "kho-formats/{}/1"
#: ``kho-formats/diff/2``: preserved memory compared as byte ranges, folios only at one page size
#: (the same as :func:`kho_formats.ops.documents.schema` gives)
DIFF_SCHEMA = "kho-formats/diff/2"


def preserved_report(state: KhoState, max_ranges: int | None = None) -> dict:
    """Counts per order and the coalesced ranges; only the first
    ``max_ranges`` ranges are listed (``None``: all), so a fragmented
    terabyte map does not turn into gigabytes of JSON unless asked to."""
    ps = state.page_size
    per_order = {}
    for o, n in state.preserved.counts_by_order().items():
        per_order[str(o)] = {"pages": n, "bytes": n * (ps << o), "runs": int(state.preserved.runs(o).starts.size)}
    total, starts, ends = state.preserved.range_head(max_ranges)
    shown = total if max_ranges is None else min(total, max_ranges)
    ends_list = [1 << 64 if e == END_OF_SPACE else e for e in ends[:shown].tolist()]
    return {
        "pages": state.preserved.num_pages,
        "bytes": state.preserved.total_bytes,
        "runs": state.preserved.num_runs,
        "per_order": per_order,
        "ranges_total": total,
        "ranges_truncated": shown < total,
        "ranges": [{"start": a, "end": b, "size": b - a} for a, b in zip(starts[:shown].tolist(), ends_list)],
    }


def _client_json(rep: ClientReport | None) -> dict:
    if rep is None:
        return {"kind": "unknown", "decoded": None, "error": None}
    j = rep.to_json()
    return {"kind": j["kind"], "decoded": j["decoded"], "error": j["error"]}


#: ``sources`` keys of the inspect report (null when that input was not used)
SOURCE_KEYS = ("root_fdt", "images", "debugfs", "metadata")
#: ``memory_map`` keys per map kind (null when the map was not read)
_MAP_SUMMARY_KEYS = {"radix": ("depth", "pages"), "chunk-list": ("chunks", "bitmaps", "bitmap_bytes")}


def inspect_report(
    state: KhoState,
    image: PhysImage | None,
    clients: dict[str, ClientReport],
    *,
    root_fdt: bytes = b"",
    sources: dict | None = None,
    max_ranges: int | None = None,
) -> dict:
    """Everything ``kho inspect`` shows, as a JSON-able dict."""
    subs = []
    vm = []
    for sb in state.subblobs:
        rep = clients.get(sb.name)
        entry = {
            "name": sb.name,
            "phys": sb.phys,
            "size": sb.size,
            "size_source": sb.size_source,
            "has_data": sb.data is not None,
            "in_image": bool(image is not None and sb.size is not None and image.has(sb.phys, sb.size)),
            "extra_props": [n for n, _ in sb.extra_props],
        }
        entry.update(_client_json(rep))
        subs.append(entry)
        if rep is not None:
            for area in rep.vmalloc:
                v = area.to_json()
                v["client"] = sb.name
                v["bytes"] = area.nr_pages * state.page_size
                vm.append(v)
    mm: dict = {
        "phys": state.memmap_phys,
        "kind": state.abi.memory_map,
        "read": state.map_read,
        "released": state.map_released,
    }
    mm.update({k: None for k in _MAP_SUMMARY_KEYS.get(state.abi.memory_map, ())})  # documented: null when unread
    mm.update(state.codec.summary(state.map_context, state.memmap))
    return {
        "schema": SCHEMA.format("inspect"),
        "generator": f"kho-formats {__version__}",
        "sources": {**{k: None for k in SOURCE_KEYS}, **(sources or {})},
        "version": state.version,
        "compatible": [state.abi.compatible] + list(state.extra_compatible),
        "page_size": state.page_size,
        "byte_order": state.byteorder,
        **memmap.params_json(state.codec, state.map_params),
        "root_fdt": {"phys": state.root_fdt_phys, "size": len(root_fdt)},
        "memory_map": mm,
        "scratch": [{"addr": a, "size": s} for a, s in state.scratch],
        "subblobs": subs,
        "vmalloc": vm,
        "preserved": preserved_report(state, max_ranges) if state.map_read else None,
        "image": {"segments": len(image), "bytes": image.total_bytes} if image is not None else None,
        "notes": list(state.notes),
        **client_report_keys(clients),
    }


def client_report_keys(clients: dict[str, ClientReport]) -> dict:
    """The top-level keys clients own (``Client.report_key``: ``luo``), in
    registration order: the client's ``report`` of its decoded blob, or
    ``null`` when its sub-node is absent or did not decode."""
    out: dict = {}
    for c in registry.everyone():
        if c.report_key:
            out[c.report_key] = None
    for rep in clients.values():
        c = rep.client
        if c is not None and c.report_key:
            out.setdefault(c.report_key, None)
            if rep.decoded is not None:
                out[c.report_key] = c.report(rep.decoded)
    return out


def dumps_json(data: object) -> str:
    """``json.dumps(data, indent=2)``, character for character, but fast for
    long lists of records (ranges, pages): ``json`` falls back to its pure
    Python encoder whenever ``indent`` is set, which takes seconds for
    100,000 ranges.  Lists of dicts that share one key order and hold only
    integers (and :class:`~kho_formats.records.Records`) are written from a
    ``%``-template; everything else goes through ``json`` itself."""
    out: list[str] = []
    _dump(data, 0, out.append)
    return "".join(out)


#: the text :func:`write_json` gathers before each ``write``
WRITE_CHUNK = 1 << 20
#: records formatted at once from :class:`~kho_formats.records.Records`
RECORD_CHUNK = 8192


def write_json(data: object, write: Callable[[str], object]) -> None:
    """:func:`dumps_json` of ``data`` followed by a newline, handed to ``write``
    about :data:`WRITE_CHUNK` characters at a time: the document's text is never
    held whole, and :class:`~kho_formats.records.Records` are formatted
    :data:`RECORD_CHUNK` records at a time, never as one dict each."""
    buf: list[str] = []
    size = 0

    def put(s: str) -> None:
        nonlocal size
        buf.append(s)
        size += len(s)
        if size >= WRITE_CHUNK:
            write("".join(buf))
            buf.clear()
            size = 0

    _dump(data, 0, put)
    put("\n")
    write("".join(buf))


def _dump(o: object, level: int, put: Callable[[str], object]) -> None:
    pad = "  " * (level + 1)
    if isinstance(o, dict) and o:
        put("{")
        first = True
        for k, v in o.items():
            put(("\n" if first else ",\n") + pad + json.dumps(k if isinstance(k, str) else _json_key(k)) + ": ")
            first = False
            _dump(v, level + 1, put)
        put("\n" + "  " * level + "}")
    elif isinstance(o, Records):
        _dump_records(o, level, put)
    elif isinstance(o, (list, tuple)) and o:
        tmpl = _record_template(o, level + 1)
        if tmpl is not None:
            put("[\n" + pad + (",\n" + pad).join([tmpl % v for v in map(tuple, map(dict.values, o))]))
            put("\n" + "  " * level + "]")
            return
        put("[")
        first = True
        for v in o:
            put(("\n" if first else ",\n") + pad)
            first = False
            _dump(v, level + 1, put)
        put("\n" + "  " * level + "]")
    else:
        put(json.dumps(o))


def _dump_records(r: Records, level: int, put: Callable[[str], object]) -> None:
    """``r`` as ``json.dumps(r.to_list(), indent=2)`` lays it out at ``level``,
    a chunk of records at a time (a value ``None`` is ``null``; ints are
    written as ``json`` writes them, by ``str``)."""
    if not len(r):
        put("[]")
        return
    pad = "  " * (level + 1)
    tmpl = _template(r.keys, level + 1, "%s")
    sep = ",\n" + pad
    for a in range(0, len(r), RECORD_CHUNK):
        rows = r.rows(a, a + RECORD_CHUNK)
        if r.nulls:
            rows = [tuple("null" if v is None else v for v in row) for row in rows]
        put(("[\n" + pad if a == 0 else sep) + sep.join([tmpl % row for row in rows]))
    put("\n" + "  " * level + "]")


def _json_key(k: object) -> str:
    """A non-string dict key as ``json`` writes it (ints, floats, bools, None)."""
    return next(iter(json.loads(json.dumps({k: 0}))))


def _record_template(items: Sequence[object], level: int) -> str | None:
    """A ``%d`` template for a long list of same-keyed dicts of ints (the
    way ``json.dumps(indent=2)`` lays one out), or None."""
    if len(items) < 64 or not isinstance(items[0], dict) or not items[0]:
        return None
    keys = tuple(items[0])
    if not all(isinstance(k, str) for k in keys):
        return None
    if set(map(type, items)) != {dict} or len(set(map(tuple, items))) != 1:
        return None
    if set(map(type, chain.from_iterable(map(dict.values, items)))) != {int}:  # bools are not ints to json
        return None
    return _template(keys, level, "%d")


def _template(keys: Sequence[str], level: int, conv: str) -> str:
    """One record's layout in ``json.dumps(indent=2)`` at ``level``, each value a ``conv``."""
    pad = "  " * (level + 1)
    body = ",\n".join(pad + json.dumps(k).replace("%", "%%") + ": " + conv for k in keys)
    return "{\n" + body + "\n" + "  " * level + "}"


def _summary(sub: dict) -> str:
    d = sub.get("decoded")
    if sub.get("error"):
        return f"ERROR: {sub['error']}"
    if d is None:
        return "(not in image)" if not sub["has_data"] else ""
    client = registry.by_kind(sub["kind"])
    return client.summary(d) if client is not None else ""


def _details(sub: dict) -> list[str]:
    client = registry.by_kind(sub["kind"])
    if client is None or sub.get("decoded") is None:
        return []
    return client.details(sub["name"], sub["decoded"])


def _count(n: int, what: str) -> str:
    """``1 folio``, ``17 folios``."""
    return f"{n} {what}{'' if n == 1 else 's'}"


def render_inspect(r: dict, *, max_ranges: int = 32) -> str:
    L: list[str] = []
    L.append(
        f"KHO handover: {', '.join(r['compatible'])}  ({r['page_size'] // 1024} KiB pages, {r['byte_order']}-endian)"
    )
    rf = r["root_fdt"]
    L.append(f"  root FDT:        {_fmt_addr(rf['phys'])} ({rf['size']} bytes)")
    mm = r["memory_map"]
    codec = memmap.get(mm["kind"])
    detail = codec.describe(mm)
    L.append(
        f"  memory map:      {_fmt_addr(mm['phys'])} ({mm['kind']}{detail})"
        + (
            ""
            if mm["read"]
            else " -- not read: released by the receiving kernel"
            if mm.get("released")
            else " -- not read: no memory image"
        )
    )
    for label, text in codec.param_lines(r):
        L.append(f"  {label + ':':<17}{text}")
    if r["image"]:
        L.append(f"  memory image:    {plural(r['image']['segments'], 'segment')}, {human_size(r['image']['bytes'])}")
    L.append("")
    L.append(f"Sub-blobs ({len(r['subblobs'])}):")
    if r["subblobs"]:
        rows = [
            (s["name"], _fmt_addr(s["phys"]), "?" if s["size"] is None else str(s["size"]), s["kind"], _summary(s))
            for s in r["subblobs"]
        ]
        L += _table(rows, ("name", "phys", "size", "kind", "contents"))
    for s in r["subblobs"]:
        L += _details(s)
    L.append("")
    L.append(f"vmalloc areas ({len(r['vmalloc'])}):")
    if r["vmalloc"]:
        rows = [
            (
                v["client"],
                _fmt_addr(v["first"]),
                str(v["total_pages"]),
                str(v["order"]),
                f"{v['flags']:#x}",
                str(len(v["chunks"])),
                human_size(v["bytes"]),
            )
            for v in r["vmalloc"]
        ]
        L += _table(rows, ("client", "first chunk", "pages", "order", "flags", "chunks", "size"))
    L.append("")
    for c in registry.everyone():
        if c.report_key and r.get(c.report_key) is not None:
            L += c.report_text(r[c.report_key])
    if r["scratch"]:
        L.append(f"Scratch areas ({len(r['scratch'])}):")
        L += _table(
            [(_fmt_addr(s["addr"]), _fmt_addr(s["addr"] + s["size"]), human_size(s["size"])) for s in r["scratch"]],
            ("start", "end", "size"),
        )
        L.append("")
    p = r["preserved"]
    if p is None and mm.get("released"):
        L.append("Preserved memory: not read (the receiving kernel released the memory map after reading it)")
    elif p is None:
        L.append("Preserved memory: not read (give the memory image with --mem)")
    else:
        # the map's entries are folios (of any order): say so, and count the pages they hold
        ps = r["page_size"]
        L.append(
            f"Preserved memory: {_count(p['pages'], 'folio')} ({_count(p['bytes'] // ps, 'page')} of "
            f"{human_size(ps)}) in {_count(p['ranges_total'], 'range')}, {human_size(p['bytes'])}"
        )
        rows = [(o, str(v["pages"]), str(v["runs"]), human_size(v["bytes"])) for o, v in p["per_order"].items()]
        if rows:
            L += _table(rows, ("order", "folios", "runs", "bytes"))
        L.append("")
        rng = p["ranges"]
        rows = [(_fmt_addr(x["start"]), _fmt_addr(x["end"]), human_size(x["size"])) for x in rng[:max_ranges]]
        if rows:
            L += _table(rows, ("start", "end", "size"))
        more = p["ranges_total"] - min(len(rng), max_ranges)
        if more > 0:
            L.append(f"  ... {more} more ranges (--max-ranges N or --all-ranges to list them)")
    if r["notes"]:
        L.append("")
        L.append("Notes:")
        L += [f"  - {n}" for n in r["notes"]]
    return _lines(L)


# -- diff -----------------------------------------------------------------------------------


def client_diffs(a: KhoState, b: KhoState, images: Sequence[PhysImage | None]) -> dict[str, dict | None]:
    """The top-level diff keys clients own (``Client.diff_key``: ``luo``), in registration order:
    the client's :meth:`~kho_formats.model.clients.Client.diff` of both sides, or ``null`` when
    neither side has its sub-node."""
    owners = [c for c in registry.everyone() if c.diff_key and c.name]
    out: dict[str, dict | None] = {c.diff_key: None for c in owners if c.diff_key}
    present = [c for c in owners if a.subblob(c.name or "") is not None or b.subblob(c.name or "") is not None]
    if not present:
        return out
    reports = [decode_clients(st, img) for st, img in zip((a, b), images)]
    for c in present:
        got: list = []
        errs: list[str | None] = []
        for st, reps in zip((a, b), reports):
            rep = reps.get(c.name or "") if st.subblob(c.name or "") is not None else None
            ok = rep is not None and rep.client is c and rep.decoded is not None
            got.append(rep.decoded if ok and rep is not None else None)
            errs.append(str(rep.error) if rep is not None and rep.error is not None else None)
        out[c.diff_key or ""] = c.diff(
            got[0], got[1], (images[0], images[1]), (a.page_size, b.page_size), (errs[0], errs[1])
        )
    return out


def diff_report(
    a: KhoState,
    b: KhoState,
    *,
    names: Sequence[str] = ("A", "B"),
    max_pages: int = 1000,
    images: Sequence[PhysImage | None] = (None, None),
) -> dict:
    """Preserved-set and sub-blob differences (version/page size noted, not
    compared); ``luo``: Live Update state compared (sessions, files and, with
    ``images``, their contents), None when neither side has ``LUO``."""
    # preserved memory compared as bytes (whatever the page sizes), and as
    # (phys, order) folios only when the page sizes agree: one 4 MiB region is
    # an order-10 folio at 4 KiB pages and an order-8 one at 16 KiB pages
    same_ps = a.page_size == b.page_size
    ra, rb = a.preserved.range_arrays(), b.preserved.range_arrays()
    bytes_a, bytes_b = range_difference(*ra, *rb), range_difference(*rb, *ra)
    folios_ab = a.preserved.difference(b.preserved) if same_ps else None

    def side(rng, fol) -> dict:
        out: dict = {
            "bytes": range_bytes(*rng),
            "ranges_total": int(rng[0].size),
            "ranges": range_list(*rng, max_pages),
            "folios": None,
            "folio_bytes": None,
            "per_order": None,
            "list": None,
        }
        if fol is not None:
            out.update(
                folios=fol.num_pages,
                folio_bytes=fol.total_bytes,
                per_order={str(o): n for o, n in fol.counts_by_order().items()},
                list=[{"phys": p, "order": o} for p, o in _limited_pages(fol, max_pages)],
            )
        return out

    def blob_change(x: SubBlob, y: SubBlob) -> dict | None:
        diffs = []
        if x.phys != y.phys:
            diffs.append("phys")
        if x.size != y.size:
            diffs.append("size")
        if x.data != y.data:
            diffs.append("data" if (x.data is not None and y.data is not None) else "data-availability")
        if not diffs:
            return None
        return {"fields": diffs, "a": {"phys": x.phys, "size": x.size}, "b": {"phys": y.phys, "size": y.size}}

    blobs = keyed_diff(a.subblobs, b.subblobs, lambda s: s.name, blob_change)
    same_bytes = not bytes_a[0].size and not bytes_b[0].size
    same_set = same_bytes and (not same_ps or a.preserved == b.preserved)
    meta = {}
    for key, va, vb in (
        ("version", a.version, b.version),
        ("page_size", a.page_size, b.page_size),
        ("byte_order", a.byteorder, b.byteorder),
        ("scratch", a.scratch, b.scratch),
    ):
        if va != vb:
            meta[key] = {"a": va, "b": vb}
    if "scratch" in meta:
        meta["scratch"] = {k: [{"addr": x, "size": n} for x, n in v] for k, v in meta["scratch"].items()}
    both_read = a.map_read and b.map_read
    by_client = client_diffs(a, b, images)
    return {
        "schema": DIFF_SCHEMA,
        "a": names[0],
        "b": names[1],
        "identical": same_set
        and same_ps
        and not blobs
        and both_read
        and all(v is None or v["identical"] for v in by_client.values()),
        # null: a memory map was not read, so the preserved sets are unknown
        "preserved_identical": same_set if both_read else None,
        "map_read": {"a": a.map_read, "b": b.map_read},
        "map_released": {"a": a.map_released, "b": b.map_released},
        "folios_compared": same_ps,
        "only_in_a": side(bytes_a, folios_ab[0] if folios_ab else None),
        "only_in_b": side(bytes_b, folios_ab[1] if folios_ab else None),
        "subblobs": blobs,
        "other": meta,
        **by_client,
    }


def _other_text(key: str, v: object) -> str:
    """A value of the diff's ``other`` for text: sizes and ranges as inspect prints them."""
    if key == "page_size" and isinstance(v, int):
        return human_size(v)
    if key == "scratch" and isinstance(v, list):
        return ", ".join(fmt_range(x["addr"], x["size"]) for x in v) or "none"
    if isinstance(v, str):  # a version or byte order name
        return v
    return plain_value(v)


def _limited_pages(ps, limit: int):
    for i, po in enumerate(ps.iter_pages()):
        if i >= limit:
            return
        yield po


#: the items of one kind a diff's text lists before it counts the rest
DIFF_TEXT_ITEMS = 20


def _first_of(n: int, items: Iterable[str]) -> list[str]:
    """The first :data:`DIFF_TEXT_ITEMS` of ``n`` diff items, one per line, then how many more there are."""
    L = [f"    {t}" for t in islice(items, DIFF_TEXT_ITEMS)]
    if n > DIFF_TEXT_ITEMS:
        L.append(f"    ... {n - DIFF_TEXT_ITEMS} more (--json lists up to 1000)")
    return L


def render_diff(d: dict) -> str:
    L = []
    if d["identical"]:
        L.append(f"identical: same preserved set and sub-blobs ({d['a']} vs {d['b']})")
    elif d["preserved_identical"] is None and not d["subblobs"]:
        L.append(f"not compared: {d['a']} vs {d['b']}: same sub-blobs, but the preserved memory is unknown")
    else:
        L.append(f"different: {d['a']} vs {d['b']}")
    released = d.get("map_released", {})
    if released.get("a") or released.get("b"):
        L.append("  (a memory map was released by its receiving kernel: the preserved memory is not compared)")
    elif not (d["map_read"]["a"] and d["map_read"]["b"]):
        L.append("  (a memory map was not read: give memory images with --mem-a / --mem-b)")
    for side, key in (("A", "only_in_a"), ("B", "only_in_b")):
        x = d[key]
        if x["bytes"]:
            n = x["ranges_total"]
            L.append(f"  only in {side}: {human_size(x['bytes'])} in {plural(n, 'range')}")
            L += _first_of(n, (fmt_range(r["start"], r["size"]) for r in x["ranges"]))
    for side, key in (("A", "only_in_a"), ("B", "only_in_b")):
        x = d[key]
        if x["folios"]:
            n = x["folios"]
            L.append(f"  folios only in {side}: {n} ({human_size(x['folio_bytes'])})")
            L += _first_of(n, (f"{p['phys']:#x} order {p['order']}" for p in x["list"]))
    for s in d["subblobs"]:
        if s["change"] == DIFFERS:
            L.append(
                f"  sub-blob {s['name']}: {', '.join(s['fields'])} differ "
                f"(A {_fmt_addr(s['a']['phys'])}+{s['a']['size']}, B {_fmt_addr(s['b']['phys'])}+{s['b']['size']})"
            )
        else:
            L.append(f"  sub-blob {s['name']}: only in {only_side(s['change'])}")
    for c in registry.everyone():
        if c.diff_key and d.get(c.diff_key):
            L += c.diff_text(d[c.diff_key])
    for k, v in d["other"].items():
        what = "folios not compared, preserved memory compared as bytes" if k == "page_size" else "not compared"
        L.append(
            f"  note: {k.replace('_', ' ')} differs: A {_other_text(k, v['a'])}; B {_other_text(k, v['b'])} ({what})"
        )
    return _lines(L)


# -- check -----------------------------------------------------------------------------------


def check_report(findings: list[Finding], *, source: str = "", strict: bool = False) -> dict:
    """``ok``: no errors (with ``strict``, no warnings either): the verdict
    the text and the exit status both follow."""
    bad = (ERROR, WARNING) if strict else (ERROR,)
    return {
        "schema": SCHEMA.format("check"),
        "source": source,
        "ok": not any(f.severity in bad for f in findings),
        "strict": strict,
        "errors": sum(f.severity == ERROR for f in findings),
        "warnings": sum(f.severity == WARNING for f in findings),
        "findings": [f.to_json() for f in findings],
    }


def render_check(r: dict) -> str:
    L = []
    for f in r["findings"]:
        where = []
        if f["path"]:
            where.append(f["path"])
        if f["phys"] is not None:
            where.append(f"{f['phys']:#x}")
        loc = (" @ ".join(where) + ": ") if where else ""
        L.append(f"{f['severity']}: [{f['code']}] {loc}{f['message']}")
    L.append(
        f"{r['source'] + ': ' if r['source'] else ''}{'OK' if r['ok'] else 'FAILED'}: "
        f"{plural(r['errors'], 'error')}, {plural(r['warnings'], 'warning')}"
        + (" (--strict: warnings fail)" if r.get("strict") and not r["ok"] and not r["errors"] else "")
    )
    return _lines(L)


__all__ = [
    "safe_text",
    "inspect_report",
    "render_inspect",
    "diff_report",
    "render_diff",
    "check_report",
    "render_check",
    "preserved_report",
    "human_size",
]
