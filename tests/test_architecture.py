"""The layers of the code base, pinned: imports point one way, functions stay readable."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import django.contrib.admin
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


# -- dbops knows no project -------------------------------------------------------------------------
# The toolkit installs into projects that are not this one (tests/toolkit_smoke/run.py proves it):
# it must name nothing of this project, in code, messages, comments or templates. What this
# project has that dbops must not name is read from the project itself, so a new environment
# variable, make target, template or app is covered as soon as it exists.
PROJECT_DIRECTORIES = ("accounts", "orders", "core", "config", "devdb", "bench")
TEMPLATE_TAGS = re.compile(r"{%\s*(?:extends|include)\s+[\"']([^\"']+)[\"']")
# Names this project uses that belong to a library dbops itself depends on: naming them is naming
# the library, not this project. Each with where the library documents it.
LIBRARY_NAMES = {
    # prometheus_client's multi-process mode reads it (prometheus_client docs, "Multiprocess
    # Mode"); dbops.metrics reads it to know whether to add up the workers' files.
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client",
}
# What django.contrib.admin ships: an admin page of dbops may extend these (the admin renders
# them in any project that has the admin); anything else outside dbops/ is a project's.
ADMIN_TEMPLATES = Path(django.contrib.admin.__file__).parent / "templates"


def _environment_variables() -> set[str]:
    """Every variable this project's settings and development server read."""
    names = set()
    for path in [*(ROOT / "config").rglob("*.py"), *(ROOT / "devdb").rglob("*.py")]:
        text = path.read_text()
        names.update(re.findall(r"\benv\.\w+\(\s*\"([A-Z][A-Z0-9_]*)\"", text))
        names.update(re.findall(r"environ(?:\.get\(|\[)\s*\"([A-Z][A-Z0-9_]*)\"", text))
        names.update(re.findall(r"^([A-Z][A-Z0-9_]*_VARIABLE) = \"([A-Z0-9_]+)\"", text, re.M))
    return {name if isinstance(name, str) else name[1] for name in names}


def _project_vocabulary() -> dict[str, re.Pattern]:
    from dbops.conf import DEFAULTS

    variables = sorted(_environment_variables() - set(DEFAULTS) - set(LIBRARY_NAMES))
    targets = sorted(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.M))
    templates = sorted(
        str(path.relative_to(ROOT / "templates"))
        for path in (ROOT / "templates").rglob("*.html")
        if path.parts[len((ROOT / "templates").parts)] != "dbops"  # its overrides of dbops's own
    )
    apps = sorted({"axes", "csp", "debug_toolbar", "zeal", *ALLOWED} - {"dbops"})
    # Django names a table <app_label>_<model>: this project's apps' and third-party apps' tables.
    tables = sorted(
        {*apps, *(p.parent.name for p in ROOT.glob("*/models.py"))} - {"dbops", "devdb"}
    )
    return {
        "environment variable": re.compile(rf"\b({'|'.join(variables)})\b"),
        "make target": re.compile(rf"\bmake ({'|'.join(targets)})\b"),
        "template": re.compile(rf"[\"'/]({'|'.join(map(re.escape, templates))})[\"']"),
        "path or module": re.compile(
            rf"(?<![\w./])({'|'.join(sorted({*PROJECT_DIRECTORIES, *apps}))})[./][A-Za-z_]"
        ),
        "app label": re.compile(rf"[\"']({'|'.join(apps)})[\"']"),
        "table": re.compile(rf"(?<![\w.])(?:{'|'.join(tables)})_[a-z][a-z0-9_]*"),
        "document": re.compile(r"\b(README|Makefile)\b|\.ci/"),
    }


def project_names_in(text: str) -> list[str]:
    """What of this project ``text`` names: '<kind> <name>' for each."""
    return [
        f"{kind} {match.group(0).strip()}"
        for kind, pattern in _project_vocabulary().items()
        for match in pattern.finditer(text)
    ]


def test_dbops_names_nothing_of_this_project():
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "dbops").rglob("*"))
        if path.suffix in (".py", ".html", ".txt") and "__pycache__" not in path.parts
        for name in project_names_in(path.read_text())
    ]
    assert not found, found


def test_dbops_templates_extend_and_include_only_dbops_own():
    outside = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "dbops" / "templates").rglob("*.html"))
        for name in TEMPLATE_TAGS.findall(path.read_text())
        if not name.startswith("dbops/") and not (ADMIN_TEMPLATES / name).is_file()
    ]
    assert not outside, outside


def test_a_module_that_names_this_project_is_caught():
    text = (
        'raise CommandError("set DB_PGBOUNCER=false, then make test")\n'
        '{% extends "base.html" %}\n'
        "# see accounts/services.py and orders.Customer\n"
        'PRIMARY_ONLY_APPS = ("axes",)\n'
        "# README: Behind PgBouncer\n"
        'render(request, "dbops/503.html")  # dbops\'s own: fine\n'
        'DBOPS["WEB_CONCURRENCY"]  # a documented setting: fine\n'
        "# SELECT sum(amount) FROM accounts_ledgerentry\n"
        "# set PROMETHEUS_MULTIPROC_DIR (prometheus_client's own): fine\n"
    )
    assert project_names_in(text) == [
        "environment variable DB_PGBOUNCER",
        "make target make test",
        'template "base.html"',
        "path or module accounts/s",
        "path or module orders.C",
        'app label "axes"',
        "table accounts_ledgerentry",
        "document README",
    ]


def test_templates_the_admin_ships_may_be_extended_and_no_other():
    allowed = [
        n
        for n in ("admin/change_form.html", "base.html", "orders/list.html")
        if (ADMIN_TEMPLATES / n).is_file()
    ]
    assert allowed == ["admin/change_form.html"]


@pytest.mark.parametrize("name", sorted(LIBRARY_NAMES))
def test_a_name_allowed_as_a_librarys_is_in_that_librarys_code(name):
    library = Path(__import__(LIBRARY_NAMES[name]).__file__).parent
    assert any(name in path.read_text() for path in library.rglob("*.py")), (name, library)
