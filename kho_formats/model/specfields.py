"""Spec field tables: one declaration per spec key drives validation, defaults and docs.

A :class:`SpecField` names a key, its :class:`FieldType`, its default and a
one-line doc; a :class:`SpecTable` is the fields of one TOML table (the top
level, one ``[[preserve]]`` entry, the keys a client adds to ``[[blob]]``, ...)
plus the rows it contributes to the README's spec table.  :func:`validate`
checks a mapping against a table (unknown keys, types, integers with
``0x``/``K``/``M``/``G``/``T``, bools, strings, choices, ranges, required keys)
and fills in defaults; :func:`markdown_table` renders the docs.

This module imports nothing from the rest of the package but the errors, so
client modules can declare their fields without import cycles
(:mod:`kho_formats.model.spec` imports the clients).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SpecError, input_kind, input_value
from ..safeio import read_regular

_SUFFIX = {"K": 10, "M": 20, "G": 30, "T": 40}


#: integers in specs and on the command line: 0 .. 2**64 (an exclusive end may be 2**64)
INT_MAX = 1 << 64
#: longest integer text converted (checked before conversion: no 5000-digit int())
INT_TEXT_MAX = 40


def parse_int(value: Any, where: str) -> int:
    """An int, or a string: ``0x1000``, ``4096``, ``16M``, ``1_000``; always in
    ``0 .. 2**64`` (:class:`SpecError` otherwise, also for absurdly long text)."""
    if isinstance(value, bool):
        raise SpecError(f"{where}: expected an integer, got {_short(value)}")
    if isinstance(value, int):
        v = value
    elif isinstance(value, str):
        if len(value) > INT_TEXT_MAX:
            raise SpecError(
                f"{where}: integer text of {len(value)} characters", expected=f"at most {INT_TEXT_MAX} characters"
            )
        s = value.strip().replace("_", "")
        m = re.fullmatch(r"(0[xX][0-9a-fA-F]+|\d+)\s*([KMGT])?(?:i?B)?", s)
        if not m:
            raise SpecError(f"{where}: expected an integer, got {_short(value)}", expected='123, "0x7b" or "16M"')
        v = int(m.group(1), 0) << _SUFFIX.get(m.group(2) or "", 0)
    else:
        raise SpecError(f"{where}: expected an integer, got {_short(value)}", expected='123, "0x7b" or "16M"')
    if not 0 <= v <= INT_MAX:
        raise SpecError(f"{where}: {_short(v)} is out of range", expected="0 .. 2**64")
    return v


def _short(v: Any) -> str:
    """``v`` as the spec writes it, cut to 60 characters (no 5000-digit or megabyte values in errors)."""
    return input_value(v)


#: a fixture name: it becomes a file name and is pasted into kho_fixture.h and chosen.dtsi
NAME_RE = re.compile(r"[A-Za-z0-9_.+-]{1,128}")


def check_name(name: object, where: str) -> str:
    """``name`` if it is a plain fixture name (:data:`NAME_RE`), else :class:`SpecError`."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise SpecError(f"{where}: {name!r} is not a plain name", expected="1-128 of A-Z a-z 0-9 _ . + -")
    return name


def safe_name(text: str, default: str = "fixture") -> str:
    """``text`` made into a plain fixture name (for defaults derived from paths)."""
    s = re.sub(r"[^A-Za-z0-9_.+-]", "_", text)[:128]
    return s if s and NAME_RE.fullmatch(s) else default


# -- files a spec names (``[[blob]] file = ...``) -----------------------------------------

#: largest file a spec may name (bytes)
SPEC_FILE_MAX = 64 << 20


@dataclass(frozen=True)
class SpecFiles:
    """Where a spec's relative file names are looked up: ``base_dir`` (the
    spec's directory); files outside it (absolute, ``..``, symlinks leading
    out) only with ``allow_outside`` (``kho build --allow-outside-files``)."""

    base_dir: Path | None = None
    allow_outside: bool = False
    max_bytes: int = SPEC_FILE_MAX


#: the policy of the spec being loaded (set by ``spec.load_spec``)
SPEC_FILES: ContextVar[SpecFiles | None] = ContextVar("SPEC_FILES", default=None)


def spec_file_path(name: str, where: str, base_dir: Path | None = None) -> Path:
    """The path of a file a spec names, refused unless it is inside the
    spec's directory (or :data:`SPEC_FILES` allows more).  For files that are
    streamed rather than read whole (memfd contents); see :func:`read_spec_file`."""
    pol = SPEC_FILES.get() or SpecFiles()
    base = base_dir if base_dir is not None else pol.base_dir
    fp = Path(name)
    if not fp.is_absolute() and base is not None:
        fp = base / fp
    if not pol.allow_outside:
        if base is None:
            raise SpecError(f"{where}: {name!r}: the spec has no directory to read files from")
        real, top = os.path.realpath(fp), os.path.realpath(base)
        if os.path.commonpath([real, top]) != top:
            raise SpecError(
                f"{where}: {name!r} is outside the spec's directory {base}",
                expected="a file under the spec's directory (or --allow-outside-files)",
            )
    return fp


