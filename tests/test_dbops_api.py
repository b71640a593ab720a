"""dbops's declared public API: every name of ``__all__`` imports, lazily, and docs/dbops/api.md
lists exactly ``__all__``."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
import tomllib

import pytest

import dbops
from tests.helpers import ROOT

API_ROW = re.compile(r"^\| `([A-Za-z_][A-Za-z0-9_]*)` \|", re.M)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)


def documented_names() -> list[str]:
    text = HTML_COMMENT.sub("", (ROOT / "docs" / "dbops" / "api.md").read_text())
    return API_ROW.findall(text)


@pytest.mark.parametrize("name", dbops.__all__)
def test_every_public_name_imports_from_the_module_it_names(name):
    module, _, attribute = dbops._PUBLIC[name].partition(":")
    value = getattr(dbops, name)
    assert value is getattr(importlib.import_module(module), attribute)
    namespace: dict = {}
    exec(f"from dbops import {name}", namespace)  # noqa: S102 (a name from __all__)
    assert namespace[name] is value


def test_api_md_lists_exactly_all_in_its_order():
    documented = documented_names()
    assert len(documented) == len(set(documented)), "a name documented twice"
    assert documented == dbops.__all__


def test_no_public_name_is_shadowed_by_a_submodule():
    # dbops.backfill the subpackage would replace a function of that name once imported.
    submodules = {info.name for info in pkgutil.iter_modules(dbops.__path__)}
    assert not submodules & set(dbops.__all__)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'retry_transactions'"):
        dbops.retry_transactions  # noqa: B018


def test_importing_dbops_imports_no_model_and_nothing_of_the_orm():
    """A settings module may import dbops before the app registry is ready."""
    probe = (
        "import sys, dbops; "
        "print(sorted(m for m in sys.modules if m.startswith(('django.db', 'dbops.'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_version_is_the_distributions():
    pyproject = tomllib.loads((ROOT / "packaging/django-dbops/pyproject.toml").read_text())
    assert dbops.__version__ == pyproject["project"]["version"]
