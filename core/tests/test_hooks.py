"""Each hook of osv.hookspecs, called through the core's helpers on fixture plugins."""

import inspect
import re

import pytest

import osv
from osv import hookimpl, hookspecs


def _hook_specs():
    return {
        name: function
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("osv_")
    }


# ---------------------------------------------------------------------------
# Keeping the hooks honest
# ---------------------------------------------------------------------------


def test_every_hook_is_marked_as_a_spec_and_named_osv():
    marked = {
        name
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, f"{hookspecs.PROJECT_NAME}_spec")
    }
    assert marked, "hookspecs defines no hooks"
    assert marked == set(_hook_specs())


def test_every_hook_has_a_test_named_after_it():
    missing = [name for name in _hook_specs() if f"test_hook_{name}" not in globals()]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


@pytest.mark.parametrize("name", sorted(_hook_specs()))
def test_every_hook_docstring_has_summary_return_parameters_and_implementers(name):
    function = _hook_specs()[name]
    doc = inspect.getdoc(function)
    assert doc, f"{name} has no docstring"
    summary, _, rest = doc.partition("\n\n")
    assert "\n" not in summary and summary.endswith(".")
    assert rest.startswith("Return"), f"{name}: the return contract comes second"
    for parameter in inspect.signature(function).parameters:
        assert f":param {parameter}:" in doc, f"{name} does not describe {parameter}"
    assert re.search(r"^Implemented by ", doc, re.MULTILINE), (
        f"{name} does not say who implements it"
    )


def test_implementations_may_leave_out_parameters(bare_pm):
    calls = []

    class Service:
        @hookimpl
        def osv_boot(self):
            calls.append("booted")

    bare_pm.register(Service(), name="service")
    osv.run_boot(bare_pm, kernel=object())
    assert calls == ["booted"]


def test_hook_wrappers_are_refused(bare_pm):
    class Wrapper:
        @hookimpl(wrapper=True)
        def osv_filesystem_types(self):
            return (yield)

    bare_pm.register(Wrapper(), name="wrapper")
    with pytest.raises(osv.ModuleError, match="'wrapper' wraps osv_filesystem_types"):
        osv.filesystem_types(bare_pm)


def test_a_hook_raising_is_reported_with_the_module_name(bare_pm):
    class Broken:
        @hookimpl
        def osv_image_files(self, config):
            raise KeyError(config)

    bare_pm.register(Broken(), name="broken")
    with pytest.raises(osv.ModuleError) as excinfo:
        osv.image_files(bare_pm, config="release")
    assert str(excinfo.value) == (
        "module 'broken' failed in osv_image_files: KeyError: 'release'"
    )
    assert isinstance(excinfo.value.__cause__, KeyError)


# ---------------------------------------------------------------------------
# Registries
# ---------------------------------------------------------------------------


class ScratchFs:
    name = "scratchfs"


class RivalScratchFs:
    name = "scratchfs"


class PlainFs:
    name = "plainfs"


def test_hook_osv_filesystem_types(bare_pm):
    class Provider:
        @hookimpl
        def osv_filesystem_types(self):
            return [ScratchFs, PlainFs]

    bare_pm.register(Provider(), name="provider")
    assert osv.filesystem_types(bare_pm) == {"scratchfs": ScratchFs, "plainfs": PlainFs}

    class Rival:
        @hookimpl
        def osv_filesystem_types(self):
            return [RivalScratchFs]

    bare_pm.register(Rival(), name="rival")
    with pytest.raises(osv.ModuleError) as excinfo:
        osv.filesystem_types(bare_pm)
    message = str(excinfo.value)
    assert message.startswith("file-system type 'scratchfs' is claimed by both ")
    assert f"{__name__}.RivalScratchFs (module 'rival')" in message
    assert f"{__name__}.ScratchFs (module 'provider')" in message


def test_filesystem_types_without_a_name_are_refused(bare_pm):
    class Nameless:
        pass

    class Provider:
        @hookimpl
        def osv_filesystem_types(self):
            return [Nameless]

    bare_pm.register(Provider(), name="provider")
    with pytest.raises(osv.ModuleError, match="string attribute 'name'"):
        osv.filesystem_types(bare_pm)


def test_builtin_filesystems_are_registered_through_the_hook():
    try:
        from osv.vfs import DevFs, ProcFs, RamFs
    except ImportError as exc:
        pytest.skip(f"osv.vfs does not export RamFs, DevFs and ProcFs yet: {exc}")

    registry = osv.filesystem_types(osv.plugin_manager())
    for cls in (RamFs, DevFs, ProcFs):
        assert registry[cls.name] is cls
    assert {"ramfs", "devfs", "procfs"} <= set(registry)


def sys_read(*args):
    return 0


def sys_write(*args):
    return 0


def sys_socket(*args):
    return 3


def other_read(*args):
    return 0


