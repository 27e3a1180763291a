"""The library face: :func:`open` a handover, :func:`build` one from a spec.

One object, :class:`Handover`, stands for one KHO handover, whatever it was
read from: a fixture directory (``kho build``), a capture directory (the
shipped ``fixtures/captures/*``, ``kho capture``), a debugfs ``kho/out`` or
``kho/in`` directory, a root FDT file with memory images (``mem``), a whole
ELF core such as a ``vmcore``, a kdump file or ``/proc/kcore``.  The keyword
arguments of :func:`open` are the reading options of the ``kho`` command
(``--mem``, ``--root-phys``, ``--boot-info``, ``--abi``, ``--page-size``,
``--byte-order``, ``--v1-bitmap``, ``--received``, ``--max-pages``,
``--max-entries``, ``--max-runs``), and every document ``kho --json``
prints is a method's result here:

>>> import kho_formats
>>> h = kho_formats.open("fixtures/v4-4k")
>>> h
<Handover (not parsed) from fixtures/v4-4k>
>>> h.version
'kho-v4'
>>> h
<Handover kho-v4 from fixtures/v4-4k>
>>> h.to_json()["schema"]
'kho-formats/inspect/1'
>>> h.check().ok
True

The files are read and the root FDT found when :func:`open` returns; the
handover is parsed on first use of what needs it (``version``, ``ranges()``,
``clients``, ...), its clients decoded once.  Errors are
:class:`~kho_formats.errors.KhoFormatError` subclasses that name the file,
FDT path or physical address.
"""

from __future__ import annotations

import dataclasses
import heapq
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from .errors import FdtError, KhoFormatError

if TYPE_CHECKING:  # pragma: no cover
    from .findings import Finding
    from .limits import Limits
    from .memory.image import PhysImage
    from .memory.pageset import PageSet
    from .model.clients import ClientReport
    from .model.clients.luo import LuoFile, LuoFlb, LuoProblem, LuoSession, LuoState
    from .model.fixture import Fixture
    from .model.spec.model import Spec
    from .model.state import KhoState, SubBlob
    from .ops.capture import Capture

PathLike = str | os.PathLike[str]


# -- reading --------------------------------------------------------------------------------------


def _limits(limits: Limits | None, max_pages: int | None, max_entries: int | None, max_runs: int | None) -> Limits:
    from .limits import DEFAULT_LIMITS, check_limits

    lim = check_limits(limits, "open")
    given = {k: v for k, v in (("max_pages", max_pages), ("max_entries", max_entries), ("max_runs", max_runs)) if v}
    return dataclasses.replace(lim, **given) if given else (lim if limits is not None else DEFAULT_LIMITS)


def open(
    path: PathLike,
    mem: Sequence[str] = (),
    *,
    root_phys: int | None = None,
    boot_info: PathLike | None = None,
    version: str | None = None,
    page_size: int | None = None,
    byteorder: str | None = None,
    v1_bitmap: str | None = None,
    received: bool | None = None,
    limits: Limits | None = None,
    max_pages: int | None = None,
    max_entries: int | None = None,
    max_runs: int | None = None,
) -> Handover:
    """Read the handover at ``path``: any input ``kho inspect`` takes.

    ``path`` is a fixture or capture directory, a debugfs directory (the one
    holding ``kho/``, ``debugfs/kho/...``, ``out/`` or ``in/``), a root FDT
    file, an ELF core (a ``vmcore``, ``/proc/kcore``) or a kdump file; in the
    last two the root FDT is found in memory.  The keywords are the command's
    reading options:

    ==================  ======================  =================================================
    keyword             ``kho`` flag            meaning
    ==================  ======================  =================================================
    ``mem``             ``--mem`` (repeated)    memory images: ELF core, kdump, bundle directory
                                                or ``RAW@BASE``; they replace a directory's own
                                                ``image.elf`` and are merged
    ``root_phys``       ``--root-phys``         physical address of the root FDT
    ``boot_info``       ``--boot-info``         an arm64 boot DTB, x86 ``setup_data`` /
                                                ``kho_data`` or ``boot_params`` naming it
    ``version``         ``--abi``               read as this ABI version (``kho-v1`` ..)
    ``page_size``       ``--page-size``         the producer's ``PAGE_SIZE``
    ``byteorder``       ``--byte-order``        ``"little"`` or ``"big"``
    ``v1_bitmap``       ``--v1-bitmap``         kho-v1 bitmap size: ``"auto"``, ``"page"``, ``"512"``
    ``received``        ``--received yes|no``   the receiving kernel's view (map released);
                                                None: decided from the input
    ``limits``                                  a :class:`~kho_formats.limits.Limits`
    ``max_pages``       ``--max-pages``         metadata pages read at most
    ``max_entries``     ``--max-entries``       entries expanded at most
    ``max_runs``        ``--max-runs``          preserved runs materialized at most
    ==================  ======================  =================================================

    Unset options (None) take what the input recorded (``handover.json``,
    ``meta.json``), else the defaults (4096, little-endian).

    >>> h = open("fixtures/v1-512-4k")
    >>> h.version, h.state.map_params
    ('kho-v1', {'v1_bitmap_bytes': 512})
    >>> open("fixtures/captures/linux-7.3-x86_64-kho-v4", received=True).received
    True
    >>> open("no/such/dir")
    Traceback (most recent call last):
    ...
    kho_formats.errors.KhoFormatError: no/such/dir: no such file or directory
    """
    from .ops.capture import load_capture

    source = os.fspath(path)
    lim = _limits(limits, max_pages, max_entries, max_runs)
    mem = [os.fspath(m) for m in mem]
    cap = load_capture(path, mem, root_phys=root_phys, boot_info=boot_info)
    return Handover(
        cap,
        source=source,
        inputs=[source, *mem, *([os.fspath(boot_info)] if boot_info is not None else [])],
        options=_Options(version, page_size, byteorder, v1_bitmap, received, lim),
    )


