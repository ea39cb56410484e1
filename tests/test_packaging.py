"""Every package builds a wheel from its own directory alone."""

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [
    "core",
    *sorted(
        str(path.parent.relative_to(REPO_ROOT))
        for path in REPO_ROOT.glob("modules/*/pyproject.toml")
    ),
    "docs/module-template",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_builds_a_wheel_from_its_directory_alone(
    package, copy_package, pip, tmp_path
):
    # A copy outside the repository: no sibling packages and no git history,
    # so the version is the package's declared fallback.
    source = copy_package(REPO_ROOT / package)
    project = tomllib.loads((source / "pyproject.toml").read_text())
    name = project["project"]["name"].replace("-", "_")
    fallback = project["tool"]["setuptools_scm"]["fallback_version"]

    out = tmp_path / "wheels"
    pip("wheel", "--no-deps", "-w", str(out), str(source))

    wheels = [path.name for path in out.glob("*.whl")]
    assert len(wheels) == 1
    assert wheels[0].startswith(f"{name}-{fallback}-")


def _build_core(copy_package, tmp_path, **env):
    """Build a wheel of a copy of the core with extra environment variables."""
    source = copy_package(REPO_ROOT / "core")
    out = tmp_path / "wheels"
    environment = {**os.environ, **env}
    for variable in ("OSV_REQUIRE_CEXT", "OSV_DISABLE_CEXT"):
        if variable not in env:
            environment.pop(variable, None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        env=environment,
    )
    return result, sorted(out.glob("*.whl"))


def _compiled_members(wheel):
    with zipfile.ZipFile(wheel) as archive:
        return [name for name in archive.namelist() if name.endswith(".so")]


def test_core_falls_back_to_pure_python_when_compiling_fails(copy_package, tmp_path):
    # CC=false stands in for a machine whose C compiler does not work.
    result, wheels = _build_core(copy_package, tmp_path, CC="false")
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = wheels
    assert _compiled_members(wheel) == []


def test_core_build_fails_when_compiled_code_is_required_and_compiling_fails(
    copy_package, tmp_path
):
    result, wheels = _build_core(
        copy_package, tmp_path, CC="false", OSV_REQUIRE_CEXT="1"
    )
    assert result.returncode != 0
    assert wheels == []
    assert "failed and OSV_REQUIRE_CEXT=1 requires it" in result.stdout + result.stderr


def test_core_built_with_compiled_code_disabled_is_pure_python(copy_package, tmp_path):
    result, wheels = _build_core(copy_package, tmp_path, OSV_DISABLE_CEXT="1")
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = wheels
    assert wheel.name.endswith("-py3-none-any.whl")
    assert _compiled_members(wheel) == []
