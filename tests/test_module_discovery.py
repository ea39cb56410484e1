"""Modules installed with pip are found by the osv command, and broken ones reported."""

import tomllib
from importlib import metadata


def _install(pip, source, site):
    pip("install", "--no-deps", "--no-compile", "--target", str(site), str(source))
    (dist,) = [
        dist
        for dist in metadata.distributions(path=[str(site)])
        if dist.metadata["Name"] == _project_name(source)
    ]
    return dist.version


def _project_name(source):
    return tomllib.loads((source / "pyproject.toml").read_text())["project"]["name"]


def test_installed_module_is_listed_and_a_broken_one_reported(
    repo_root, copy_package, pip, osv_command, tmp_path
):
    site = tmp_path / "site"
    template = copy_package(repo_root / "docs" / "module-template")
    example_version = _install(pip, template, site)
    alpha = repo_root / "tests" / "fixtures" / "modules" / "alpha"
    alpha_version = _install(pip, alpha, site)

    listing = osv_command("modules", path=[site])
    assert listing.returncode == 0, listing.stderr
    assert (
        f"example  osv-mod-example {example_version}\n    hooks: osv_image_files\n"
    ) in listing.stdout
    assert (
        f"alpha  osv-mod-alpha {alpha_version}\n    hooks: osv_filesystem_types\n"
    ) in listing.stdout

    version = osv_command("--version", path=[site])
    assert version.returncode == 0, version.stderr
    assert f"osv-mod-example {example_version}" in version.stdout.splitlines()
    assert f"osv-mod-alpha {alpha_version}" in version.stdout.splitlines()

    # Break the installed example module: it now imports a missing package.
    package = site / "osv_mod_example" / "__init__.py"
    package.write_text("import osv_mod_example_lost_dependency\n" + package.read_text())

    listing = osv_command("modules", path=[site])
    assert listing.returncode == 1
    assert (
        f"example  osv-mod-example {example_version}  FAILED\n"
        "    reason: module 'example' failed to import: ModuleNotFoundError: "
        "No module named 'osv_mod_example_lost_dependency'\n"
    ) in listing.stdout
    assert (
        f"alpha  osv-mod-alpha {alpha_version}\n    hooks: osv_filesystem_types\n"
    ) in listing.stdout
    assert listing.stdout.startswith("core  osv-core ")
    assert "module example (osv-mod-example" in listing.stderr
    assert "Traceback" not in listing.stderr