def open_live(
    *,
    kcore: PathLike | None = None,
    debugfs: PathLike | None = None,
    side: str = "out",
    root_phys: int | None = None,
    boot_info: PathLike | None = None,
    **options: Any,
) -> Handover:
    """The running system's handover (as root): debugfs ``kho/<side>`` and
    physical memory through ``kcore`` (default ``/proc/kcore``), as
    ``kho capture`` reads it.  ``options`` are :func:`open`'s reading options
    (``version``, ``page_size``, ...).

    >>> h = open_live(side="in")  # doctest: +SKIP
    >>> h.write("handover/")  # doctest: +SKIP
    """
    from .memory.kcore import KCORE_PATH
    from .ops.live import default_debugfs, live_capture
    from .safeio import read_regular

    binfo = read_regular(boot_info, "boot info", max_size=1 << 20) if boot_info is not None else None
    dbg = debugfs if debugfs is not None else default_debugfs(side)
    core = kcore if kcore is not None else KCORE_PATH
    cap = live_capture(kcore=core, debugfs=dbg, side=side, root_phys=root_phys, boot_info=binfo)
    lim = _limits(
        options.pop("limits", None), *(options.pop(k, None) for k in ("max_pages", "max_entries", "max_runs"))
    )
    opts = _Options(limits=lim, **options)
    live_inputs = [os.fspath(core), os.fspath(dbg), *([os.fspath(boot_info)] if boot_info is not None else [])]
    h = Handover(cap, source=f"live: {os.fspath(core)} + {os.fspath(dbg)}", inputs=live_inputs, options=opts)
    h.live = {
        "side": side,
        "kcore": os.fspath(core),
        "debugfs": os.fspath(dbg),
        "boot_info": cap.sources.get("boot_info"),
    }
    return h


@dataclasses.dataclass(frozen=True)
class _Options:
    """The reading options of :func:`open` (None: what the input recorded)."""

    version: str | None = None
    page_size: int | None = None
    byteorder: str | None = None
    v1_bitmap: str | None = None
    received: bool | None = None
    limits: Limits | None = None


@contextmanager
def _naming_the_root_fdt(cap: Capture, path: str) -> Iterator[None]:
    """A root FDT with a bad magic: say which file it came from, and what it
    looks like instead (an ELF core wants ``mem``)."""
    try:
        yield
    except FdtError as exc:
        if not exc.message.startswith("bad magic") or exc.path != "root FDT":
            raise
        from .abi.elf import ELFMAG
        from .abi.fdt_header import FDT_MAGIC

        src = cap.sources.get("root_fdt", path)
        head = bytes(cap.root_fdt[:4])
        if head == ELFMAG:
            hint = f"{src} is an ELF file (a memory image?): give the root FDT as INPUT and the image with --mem"
        else:
            hint = f"{src} is not a flattened device tree (magic {FDT_MAGIC:#x})"
        raise FdtError(f"{exc.message} ({hint})", path=f"root FDT {src}") from None


# -- the handover ---------------------------------------------------------------------------------


