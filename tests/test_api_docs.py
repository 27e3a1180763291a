"""The library face's documentation: the API reference builds (pdoc, warnings
are errors), every cross-reference in its docstrings resolves, every public
name has a docstring with an example, and the examples (docstrings and
docs/library.md) run."""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
import warnings
from pathlib import Path

import pytest

import kho_formats
from kho_formats import api

ROOT = Path(__file__).resolve().parent.parent
#: the modules of the API reference
REFERENCE = ("kho_formats", "kho_formats.api", "kho_formats.ops.documents", "kho_formats.errors")
#: the classes of the face whose public members are documented with examples
FACE_CLASSES = (api.Handover, api.Luo, api.Findings, api.Diff)

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`([^`]+)`")


def test_pdoc_builds_the_reference_without_warnings(tmp_path):
    import pdoc  # the test extra: pip install '.[test]'
    import pdoc.render

    pdoc.render.configure(docformat="restructuredtext")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pdoc warning (unparsable annotation, failed import, ...) fails
        pdoc.pdoc(*REFERENCE, output_directory=tmp_path)
    page = (tmp_path / "kho_formats" / "api.html").read_text()
    for name in ("Handover", "to_json", "convert", "Luo", "contents"):
        assert f'id="{name}"' in page or f'id="Handover.{name}"' in page or f'id="Luo.{name}"' in page, name
    assert (tmp_path / "kho_formats.html").is_file() and (tmp_path / "kho_formats" / "ops" / "documents.html").is_file()


def _docstrings(mod):
    """``(where, docstring, namespaces)`` for a module, its functions, classes and their members."""
    yield mod.__name__, mod.__doc__ or "", [vars(mod)]
    for name, obj in vars(mod).items():
        if getattr(obj, "__module__", None) != mod.__name__ or name.startswith("__"):
            continue
        if inspect.isclass(obj):
            yield f"{mod.__name__}.{name}", obj.__doc__ or "", [vars(obj), vars(mod)]
            for mname, member in vars(obj).items():
                doc = getattr(member, "__doc__", None) if not isinstance(member, str) else None
                if doc and not mname.startswith("__"):
                    yield f"{mod.__name__}.{name}.{mname}", doc, [vars(obj), vars(mod)]
        elif inspect.isfunction(obj):
            yield f"{mod.__name__}.{name}", obj.__doc__ or "", [vars(mod)]


def _resolves(target: str, namespaces) -> bool:
    target = target.lstrip("~").strip()
    if "<" in target:  # :meth:`title <target>`
        target = target.split("<", 1)[1].rstrip(">").strip()
    target = target.removesuffix("()")
    head, *rest = target.split(".")
    for ns in namespaces:  # relative to the module / class the docstring is in
        if head in ns:
            obj = ns[head]
            try:
                for part in rest:
                    obj = getattr(obj, part)
                return True
            except AttributeError:
                pass
    parts = target.split(".")
    for i in range(len(parts), 0, -1):  # absolute: the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for part in parts[i:]:
                obj = getattr(obj, part)
            return True
        except AttributeError:
            return False
    return False


@pytest.mark.parametrize("module", REFERENCE)
def test_every_docstring_reference_resolves(module):
    mod = importlib.import_module(module)
    broken = []
    for where, doc, namespaces in _docstrings(mod):
        for target in _ROLE.findall(doc):
            if not _resolves(target, namespaces):
                broken.append(f"{where}: {target}")
    assert not broken, "docstring references that name nothing:\n" + "\n".join(broken)


def test_the_reference_check_catches_a_broken_reference():
    assert _resolves("~kho_formats.ops.capture.Capture", [])
    assert not _resolves("~kho_formats.ops.capture.NoSuchThing", [])
    assert not _resolves("kho_formats.no_such_module.Thing", [])
    assert _resolves("convert", [vars(api.Handover)])


def _public_members(cls):
    for name, member in vars(cls).items():
        if not name.startswith("_") and (
            callable(member) or isinstance(member, (property,)) or hasattr(member, "func")
        ):
            yield name, member


def test_every_public_name_has_a_docstring_with_an_example():
    missing = []
    for name in kho_formats.__all__:
        if name == "__version__":
            continue
        obj = getattr(kho_formats, name)
        if ">>>" not in (obj.__doc__ or ""):
            missing.append(f"kho_formats.{name}")
    for name in api.__all__:
        obj = getattr(api, name)
        if ">>>" not in (getattr(obj, "__doc__", "") or ""):
            missing.append(f"kho_formats.api.{name}")
    for cls in FACE_CLASSES:
        for name, member in _public_members(cls):
            doc = member.__doc__ or ""
            if ">>>" not in doc:
                missing.append(f"{cls.__name__}.{name}")
    assert not missing, "public names without a docstring example: " + ", ".join(missing)


def _run_doctests(test: doctest.DocTest) -> doctest.TestResults:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("module", ["kho_formats", "kho_formats.api", "kho_formats.errors"])
def test_docstring_examples_run(module, monkeypatch):
    monkeypatch.chdir(ROOT)  # the examples name the shipped fixtures relative to the repository
    mod = importlib.import_module(module)
    tests = [t for t in doctest.DocTestFinder().find(mod) if t.examples]
    assert tests, f"{module} has no examples"
    failed = sum(_run_doctests(t).failed for t in tests)
    assert failed == 0, f"{failed} docstring examples of {module} failed (output above)"


def test_library_tutorial_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    text = (ROOT / "docs" / "library.md").read_text()
    test = doctest.DocTestParser().get_doctest(text, {}, "docs/library.md", str(ROOT / "docs" / "library.md"), 0)
    assert len(test.examples) > 30
    res = _run_doctests(test)
    assert res.failed == 0, f"{res.failed} examples of docs/library.md failed (output above)"


def test_readme_links_the_tutorial():
    assert "docs/library.md" in (ROOT / "README.md").read_text()
