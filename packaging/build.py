"""Build the toolkit's wheels from this repository: ``django-dbops`` and ``django-dbops-devdb``.

    python packaging/build.py [--out dist]

Each distribution's pyproject.toml lives in ``packaging/<name>/``; its package (``dbops/`` or
``devdb/``) is copied beside it into a clean staging directory, so the wheel can hold nothing but
that package, whatever else the repository has. Then ``pip wheel`` builds it, and the wheel's
file list is checked: the package and its metadata only, with the files a Django app needs at
run time (templates, migrations, management commands, template tags) present.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"

# distribution -> (its package, its README, files its wheel must contain)
DISTRIBUTIONS = {
    "django-dbops": (
        "dbops",
        ROOT / "docs" / "dbops" / "README.md",
        (
            "dbops/apps.py",
            "dbops/migrations/0001_backfillrun.py",
            "dbops/management/commands/backfill_column.py",
            "dbops/management/commands/db_doctor.py",
            "dbops/templatetags/dbops.py",
            "dbops/templates/dbops/503.html",
            "dbops/templates/dbops/health/status.html",
        ),
    ),
    "django-dbops-devdb": (
        "devdb",
        PACKAGING / "django-dbops-devdb" / "README.md",
        ("devdb/embedded.py", "devdb/management/commands/embedded_db.py"),
    ),
}


class BuildError(Exception):
    pass


def stage(distribution: str, into: Path) -> Path:
    """``into/<distribution>``: its pyproject.toml, README.md and package, nothing else."""
    package, readme, _ = DISTRIBUTIONS[distribution]
    staged = into / distribution
    staged.mkdir(parents=True)
    shutil.copy(PACKAGING / distribution / "pyproject.toml", staged / "pyproject.toml")
    shutil.copy(readme, staged / "README.md")
    shutil.copytree(
        ROOT / package,
        staged / package,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    return staged


def wheel_check(wheel: Path, distribution: str) -> list[str]:
    """The wheel's files; BuildError when one is outside the package or a required one is missing."""
    package, _, required = DISTRIBUTIONS[distribution]
    names = zipfile.ZipFile(wheel).namelist()
    metadata = distribution.replace("-", "_")
    stray = [
        name
        for name in names
        if name.split("/")[0] != package and not name.startswith(f"{metadata}-")
    ]
    missing = [name for name in required if name not in names]
    if stray or missing:
        raise BuildError(f"{wheel.name}: files outside {package}/: {stray}; missing: {missing}")
    return names


def build(distribution: str, out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="dbops-build-") as tmp:
        staged = stage(distribution, Path(tmp))
        for old in out.glob(f"{distribution.replace('-', '_')}-*.whl"):
            old.unlink()
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out]
            + [str(staged)],
            check=True,
        )
    (wheel,) = out.glob(f"{distribution.replace('-', '_')}-*.whl")
    return wheel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "dist", help="where the wheels go (default: dist/)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for distribution in DISTRIBUTIONS:
        wheel = build(distribution, args.out.resolve())
        try:
            names = wheel_check(wheel, distribution)
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(
            f"built {wheel.relative_to(ROOT) if wheel.is_relative_to(ROOT) else wheel}: "
            f"{len(names)} files"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