class Handover:
    """One KHO handover: the root FDT, the memory image it points into, and
    everything parsed and decoded from them.

    Made by :func:`open`, :func:`build` and :meth:`convert`; not by hand.

    >>> h = open("fixtures/v4-4k")
    >>> h.version, h.compatible, h.root_fdt_phys
    ('kho-v4', ['kho-v4'], 2013265920)
    >>> [sb.name for sb in h.subblobs]
    ['kho_test', 'memblock', 'kexec-metadata']
    >>> [hex(a) for a in h.ranges()[0]]
    ['0x74000000', '0x7400c000']
    """

    #: for a live capture (:func:`open_live`): ``{side, kcore, debugfs, boot_info}``
    live: dict[str, Any] | None = None

    def __init__(
        self,
        capture: Capture,
        *,
        source: str,
        inputs: Sequence[str] = (),
        options: _Options | None = None,
        state: KhoState | None = None,
        fixture: Fixture | None = None,
        conversion: dict[str, Any] | None = None,
    ) -> None:
        self._capture = capture
        self._source = source
        self._inputs = list(inputs)
        self._options = options or _Options()
        self._fixture = fixture
        self._conversion = conversion
        if state is not None:
            self.__dict__["state"] = state  # the cached_property, already known

    @classmethod
    def _of_fixture(
        cls, fx: Fixture, *, source: str, inputs: Sequence[str], conversion: dict[str, Any] | None = None
    ) -> Handover:
        from .ops.capture import Capture

        st = fx.state
        cap = Capture(
            root_fdt=fx.root_fdt,
            image=fx.image,
            root_fdt_phys=fx.fdt_phys,
            scratch=list(st.scratch),
            page_size=st.page_size,
            byte_order=st.byteorder,
            map_params=dict(st.map_params),
            arch=fx.arch,
            alloc=list(fx.alloc),
            kind="fixture",
            sources={"root_fdt": source},
        )
        return cls(cap, source=source, inputs=inputs, state=st, fixture=fx, conversion=conversion)

    def __repr__(self) -> str:
        v = self.state.version if "state" in self.__dict__ else "(not parsed)"
        return f"<Handover {v} from {self._source}>"

    # -- what it was read from --

    @property
    def source(self) -> str:
        """The input as given to :func:`open` (the name ``kho`` reports print).

        >>> open("fixtures/v4-4k").source
        'fixtures/v4-4k'
        """
        return self._source

    @property
    def capture(self) -> Capture:
        """The raw inputs before parsing (:class:`~kho_formats.ops.capture.Capture`).

        >>> open("fixtures/v4-4k").capture.kind
        'fixture'
        """
        return self._capture

    @property
    def sources(self) -> dict[str, Any]:
        """Which file supplied what: ``root_fdt``, ``images``, ``debugfs``, ``metadata``.

        >>> sorted(open("fixtures/v4-4k").sources)
        ['images', 'metadata', 'root_fdt']
        """
        return self._capture.sources

    @property
    def image(self) -> PhysImage | None:
        """Physical memory (:class:`~kho_formats.memory.image.PhysImage`), None for a root FDT file alone.

        >>> open("fixtures/v4-4k").image.total_bytes
        167936
        """
        return self._capture.image

    @property
    def fixture(self) -> Fixture | None:
        """The built fixture (:class:`~kho_formats.model.fixture.Fixture`: :func:`build`,
        :meth:`convert`), else None.

        >>> build("fixtures/specs/v4-4k.toml").fixture.arch, open("fixtures/v4-4k").fixture
        ('arm64', None)
        """
        return self._fixture

    @property
    def conversion(self) -> dict[str, Any] | None:
        """What :meth:`convert` changed (``kho-formats/convert/1`` without ``outdir``/``files``), else None.

        >>> open("fixtures/v2-4k").convert("kho-v3").conversion["from"]["version"]
        'kho-v2'
        """
        return self._conversion

    # -- the parsed handover --

    @cached_property
    def state(self) -> KhoState:
        """The parsed handover (:class:`~kho_formats.model.state.KhoState`), parsed on first use.

        >>> open("fixtures/v4-4k").state.abi.memory_map
        'radix'
        """
        from .ops.capture import parse_capture

        o = self._options
        cap = self._capture
        if o.received is not None:
            cap.received = o.received
        with _naming_the_root_fdt(cap, self._source):
            return parse_capture(
                cap,
                version=o.version,
                page_size=o.page_size,
                byteorder=o.byteorder,
                v1_bitmap=o.v1_bitmap,
                limits=o.limits,
            )

    @property
    def version(self) -> str:
        """The ABI version read (the root FDT's first ``compatible``: ``kho-v1`` .. ``kho-v4``).

        >>> open("fixtures/v2-4k").version
        'kho-v2'
        """
        return self.state.version

    @property
    def compatible(self) -> list[str]:
        """The root FDT's whole ``compatible`` list.

        >>> open("fixtures/v4-4k").compatible
        ['kho-v4']
        """
        return [self.state.abi.compatible, *self.state.extra_compatible]

    @property
    def page_size(self) -> int:
        """The producer's ``PAGE_SIZE`` in bytes.

        >>> open("fixtures/v4-16k").page_size
        16384
        """
        return self.state.page_size

    @property
    def byteorder(self) -> str:
        """The producer's byte order, ``"little"`` or ``"big"`` (as ``sys.byteorder``).

        >>> open("fixtures/v4-4k").byteorder
        'little'
        """
        return self.state.byteorder

    @property
    def root_fdt(self) -> bytes:
        """The root KHO FDT, whole (a debugfs prefix is completed from memory).

        >>> open("fixtures/v4-4k").root_fdt[:4].hex()
        'd00dfeed'
        """
        return bytes(self._capture.root_fdt)

    @property
    def root_fdt_phys(self) -> int | None:
        """The root FDT's physical address (None when nothing says).

        >>> hex(open("fixtures/v4-4k").root_fdt_phys)
        '0x78000000'
        """
        return self.state.root_fdt_phys

    @property
    def scratch(self) -> list[tuple[int, int]]:
        """The ``kho_scratch`` areas, ``(addr, size)``.

        >>> [hex(a) for a, _ in open("fixtures/v4-4k").scratch]
        ['0x50000000', '0x68000000']
        """
        return list(self.state.scratch)

    @property
    def received(self) -> bool:
        """The handover as its receiving kernel holds it after boot: the memory map
        was released, so the preserved set is not known (``--received``).

        >>> open("fixtures/v4-4k").received
        False
        >>> open("fixtures/captures/linux-7.3-x86_64-luo-v5-small", received=True).preserved
        Traceback (most recent call last):
        ...
        kho_formats.errors.KhoFormatError: fixtures/captures/linux-7.3-x86_64-luo-v5-small: the memory map was not read (the receiving kernel released it) (expected a capture of the sending side)
        """
        return self.state.map_released

    @property
    def notes(self) -> list[str]:
        """What reading did or noticed (prefix completed, overrides, oddities).

        >>> notes = open("fixtures/captures/linux-7.3-x86_64-kho-v4/debugfs").notes
        >>> notes[:2]
        ['no memory image given: the preserved memory map was not read', "sub-blob 'memblock': bytes taken from debugfs sub_fdts/memblock"]
        """
        return list(self.state.notes)

    @property
    def preserved(self) -> PageSet:
        """The preserved memory (:class:`~kho_formats.memory.pageset.PageSet`: runs per order).

        >>> open("fixtures/v4-4k").preserved.counts_by_order()
        {0: 8, 1: 3, 2: 4, 9: 1, 10: 1}
        """
        if not self.state.map_read:
            released = self.state.map_released
            raise KhoFormatError(
                f"{self._source}: the memory map was not read"
                + (" (the receiving kernel released it)" if released else ""),
                expected="a capture of the sending side" if released else "a memory image holding the map (mem=...)",
            )
        return self.state.preserved

    def ranges(self) -> list[tuple[int, int]]:
        """The preserved memory as sorted, coalesced byte ranges ``[(start, end)]``
        across orders (``kho inspect``'s ``preserved.ranges``).

        >>> [(hex(a), hex(b)) for a, b in open("fixtures/v4-4k").ranges()][:2]
        [('0x74000000', '0x7400c000'), ('0x74200000', '0x74403000')]
        """
        return self.preserved.ranges()

    def runs(self) -> list[tuple[int, int, int]]:
        """The preserved runs ``(phys, order, count)``: ``count`` consecutive
        pages of ``PAGE_SIZE << order`` bytes, sorted by ``phys``.

        >>> [(hex(p), o, n) for p, o, n in open("fixtures/v4-4k").runs()][:2]
        [('0x74000000', 2, 3), ('0x74200000', 9, 1)]
        """
        return sorted(self.preserved.iter_run_tuples())

    def pages(self) -> Iterator[tuple[int, int]]:
        """Every preserved page (or higher-order folio) as ``(phys, order)``,
        sorted by ``phys``, one at a time (a large map is not expanded at once).

        >>> [(hex(p), o) for p, o in open("fixtures/v4-4k").pages()][:4]
        [('0x74000000', 2), ('0x74004000', 2), ('0x74008000', 2), ('0x74200000', 9)]
        """
        ps = self.preserved

        def of(order: int) -> Iterator[tuple[int, int]]:
            for p in ps.pages_of_order(order).tolist():
                yield p, order

        return heapq.merge(*(of(o) for o in ps.orders))

    @property
    def subblobs(self) -> list[SubBlob]:
        """The root FDT's sub-nodes, one per client (:class:`~kho_formats.model.state.SubBlob`:
        ``name``, ``phys``, ``size``, ``data``), in the FDT's order.

        >>> [(sb.name, sb.size) for sb in open("fixtures/v4-4k").subblobs]
        [('kho_test', 240), ('memblock', 214), ('kexec-metadata', 73)]
        """
        return list(self.state.subblobs)

    @cached_property
    def clients(self) -> Mapping[str, ClientReport]:
        """Each sub-blob decoded by its client, keyed by sub-node name
        (:class:`~kho_formats.model.clients.ClientReport`: ``kind``, ``decoded``, the
        client's typed result, ``error``); decoded once, a bad client does not
        hide the others.

        >>> c = open("fixtures/v4-4k").clients
        >>> c["kexec-metadata"].decoded.previous_release
        '7.3.4'
        >>> [hex(p) for p, _ in c["kho_test"].decoded.folios][:2]
        ['0x7800a000', '0x78008000']
        """
        from .limits import Budget
        from .model.clients import decode_clients

        return decode_clients(self.state, self.image, budget=Budget(self._options.limits))

    @property
    def luo(self) -> Luo | None:
        """The Live Update state (the ``LUO`` sub-blob and what it points at), or
        None without a ``LUO`` sub-node.  A ``LUO`` blob that did not decode
        raises its error.

        >>> open("fixtures/v4-4k").luo is None
        True
        >>> [s.name for s in open("fixtures/v4-4k-luo").luo.sessions]
        ['vm-a', 'vm-b']
        """
        from .model.clients.luo import NAME, LuoState

        rep = self.clients.get(NAME)
        if rep is None:
            return None
        if rep.error is not None:
            raise rep.error
        if not isinstance(rep.decoded, LuoState):
            return None
        return Luo(rep.decoded, self.image, self.page_size, self._source, inputs=self._inputs)

    # -- operations --

    def check(self, strict: bool = False, target: Any = None) -> Findings:
        """Run every check (``kho check``): the findings, with the verdict.

        ``strict``: warnings fail too (``--strict``). ``target``: also what that
        kernel will do with the handover (``--target`` / ``--target-config``): a
        :class:`~kho_formats.ops.target.TargetKernel`, or a profile name.

        >>> f = open("fixtures/v4-4k").check()
        >>> f.ok, f.errors, [(x.severity, x.code) for x in f]
        (True, 0, [('info', 'csum')])
        """
        from .ops.check import check

        cap = self._capture
        found = check(
            self.state, cap.image, limits=self._options.limits, clients=dict(self.clients),
            root_phys_required=cap.kind == "fixture",
        )  # fmt: skip
        tgt = None
        if target is not None:
            from .ops import target as targets

            tgt = targets.profile(target) if isinstance(target, str) else target
            found += targets.target_findings(self.state, dict(self.clients), tgt, arch=cap.arch)
        return Findings(found, strict=strict, source=self._source, target=tgt)

    def diff(self, other: Handover, *, max_pages: int = 1000) -> Diff:
        """Compare the preserved sets, sub-blobs and LUO state with ``other`` (``kho diff``).

        >>> h = open("fixtures/v4-4k")
        >>> d = h.diff(h.convert("kho-v2"))
        >>> d.identical, d.to_json()["other"]
        (True, {'version': {'a': 'kho-v4', 'b': 'kho-v2'}})
        """
        from .ops.documents import diff_document

        if not isinstance(other, Handover):
            raise TypeError(f"diff: other must be a Handover, not {type(other).__name__}")
        doc = diff_document(
            self.state, other.state, names=(self._source, other._source), images=(self.image, other.image),
            max_pages=max_pages,
        )  # fmt: skip
        return Diff(doc)

    def to_dts(self) -> str:
        """The root FDT as DTS text that ``dtc`` accepts, each 8-byte value's
        native-order u64 in a comment (``kho dts``).

        >>> print(open("fixtures/v4-4k").to_dts().splitlines()[0])
        /dts-v1/;
        """
        from .model.fdt import to_dts

        bo = self._options.byteorder or self._capture.byte_order or "little"
        with _naming_the_root_fdt(self._capture, self._source):
            return to_dts(self._capture.root_fdt, byteorder=bo, where="root FDT")

    def dts_documents(self, sub: bool = True) -> tuple[list[Any], list[dict[str, str]]]:
        """``(documents, skipped)`` of ``kho dts [--sub]``: the root FDT and, with
        ``sub``, every sub-blob that is an FDT, as
        :class:`~kho_formats.ops.documents.DtsDocument`; ``skipped`` says why the
        other sub-blobs are not there.

        >>> docs, skipped = open("fixtures/v4-4k").dts_documents()
        >>> [d.name for d in docs], skipped
        (['root', 'kho_test', 'memblock'], [{'name': 'kexec-metadata', 'reason': 'not an FDT (raw blob)'}])
        """
        from .abi.fdt_header import has_fdt_magic
        from .model.fdt import to_dts
        from .ops.documents import DtsDocument

        docs = [DtsDocument("root", str(self.sources.get("root_fdt", self._source)), None, self.to_dts())]
        skipped: list[dict[str, str]] = []
        if sub:
            st = self.state
            for sb in st.subblobs:
                if sb.data is None:
                    skipped.append({"name": sb.name, "reason": "not in the memory image or debugfs"})
                elif not has_fdt_magic(sb.data):
                    skipped.append({"name": sb.name, "reason": "not an FDT (raw blob)"})
                else:
                    text = to_dts(sb.data, byteorder=st.byteorder, where=f"sub-FDT {sb.name}")
                    docs.append(DtsDocument(sb.name, f"sub-blob {sb.name}", sb.phys, text))
        return docs, skipped

    def to_json(self, max_ranges: int | None = 100_000) -> dict[str, Any]:
        """Everything ``kho inspect --json`` prints (``kho-formats/inspect/1``),
        the same document; ``max_ranges``: preserved ranges listed (None: all).

        >>> j = open("fixtures/v4-4k").to_json()
        >>> j["version"], j["preserved"]["pages"], [s["kind"] for s in j["subblobs"]]
        ('kho-v4', 17, ['kho_test', 'memblock', 'kexec-metadata'])
        """
        from .ops.documents import inspect_document

        return inspect_document(
            self.state, self.image, dict(self.clients), root_fdt=self._capture.root_fdt, sources=self.sources,
            max_ranges=max_ranges,
        )  # fmt: skip

    def write_json(self, out: TextIO, max_ranges: int | None = 100_000) -> None:
        """Write :meth:`to_json`'s document to the text stream ``out``, as
        ``kho inspect --json`` prints it (``json.dumps(doc, indent=2)`` and a
        newline, character for character), holding neither the whole text
        nor one object per folio record: a memfd's folios stay numpy columns
        (:class:`kho_formats.records.Records`) and are written a chunk at a time.

        >>> import io, json
        >>> h = open("fixtures/v4-4k-luo")
        >>> out = io.StringIO()
        >>> h.write_json(out)
        >>> out.getvalue() == json.dumps(h.to_json(), indent=2) + "\\n"
        True
        """
        from .ops.documents import inspect_document
        from .ops.report import write_json
        from .records import lazy_records

        with lazy_records():
            doc = inspect_document(
                self.state, self.image, dict(self.clients), root_fdt=self._capture.root_fdt, sources=self.sources,
                max_ranges=max_ranges,
            )  # fmt: skip
        write_json(doc, out.write)

    def convert(
        self,
        to: str,
        *,
        alloc: Sequence[tuple[int, int]] = (),
        v1_bitmap: str | None = None,
        arch: str | None = None,
        name: str = "converted",
    ) -> Handover:
        """This handover for ABI version ``to`` (``kho convert``): the same preserved
        set and sub-blobs, a new root FDT and memory map, as a fixture
        (:meth:`write` writes it).  ``alloc``: more free ``(start, size)``
        regions for the new map's pages; ``v1_bitmap`` (``"page"``, ``"512"``)
        when ``to`` is ``kho-v1``; ``arch``: the output's ELF machine.

        >>> v4 = open("fixtures/v1-page-4k").convert("kho-v4")
        >>> v4.version, v4.conversion["changes"][0]
        ('kho-v4', 'compatible kho-v1 -> kho-v4')
        >>> v4.preserved == open("fixtures/v1-page-4k").preserved
        True
        """
        from .ops.migrate import convert_capture

        fx, summary = convert_capture(
            self._capture, self.state, to, alloc=alloc, v1_bitmap=v1_bitmap, arch=arch, name=name,
            limits=self._options.limits,
        )  # fmt: skip
        return Handover._of_fixture(fx, source=f"{self._source} as {to}", inputs=self._inputs, conversion=summary)

    def handover_image(self, referenced_only: bool = False) -> PhysImage:
        """The memory image cut down to the handover (``kho capture``): root FDT
        page, memory-map pages, sub-blobs, what clients reference and, unless
        ``referenced_only``, every preserved page's contents (views, no copy).

        >>> open("fixtures/v4-4k").handover_image().total_bytes
        163840
        """
        from .ops.extract import handover_image

        if self.image is None:
            raise KhoFormatError(f"{self._source}: no memory image was loaded", expected="a memory dump or /proc/kcore")
        return handover_image(self.image, self.state, dict(self.clients), referenced_only=referenced_only)

    def write(
        self,
        outdir: PathLike,
        *,
        force: bool = False,
        referenced_only: bool = False,
        image: PhysImage | None = None,
        source: str | None = None,
        meta: dict[str, Any] | None = None,
        c_header: bool | None = None,
        image_format: str = "elf",
        notes: list[str] | None = None,
    ) -> list[str]:
        """Write the handover into the directory ``outdir``; returns the file names written.

        A built or converted handover is written as a fixture directory (the
        files ``kho build`` writes; ``force``: into a non-empty directory);
        one that was read is written as a compact capture directory
        (``root.dtb``, ``image.elf`` with :meth:`handover_image`, or ``image``
        when given, and ``meta.json``, as ``kho capture`` writes it; ``source``
        is its ``source`` key, default :attr:`source`, and ``meta`` adds keys).  Either reads back with :func:`open`.
        For a fixture, ``c_header`` (``--[no-]c-header``: None writes ``kho_fixture.h`` only for small
        images, adding a note to ``notes`` when it skips it) and ``image_format`` (``elf``, ``kdump``,
        ``kdump-flat``) choose the files.

        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> open("fixtures/captures/linux-7.3-x86_64-kho-v4").write(out)
        ['root.dtb', 'image.elf', 'meta.json']
        >>> open(out).check().ok
        True
        """
        if self._fixture is not None:
            from .model.fixture import write_fixture

            return write_fixture(
                self._fixture, outdir, force=force, inputs=self._inputs, with_c_header=c_header,
                image_format=image_format, notes=notes,
            )  # fmt: skip
        from .ops.extract import write_capture

        if force:
            raise KhoFormatError(f"{outdir}: a capture directory is written new", expected="a new or empty directory")
        keep = image if image is not None else self.handover_image(referenced_only)
        return write_capture(
            outdir, self._capture, self.state, keep, referenced_only=referenced_only,
            source=self._source if source is None else source, extra=meta, inputs=self._inputs,
        )  # fmt: skip


