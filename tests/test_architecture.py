"""The layers of the code base, pinned: imports point one way, functions stay readable."""

from __future__ import annotations

import ast

import pytest

from tests.helpers import ROOT

# Each package and the packages of ours it may import (besides itself). Top to bottom:
# config -> accounts, orders -> core -> dbops; devdb (development server) stands apart.
ALLOWED = {
    "accounts": {"core", "dbops"},
    "orders": {"core", "dbops"},
    "core": {"dbops"},
    "dbops": set(),
    "devdb": set(),
}
OURS = {*ALLOWED, "config"}
MAX_FUNCTION_LINES = 60


def _modules(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" not in path.parts:
            yield path, ast.parse(path.read_text(), str(path))


def _imported_packages(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down_the_layers(package):
    wrong = {
        f"{path.relative_to(ROOT)} imports {other}"
        for path, tree in _modules(package)
        for other in _imported_packages(tree) - ALLOWED[package] - {package}
    }
    assert not wrong, sorted(wrong)


def test_production_code_never_imports_the_development_server():
    for package in ("accounts", "orders", "core", "dbops"):
        for path, tree in _modules(package):
            assert "devdb" not in _imported_packages(tree), path
    base = (ROOT / "config/settings/production.py").read_text()
    assert "devdb" not in base and "embedded=False" in base


@pytest.mark.parametrize("package", [*sorted(ALLOWED), "config"])
def test_no_function_is_longer_than_a_screen(package):
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path, tree in _modules(package)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_a_module_that_breaks_the_layers_is_caught(tmp_path):
    tree = ast.parse("from accounts.models import Account\nimport orders.services\n")
    assert _imported_packages(tree) - ALLOWED["core"] == {"accounts", "orders"}
