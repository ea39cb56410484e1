"""Fixtures for the core's tests: plugin managers and installed fixture modules."""

import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import osv

# The machines running these tests have two cores shared with VMs and
# compilers: time limits per example measure the machine, not the code, so
# the fuzzing tests are held to example counts only.
settings.register_profile(
    "osv", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("osv")

# Every `osv run` of the tests runs in-process, whatever `osv serve` the
# machine has listening; the server's own tests start theirs.
os.environ["OSV_NO_SERVER"] = "1"


@pytest.fixture
def bare_pm():
    """A plugin manager with the core's hooks but without its built-ins."""
    return osv.plugin_manager(builtins=False)


@pytest.fixture
def site_dir(tmp_path, monkeypatch):
    """A directory on sys.path holding fixture distributions, removed afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if module_file.startswith(str(site)):
            del sys.modules[name]


@pytest.fixture
def install_module(site_dir) -> Callable[..., Path]:
    """Install a fixture module distribution the way pip lays one out.

    Writes the distribution's metadata with an entry point in the group
    ``osv.modules`` and its package's ``__init__.py``; returns the package
    directory, whose source a test may rewrite.
    """

    def install(
        name: str,
        source: str,
        *,
        distribution: str | None = None,
        version: str = "1.0.0",
        package: str | None = None,
    ) -> Path:
        distribution = distribution or f"osv-mod-{name}"
        package = package or distribution.replace("-", "_")
        dist_info = site_dir / f"{distribution.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
        )
        (dist_info / "entry_points.txt").write_text(
            f"[{osv.ENTRY_POINT_GROUP}]\n{name} = {package}\n"
        )
        package_dir = site_dir / package
        package_dir.mkdir(exist_ok=True)
        (package_dir / "__init__.py").write_text(textwrap.dedent(source))
        return package_dir

    return install
