"""``kho diff`` of two LUO states: sessions by name, files by token, FLBs by name."""

from __future__ import annotations

from typing import Any

from ....errors import ImageError
from ....keyed import DIFFERS, keyed_diff, only_side
from ....memory.image import PhysImage
from ....text import human_size, plain_value, plural
from .model import LuoFile, LuoFlb, LuoSession, LuoState, content_digest, content_runs_digest


def _file_view(f: LuoFile, image: PhysImage | None, page_size: int) -> dict[str, Any]:
    """What ``kho diff`` compares of a file (addresses are not compared)."""
    out: dict[str, Any] = {"compatible": f.compatible}
    if f.error is not None:
        out["error"] = str(f.error)
    if not f.known or f.decoded is None:
        out["data"] = f.data
        return out
    out.update(f.handler.index_json(f.decoded))
    view = getattr(f.handler, "folio_view", None)  # compact, in numpy: a file may list 60 M folios
    folios = None if view is not None or not f.handler.json_key else f.handler.to_json(f.decoded).get("folios")
    if view is not None:
        out["folios"] = view(f.decoded)
    elif folios is not None:
        out["folios"] = sorted((x["index"], -1 if x["order"] is None else x["order"]) for x in folios)
    if image is not None:
        try:
            out["sha256"] = content_digest(f, image, page_size)  # None: too many hole bytes to hash
            out["runs"] = content_runs_digest(f, image, page_size)
        except ImageError:
            # the folios are not in the image (kho capture --referenced-only, a spec's fill = "absent"):
            # nothing to hash; the two sides differ in contents only if one has them
            out.pop("sha256", None)
            out.update(runs=None, contents_absent=True)
    return out


def _side(st: LuoState | None, error: str | None) -> dict[str, Any] | None:
    if st is None:
        return None if error is None else {"error": error}
    return {
        "compatible": st.compatible,
        "liveupdate_num": st.ser.liveupdate_num,
        "serialized": st.serialized,
        "sessions": len(st.sessions),
        "files": sum(len(s.files) for s in st.sessions),
        "flbs": len(st.flbs),
        "error": error,
    }


def diff(
    a: LuoState | None,
    b: LuoState | None,
    images: tuple[PhysImage | None, PhysImage | None],
    page_sizes: tuple[int, int],
    errors: tuple[str | None, str | None] = (None, None),
) -> dict[str, Any]:
    """LUO state of two handovers compared: sessions by name, files by token
    (handler, size, pos, seals, flags, folio indexes and orders, and the
    SHA-256 of the contents when both images are given), FLBs by name."""
    out: dict[str, Any] = {"identical": True, "a": _side(a, errors[0]), "b": _side(b, errors[1])}
    fields: list[str] = []
    if a is None or b is None:
        out.update(identical=a is None and b is None and errors[0] == errors[1], fields=["presence"])
        out.update(sessions=[], flbs=[])
        return out
    for key, va, vb in (
        ("compatible", a.compatible, b.compatible),
        ("liveupdate_num", a.ser.liveupdate_num, b.ser.liveupdate_num),
        ("serialized", a.serialized, b.serialized),
    ):
        if va != vb:
            fields.append(key)
    if errors[0] != errors[1]:
        fields.append("error")
    names_a = {s.name for s in a.sessions}
    names_b = {s.name for s in b.sessions}
    if [s.name for s in a.sessions if s.name in names_b] != [s.name for s in b.sessions if s.name in names_a]:
        fields.append("session_order")

    not_compared: list[int] = []  # tokens of files in both whose contents were not compared

    def file_change(f: LuoFile, g: LuoFile) -> dict[str, Any] | None:
        va = _file_view(f, images[0], page_sizes[0])
        vb = _file_view(g, images[1], page_sizes[1])
        if f.known and g.known and not (va.get("runs") is not None and vb.get("runs") is not None):
            not_compared.append(f.token)  # no image on a side, or the folios are not in it
        if va.get("sha256") is None or vb.get("sha256") is None:
            # no exact digest on one side (no image, or holes too big to hash): compare the runs digests
            va.pop("sha256", None)
            vb.pop("sha256", None)
        else:
            va.pop("runs", None)
            vb.pop("runs", None)
        changed = [k for k in dict.fromkeys(list(va) + list(vb)) if va.get(k) != vb.get(k)]
        if not changed:
            return None
        fields = ["contents" if k in ("sha256", "runs", "contents_absent") else k for k in changed]
        return {"fields": list(dict.fromkeys(fields)), "a": va, "b": vb}

    def session_change(x: LuoSession, y: LuoSession) -> dict[str, Any] | None:
        files = keyed_diff(x.files, y.files, lambda f: f.token, file_change, key_name="token")
        return {"files": files} if files else None

    def flb_change(p: LuoFlb, q: LuoFlb) -> dict[str, Any] | None:
        if (p.ser.data, p.ser.count) == (q.ser.data, q.ser.count):
            return None
        return {"a": {"data": p.ser.data, "count": p.ser.count}, "b": {"data": q.ser.data, "count": q.ser.count}}

    sessions = keyed_diff(a.sessions, b.sessions, lambda s: s.name, session_change)
    flbs = keyed_diff(a.flbs, b.flbs, lambda f: f.name, flb_change)
    out.update(identical=not (fields or sessions or flbs), fields=fields, sessions=sessions, flbs=flbs)
    out["contents_not_compared"] = len(not_compared)
    return out


def _value(key: str, v: Any) -> str:
    """A compared value for text: flags and seals in hex, sizes as sizes, never a Python repr."""
    if isinstance(v, int) and not isinstance(v, bool):
        if key in ("seals", "flags"):
            return f"{v:#x}"
        if key in ("size", "pos"):
            return human_size(v) if key == "size" else str(v)
    return plain_value(v)


def diff_text(d: dict[str, Any]) -> list[str]:
    """Lines of the text diff for a ``luo`` key: what differs, and which contents were not compared."""
    n = d.get("contents_not_compared", 0)
    unsaid = (
        [
            f"  LUO: contents of {plural(n, 'file')} in both not compared (a side has no memory image, or not their folios)"
        ]
        if n
        else []
    )
    if d["identical"]:
        return unsaid
    L = unsaid
    if "presence" in d["fields"]:
        return [f"  LUO: only in {'A' if d['b'] is None else 'B'}"]
    for k in d["fields"]:
        va, vb = (d[s].get(k) if k != "session_order" else None for s in ("a", "b"))
        L.append(f"  LUO: {k} differs" + (f" (A {_value(k, va)}, B {_value(k, vb)})" if k != "session_order" else ""))
    for s in d["sessions"]:
        if s["change"] != DIFFERS:
            L.append(f"  LUO session {s['name']!r}: only in {only_side(s['change'])}")
            continue
        for f in s["files"]:
            what = f"  LUO session {s['name']!r} file {f['token']:#x}"
            if f["change"] != DIFFERS:
                L.append(f"{what}: only in {only_side(f['change'])}")
                continue
            parts = []
            for k in f["fields"]:
                if k in ("contents", "folios", "error"):
                    parts.append(k)
                else:
                    parts.append(f"{k} {_value(k, f['a'].get(k))} -> {_value(k, f['b'].get(k))}")
            L.append(f"{what}: {', '.join(parts)} differ")
    for x in d["flbs"]:
        where = f"only in {only_side(x['change'])}" if x["change"] != DIFFERS else "data/count differ"
        L.append(f"  LUO FLB {x['name']!r}: {where}")
    return L
