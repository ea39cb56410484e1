"""Find, load and combine the modules that implement the core's hooks."""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    # Imported where used: importlib.metadata costs tens of milliseconds at
    # start-up, and most runs of `osv run` never scan distributions; pathlib
    # serves only image assembly.
    from importlib import metadata
    from pathlib import Path

import osv
from osv import hookspecs
from osv._record import FrozenRecord

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "osv.modules"

# The core's own plugin (ramfs, devfs, procfs) is registered under this name,
# so no installed module may claim it.
BUILTINS_NAME = "core"
_BUILTINS_MODULE = "osv._builtins"
_CORE_DISTRIBUTION = "osv-core"


class ModuleError(Exception):
    """A module is missing, fails to load, or conflicts with another module."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint is None:
            return self.message
        return f"{self.message}; to fix it run: {self.hint}"


class LoadedModule(FrozenRecord):
    """A module whose hooks are registered with the plugin manager.

    ``target`` is the entry point's object reference (``package.module:attr``).
    """

    __slots__ = ("name", "distribution", "version", "hooks", "builtin", "target")

    def __init__(
        self,
        name: str,
        distribution: str,
        version: str,
        hooks: tuple[str, ...],
        builtin: bool = False,
        target: str = "",
    ) -> None:
        define = object.__setattr__
        define(self, "name", name)
        define(self, "distribution", distribution)
        define(self, "version", version)
        define(self, "hooks", hooks)
        define(self, "builtin", builtin)
        define(self, "target", target)


class FailedModule(FrozenRecord):
    """An installed module that could not be loaded, and why."""

    __slots__ = ("name", "distribution", "version", "reason")

    def __init__(self, name: str, distribution: str, version: str, reason: str) -> None:
        define = object.__setattr__
        define(self, "name", name)
        define(self, "distribution", distribution)
        define(self, "version", version)
        define(self, "reason", reason)


class RestRoute(FrozenRecord):
    """One REST route a module adds (see the hook ``osv_rest_routes``)."""

    __slots__ = ("module", "method", "path", "handler", "operation")

    def __init__(
        self,
        module: str,
        method: str,
        path: str,
        handler: Callable[[dict[str, str]], Any],
        operation: Mapping[str, Any],
    ) -> None:
        define = object.__setattr__
        define(self, "module", module)
        define(self, "method", method)
        define(self, "path", path)
        define(self, "handler", handler)
        define(self, "operation", operation)


class ModuleSet(FrozenRecord):
    """The plugin manager holding the built-ins and every module that loaded."""

    __slots__ = ("plugin_manager", "loaded", "failed")

    def __init__(
        self,
        plugin_manager: pluggy.PluginManager,
        loaded: tuple[LoadedModule, ...],
        failed: tuple[FailedModule, ...],
    ) -> None:
        define = object.__setattr__
        define(self, "plugin_manager", plugin_manager)
        define(self, "loaded", loaded)
        define(self, "failed", failed)


def plugin_manager(*, builtins: bool = True) -> pluggy.PluginManager:
    """Return a plugin manager with the core's hooks and (by default) built-ins."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if builtins:
        pm.register(importlib.import_module(_BUILTINS_MODULE), name=BUILTINS_NAME)
    return pm


def module_distributions() -> list[tuple[str, str, str]]:
    """List (module name, distribution, version) of every installed module.

    Reads package metadata only: nothing is imported, so a broken module is
    listed like any other.
    """
    from importlib import metadata

    found = []
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        distribution, version = _distribution_of(entry_point)
        found.append((entry_point.name, distribution, version))
    return sorted(found)


