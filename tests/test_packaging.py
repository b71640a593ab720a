"""packaging/build.py: a wheel ships every file of its package that git tracks and nothing else,
and a package that imports a distribution it does not declare is refused before it is built."""

from __future__ import annotations

import importlib.util
import sys
import zipfile

import pytest

from tests.helpers import ROOT

# Loaded from its path: a folder named "packaging" would shadow the PyPI library of that name.
_spec = importlib.util.spec_from_file_location("dbops_build", ROOT / "packaging" / "build.py")
build = importlib.util.module_from_spec(_spec)
sys.modules["dbops_build"] = build
_spec.loader.exec_module(build)

PYPROJECT = {
    "django-dbops": ROOT / "packaging" / "django-dbops" / "pyproject.toml",
    "django-dbops-devdb": ROOT / "packaging" / "django-dbops-devdb" / "pyproject.toml",
}


@pytest.mark.parametrize("distribution", sorted(build.DISTRIBUTIONS))
def test_each_package_imports_only_its_declared_dependencies(distribution):
    package, _ = build.DISTRIBUTIONS[distribution]
    assert build.undeclared_imports(ROOT / package, PYPROJECT[distribution]) == []


def test_an_undeclared_import_is_reported_even_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "views.py").write_text(
        "import json\nfrom django.db import models\nfrom pkg import views\n"
        "def metrics():\n    import prometheus_client\n"
    )
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "pkg"\ndependencies = ["Django >= 5.2"]\n')
    [problem] = build.undeclared_imports(package, pyproject)
    assert problem.startswith(
        "prometheus_client (from prometheus-client) is imported by pkg/views.py"
    )
    pyproject.write_text(
        '[project]\nname = "pkg"\ndependencies = ["Django>=5.2", "Prometheus_Client>=0.20"]\n'
    )
    assert build.undeclared_imports(package, pyproject) == []


def _wheel(path, names):
    with zipfile.ZipFile(path, "w") as wheel:
        for name in [*names, "django_dbops-0.1.0.dist-info/METADATA"]:
            wheel.writestr(name, "")
    return path


def test_a_wheel_missing_a_tracked_file_or_holding_an_untracked_one_is_refused(tmp_path):
    tracked = ["dbops/__init__.py", "dbops/templates/admin/dbops/backfillrun/change_form.html"]
    exact = _wheel(tmp_path / "exact.whl", tracked)
    assert len(build.wheel_check(exact, "django-dbops", tracked)) == 3
    short = _wheel(tmp_path / "short.whl", tracked[:1])
    with pytest.raises(build.BuildError, match=r"missing \['dbops/templates/admin/dbops/"):
        build.wheel_check(short, "django-dbops", tracked)
    stray = _wheel(tmp_path / "stray.whl", [*tracked, "dbops/local_notes.txt"])
    with pytest.raises(build.BuildError, match=r"not tracked \['dbops/local_notes.txt'\]"):
        build.wheel_check(stray, "django-dbops", tracked)


def test_the_built_wheels_hold_every_file_git_tracks_in_their_package(tmp_path, capsys):
    """A real build (pip wheel, as make toolkit-wheel runs it): the templates, static files,
    migrations and template tags git tracks are all in it."""
    assert build.main(["--out", str(tmp_path)]) == 0, capsys.readouterr().err
    [wheel] = tmp_path.glob("django_dbops-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = build.tracked_files("dbops")
    assert set(tracked) <= names
    assert {
        "dbops/templates/admin/dbops/backfillrun/change_form.html",
        "dbops/static/dbops/backfill.css",
        "dbops/migrations/0001_backfillrun.py",
        "dbops/templatetags/dbops.py",
    } <= set(tracked)