# -- results --------------------------------------------------------------------------------------


class Findings(list["Finding"]):
    """What :meth:`Handover.check` found: a list of
    :class:`~kho_formats.findings.Finding` (``severity``, ``code``, ``message``,
    ``phys``, ``path``), and the verdict.

    >>> f = open("fixtures/v4-4k").check(strict=True)
    >>> f.ok, f.strict, f.to_json()["schema"]
    (True, True, 'kho-formats/check/1')
    """

    def __init__(
        self, findings: Sequence[Finding] = (), *, strict: bool = False, source: str = "", target: Any = None
    ) -> None:
        super().__init__(findings)
        #: the :class:`~kho_formats.ops.target.TargetKernel` checked against, or None
        self.target = target
        #: warnings fail too
        self.strict = strict
        #: the input's name, as reports print it
        self.source = source

    @property
    def errors(self) -> int:
        """How many findings are errors.

        >>> open("fixtures/v4-4k").check().errors
        0
        """
        from .findings import ERROR

        return sum(f.severity == ERROR for f in self)

    @property
    def warnings(self) -> int:
        """How many findings are warnings.

        >>> open("fixtures/v4-4k").check().warnings
        0
        """
        from .findings import WARNING

        return sum(f.severity == WARNING for f in self)

    @property
    def ok(self) -> bool:
        """No errors (with ``strict``, no warnings either): ``kho check`` exits 0.

        >>> open("fixtures/v4-4k").check().ok
        True
        """
        return self.errors == 0 and not (self.strict and self.warnings)

    def to_json(self) -> dict[str, Any]:
        """``kho check --json`` (``kho-formats/check/1``).

        >>> open("fixtures/v4-4k").check().to_json()["findings"][0]["code"]
        'csum'
        """
        from .ops.documents import check_document

        doc = check_document(self, source=self.source, strict=self.strict)
        return doc | ({"target": self.target.to_json()} if self.target is not None else {})


