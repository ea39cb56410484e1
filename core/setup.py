"""Build steps: the core's hot paths compiled with Cython in pure-Python mode,
and the vDSO image (vdso/) compiled with the C compiler.

Everything else about the package is declared in pyproject.toml.
"""

import importlib.util
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# The modules compiled to C. Each is an ordinary .py file written in Cython's
# pure-Python mode, so the same source imports uncompiled wherever no compiled
# build exists. A test compares this list with what a CI build compiled.
HOT_MODULES = [
    "osv.hv._dispatch",
]

REQUIRE_VARIABLE = "OSV_REQUIRE_CEXT"
DISABLE_VARIABLE = "OSV_DISABLE_CEXT"


def _switch(variable):
    return os.environ.get(variable, "").strip().lower() in {"1", "true", "yes"}


def _vdso_builder():
    """vdso/build.py, loaded by path: this directory is not a package."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "vdso", "build.py")
    spec = importlib.util.spec_from_file_location("osv_vdso_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_vdso(package_root):
    """Compile the vDSO below package_root; a failure is logged, or fatal when
    OSV_REQUIRE_CEXT=1 (see vdso/build.py)."""
    builder = _vdso_builder()
    try:
        builder.build(package_root, log=lambda line: print(line, file=sys.stderr))
    except builder.VdsoBuildError as exc:
        raise RuntimeError(str(exc)) from None


def _source_path(dotted_name):
    return os.path.join("src", *dotted_name.split(".")) + ".py"


class OptionalBuildExt(build_ext):
    """Compile the hot modules, or fall back to pure Python if that fails.

    A failed compile is fatal when OSV_REQUIRE_CEXT=1, so a CI build can never
    ship the slow fallback without saying so.
    """

    def finalize_options(self):
        # Cython turns the .py sources into C before setuptools prepares the
        # extensions (it annotates each one in finalize_options). It runs here
        # rather than at the top of this file so that a missing or broken
        # Cython takes the same fallback path as a missing C compiler.
        if self.distribution.ext_modules:
            try:
                from Cython.Build import cythonize

                self.distribution.ext_modules = cythonize(
                    self.distribution.ext_modules,
                    build_dir=os.path.join("build", "cython"),
                    compiler_directives={"language_level": "3"},
                    quiet=True,
                )
            except Exception as exc:
                self._give_up(exc)
                self.distribution.ext_modules = []
        super().finalize_options()

    def run(self):
        super().run()
        # `setup.py build_ext --inplace` is how a source tree gets its
        # compiled parts, so it builds the vDSO beside the sources too; a
        # wheel gets its copy from build_py.
        if self.inplace and not self.dry_run:
            _build_vdso("src")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._give_up(exc, ext.name)

    def _give_up(self, exc, name=None):
        what = f"compiling {name}" if name else "compiling the hot modules"
        if _switch(REQUIRE_VARIABLE):
            raise RuntimeError(
                f"osv-core: {what} failed and {REQUIRE_VARIABLE}=1 requires it: {exc}"
            ) from exc
        print(
            f"osv-core: {what} failed ({exc}); that code runs as pure Python",
            file=sys.stderr,
        )


class BuildPyWithVdso(build_py):
    """Copy the Python sources, then compile the vDSO image into the build.

    It is a step of its own rather than part of build_ext, which setuptools
    skips when there are no extensions (OSV_DISABLE_CEXT=1).
    """

    def run(self):
        super().run()
        if not self.dry_run:
            _build_vdso(self.build_lib)


def _extensions():
    if _switch(DISABLE_VARIABLE) and _switch(REQUIRE_VARIABLE):
        sys.exit(
            f"osv-core: {REQUIRE_VARIABLE}=1 and {DISABLE_VARIABLE}=1 contradict "
            "each other; set one of them"
        )
    if _switch(DISABLE_VARIABLE):
        return []
    return [Extension(name, [_source_path(name)]) for name in HOT_MODULES]


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithVdso},
)