def load_modules(
    names: Iterable[str] | None = None,
    distributions: Mapping[str, str] | None = None,
    targets: Mapping[str, str] | None = None,
) -> ModuleSet:
    """Load every installed module, or exactly the ones named.

    Without names, a module that fails to load is logged and reported in
    ``ModuleSet.failed`` while the others still load. With names (an image
    lists the modules it was assembled with), a named module that is missing
    or fails to load raises ``ModuleError``; its hint installs the package
    ``distributions`` gives for the name (a package may provide several
    modules), else ``osv-mod-<name>``.

    ``targets`` gives, by name, the entry point's object reference an image
    recorded. A named module whose package is found installed, as a wheel,
    beside its recorded distribution's metadata is then imported directly,
    without scanning every installed distribution's entry points.
    """
    if isinstance(names, str):
        raise TypeError("load_modules() takes a list of module names, not one name")
    pm = plugin_manager()
    builtins = pm.get_plugin(BUILTINS_NAME)
    loaded = [
        LoadedModule(
            name=BUILTINS_NAME,
            distribution=_CORE_DISTRIBUTION,
            version=osv.__version__,
            hooks=_hooks_of(pm, builtins),
            builtin=True,
        )
    ]
    failed = []

    # Decide which entry points to load before loading any of them.
    direct: dict[str, tuple[str, str, str]] = {}
    if names is None:
        entry_points = _entry_points(wanted=None)
    else:
        wanted = [name for name in dict.fromkeys(names) if name != BUILTINS_NAME]
        # Scanning installed distributions costs tens of milliseconds
        # (importlib.metadata alone is a large import): an image that names
        # no module does not need it, nor one whose modules are found where
        # their targets say.
        for name in wanted:
            target = (targets or {}).get(name)
            distribution = (distributions or {}).get(name)
            if isinstance(target, str) and isinstance(distribution, str):
                version = _wheel_version(target, distribution)
                if version is not None:
                    direct[name] = (target, distribution, version)
        rest = {name for name in wanted if name not in direct}
        entry_points = _entry_points(wanted=rest) if rest else {}
        missing = [
            name for name in wanted if name not in entry_points and name not in direct
        ]
        if missing:
            listed = ", ".join(repr(name) for name in missing)
            known = distributions or {}
            packages = " ".join(
                dict.fromkeys(known.get(name, f"osv-mod-{name}") for name in missing)
            )
            what = (
                f"module {listed} is" if len(missing) == 1 else f"modules {listed} are"
            )
            raise ModuleError(f"{what} not installed", hint=f"pip install {packages}")

    found = {
        name: (entry_point.value, *_distribution_of(entry_point))
        for name, entry_point in entry_points.items()
    }
    found.update(direct)
    # One at a time, so that one broken module cannot take the others down.
    for name in sorted(found):
        target, distribution, version = found[name]
        try:
            plugin = _register(pm, name, target, distribution, version)
        except ModuleError as exc:
            if names is not None:
                raise
            failed.append(FailedModule(name, distribution, version, str(exc)))
            continue
        loaded.append(
            LoadedModule(
                name,
                distribution,
                version,
                hooks=_hooks_of(pm, plugin),
                target=target,
            )
        )
        logger.debug("loaded module %s from %s %s", name, distribution, version)

    return ModuleSet(pm, tuple(loaded), tuple(failed))


def _entry_points(wanted: set[str] | None) -> dict[str, metadata.EntryPoint]:
    """Map module names to entry points; two distributions claiming one is an error."""
    from importlib import metadata

    by_name: dict[str, metadata.EntryPoint] = {}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        name = entry_point.name
        if wanted is not None and name not in wanted:
            continue
        if name == BUILTINS_NAME:
            raise ModuleError(
                f"module name {name!r} is claimed by both {_CORE_DISTRIBUTION} "
                f"(built in) and {_describe_distribution(entry_point)}"
            )
        if name in by_name:
            raise ModuleError(
                f"module name {name!r} is claimed by both "
                f"{_describe_distribution(by_name[name])} and "
                f"{_describe_distribution(entry_point)}"
            )
        by_name[name] = entry_point
    return by_name


