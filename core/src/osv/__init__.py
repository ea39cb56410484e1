"""OSv re-created with a Python kernel: the core package.

Public here: the version, the hook marker modules use, and module loading.
"""

from osv._lazy import lazy_exports as _lazy_exports

try:
    from osv._version import __version__
except ImportError:
    # Only a source tree that was never built lacks the generated version file.
    __version__ = "0+unknown"

__all__ = [
    "ENTRY_POINT_GROUP",
    "FailedModule",
    "LoadedModule",
    "ModuleError",
    "ModuleSet",
    "RestRoute",
    "__version__",
    "filesystem_types",
    "hookimpl",
    "image_files",
    "load_modules",
    "loader_options",
    "plugin_manager",
    "rest_routes",
    "run_boot",
    "run_shutdown",
    "syscall_table",
]

# Every command imports this package first, so it re-exports lazily (PEP
# 562): the plugin machinery behind these names (pluggy, dataclasses,
# inspect) is imported when one of them is first used, not by `import osv`.
# Each name is looked up once; it then sits in the package like any other.
_EXPORTED_FROM = {
    name: "osv.hookspecs" if name == "hookimpl" else "osv._plugins"
    for name in __all__
    if name != "__version__"
}


__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTED_FROM, __all__)
