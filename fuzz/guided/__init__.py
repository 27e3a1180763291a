"""Coverage-guided fuzz targets (atheris: libFuzzer for Python, as OSS-Fuzz runs it).

One module per target, each with a ``TestOneInput(data: bytes)`` that feeds the
bytes to the library.  A :class:`~kho_formats.errors.KhoFormatError` is the
expected outcome of a malformed input; anything else that escapes (and a numpy
warning, which is raised as an error here) crashes the fuzzer:

==========  =============================================================================
``fdt``     the bytes are a root FDT: ``parse_fdt``, ``to_dts``, ``state.parse`` over the
            ``v4-4k`` fixture's image (every version's parser, by ``compatible``)
``memmap``  the bytes are a handover (:mod:`.container`: parse options, root FDT and
            memory pages): ``state.parse`` (radix tree, v1 chunk list), ``decode_clients``,
            ``check``, the LUO path when there is one
``kdump``   the bytes are a kdump file (plain or flattened): ``load_kdump``, page reads,
            the root-FDT search and parse ``kho inspect DUMP`` does
``elf``     the bytes are an ELF core: ``PhysImage.from_elf``, ``KcoreFile`` and the
            same inspect path
``spec``    the bytes are spec text (TOML, YAML or JSON by the first byte), many with
            ``LUO`` blobs: ``loads_spec`` + ``build``, then the LUO paths on what it built
``luo``     structure-aware (``atheris.FuzzedDataProvider``): a small LUO handover of
            sessions, file blocks, ``memfd_luo_ser``, folio arrays and FLBs whose fields are
            set from the input, then decode, ``check``, ``luo extract`` into a temporary
            directory, ``diff`` against the untouched handover and the ``kho boot`` digests
==========  =============================================================================

Run one (see docs/fuzzing.md)::

    python -m fuzz.guided luo fuzz/corpus/luo -timeout=5 -rss_limit_mb=1024 -max_total_time=300
    python -m fuzz.guided luo --replay fuzz/corpus/luo     # every file once, no atheris needed
"""

from __future__ import annotations

TARGETS = ("fdt", "memmap", "kdump", "elf", "spec", "luo")

__all__ = ["TARGETS"]