class Diff:
    """What :meth:`Handover.diff` found (``kho diff``).

    >>> d = open("fixtures/v4-4k").diff(open("fixtures/v4-16k"))
    >>> d.identical, d.preserved_identical, sorted(d.other)
    (False, False, ['page_size', 'scratch'])
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self._doc = document

    @property
    def identical(self) -> bool:
        """Same preserved set, sub-blobs and LUO state (``kho diff`` exits 0).

        >>> open("fixtures/v4-4k").diff(open("fixtures/v4-4k")).identical
        True
        """
        return bool(self._doc["identical"])

    @property
    def preserved_identical(self) -> bool | None:
        """Same preserved set; None when a memory map was not read.

        >>> open("fixtures/v4-4k").diff(open("fixtures/v4-4k/root.dtb")).preserved_identical is None
        True
        """
        v = self._doc["preserved_identical"]
        return None if v is None else bool(v)

    @property
    def subblobs(self) -> list[dict[str, Any]]:
        """Sub-blob changes: ``{name, change: only-a|only-b|differs, fields, a, b}``.

        >>> [(s["name"], s["fields"]) for s in open("fixtures/v4-4k").diff(open("fixtures/v4-16k")).subblobs][1]
        ('memblock', ['phys'])
        """
        return list(self._doc["subblobs"])

    @property
    def other(self) -> dict[str, Any]:
        """Version, page size, byte order, scratch when they differ (``{a, b}``; not compared).

        >>> open("fixtures/v4-4k").diff(open("fixtures/v4-16k")).other["page_size"]
        {'a': 4096, 'b': 16384}
        """
        return dict(self._doc["other"])

    @property
    def luo(self) -> dict[str, Any] | None:
        """The Live Update state compared, None when neither side has ``LUO``.

        >>> open("fixtures/v4-4k").diff(open("fixtures/v4-4k")).luo is None
        True
        """
        return self._doc["luo"]

    def to_json(self) -> dict[str, Any]:
        """``kho diff --json`` (``kho-formats/diff/2``).

        >>> open("fixtures/v4-4k").diff(open("fixtures/v4-4k")).to_json()["schema"]
        'kho-formats/diff/2'
        """
        return self._doc


class Luo:
    """The Live Update Orchestrator state of a handover (``luo_ser`` and what it
    points at): sessions, their files, the FLBs, and the files' contents.

    >>> luo = open("fixtures/captures/linux-7.3-x86_64-luo-v5-small").luo
    >>> luo.compatible, luo.liveupdate_num, [s.name for s in luo.sessions]
    ('luo-v5', 1, ['vm-a'])
    """

    def __init__(
        self, state: LuoState, image: PhysImage | None, page_size: int, source: str = "", *, inputs: Sequence[str] = ()
    ) -> None:
        self._st = state
        self._inputs = list(inputs)  # the output guard refuses writing over, into or around one
        self._image = image
        self._page_size = page_size
        self._source = source

    def __repr__(self) -> str:
        return f"<Luo {self._st.compatible}: {len(self._st.sessions)} sessions>"

    @property
    def state(self) -> LuoState:
        """The decoded state (:class:`~kho_formats.model.clients.luo.LuoState`).

        >>> hex(open("fixtures/v4-4k-luo").luo.state.phys)
        '0x2001000'
        """
        return self._st

    @property
    def compatible(self) -> str:
        """``luo_ser``'s compatible.

        >>> open("fixtures/v4-4k-luo").luo.compatible
        'luo-v5'
        """
        return self._st.compatible

    @property
    def liveupdate_num(self) -> int:
        """``luo_ser``'s ``liveupdate_num``: how many live updates the state has been through.

        >>> open("fixtures/v4-4k-luo").luo.liveupdate_num
        1
        """
        return int(self._st.ser.liveupdate_num)

    @property
    def serialized(self) -> bool:
        """LUO wrote its sessions (taken after ``liveupdate_reboot()``).

        >>> open("fixtures/v4-4k-luo").luo.serialized
        True
        """
        return self._st.serialized

    @property
    def sessions(self) -> list[LuoSession]:
        """The sessions in the kernel's order (``name``, ``files``).

        >>> [(s.name, len(s.files)) for s in open("fixtures/v4-4k-luo").luo.sessions]
        [('vm-a', 67), ('vm-b', 1)]
        """
        return list(self._st.sessions)

    @property
    def flbs(self) -> list[LuoFlb]:
        """The file-lifecycle-bound objects (``name``, ``ser.data``, ``ser.count``).

        >>> [f.ser.count for f in open("fixtures/captures/linux-7.3-x86_64-luo-v5-small").luo.flbs]
        [3, 3, 3]
        """
        return list(self._st.flbs)

    @property
    def problems(self) -> list[LuoProblem]:
        """What decoding found wrong (each also a ``kho check`` finding).

        >>> open("fixtures/captures/linux-7.3-x86_64-luo-v5-small").luo.problems
        []
        """
        return list(self._st.problems)

    def session(self, name: str) -> LuoSession:
        """The session called ``name`` (``KeyError`` when there is none).

        >>> luo = open("fixtures/captures/linux-7.3-x86_64-luo-v5-small").luo
        >>> [hex(f.token) for f in luo.session("vm-a").files]
        ['0x0', '0x1001', '0xffffffffffffffff']
        """
        for s in self._st.sessions:
            if s.name == name:
                return s
        raise KeyError(name)

    def files(self) -> Iterator[tuple[LuoSession, LuoFile]]:
        """Every ``(session, file)``, in the kernel's order.

        >>> luo = open("fixtures/captures/linux-7.3-x86_64-luo-v5-small").luo
        >>> [(s.name, f.compatible) for s, f in luo.files()][0]
        ('vm-a', 'memfd-v2')
        """
        return self._st.files()

    def size(self, file: LuoFile) -> int | None:
        """The file's contents size (a memfd's ``size``), None when its handler
        has none or it did not decode.

        >>> luo = open("fixtures/captures/linux-7.3-x86_64-luo-v5-small").luo
        >>> [luo.size(f) for f in luo.session("vm-a").files]
        [0, 12388, 65536]
        """
        return file.handler.content_size(file.decoded) if file.decoded is not None else None

    def contents(self, file: LuoFile, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The file's contents as ``kho luo extract`` writes them (exactly
        :meth:`size` bytes, zeros where no folio is), streamed from the memory
        image in pieces of at most ``chunk`` bytes.

        >>> luo = open("fixtures/captures/linux-7.3-x86_64-luo-v5-small").luo
        >>> f = luo.session("vm-a").files[1]
        >>> sum(len(piece) for piece in luo.contents(f))
        12388
        """
        size = self.size(file)
        if size is None:
            raise KhoFormatError(
                f"{self._source}: LUO file {file.token:#x} ({file.compatible}) has no contents to read"
                + (f": {file.error}" if file.error is not None else ""),
                phys=file.entry_phys,
                expected="a memfd-v2 file that decoded",
            )
        if self._image is None:
            raise KhoFormatError(f"{self._source}: no memory image", expected="mem=[IMAGE] or a capture with image.elf")
        return _contents(file.handler.contents(file.decoded, self._image, self._page_size), size, max(1, chunk))

    def open(self, file: LuoFile) -> BinaryIO:
        """The file's contents as a binary file object (read-only, not seekable),
        read from the memory image as it is read.

        >>> luo = open("fixtures/captures/linux-7.3-x86_64-luo-v5-small").luo
        >>> with luo.open(luo.session("vm-a").files[2]) as fh:
        ...     len(fh.read(4096)), len(fh.read())
        (4096, 61440)
        """
        raw = _ChunkReader(self.contents(file))
        return io.BufferedReader(raw)

    def digest(self, file: LuoFile) -> str | None:
        """SHA-256 of the file's contents (hex), as ``kho diff`` compares them.

        >>> luo = open("fixtures/captures/linux-7.3-x86_64-luo-v5-small").luo
        >>> luo.digest(luo.session("vm-a").files[1])[:16]
        '8e447193f23b78ab'
        """
        from .model.clients.luo import content_digest

        if self._image is None:
            return None
        return content_digest(file, self._image, self._page_size)

    def extract(self, outdir: PathLike, *, force: bool = False) -> dict[str, Any]:
        """Write every file's contents under ``outdir`` (``kho luo extract``);
        returns the index (``kho-formats/luo-extract/1``, also ``index.json``).

        >>> import tempfile
        >>> luo = open("fixtures/captures/linux-7.3-x86_64-luo-v5-small").luo
        >>> index = luo.extract(tempfile.mkdtemp())
        >>> index["files_written"], index["sessions"][0]["files"][1]["file"]
        (3, 'vm-a/0000000000001001.bin')
        """
        from .ops.luo_extract import extract

        if self._image is None:
            raise KhoFormatError(f"{self._source}: no memory image", expected="--mem IMAGE or a capture with image.elf")
        return extract(
            self._st, self._image, outdir, page_size=self._page_size, force=force, source=self._source,
            inputs=self._inputs,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The ``luo`` key of ``kho inspect --json``.

        >>> hex(open("fixtures/captures/linux-7.3-x86_64-luo-v5-small").luo.to_json()["sessions_pa"])
        '0x3177000'
        """
        return self._st.report_json()


def _contents(pieces: Iterator[tuple[int, memoryview]], size: int, chunk: int) -> Iterator[bytes]:
    """``(offset, bytes)`` pieces in rising order as one stream of exactly
    ``size`` bytes: gaps are zeros, overlaps (hostile folio lists) skipped."""
    at = 0
    zeros = bytes(min(chunk, 1 << 20))

    def pad(n: int) -> Iterator[bytes]:
        while n > 0:
            k = min(n, len(zeros))
            yield zeros[:k]
            n -= k

    for off, piece in pieces:
        if off + len(piece) <= at or at >= size:
            continue
        if off > at:
            yield from pad(off - at)
            at = off
        view = memoryview(piece)[at - off : size - off]
        for a in range(0, len(view), chunk):
            yield bytes(view[a : a + chunk])
        at += len(view)
    yield from pad(size - at)


class _ChunkReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._it = chunks
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            nxt = next(self._it, None)
            if nxt is None:
                return 0
            self._buf = memoryview(nxt)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


# -- building ---------------------------------------------------------------------------------------


def load_spec(spec: PathLike | Mapping[str, Any] | Spec, *, allow_outside_files: bool = False) -> Spec:
    """A fixture spec (:class:`~kho_formats.model.spec.model.Spec`) from a ``.toml`` /
    ``.yaml`` / ``.json`` file or a mapping with the same keys (README "Spec
    format"); a :class:`Spec` is returned as is.  Files a spec names must lie
    under its directory unless ``allow_outside_files``.

    >>> sp = load_spec({"version": "kho-v3", "preserve": [{"phys": "0x74000000", "order": 2}]})
    >>> sp.version, sp.page_size, sp.name
    ('kho-v3', 4096, 'fixture')
    >>> load_spec({"version": "kho-v9"})
    Traceback (most recent call last):
    ...
    kho_formats.errors.SpecError: spec.version: unknown version 'kho-v9' (expected kho-v1 or kho-v2 or kho-v3 or kho-v4)
    """
    from .model.spec import load_spec as load_file
    from .model.spec.load import spec_from_dict
    from .model.spec.model import Spec

    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, Mapping):
        return spec_from_dict(dict(spec))
    return load_file(spec, allow_outside_files=allow_outside_files)


def build(
    spec: PathLike | Mapping[str, Any] | Spec,
    *,
    version: str | None = None,
    page_size: int | None = None,
    byteorder: str | None = None,
    name: str | None = None,
    arch: str | None = None,
    allow_outside_files: bool = False,
) -> Handover:
    """Build the handover a spec describes (``kho build``); :meth:`Handover.write`
    writes the fixture directory.  ``version``, ``page_size``, ``byteorder`` and
    ``name`` override the spec's (``--abi``, ``--page-size``, ``--byte-order``, ``--name``);
    ``arch`` (``--arch``) places what the spec does not place itself where that arch's kernel wants it.

    >>> h = build({"version": "kho-v4", "preserve": [{"start": "0x74000000", "size": "1M"}]})
    >>> h.version, [(hex(a), hex(b)) for a, b in h.ranges()]  # the root FDT page is preserved too
    ('kho-v4', [('0x70000000', '0x70001000'), ('0x74000000', '0x74100000')])
    >>> build("fixtures/specs/v4-16k.toml", page_size=65536).page_size
    65536
    """
    from .model.spec import build_spec
    from .model.specfields import check_name

    sp = dataclasses.replace(load_spec(spec, allow_outside_files=allow_outside_files))
    if version:
        sp.version = version
    if page_size:
        sp.page_size = page_size
    if byteorder:
        sp.byte_order = byteorder
    if arch is not None:
        sp.arch = arch
    if name is not None:
        sp.name = check_name(name, "name")
    fx = build_spec(sp)
    # the spec file (and a fixture is never written over it)
    inputs = [os.fspath(spec)] if isinstance(spec, (str, os.PathLike)) else [sp.source] if sp.source else []
    return Handover._of_fixture(fx, source=inputs[0] if inputs else f"spec {fx.name}", inputs=inputs)


__all__ = ["open", "open_live", "build", "load_spec", "Handover", "Luo", "Findings", "Diff"]
