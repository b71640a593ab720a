"""Build the toolkit's wheels from this repository: ``django-dbops`` and ``django-dbops-devdb``.

    python packaging/build.py [--out dist]

Each distribution's pyproject.toml lives in ``packaging/<name>/``; its package (``dbops/`` or
``devdb/``) is copied beside it into a clean staging directory, so the wheel can hold nothing but
that package, whatever else the repository has: the files of the package git tracks, so a
stray local file never ships. Before building, every module the package imports is checked to be
the standard library's, the package's own, or a declared dependency's (a module that imports an
undeclared one installs fine and fails at its first import in a user's project). After, the
wheel's file list is checked against git's: every tracked file of the package (templates,
migrations, static files, template tags...) in the wheel, nothing else but its metadata.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"

# distribution -> (its package, its README)
DISTRIBUTIONS = {
    "django-dbops": ("dbops", ROOT / "docs" / "dbops" / "README.md"),
    "django-dbops-devdb": ("devdb", PACKAGING / "django-dbops-devdb" / "README.md"),
}


class BuildError(Exception):
    pass


def tracked_files(package: str, root: Path = ROOT) -> list[str]:
    """The package's files that git tracks, as paths from the repository root."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--", package],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(f"cannot list the files git tracks under {package}/: {exc}") from exc
    files = sorted(name for name in listed.split("\0") if name)
    if not files:
        raise BuildError(f"git tracks no file under {package}/ in {root}")
    return files


def stage(distribution: str, into: Path) -> Path:
    """``into/<distribution>``: its pyproject.toml, README.md and the package's tracked files."""
    package, readme = DISTRIBUTIONS[distribution]
    staged = into / distribution
    staged.mkdir(parents=True)
    shutil.copy(PACKAGING / distribution / "pyproject.toml", staged / "pyproject.toml")
    shutil.copy(readme, staged / "README.md")
    for name in tracked_files(package):
        (staged / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, staged / name)
    return staged


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies(pyproject: Path) -> set[str]:
    """The distributions ``[project] dependencies`` names (extras are optional: not counted)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return {
        normalized(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))
        for requirement in project.get("dependencies", [])
    }


def imported_modules(package_dir: Path) -> dict[str, set[str]]:
    """Top-level module -> the package's files importing it (absolute imports, anywhere in a file,
    functions included: a lazy import fails just as late)."""
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.partition(".")[0], set()).add(
                    str(path.relative_to(package_dir.parent))
                )
    return found


def undeclared_imports(package_dir: Path, pyproject: Path) -> list[str]:
    """One line per third-party module the package imports whose distribution is not among its
    pyproject's dependencies (or that no installed distribution provides)."""
    declared = declared_dependencies(pyproject)
    providers = importlib.metadata.packages_distributions()
    problems = []
    for module, files in sorted(imported_modules(package_dir).items()):
        if module in sys.stdlib_module_names or module == package_dir.name:
            continue
        dists = {normalized(d) for d in providers.get(module, [])}
        if not dists & declared:
            given_by = ", ".join(sorted(dists)) or "no installed distribution"
            problems.append(
                f"{module} (from {given_by}) is imported by {', '.join(sorted(files))} but is "
                f"not in the dependencies of {pyproject.relative_to(pyproject.parent.parent)}"
            )
    return problems


def wheel_check(wheel: Path, distribution: str, tracked: list[str]) -> list[str]:
    """The wheel's files; BuildError unless its package files are exactly git's ``tracked``."""
    package, _ = DISTRIBUTIONS[distribution]
    names = zipfile.ZipFile(wheel).namelist()
    metadata = distribution.replace("-", "_")
    shipped = {name for name in names if not name.startswith(f"{metadata}-")}
    missing = sorted(set(tracked) - shipped)
    extra = sorted(shipped - set(tracked))
    if missing or extra:
        raise BuildError(
            f"{wheel.name} differs from the files git tracks under {package}/: missing "
            f"{missing or 'none'} (add them to [tool.setuptools.package-data] in "
            f"packaging/{distribution}/pyproject.toml, or make their folder a package); not "
            f"tracked {extra or 'none'}"
        )
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
    for distribution, (package, _) in DISTRIBUTIONS.items():
        try:
            undeclared = undeclared_imports(
                ROOT / package, PACKAGING / distribution / "pyproject.toml"
            )
            if undeclared:
                raise BuildError("undeclared imports:\n  " + "\n  ".join(undeclared))
            tracked = tracked_files(package)
            wheel = build(distribution, args.out.resolve())
            names = wheel_check(wheel, distribution, tracked)
        except BuildError as exc:
            print(f"error: {distribution}: {exc}", file=sys.stderr)
            return 1
        print(
            f"built {wheel.relative_to(ROOT) if wheel.is_relative_to(ROOT) else wheel}: "
            f"{len(names)} files, every file git tracks under {package}/"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
