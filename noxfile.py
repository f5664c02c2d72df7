"""Nox sessions for damjobs: `nox` runs the tests, ruff (`lint`) and mypy (`typecheck`).

The tests need MariaDB, ImageMagick and an unpacked OpenSearch from
scripts/install-system-deps; scripts/test runs that first and then `nox -s tests`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import nox

# damjobs supports these versions (pyproject.toml). Sessions run on the ones installed
# here, because nox fails on a missing interpreter when the CI variable is set.
SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")


def _runs(program: str) -> bool:
    # Running it is the only reliable check: a pyenv shim is on PATH for every version
    # that pyenv has, but fails unless that version is selected.
    if shutil.which(program) is None:
        return False
    result = subprocess.run(
        [program, "-c", "pass"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return result.returncode == 0


PYTHONS = [version for version in SUPPORTED_PYTHONS if _runs(f"python{version}")]
if not PYTHONS:
    PYTHONS = [f"{sys.version_info.major}.{sys.version_info.minor}"]

nox.options.sessions = ["tests", "lint", "typecheck"]
# Reuse session environments between runs. `session.install` still runs each time, so
# changed dependencies in pyproject.toml are picked up.
nox.options.reuse_venv = "yes"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run pytest with the arguments after `--`, such as `-k name`."""
    session.install(".[test]")
    # `python -m pytest` puts the repository root on sys.path, so that
    # tests/conftest.py can import the tests.services package.
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """Check style with ruff, without changing files."""
    # Pinned, so that a new ruff release with new rules does not fail an unchanged tree.
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS[0])
def typecheck(session: nox.Session) -> None:
    """Check the types of the damjobs package with mypy."""
    session.install("mypy==2.4.1", ".")
    session.run("mypy", "damjobs")
