"""The toolkit's tests (tests/dbops) and their test app (tests/dbops_testapp) know nothing of this
project: they would run unchanged in a project that installs dbops. How this project uses the
toolkit is tested with the project (tests/accounts, tests/orders, tests/config).

What they may not name, read from the source (nothing imported, nothing run):
- a module of the project's packages or of their tests, or the project's test factories;
- a dotted path into those packages, in a string (``include("config.urls")``), except the
  settings module the whole suite runs under: the toolkit's tests need one, and pytest names it
  (``DJANGO_SETTINGS_MODULE`` in pyproject.toml), never the tests;
- a table, a model label or an app label of the project (``orders_product``, ``accounts.Account``);
- a URL of the project: a path under one of its URL prefixes (``/accounts/``) or a URL name
  (``reverse("orders:list")``).
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib import admin
from django.urls import URLPattern, URLResolver, get_resolver

from tests.helpers import ROOT

TOOLKIT_TESTS = ("tests/dbops", "tests/dbops_testapp")
# The project's packages, and the tests and test data made for them.
PROJECT = ("accounts", "orders", "core", "config")
PROJECT_TESTS = (
    "tests.factories",
    "tests.accounts",
    "tests.orders",
    "tests.core",
    "tests.config",
)
# What the toolkit's tests run under, named by pytest's configuration (not by them).
SUITE_SETTINGS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"][
    "ini_options"
]["DJANGO_SETTINGS_MODULE"]
# Tables (accounts_account), model and app labels (orders.Product, "orders"), as SQL or Python
# spells them.
PROJECT_NAME = re.compile(r"(?<![\w.])(?:accounts|orders|core)(?:[._]\w|\b)")
# A dotted name standing alone (not an option such as --config.file, not a path's tail).
DOTTED = re.compile(r"(?<![\w.\-/])[A-Za-z_][\w.]*")
# Calls whose first argument is a URL name.
URL_NAME_CALLS = {"reverse", "reverse_lazy", "resolve_url", "redirect"}
URL_TAG = re.compile(r"{%\s*url\s+['\"]([^'\"]+)['\"]")


def toolkit_modules() -> Iterator[tuple[str, ast.Module]]:
    for folder in TOOLKIT_TESTS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path))


def module_of(path: str) -> str:
    return ".".join(Path(path).with_suffix("").parts)


def is_project_module(name: str) -> bool:
    return any(name == top or name.startswith(top + ".") for top in (*PROJECT, *PROJECT_TESTS))


def imported(path: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every module an import statement names, relative imports resolved, ``from x import y``
    as both ``x`` and ``x.y`` (y may be a module)."""
    package = module_of(path).rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def strings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every string constant but docstrings (prose may say where the project's tests are)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield node.lineno, node.value


def project_urls() -> tuple[set[str], set[str]]:
    """The project's URL names and path prefixes: everything its root URLconf routes but the
    toolkit's own endpoints and Django's admin."""
    names, prefixes = set(), set()

    def collect(patterns, namespace: str | None) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = ":".join(filter(None, [namespace, pattern.namespace])) or None
                collect(pattern.url_patterns, inner)
            elif isinstance(pattern, URLPattern) and pattern.name:
                names.add(f"{namespace}:{pattern.name}" if namespace else pattern.name)

    for pattern in get_resolver("config.urls").url_patterns:
        if isinstance(pattern, URLResolver) and (
            getattr(pattern.urlconf_name, "__name__", pattern.urlconf_name) == "dbops.urls"
            or pattern.namespace == admin.site.name
        ):
            continue
        if isinstance(pattern, URLPattern) and pattern.lookup_str.startswith("debug_toolbar"):
            continue
        route = str(pattern.pattern).lstrip("^")
        if route:
            prefixes.add("/" + route)
        collect([pattern], None)
    return names, prefixes


def test_the_scan_sees_the_toolkit_tests_and_knows_the_projects_urls():
    """Guards the guard: it reads files, and it knows what to look for."""
    paths = [path for path, _ in toolkit_modules()]
    assert "tests/dbops/test_routing.py" in paths and "tests/dbops_testapp/models.py" in paths
    names, prefixes = project_urls()
    assert {"home", "login"} <= names and any(name.startswith("accounts:") for name in names)
    assert {"/accounts/", "/orders/"} <= prefixes
    assert not {"/health/", "/admin/"} & prefixes
    assert SUITE_SETTINGS == "config.settings.test"


def test_the_toolkits_tests_import_nothing_of_the_project():
    found = [
        f"{path}:{line} imports {name}"
        for path, tree in toolkit_modules()
        for line, name in imported(path, tree)
        if is_project_module(name)
    ]
    assert found == []


def test_the_toolkits_tests_name_no_module_table_or_label_of_the_project():
    found = [
        f"{path}:{line} {value!r}"
        for path, tree in toolkit_modules()
        for line, value in strings(tree)
        if value != SUITE_SETTINGS
        and (
            any(is_project_module(word) for word in DOTTED.findall(value))
            or PROJECT_NAME.search(value)
        )
    ]
    assert found == []


def test_the_toolkits_tests_request_no_url_of_the_project():
    names, prefixes = project_urls()
    found = []
    for path, tree in toolkit_modules():
        for line, value in strings(tree):
            if any(value.startswith(prefix) or f'"{prefix}' in value for prefix in prefixes):
                found.append(f"{path}:{line} requests {value!r}")
            found += [f"{path}:{line} names {name!r}" for name in URL_TAG.findall(value)]
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) in URL_NAME_CALLS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in names
            ):
                found.append(f"{path}:{node.lineno} names {node.args[0].value!r}")
    assert found == []


@pytest.mark.parametrize(
    "source, caught",
    [
        ("from orders.models import Product", "import"),
        ("import accounts.services", "import"),
        ("from tests.factories import user_create", "import"),
        ("from tests import factories", "import"),
        ("from config.database import database_settings", "import"),
        ("include('config.urls')", "string"),
        ("cursor.execute('SELECT 1 FROM orders_product')", "string"),
        ("call_command('backfill_column', 'accounts.Account', 'name')", "string"),
        ("client.get('/accounts/')", "url"),
        ("reverse('orders:order_list')", "url"),
        ("page = '{% url \"home\" %}'", "url"),
    ],
)
def test_the_scan_catches_each_kind_of_reference(tmp_path, monkeypatch, source, caught):
    """Each rule fails on a file that breaks it (a file of its own, in a folder scanned instead)."""
    folder = tmp_path / "tests" / "dbops"
    folder.mkdir(parents=True)
    (folder / "test_bad.py").write_text(source + "\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    monkeypatch.setattr(f"{__name__}.TOOLKIT_TESTS", ("tests/dbops",))
    check = {
        "import": test_the_toolkits_tests_import_nothing_of_the_project,
        "string": test_the_toolkits_tests_name_no_module_table_or_label_of_the_project,
        "url": test_the_toolkits_tests_request_no_url_of_the_project,
    }[caught]
    with pytest.raises(AssertionError, match="test_bad.py:1"):
        check()