def _wheel_version(target: str, distribution: str) -> str | None:
    """The version of ``distribution`` installed beside ``target``'s package.

    Found from the ``<name>-<version>.dist-info`` directory that an installed
    wheel puts next to its packages (the names normalised as the wheel format
    does). None when the package or exactly one such directory is not there:
    the caller then asks importlib.metadata.
    """
    package = target.partition(":")[0].partition(".")[0]
    prefix = re.sub(r"[-_.]+", "_", distribution).lower() + "-"
    for entry in sys.path:
        directory = entry or "."
        if not (
            os.path.isdir(os.path.join(directory, package))
            or os.path.isfile(os.path.join(directory, package + ".py"))
        ):
            continue
        try:
            names = os.listdir(directory)
        except OSError:
            return None
        versions = [
            name[len(prefix) : -len(".dist-info")]
            for name in names
            if name.endswith(".dist-info") and name.lower().startswith(prefix)
        ]
        return versions[0] if len(versions) == 1 else None
    return None


def _load_target(target: str) -> object:
    """Import the object an entry point names (``package.module:attr.attr``)."""
    module_name, _, attributes = target.partition(":")
    value = importlib.import_module(module_name.strip())
    for attribute in filter(None, attributes.strip().split(".")):
        value = getattr(value, attribute)
    return value


def _register(
    pm: pluggy.PluginManager, name: str, target: str, distribution: str, version: str
) -> object:
    """Import one module and register its hooks, or raise ModuleError saying why."""
    # Anything a module raises while importing is that module's failure, not
    # the caller's: a sys.exit() in a module must not end `osv` itself. Only
    # the user's Ctrl-C gets through.
    try:
        plugin = _load_target(target)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning(
            "module %s (%s %s) failed to import: %s",
            name,
            distribution,
            version,
            reason,
        )
        logger.debug("why module %s failed to import", name, exc_info=True)
        raise ModuleError(f"module {name!r} failed to import: {reason}") from exc

    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        logger.warning(
            "module %s (%s %s) was rejected: %s", name, distribution, version, exc
        )
        raise ModuleError(f"module {name!r} was rejected: {exc}") from exc

    # pluggy accepts implementations of hooks nobody specified; for us that
    # is a misspelt hook that would silently never be called.
    unknown = sorted(
        caller.name
        for caller in pm.get_hookcallers(plugin) or ()
        if not caller.has_spec()
    )
    if unknown:
        pm.unregister(plugin)
        reason = f"implements hooks the core does not define: {', '.join(unknown)}"
        logger.warning("module %s (%s %s) %s", name, distribution, version, reason)
        raise ModuleError(f"module {name!r} {reason}")
    return plugin


def _distribution_of(entry_point: metadata.EntryPoint) -> tuple[str, str]:
    dist = entry_point.dist
    if dist is None:
        return "unknown distribution", "unknown version"
    return dist.name, dist.version


def _describe_distribution(entry_point: metadata.EntryPoint) -> str:
    distribution, version = _distribution_of(entry_point)
    return f"{distribution} {version}"


def _hooks_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str, ...]:
    return tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))


# ---------------------------------------------------------------------------
# Calling hooks
#
# The helpers below call each implementation of a hook on its own instead of
# letting pluggy gather the results in one call. Only then is it known which
# module returned what, so that a conflict can name both modules, and a
# failure can name the module that raised. The order is pluggy's own call
# order (tryfirst/trylast honoured, later registrations first); hook wrappers
# cannot take part in such a call and are refused.
# ---------------------------------------------------------------------------


def filesystem_types(pm: pluggy.PluginManager) -> dict[str, type]:
    """Collect the file-system classes of all modules, keyed by their ``name``."""
    registry: dict[str, type] = {}
    owners: dict[str, str] = {}
    for module, classes in _contributions(pm, "osv_filesystem_types"):
        for cls in _as_list(module, "osv_filesystem_types", classes):
            name = getattr(cls, "name", None)
            if not isinstance(cls, type) or not isinstance(name, str) or not name:
                raise ModuleError(
                    f"module {module!r} returned {cls!r} from osv_filesystem_types; "
                    "expected a class with a string attribute 'name'"
                )
            if name in registry and registry[name] is not cls:
                first = _describe(owners[name], registry[name])
                raise ModuleError(
                    f"file-system type {name!r} is claimed by both {first} "
                    f"and {_describe(module, cls)}"
                )
            registry[name] = cls
            owners[name] = module
    return registry


def syscall_table(pm: pluggy.PluginManager) -> dict[int, Callable[..., Any]]:
    """Merge the system-call families of all modules into one table."""
    table: dict[int, Callable[..., Any]] = {}
    owners: dict[int, str] = {}
    for module, families in _contributions(pm, "osv_syscall_families"):
        for family in _as_list(module, "osv_syscall_families", families):
            if not isinstance(family, Mapping):
                raise ModuleError(
                    f"module {module!r} returned {family!r} from osv_syscall_families; "
                    "expected a mapping of system-call numbers to handlers"
                )
            for number, handler in family.items():
                valid_number = isinstance(number, int) and not isinstance(number, bool)
                if not valid_number or number < 0 or not callable(handler):
                    raise ModuleError(
                        f"module {module!r} maps {number!r} to {handler!r} in "
                        "osv_syscall_families; expected a system-call number and "
                        "a callable handler"
                    )
                if number in table and table[number] is not handler:
                    raise ModuleError(
                        f"system call {number} is claimed by both "
                        f"{_describe(owners[number], table[number])} and "
                        f"{_describe(module, handler)}"
                    )
                table[number] = handler
                owners[number] = module
    return table


def loader_options(pm: pluggy.PluginManager) -> list[Any]:
    """Collect the boot options all modules add, one ``LoaderOption`` per name."""
    # osv.boot is imported here, not at the top, so that loading modules does
    # not pull in the boot machinery.
    from osv.boot import LoaderOption

    options: dict[str, LoaderOption] = {}
    owners: dict[str, str] = {}
    for module, returned in _contributions(pm, "osv_loader_options"):
        for option in _as_list(module, "osv_loader_options", returned):
            if not isinstance(option, LoaderOption):
                raise ModuleError(
                    f"module {module!r} returned {option!r} from osv_loader_options; "
                    "expected osv.boot.LoaderOption"
                )
            if option.name in options:
                raise ModuleError(
                    f"boot option {option.name!r} is declared by both module "
                    f"{owners[option.name]!r} and module {module!r}"
                )
            options[option.name] = option
            owners[option.name] = module
    return list(options.values())


def image_files(pm: pluggy.PluginManager, config: object) -> list[tuple[str, Path]]:
    """Collect the (guest path, host path) pairs all modules add to an image."""
    from pathlib import Path, PurePosixPath

    files: dict[str, Path] = {}
    owners: dict[str, str] = {}
    for module, pairs in _contributions(pm, "osv_image_files", config=config):
        for pair in _as_list(module, "osv_image_files", pairs):
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise ModuleError(
                    f"module {module!r} returned {pair!r} from osv_image_files; "
                    "expected a (guest_path, host_path) pair"
                )
            guest, host = pair
            if not isinstance(guest, str) or not PurePosixPath(guest).is_absolute():
                raise ModuleError(
                    f"module {module!r} returned guest path {guest!r} from "
                    "osv_image_files; expected an absolute path inside the image"
                )
            if not isinstance(host, str | os.PathLike):
                raise ModuleError(
                    f"module {module!r} returned host path {host!r} for {guest} "
                    "from osv_image_files; expected a path"
                )
            guest = str(PurePosixPath(guest))
            if guest in files:
                raise ModuleError(
                    f"image path {guest} is added by both module {owners[guest]!r} "
                    f"({files[guest]}) and module {module!r} ({host})"
                )
            files[guest] = Path(host)
            owners[guest] = module
    return list(files.items())


REST_METHODS = ("GET", "POST", "PUT", "DELETE")


def rest_routes(pm: pluggy.PluginManager, kernel: object) -> list[RestRoute]:
    """Collect the REST routes all modules add, one per method and path."""
    routes: dict[tuple[str, str], RestRoute] = {}
    for module, returned in _contributions(pm, "osv_rest_routes", kernel=kernel):
        for entry in _as_list(module, "osv_rest_routes", returned):
            route = _rest_route(module, entry)
            key = (route.method, _route_shape(route.path))
            if key in routes:
                raise ModuleError(
                    f"REST route {route.method} {route.path} is claimed by both "
                    f"module {routes[key].module!r} and module {module!r}"
                )
            routes[key] = route
    return list(routes.values())


