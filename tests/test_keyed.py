"""The one keyed diff walk (kho_formats.keyed) every ``kho diff`` comparison uses."""

from __future__ import annotations

import ast
import doctest
from pathlib import Path

import pytest

from kho_formats import keyed
from kho_formats.keyed import keyed_diff, keyed_pairs, only_change, only_side

PACKAGE = Path(keyed.__file__).resolve().parent


def test_pairs_keep_a_order_then_b_only_and_the_last_of_a_repeated_key() -> None:
    a = [("x", 1), ("y", 2), ("x", 3)]
    b = [("z", 9), ("y", 4)]
    assert list(keyed_pairs(a, b, lambda t: t[0])) == [
        ("x", ("x", 3), None),
        ("y", ("y", 2), ("y", 4)),
        ("z", None, ("z", 9)),
    ]
    assert list(keyed_pairs([], [], lambda t: t)) == []


def test_keyed_diff_entries_and_the_sides() -> None:
    calls = []

    def compare(p: tuple[str, int], q: tuple[str, int]) -> dict[str, int] | None:
        calls.append((p, q))
        return {"a": p[1], "b": q[1]} if p[1] != q[1] else {}

    out = keyed_diff([("s", 1), ("t", 2)], [("t", 2), ("s", 5), ("u", 0)], lambda t: t[0], compare, key_name="token")
    assert out == [
        {"token": "s", "change": "differs", "a": 1, "b": 5},
        {"token": "u", "change": "only-b"},
    ]
    assert len(calls) == 2  # compared only where both sides have the key; an empty result is "the same"
    assert keyed_diff([1], [], lambda x: x, compare) == [{"name": 1, "change": "only-a"}]
    assert only_change(None) == "only-b" and only_change(0) == "only-a"
    assert (only_side("only-a"), only_side("only-b")) == ("A", "B")
    with pytest.raises(ValueError):
        only_side("differs")


def test_the_module_examples_run() -> None:
    tests = [t for t in doctest.DocTestFinder().find(keyed) if t.examples]
    assert tests
    runner = doctest.DocTestRunner()
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0


def test_no_diff_in_the_package_walks_only_a_only_b_itself() -> None:
    """Every ``"only-a"`` / ``"only-b"`` string in the package is in keyed.py: a diff that pairs
    two collections by itself would have to spell them."""
    offenders = []
    for p in sorted(PACKAGE.rglob("*.py")):
        if p.name == "keyed.py":
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in ("only-a", "only-b", "differs"):
                offenders.append(f"{p.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []
