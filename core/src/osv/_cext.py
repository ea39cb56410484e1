"""Load the core's hot-path modules: compiled by Cython where built, else plain Python.

OSV_DISABLE_CEXT=1 makes ``load`` return the plain-Python source even where a
compiled build is installed, e.g. to compare the two or to debug in Python.
"""

import importlib
import importlib.machinery
import logging
import os
import sys
from types import ModuleType

logger = logging.getLogger(__name__)

DISABLE_VARIABLE = "OSV_DISABLE_CEXT"

# os.path, not pathlib: every start imports this module, and pathlib brings
# urllib.parse and ipaddress with it.
_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))


def disabled() -> bool:
    """Tell whether OSV_DISABLE_CEXT asks for pure Python."""
    return os.environ.get(DISABLE_VARIABLE, "").strip().lower() in {"1", "true", "yes"}


def load(dotted_name: str) -> ModuleType:
    """Import a hot-path module, compiled unless OSV_DISABLE_CEXT=1.

    Code that wants the switch honoured imports hot modules through this
    function rather than with an import statement.
    """
    if not disabled():
        return importlib.import_module(dotted_name)

    module = sys.modules.get(dotted_name)
    if module is not None and not _is_extension(module):
        return module
    return _load_source(dotted_name)


def compiled_modules() -> list[str]:
    """List the dotted names of the osv modules installed in compiled form."""
    names = []
    root = os.path.dirname(_PACKAGE_DIR)
    for directory, _, files in os.walk(_PACKAGE_DIR):
        package = os.path.relpath(directory, root).split(os.sep)
        for name in files:
            suffix = _extension_suffix(name)
            if suffix is not None:
                names.append(".".join([*package, name[: -len(suffix)]]))
    return sorted(names)


def is_compiled(dotted_name: str | None = None) -> bool:
    """Tell whether a hot module, or without a name the core, runs compiled."""
    if disabled():
        return False
    compiled = compiled_modules()
    if dotted_name is None:
        return bool(compiled)
    return dotted_name in compiled


def _load_source(dotted_name: str) -> ModuleType:
    """Execute the .py file of a module, bypassing a compiled file beside it.

    The normal import system prefers an extension module over a .py file of
    the same name in the same directory, so the source is located by hand and
    executed with a SourceFileLoader. The result replaces any compiled module
    in sys.modules, so later imports of the name get the same pure module.
    """
    parent_name, _, leaf = dotted_name.rpartition(".")
    if not parent_name:
        raise ImportError(f"{dotted_name} is not inside a package", name=dotted_name)
    parent = importlib.import_module(parent_name)
    source = next(
        (
            os.path.join(directory, f"{leaf}.py")
            for directory in getattr(parent, "__path__", ())
            if os.path.isfile(os.path.join(directory, f"{leaf}.py"))
        ),
        None,
    )
    if source is None:
        raise ImportError(
            f"{DISABLE_VARIABLE}=1 needs the Python source of {dotted_name}, "
            "which is not installed",
            name=dotted_name,
        )

    # Imported here: only OSV_DISABLE_CEXT=1 loads a source by hand.
    from importlib.util import module_from_spec, spec_from_file_location

    loader = importlib.machinery.SourceFileLoader(dotted_name, str(source))
    spec = spec_from_file_location(dotted_name, source, loader=loader)
    module = module_from_spec(spec)
    sys.modules[dotted_name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[dotted_name]
        raise
    setattr(parent, leaf, module)
    logger.debug("loaded %s from its Python source %s", dotted_name, source)
    return module


def _is_extension(module: ModuleType) -> bool:
    filename = getattr(module, "__file__", None) or ""
    return _extension_suffix(filename) is not None


def _extension_suffix(filename: str) -> str | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if filename.endswith(suffix):
            return suffix
    return None