def read_spec_file(name: str, where: str, base_dir: Path | None = None) -> bytes:
    """The bytes of a file a spec names: a regular file inside the spec's
    directory (unless :data:`SPEC_FILES` allows more), at most ``max_bytes``."""
    pol = SPEC_FILES.get() or SpecFiles()
    fp = spec_file_path(name, where, base_dir)
    return read_regular(fp, f"file of {where}", max_size=pol.max_bytes, error=SpecError)


# -- value types -------------------------------------------------------------------------


class FieldType:
    """How one value is checked and converted; ``name`` is for docs."""

    name = "value"

    def parse(self, value: Any, where: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class IntType(FieldType):
    name = "integer"

    def parse(self, value: Any, where: str) -> int:
        return parse_int(value, where)


class BoolType(FieldType):
    name = "bool"

    def parse(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {_short(value)}")
        return value


class StrType(FieldType):
    """A string; ``coerce`` also takes numbers and writes them as strings."""

    name = "string"

    def __init__(self, *, coerce: bool = False) -> None:
        self.coerce = coerce

    def parse(self, value: Any, where: str) -> str:
        if self.coerce and not isinstance(value, (dict, list)):
            return str(value)
        if not isinstance(value, str):
            raise SpecError(f"{where}: expected a string, got {_short(value)}")
        return value


class AnyType(FieldType):
    """Passed through unchecked (the loader validates it further)."""

    name = "value"

    def parse(self, value: Any, where: str) -> Any:
        return value


class ListOf(FieldType):
    """A list of ``item`` values; ``what`` completes "expected ..." in errors."""

    def __init__(self, item: FieldType, what: str | None = None) -> None:
        self.item = item
        self.what = what or f"a list of {item.name}s"
        self.name = f"list of {item.name}s"

    def parse(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise SpecError(f"{where}: expected {self.what}")
        return [self.item.parse(v, f"{where}[{i}]") for i, v in enumerate(value)]


class Table(FieldType):
    """A nested table validated against ``fields`` (gives a dict)."""

    name = "table"

    def __init__(self, fields: Sequence[SpecField]) -> None:
        self.fields = tuple(fields)

    def parse(self, value: Any, where: str) -> dict:
        return validate(self.fields, value, where)


def _in_space(start: int, size: int, where: str) -> tuple[int, int]:
    if start + size > INT_MAX:
        raise SpecError(f"{where}: {start:#x}+{size:#x} wraps past 2**64", expected="a range inside the 64-bit space")
    return start, size


RANGE_FIELDS: tuple[SpecField, ...]  # defined below (SpecField comes first)


class RangeType(FieldType):
    """``{start|addr, size|end}``, ``[start, size]`` or ``"START:SIZE"`` -> ``(start, size)``."""

    name = "range"

    def __init__(self, keys: Sequence[str] = ("start", "addr", "size", "end")) -> None:
        self.keys = tuple(keys)

    def parse(self, value: Any, where: str) -> tuple[int, int]:
        if isinstance(value, str) and ":" in value:
            a, s = value.split(":", 1)
            return _in_space(parse_int(a, where), parse_int(s, where), where)
        if isinstance(value, list) and len(value) == 2:
            return _in_space(parse_int(value[0], where), parse_int(value[1], where), where)
        d = validate([f for f in RANGE_FIELDS if f.name in self.keys], value, where)
        if (d["start"] is None) == (d.get("addr") is None):
            raise SpecError(f"{where}: give exactly one of start / addr")
        start = d["start"] if d["start"] is not None else d["addr"]
        if (d["size"] is None) == (d["end"] is None):
            raise SpecError(f"{where}: give exactly one of size / end")
        size = d["size"] if d["size"] is not None else d["end"] - start
        if size < 0:
            raise SpecError(f"{where}: end is below start")
        return _in_space(start, size, where)


ANY = AnyType()
INT = IntType()
BOOL = BoolType()
STR = StrType()
RANGE = RangeType()


@dataclass(frozen=True)
class SpecField:
    """One spec key.

    ``default`` is used when the key is absent (copied, so lists are fresh);
    ``None`` with ``default_doc`` means "computed later" (the doc says how).
    ``choices`` (or a callable giving them) restricts the value after
    ``convert`` (e.g. ``aarch64`` -> ``arm64``) ran.
    """

    name: str
    type: FieldType
    default: Any = None
    doc: str = ""
    default_doc: str | None = None
    required: bool = False
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    convert: Callable[[Any], Any] | None = None

    def allowed(self) -> Sequence[Any] | None:
        return self.choices() if callable(self.choices) else self.choices

    def default_text(self) -> str:
        """The README's default column for this field alone."""
        if self.default_doc is not None:
            return self.default_doc
        if self.default is None:
            return ""
        return f"`{toml_literal(self.default)}`"


RANGE_FIELDS = (
    SpecField("start", INT, doc="first byte"),
    SpecField("addr", INT, doc="the same as start"),
    SpecField("size", INT, doc="bytes"),
    SpecField("end", INT, doc="first byte after the range (instead of size)"),
)


def toml_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_literal(x) for x in v) + "]"
    return str(v)


def check_mapping(d: Any, allowed: Sequence[str], where: str) -> dict:
    """``d`` is a mapping whose keys are all in ``allowed``."""
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected a table/mapping, got {input_kind(d)}")
    bad = sorted(set(d) - set(allowed))
    if bad:
        raise SpecError(f"{where}: unknown key(s) {', '.join(bad)}", expected=", ".join(allowed))
    return d


def validate(fields: Sequence[SpecField], d: Any, where: str, *, allowed: Sequence[str] | None = None) -> dict:
    """Check ``d`` against ``fields``; returns ``{name: value}`` for every field,
    defaults filled in (absent fields without a default are ``None``).
    ``allowed`` widens the set of keys that are not "unknown" (keys checked
    elsewhere); they are left out of the result."""
    names = [f.name for f in fields]
    d = check_mapping(d, list(allowed) if allowed is not None else names, where)
    out: dict[str, Any] = {}
    for f in fields:
        fw = f"{where}.{f.name}"
        if f.name not in d:
            if f.required:
                raise SpecError(f"{where}: missing {f.name}")
            out[f.name] = copy.deepcopy(f.default)
            continue
        v = f.type.parse(d[f.name], fw)
        if f.convert is not None:
            v = f.convert(v)
        choices = f.allowed()
        if choices is not None and v not in choices:
            raise SpecError(f"{fw}: unknown {f.name} {v!r}", expected=" or ".join(map(str, choices)))
        out[f.name] = v
    return out


# -- docs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecRow:
    """One README row documenting ``keys`` of a table together."""

    keys: tuple[str, ...]
    label: str
    default: str
    doc: str


@dataclass(frozen=True)
class SpecTable:
    """The fields of one spec table and the README rows that document them.

    Fields no row names get a row of their own (``title`` + the key)."""

    name: str
    fields: tuple[SpecField, ...]
    title: str = ""
    rows: tuple[SpecRow, ...] = ()

    def field(self, name: str) -> SpecField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def doc_rows(self) -> list[tuple[str, str, str]]:
        """``(key, default, meaning)`` rows, in field order (a row where its first key is)."""
        by_first = {r.keys[0]: r for r in self.rows}
        covered = {k for r in self.rows for k in r.keys}
        out = []
        for f in self.fields:
            if f.name in by_first:
                r = by_first[f.name]
                if r.label:  # a row without a label: documented by another table
                    out.append((r.label, r.default, r.doc))
            elif f.name not in covered:
                label = (self.title + " " if self.title else "") + f"`{f.name}`"
                out.append((label, f.default_text(), f.doc))
        return out


def indent(text: str, prefix: str) -> str:
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(True))


def markdown_table(tables: Sequence[SpecTable]) -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for t in tables:
        lines += ["|" + "|".join(f" {c} " if c else " " for c in row) + "|" for row in t.doc_rows()]
    return "\n".join(lines) + "\n"


def text_table(tables: Sequence[SpecTable]) -> str:
    """The same rows as plain text (for docstrings and ``--help``)."""
    out = []
    for t in tables:
        for k, d, m in t.doc_rows():
            k, d, m = (x.replace("`", "") for x in (k, d, m))
            out.append(f"{k}\n    {m}" + (f" (default: {d})" if d else ""))
    return "\n".join(out) + "\n"


__all__ = [
    "parse_int",
    "NAME_RE",
    "INT_MAX",
    "SpecFiles",
    "SPEC_FILES",
    "SPEC_FILE_MAX",
    "read_spec_file",
    "check_name",
    "safe_name",
    "FieldType",
    "AnyType",
    "ANY",
    "IntType",
    "BoolType",
    "StrType",
    "ListOf",
    "Table",
    "RangeType",
    "INT",
    "BOOL",
    "STR",
    "RANGE",
    "RANGE_FIELDS",
    "SpecField",
    "SpecRow",
    "SpecTable",
    "validate",
    "check_mapping",
    "markdown_table",
    "indent",
    "text_table",
    "toml_literal",
]
