"""Text helpers every text renderer shares (clients' details, reports): terminal-safe strings,
human sizes, aligned tables.  Base layer: imports nothing of the package."""

from __future__ import annotations

from collections.abc import Sequence


def safe_text(text: object) -> str:
    """``text`` with every non-printable character (controls such as ``ESC``,
    newlines, bidi overrides) written as a Python escape (``\\x1b``), so a
    string from the input cannot retitle, clear or rewrite a terminal.  A tab
    is whitespace, not a danger, and is kept (pyfdt's DTS header has tabs).
    Text renderers apply it to each line they print; JSON output is not
    touched (``json.dumps`` escapes control characters itself)."""
    s = str(text)
    if s.replace("\t", " ").isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable() or ch == "\t":
            out.append(ch)
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def safe_lines(L: Sequence[str]) -> str:
    """Report lines joined, each escaped with :func:`safe_text`, ending in a newline."""
    return "\n".join(safe_text(x) for x in L) + "\n"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``n`` and ``word``, in the plural unless ``n`` is one: ``plural(1, "range")`` is ``"1 range"``.

    >>> plural(0, "error"), plural(1, "error"), plural(2, "sub-blob")
    ('0 errors', '1 error', '2 sub-blobs')
    >>> plural(3, "entry", "entries")
    '3 entries'
    """
    return f"{n} {word if n == 1 else (words or word + 's')}"


def human_size(n: int) -> str:
    """``4096`` -> ``4 KiB``, ``1536`` -> ``1.5 KiB``."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            text = f"{n / (1 << shift):.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{n} B"


def fmt_addr(v: int | None) -> str:
    """``0x1000``, or ``?`` for an unknown address."""
    return "?" if v is None else f"{v:#x}"


def fmt_range(start: int, size: int) -> str:
    """``0x1000-0x3000 (8 KiB)``: a byte range as ``inspect`` lists one (end exclusive)."""
    return f"{start:#x}-{start + size:#x} ({human_size(size)})"


def fmt_strings(strings: Sequence[str]) -> str:
    """A string list as a DTS writes one (``"kho-v4", "radix-v1"``), ``none`` when empty."""
    return ", ".join('"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"' for x in strings) or "none"


def plain_value(v: object) -> str:
    """A value for a sentence, never a Python repr: ``none`` for None, ``yes`` /
    ``no`` for booleans, integers in decimal, strings quoted, ``(a, b)`` pairs of
    integers as byte ranges (``addr``, ``size``), lists comma-separated (``none``
    when empty)."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return "'" + v.replace("'", "\\'") + "'"
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return fmt_range(v[0], v[1])
    if isinstance(v, dict):
        return ", ".join(f"{k} {plain_value(x)}" for k, x in v.items()) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(plain_value(x) for x in v) or "none"
    return str(v)


def table(rows: Sequence[Sequence[object]], header: Sequence[str], indent: str = "  ") -> list[str]:
    """Rows under a header, columns left-aligned to their widest cell, trailing blanks stripped."""
    rows = list(rows)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = [indent + "  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip()]
    for r in rows:
        out.append(indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return out


__all__ = ["safe_text", "safe_lines", "human_size", "fmt_addr", "fmt_range", "fmt_strings", "plain_value", "table"]