def test_hook_osv_syscall_families(bare_pm):
    class Files:
        @hookimpl
        def osv_syscall_families(self):
            return [{0: sys_read}, {1: sys_write}]

    class Net:
        @hookimpl
        def osv_syscall_families(self):
            return [{41: sys_socket}]

    bare_pm.register(Files(), name="files")
    bare_pm.register(Net(), name="net")
    assert osv.syscall_table(bare_pm) == {0: sys_read, 1: sys_write, 41: sys_socket}

    class Rival:
        @hookimpl
        def osv_syscall_families(self):
            return [{0: other_read}]

    bare_pm.register(Rival(), name="rival")
    with pytest.raises(osv.ModuleError) as excinfo:
        osv.syscall_table(bare_pm)
    message = str(excinfo.value)
    assert message.startswith("system call 0 is claimed by both ")
    assert f"{__name__}.sys_read (module 'files')" in message
    assert f"{__name__}.other_read (module 'rival')" in message


@pytest.mark.parametrize(
    "family", [{"0": sys_read}, {-1: sys_read}, {True: sys_read}, {0: "sys_read"}]
)
def test_syscall_families_with_bad_entries_are_refused(bare_pm, family):
    class Bad:
        @hookimpl
        def osv_syscall_families(self):
            return [family]

    bare_pm.register(Bad(), name="bad")
    with pytest.raises(osv.ModuleError, match="module 'bad' maps"):
        osv.syscall_table(bare_pm)


def test_hook_osv_loader_options(bare_pm):
    try:
        from osv.boot import LoaderOption
    except ImportError as exc:
        pytest.skip(f"osv.boot does not export LoaderOption yet: {exc}")

    port = LoaderOption(name="http-port", takes_value=True, help="port to serve on")
    quiet = LoaderOption(name="http-quiet", takes_value=False, help="log nothing")

    class Http:
        @hookimpl
        def osv_loader_options(self):
            return [port, quiet]

    bare_pm.register(Http(), name="httpserver")
    assert osv.loader_options(bare_pm) == [port, quiet]

    class Rival:
        @hookimpl
        def osv_loader_options(self):
            return [LoaderOption(name="http-port", takes_value=True, help="other")]

    bare_pm.register(Rival(), name="rival")
    with pytest.raises(osv.ModuleError) as excinfo:
        osv.loader_options(bare_pm)
    assert str(excinfo.value) == (
        "boot option 'http-port' is declared by both module 'rival' "
        "and module 'httpserver'"
    )


def test_loader_options_must_be_loader_option_objects(bare_pm):
    pytest.importorskip("osv.boot", reason="osv.boot is not written yet")

    class Sloppy:
        @hookimpl
        def osv_loader_options(self):
            return ["--http-port"]

    bare_pm.register(Sloppy(), name="sloppy")
    with pytest.raises(osv.ModuleError, match="expected osv.boot.LoaderOption"):
        osv.loader_options(bare_pm)


def _uptime(params):
    return 42


def _echo(params):
    return params


def test_hook_osv_rest_routes(bare_pm):
    kernels = []

    class Os:
        @hookimpl
        def osv_rest_routes(self, kernel):
            kernels.append(kernel)
            return [
                ("GET", "/os/uptime", _uptime),
                ("POST", "/echo/{rest}", _echo, {"summary": "Echo"}),
            ]

    kernel = object()
    bare_pm.register(Os(), name="httpserver")
    routes = osv.rest_routes(bare_pm, kernel)
    assert kernels == [kernel]
    assert [(r.module, r.method, r.path, r.handler) for r in routes] == [
        ("httpserver", "GET", "/os/uptime", _uptime),
        ("httpserver", "POST", "/echo/{rest}", _echo),
    ]
    assert [r.operation for r in routes] == [{}, {"summary": "Echo"}]

    class Rival:
        @hookimpl
        def osv_rest_routes(self):
            return [("POST", "/echo/{other}", _echo)]

    bare_pm.register(Rival(), name="rival")
    with pytest.raises(osv.ModuleError) as excinfo:
        osv.rest_routes(bare_pm, kernel)
    assert str(excinfo.value) == (
        "REST route POST /echo/{rest} is claimed by both module 'rival' "
        "and module 'httpserver'"
    )


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        (("FETCH", "/x", _uptime), "expected \\(method, path, handler"),
        (("GET", "x", _uptime), "a path starting with '/'"),
        (("GET", "/x", "not callable"), "expected \\(method, path, handler"),
        (("GET", "/{a}/b", _uptime), "only the last path segment"),
        ("GET /x", "expected \\(method, path, handler"),
    ],
)
def test_rest_routes_in_the_wrong_shape_are_refused(bare_pm, entry, complaint):
    class Sloppy:
        @hookimpl
        def osv_rest_routes(self):
            return [entry]

    bare_pm.register(Sloppy(), name="sloppy")
    with pytest.raises(osv.ModuleError, match=complaint):
        osv.rest_routes(bare_pm, object())


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------


class _Service:
    """A fixture module that records its boot and shutdown in a shared log."""

    def __init__(self, name, log, fail_on=()):
        self.name = name
        self.log = log
        self.fail_on = fail_on

    @hookimpl
    def osv_boot(self, kernel):
        self.log.append(("boot", self.name, kernel))
        if "boot" in self.fail_on:
            raise RuntimeError(f"{self.name} cannot start")

    @hookimpl
    def osv_shutdown(self, kernel):
        self.log.append(("shutdown", self.name, kernel))
        if "shutdown" in self.fail_on:
            raise RuntimeError(f"{self.name} cannot stop")


def test_hook_osv_boot(bare_pm):
    log = []
    kernel = object()
    for name in ("first", "second", "third"):
        bare_pm.register(_Service(name, log), name=name)

    osv.run_boot(bare_pm, kernel)
    assert log == [
        ("boot", "third", kernel),
        ("boot", "second", kernel),
        ("boot", "first", kernel),
    ]


def test_a_failing_boot_hook_stops_the_boot_naming_the_module(bare_pm):
    log = []
    bare_pm.register(_Service("later", log), name="later")
    bare_pm.register(_Service("broken", log, fail_on={"boot"}), name="broken")

    with pytest.raises(osv.ModuleError) as excinfo:
        osv.run_boot(bare_pm, kernel="k")
    assert str(excinfo.value) == (
        "module 'broken' failed in osv_boot: RuntimeError: broken cannot start"
    )
    assert [entry[1] for entry in log] == ["broken"]


def test_hook_osv_shutdown(bare_pm):
    log = []
    kernel = object()
    for name in ("first", "second", "third"):
        bare_pm.register(_Service(name, log), name=name)

    osv.run_boot(bare_pm, kernel)
    booted = [name for _, name, _ in log]
    log.clear()
    osv.run_shutdown(bare_pm, kernel)
    assert log == [("shutdown", name, kernel) for name in reversed(booted)]


def test_every_module_shuts_down_even_after_a_failure(bare_pm, caplog):
    log = []
    bare_pm.register(_Service("a", log, fail_on={"shutdown"}), name="a")
    bare_pm.register(_Service("b", log, fail_on={"shutdown"}), name="b")
    bare_pm.register(_Service("c", log), name="c")

    with pytest.raises(osv.ModuleError) as excinfo:
        osv.run_shutdown(bare_pm, kernel=None)
    assert [name for _, name, _ in log] == ["a", "b", "c"]
    assert str(excinfo.value) == (
        "module 'a' failed in osv_shutdown: RuntimeError: a cannot stop; "
        "module 'b' failed in osv_shutdown: RuntimeError: b cannot stop"
    )
    assert [record.levelname for record in caplog.records] == ["ERROR", "ERROR"]


# ---------------------------------------------------------------------------
# Image assembly
# ---------------------------------------------------------------------------


def test_hook_osv_image_files(bare_pm, tmp_path):
    motd = tmp_path / "motd"
    motd.write_text("hello\n")
    seen_configs = []

    class Greeter:
        @hookimpl
        def osv_image_files(self, config):
            seen_configs.append(config)
            return [("/etc/motd", motd), ("/etc//issue", str(motd))]

    bare_pm.register(Greeter(), name="greeter")
    config = {"name": "demo"}
    assert osv.image_files(bare_pm, config) == [
        ("/etc/motd", motd),
        ("/etc/issue", motd),
    ]
    assert seen_configs == [config]

    class Rival:
        @hookimpl
        def osv_image_files(self):
            return [("/etc/motd", "/dev/null")]

    bare_pm.register(Rival(), name="rival")
    with pytest.raises(osv.ModuleError) as excinfo:
        osv.image_files(bare_pm, config)
    assert str(excinfo.value) == (
        "image path /etc/motd is added by both module 'rival' (/dev/null) "
        f"and module 'greeter' ({motd})"
    )


@pytest.mark.parametrize(
    ("returned", "complaint"),
    [
        ([("etc/motd", "/tmp/x")], "expected an absolute path inside the image"),
        ([("/etc/motd",)], "expected a (guest_path, host_path) pair"),
        ([("/etc/motd", 42)], "expected a path"),
        ("/etc/motd", "expected a list"),
    ],
)
def test_image_files_in_the_wrong_shape_are_refused(bare_pm, returned, complaint):
    class Sloppy:
        @hookimpl
        def osv_image_files(self):
            return returned

    bare_pm.register(Sloppy(), name="sloppy")
    with pytest.raises(osv.ModuleError) as excinfo:
        osv.image_files(bare_pm, config=None)
    assert complaint in str(excinfo.value)
