"""Import contracts: modules never import each other, the core never imports one."""

import configparser
import shutil
import subprocess
import sys

import pytest

CONTRACT_LISTS = [
    ("importlinter", "root_packages"),
    ("importlinter:contract:modules-independent", "modules"),
    ("importlinter:contract:core-imports-no-module", "forbidden_modules"),
]


def _read_contracts(path):
    config = configparser.ConfigParser()
    config.read(path)
    return config


def _listed(config, section, key):
    return {line.strip() for line in config[section][key].splitlines() if line.strip()}


def _module_packages(root):
    return {
        f"osv_mod_{path.parent.name}" for path in root.glob("modules/*/pyproject.toml")
    }


def _check_imports(root):
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "check_imports.py"), str(root)],
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(("section", "key"), CONTRACT_LISTS)
def test_the_contracts_list_every_module_directory(repo_root, section, key):
    config = _read_contracts(repo_root / ".importlinter")
    listed = _listed(config, section, key) - {"osv"}
    assert listed == _module_packages(repo_root), (
        f".importlinter [{section}] {key} must list exactly the packages of modules/*"
    )


def test_the_core_is_the_only_source_of_the_forbidden_contract(repo_root):
    config = _read_contracts(repo_root / ".importlinter")
    section = "importlinter:contract:core-imports-no-module"
    assert _listed(config, section, "source_modules") == {"osv"}
    assert "osv" in _listed(config, "importlinter", "root_packages")


@pytest.fixture
def tree_with_two_modules(repo_root, tmp_path):
    """A copy of the repository's contracts and core, plus modules alpha and beta.

    The modules' packages are added to the copied .importlinter the way a
    developer adds a new module.
    """
    root = tmp_path / "repo"
    shutil.copytree(
        repo_root / "core" / "src" / "osv",
        root / "core" / "src" / "osv",
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    shutil.copytree(repo_root / "scripts", root / "scripts")
    for name in ("alpha", "beta"):
        shutil.copytree(
            repo_root / "tests" / "fixtures" / "modules" / name, root / "modules" / name
        )
    # The repository's own modules come along: the contracts already list them.
    for source in sorted((repo_root / "modules").glob("*/src")):
        shutil.copytree(
            source,
            root / "modules" / source.parent.name / "src",
            ignore=shutil.ignore_patterns("__pycache__", "*.so"),
        )

    config = _read_contracts(repo_root / ".importlinter")
    for section, key in CONTRACT_LISTS:
        packages = sorted(_listed(config, section, key) | _module_packages(root))
        config[section][key] = "\n" + "\n".join(packages)
    with open(root / ".importlinter", "w") as out:
        config.write(out)

    for section, key in CONTRACT_LISTS:
        assert _listed(_read_contracts(root / ".importlinter"), section, key) >= {
            "osv_mod_alpha",
            "osv_mod_beta",
        }
    return root


def test_independent_modules_keep_the_contracts(tree_with_two_modules):
    result = _check_imports(tree_with_two_modules)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_a_module_importing_another_breaks_the_contracts(tree_with_two_modules):
    beta = tree_with_two_modules / "modules/beta/src/osv_mod_beta/__init__.py"
    beta.write_text(beta.read_text() + "\nimport osv_mod_alpha  # noqa: E402,F401\n")

    result = _check_imports(tree_with_two_modules)

    assert result.returncode != 0
    assert "Modules never import each other BROKEN" in result.stdout
    assert "osv_mod_beta is not allowed to import osv_mod_alpha" in result.stdout


def test_the_core_importing_a_module_breaks_the_contracts(tree_with_two_modules):
    plugins = tree_with_two_modules / "core/src/osv/_plugins.py"
    plugins.write_text(plugins.read_text() + "\nimport osv_mod_beta  # noqa: E402\n")

    result = _check_imports(tree_with_two_modules)

    assert result.returncode != 0
    assert "The core never imports a module BROKEN" in result.stdout
    assert "osv._plugins -> osv_mod_beta" in result.stdout
