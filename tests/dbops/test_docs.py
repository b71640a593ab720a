"""docs/dbops/ kept in step with the code: every setting with its default, every check ID, every
page linked, one version everywhere."""

from __future__ import annotations

import re
import tomllib

from dbops.conf import DEFAULTS
from tests.helpers import ROOT

DOCS = ROOT / "docs" / "dbops"
CHECK_ID = re.compile(r"\bdbops\.[EW]\d{3}\b")
SETTING_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| `([^`]*)` \|", re.M)


def documented_settings() -> dict[str, str]:
    return dict(SETTING_ROW.findall((DOCS / "settings.md").read_text()))


def check_ids_in(paths) -> set[str]:
    return {found for path in paths for found in CHECK_ID.findall(path.read_text())}


def test_every_setting_is_documented_with_its_default():
    assert documented_settings() == {name: repr(value) for name, value in DEFAULTS.items()}


def test_every_check_id_the_code_uses_is_documented_and_no_other():
    code = check_ids_in(p for p in (ROOT / "dbops").rglob("*.py") if "__pycache__" not in p.parts)
    documented = check_ids_in([DOCS / "checks.md"])
    assert code - documented == set(), "used in dbops, missing from docs/dbops/checks.md"
    assert documented - code == set(), "in docs/dbops/checks.md, used nowhere in dbops"


def test_every_page_the_docs_link_exists():
    missing = [
        f"{page.name} -> {target}"
        for page in DOCS.glob("*.md")
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text())
        if not (DOCS / target).exists()
    ]
    assert not missing, missing


def test_the_distributions_and_the_changelog_name_one_version():
    versions = {
        tomllib.loads((ROOT / "packaging" / name / "pyproject.toml").read_text())["project"][
            "version"
        ]
        for name in ("django-dbops", "django-dbops-devdb")
    }
    [version] = versions
    extra = tomllib.loads((ROOT / "packaging/django-dbops/pyproject.toml").read_text())
    assert f"django-dbops-devdb=={version}" in extra["project"]["optional-dependencies"]["devdb"]
    changelog = (DOCS / "CHANGELOG.md").read_text()
    assert re.search(r"^## ([\w.]+)", changelog, re.M).group(1) == version
