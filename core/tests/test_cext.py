"""The Cython build of the hot paths and the switches that require or disable it."""

import ast
import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from osv import _cext

CORE_DIR = Path(__file__).resolve().parents[1]


def _hot_modules():
    """Read HOT_MODULES from setup.py without running the build script."""
    tree = ast.parse((CORE_DIR / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "HOT_MODULES"
            for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py defines no HOT_MODULES")


def test_every_hot_module_has_a_python_source():
    hot = _hot_modules()
    assert hot, "HOT_MODULES is empty"
    for name in hot:
        source = CORE_DIR / "src" / Path(*name.split(".")).with_suffix(".py")
        assert source.is_file(), f"{name} is in HOT_MODULES but {source} is missing"


def test_only_hot_modules_are_compiled():
    assert set(_cext.compiled_modules()) <= set(_hot_modules())


@pytest.mark.skipif(
    os.environ.get("OSV_REQUIRE_CEXT") != "1",
    reason="only a build with OSV_REQUIRE_CEXT=1 must compile every hot module",
)
def test_a_build_requiring_compiled_code_compiled_every_hot_module():
    assert _cext.compiled_modules() == sorted(_hot_modules())
    assert not _cext.disabled()
    assert _cext.is_compiled()
    for name in _hot_modules():
        assert _cext.is_compiled(name)
        assert _cext.load(name).__file__.endswith(
            tuple(importlib.machinery.EXTENSION_SUFFIXES)
        )


def test_disabling_compiled_code_runs_every_hot_module_from_its_source():
    # A fresh interpreter, so that the compiled modules this test process may
    # already hold do not decide the answer.
    script = textwrap.dedent(
        """
        import sys
        from osv import _cext
        for name in sys.argv[1:]:
            module = _cext.load(name)
            print(name, module.__file__.endswith(".py"), _cext.is_compiled(name))
        print("core", _cext.is_compiled())
        """
    )
    env = {**os.environ, "OSV_DISABLE_CEXT": "1"}
    env.pop("OSV_REQUIRE_CEXT", None)
    result = subprocess.run(
        [sys.executable, "-c", script, *_hot_modules()],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines == [f"{name} True False" for name in _hot_modules()] + ["core False"]


@pytest.fixture
def probe_package(tmp_path, monkeypatch):
    """A package holding one module twice: as a .py file and compiled from C.

    The C build stands in for Cython's output: what matters is a .py file and
    an extension module of the same name side by side.
    """
    compiler = shutil.which(sysconfig.get_config_var("CC").split()[0]) or shutil.which(
        "cc"
    )
    include = Path(sysconfig.get_paths()["include"])
    if compiler is None or not (include / "Python.h").is_file():
        pytest.skip("needs a C compiler and the Python headers")

    package = tmp_path / "cextprobe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hot.py").write_text('KIND = "source"\n')
    (tmp_path / "hot.c").write_text(
        textwrap.dedent(
            """
            #include <Python.h>
            static struct PyModuleDef def = {
                PyModuleDef_HEAD_INIT, "cextprobe.hot", NULL, -1, NULL
            };
            PyMODINIT_FUNC PyInit_hot(void) {
                PyObject *module = PyModule_Create(&def);
                if (module && PyModule_AddStringConstant(module, "KIND", "compiled")) {
                    Py_DECREF(module);
                    return NULL;
                }
                return module;
            }
            """
        )
    )
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    subprocess.run(
        [
            compiler,
            "-shared",
            "-fPIC",
            f"-I{include}",
            str(tmp_path / "hot.c"),
            "-o",
            str(package / f"hot{suffix}"),
        ],
        check=True,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "cextprobe.hot"
    for name in ("cextprobe.hot", "cextprobe"):
        sys.modules.pop(name, None)


def test_load_returns_the_compiled_module_normally(probe_package, monkeypatch):
    monkeypatch.delenv("OSV_DISABLE_CEXT", raising=False)
    module = _cext.load(probe_package)
    assert module.KIND == "compiled"
    assert module is sys.modules[probe_package]


def test_disabling_compiled_code_loads_the_source_beside_the_compiled_module(
    probe_package, monkeypatch
):
    monkeypatch.delenv("OSV_DISABLE_CEXT", raising=False)
    assert _cext.load(probe_package).KIND == "compiled"

    monkeypatch.setenv("OSV_DISABLE_CEXT", "1")
    module = _cext.load(probe_package)
    assert module.KIND == "source"
    assert module.__file__.endswith("hot.py")
    assert sys.modules[probe_package] is module
    assert _cext.load(probe_package) is module

    import cextprobe

    assert cextprobe.hot is module


def test_disabling_compiled_code_without_a_source_is_an_import_error(
    probe_package, monkeypatch
):
    package = importlib.import_module("cextprobe")
    (Path(package.__file__).parent / "hot.py").unlink()
    monkeypatch.setenv("OSV_DISABLE_CEXT", "1")
    with pytest.raises(ImportError, match="needs the Python source of cextprobe.hot"):
        _cext.load(probe_package)
