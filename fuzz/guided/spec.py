"""Target ``spec``: the input is spec text, its format chosen by the first byte (TOML, YAML, JSON),
the rest the text.  ``loads_spec`` + ``build`` (the seeds are the shipped specs, many with ``LUO``
blobs: sessions, memfds with sizes, folio lists, contents from ``hex``/``file``/``seed``, FLBs),
then what was built goes down the reading paths (check, JSON, DTS, the LUO decode, digests,
``luo extract``, the ``kho boot`` truth) and is written as a fixture directory.  Files a spec
names are looked up in a scratch directory that holds ``blob.bin``."""

from __future__ import annotations

from fuzz.guided.common import exercise, expected, scratch
from kho_formats.api import Handover
from kho_formats.model.spec import build_spec, loads_spec

FORMATS = ("toml", "yaml", "json")


def _build(text: bytes, fmt: str, base: object) -> Handover:
    sp = loads_spec(text, fmt=fmt, base_dir=base, source="fuzz spec")  # type: ignore[arg-type]
    fx = build_spec(sp)
    return Handover._of_fixture(fx, source="fuzz spec", inputs=[])


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    fmt = FORMATS[data[0] % len(FORMATS)]
    out = scratch()
    (out / "blob.bin").write_bytes(b"raw blob bytes\n" * 4)
    h = expected(lambda: _build(data[1:], fmt, out))
    if h is None:
        return
    exercise(h, out)
    expected(lambda: h.write(out / "fixture"))
