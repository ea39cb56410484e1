"""Build step that compiles the core's hot paths with Cython in pure-Python mode.

Everything else about the package is declared in pyproject.toml.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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
    cmdclass={"build_ext": OptionalBuildExt},
)
