"""Fixtures for the end-to-end tests: the repository, pip builds and the osv command."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Every `osv run` of the tests runs in-process, whatever `osv serve` the
# machine has listening.
os.environ["OSV_NO_SERVER"] = "1"

# What a build leaves in a package directory; none of it belongs in a copy
# that is meant to show the package builds from its own sources alone.
_BUILD_OUTPUT = shutil.ignore_patterns(
    "build", "dist", "*.egg-info", "_version.py", "__pycache__", "*.so", ".nox"
)


@pytest.fixture
def repo_root() -> Path:
    """The repository these tests belong to."""
    return REPO_ROOT


@pytest.fixture
def copy_package(tmp_path) -> Callable[[Path], Path]:
    """Copy a package directory, without build output, to a fresh place outside git."""

    def copy(source: Path) -> Path:
        destination = tmp_path / "copies" / source.name
        shutil.copytree(source, destination, ignore=_BUILD_OUTPUT)
        return destination

    return copy


@pytest.fixture
def pip() -> Callable[..., subprocess.CompletedProcess]:
    """Run this interpreter's pip; a failure shows pip's own output."""

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    return run


@pytest.fixture
def osv_command() -> Callable[..., subprocess.CompletedProcess]:
    """Run the installed osv command, with extra directories on its import path."""
    script = Path(sys.executable).parent / "osv"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "osv"]

    def run(*args: str, path: list[Path] = ()) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [*map(str, path), *filter(None, [env.get("PYTHONPATH")])]
        )
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, env=env
        )

    return run
