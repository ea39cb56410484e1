"""OSv re-created with a Python kernel: the core package.

Public here: the version, the hook marker modules use, and module loading.
"""

from osv._plugins import (
    ENTRY_POINT_GROUP,
    FailedModule,
    LoadedModule,
    ModuleError,
    ModuleSet,
    RestRoute,
    filesystem_types,
    image_files,
    load_modules,
    loader_options,
    plugin_manager,
    rest_routes,
    run_boot,
    run_shutdown,
    syscall_table,
)
from osv.hookspecs import hookimpl

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