def _rest_route(module: str, entry: object) -> RestRoute:
    """Check one ``osv_rest_routes`` entry and turn it into a ``RestRoute``."""
    shape_ok = isinstance(entry, tuple | list) and len(entry) in (3, 4)
    if shape_ok:
        method, path, handler, *rest = entry
        operation = rest[0] if rest else {}
        shape_ok = (
            method in REST_METHODS
            and isinstance(path, str)
            and path.startswith("/")
            and callable(handler)
            and isinstance(operation, Mapping)
        )
    if not shape_ok:
        raise ModuleError(
            f"module {module!r} returned {entry!r} from osv_rest_routes; expected "
            f"(method, path, handler[, operation]) with method one of "
            f"{', '.join(REST_METHODS)} and a path starting with '/'"
        )
    # Only the last segment may be a parameter: it takes the rest of the URL.
    segments = path.strip("/").split("/")
    if any("{" in segment or "}" in segment for segment in segments[:-1]):
        raise ModuleError(
            f"module {module!r} returned route {method} {path} from osv_rest_routes; "
            "only the last path segment may be a {parameter}"
        )
    return RestRoute(module, method, path, handler, dict(operation))


def _route_shape(path: str) -> str:
    """The path with its parameter name erased, so /a/{x} and /a/{y} collide."""
    head, brace, _ = path.partition("{")
    return head + "{}" if brace else path.rstrip("/") or "/"


def run_boot(pm: pluggy.PluginManager, kernel: object) -> None:
    """Call every module's ``osv_boot``; the first failure stops the boot."""
    for impl in _implementations(pm, "osv_boot"):
        logger.debug("booting module %s", impl.plugin_name)
        _call(impl, "osv_boot", {"kernel": kernel})


def run_shutdown(pm: pluggy.PluginManager, kernel: object) -> None:
    """Call every module's ``osv_shutdown`` in reverse boot order.

    Every module gets its call even when an earlier one fails; the failures
    are logged and then raised together as one ``ModuleError``.
    """
    failures = []
    for impl in reversed(_implementations(pm, "osv_shutdown")):
        logger.debug("shutting down module %s", impl.plugin_name)
        try:
            _call(impl, "osv_shutdown", {"kernel": kernel})
        except ModuleError as exc:
            logger.error("%s", exc)
            failures.append(str(exc))
    if failures:
        raise ModuleError("; ".join(failures))


def _implementations(pm: pluggy.PluginManager, hook_name: str) -> list[Any]:
    """Return a hook's implementations in the order pluggy would call them."""
    caller = getattr(pm.hook, hook_name)
    impls = list(reversed(caller.get_hookimpls()))
    for impl in impls:
        if impl.hookwrapper or impl.wrapper:
            raise ModuleError(
                f"module {impl.plugin_name!r} wraps {hook_name}; the core calls "
                "this hook one module at a time and accepts no hook wrappers"
            )
    return impls


def _call(impl: Any, hook_name: str, kwargs: dict[str, object]) -> Any:
    # Same calling convention as pluggy: positional, in the order the
    # implementation names its parameters (it may name fewer than the spec).
    args = [kwargs[name] for name in impl.argnames]
    try:
        return impl.function(*args)
    except ModuleError:
        raise
    except Exception as exc:
        raise ModuleError(
            f"module {impl.plugin_name!r} failed in {hook_name}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _contributions(
    pm: pluggy.PluginManager, hook_name: str, **kwargs: object
) -> list[tuple[str, Any]]:
    return [
        (impl.plugin_name, _call(impl, hook_name, kwargs))
        for impl in _implementations(pm, hook_name)
    ]


def _as_list(module: str, hook_name: str, returned: object) -> list[Any]:
    if not isinstance(returned, list | tuple):
        raise ModuleError(
            f"module {module!r} returned {returned!r} from {hook_name}; expected a list"
        )
    return list(returned)


def _describe(module: str, obj: object) -> str:
    qualname = getattr(obj, "__qualname__", type(obj).__qualname__)
    return f"{getattr(obj, '__module__', '?')}.{qualname} (module {module!r})"
