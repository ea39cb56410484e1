"""Module discovery through the entry-point group osv.modules."""

import logging
import sys

import pytest

import osv

GOOD = """
    from osv import hookimpl

    @hookimpl
    def osv_image_files(config):
        return []

    @hookimpl
    def osv_boot(kernel):
        pass
"""

BROKEN = """
    import osv_mod_dependency_that_is_not_installed
"""


def _by_name(modules):
    return {module.name: module for module in modules}


def test_installed_module_is_loaded_with_its_version_and_hooks(install_module):
    install_module("good", GOOD, version="2.3.4")

    modules = osv.load_modules()

    good = _by_name(modules.loaded)["good"]
    assert good == osv.LoadedModule(
        name="good",
        distribution="osv-mod-good",
        version="2.3.4",
        hooks=("osv_boot", "osv_image_files"),
        target="osv_mod_good",
    )
    assert modules.plugin_manager.get_plugin("good") is sys.modules["osv_mod_good"]
    assert "good" not in _by_name(modules.failed)


def test_builtins_are_listed_as_part_of_the_core():
    core = _by_name(osv.load_modules().loaded)["core"]
    assert core.builtin
    assert (core.distribution, core.version) == ("osv-core", osv.__version__)
    assert "osv_filesystem_types" in core.hooks


def test_module_that_fails_to_import_is_reported_and_the_others_still_load(
    install_module, caplog
):
    install_module("aaa", BROKEN, version="0.1.0")
    install_module("good", GOOD)

    with caplog.at_level(logging.DEBUG, logger="osv._plugins"):
        modules = osv.load_modules()

    assert "good" in _by_name(modules.loaded)
    failure = _by_name(modules.failed)["aaa"]
    assert failure == osv.FailedModule(
        name="aaa",
        distribution="osv-mod-aaa",
        version="0.1.0",
        reason="module 'aaa' failed to import: ModuleNotFoundError: "
        "No module named 'osv_mod_dependency_that_is_not_installed'",
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "module aaa (osv-mod-aaa 0.1.0) failed to import" in warnings[0].message
    assert warnings[0].exc_info is None
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert debug, "the traceback of the failure is logged at debug level"


def test_two_distributions_claiming_one_name_is_an_error_naming_both(install_module):
    install_module("nfs", GOOD, distribution="osv-mod-nfs", version="1.0.0")
    install_module("nfs", GOOD, distribution="nfs-for-osv", version="0.9.0")

    with pytest.raises(osv.ModuleError) as excinfo:
        osv.load_modules()
    message = str(excinfo.value)
    assert message.startswith("module name 'nfs' is claimed by both ")
    assert "osv-mod-nfs 1.0.0" in message
    assert "nfs-for-osv 0.9.0" in message


def test_a_module_may_not_claim_the_name_of_the_builtins(install_module):
    install_module("core", GOOD, distribution="osv-mod-fakecore", version="1.0.0")

    with pytest.raises(osv.ModuleError) as excinfo:
        osv.load_modules()
    assert str(excinfo.value) == (
        "module name 'core' is claimed by both osv-core (built in) "
        "and osv-mod-fakecore 1.0.0"
    )


def test_loading_named_modules_loads_exactly_those(install_module):
    install_module("good", GOOD)
    install_module("other", GOOD)
    install_module("aaa", BROKEN)

    modules = osv.load_modules(["good"])

    assert sorted(_by_name(modules.loaded)) == ["core", "good"]
    assert modules.failed == ()
    assert "osv_mod_aaa" not in sys.modules


def test_a_missing_named_module_names_the_pip_command_that_fixes_it(install_module):
    install_module("good", GOOD)

    with pytest.raises(osv.ModuleError) as excinfo:
        osv.load_modules(["nfs"])
    assert str(excinfo.value) == (
        "module 'nfs' is not installed; to fix it run: pip install osv-mod-nfs"
    )

    with pytest.raises(osv.ModuleError) as excinfo:
        osv.load_modules(["good", "nfs", "zfs"])
    assert excinfo.value.hint == "pip install osv-mod-nfs osv-mod-zfs"
    assert str(excinfo.value) == (
        "modules 'nfs', 'zfs' are not installed; "
        "to fix it run: pip install osv-mod-nfs osv-mod-zfs"
    )

    # An image records each module's package: one package can hold several.
    with pytest.raises(osv.ModuleError) as excinfo:
        osv.load_modules(
            ["web", "web-monitoring"],
            {"web": "osv-mod-web", "web-monitoring": "osv-mod-web"},
        )
    assert excinfo.value.hint == "pip install osv-mod-web"


def test_a_named_module_that_fails_to_import_is_an_error(install_module):
    install_module("aaa", BROKEN)

    with pytest.raises(osv.ModuleError, match="module 'aaa' failed to import"):
        osv.load_modules(["aaa"])


def test_a_misspelt_hook_makes_the_module_fail(install_module):
    install_module(
        "typo",
        """
        from osv import hookimpl

        @hookimpl
        def osv_filesytem_types():
            return []
        """,
    )

    modules = osv.load_modules()

    assert _by_name(modules.failed)["typo"].reason == (
        "module 'typo' implements hooks the core does not define: osv_filesytem_types"
    )
    assert modules.plugin_manager.get_plugin("typo") is None


def test_a_hook_with_parameters_the_spec_lacks_makes_the_module_fail(install_module):
    install_module(
        "extra",
        """
        from osv import hookimpl

        @hookimpl
        def osv_boot(kernel, console):
            pass
        """,
    )

    modules = osv.load_modules()

    reason = _by_name(modules.failed)["extra"].reason
    assert reason.startswith("module 'extra' was rejected: ")
    assert "console" in reason


def test_module_distributions_lists_modules_without_importing_them(install_module):
    install_module("aaa", BROKEN, version="0.1.0")
    install_module("good", GOOD, version="2.0.0")

    listed = osv._plugins.module_distributions()

    assert ("aaa", "osv-mod-aaa", "0.1.0") in listed
    assert ("good", "osv-mod-good", "2.0.0") in listed
    assert "osv_mod_aaa" not in sys.modules
    assert "osv_mod_good" not in sys.modules


def test_the_package_exports_what_modules_need_and_nothing_by_accident():
    # dir(), not vars(): the package imports its exports on first use.
    public = {
        name
        for name in dir(osv)
        if not name.startswith("_") and not isinstance(getattr(osv, name), type(sys))
    }
    assert public == set(osv.__all__) - {"__version__"}
    assert {"hookimpl", "load_modules", "ModuleError", "plugin_manager"} <= public


def test_the_package_exports_are_the_objects_of_the_modules_defining_them():
    from osv import _plugins, hookspecs

    for name in set(osv.__all__) - {"__version__", "hookimpl"}:
        assert getattr(osv, name) is getattr(_plugins, name)
    assert osv.hookimpl is hookspecs.hookimpl
    with pytest.raises(AttributeError, match="no attribute 'not_exported'"):
        osv.not_exported  # noqa: B018


def test_an_image_s_recorded_targets_load_without_scanning_distributions(
    install_module, monkeypatch
):
    install_module("good", GOOD, version="2.3.4")
    from importlib import metadata

    def no_scan(**_):
        raise AssertionError("the entry points were scanned")

    monkeypatch.setattr(metadata, "entry_points", no_scan)
    modules = osv.load_modules(
        ["good"], {"good": "osv-mod-good"}, {"good": "osv_mod_good"}
    )
    good = _by_name(modules.loaded)["good"]
    assert (good.distribution, good.version, good.target) == (
        "osv-mod-good",
        "2.3.4",
        "osv_mod_good",
    )
    assert good.hooks == ("osv_boot", "osv_image_files")
    assert modules.plugin_manager.get_plugin("good") is sys.modules["osv_mod_good"]


def test_a_recorded_target_that_is_gone_falls_back_to_the_scan_and_its_hint(
    install_module,
):
    install_module("good", GOOD)
    # The image recorded a package that is no longer installed.
    with pytest.raises(osv.ModuleError) as excinfo:
        osv.load_modules(["web"], {"web": "osv-mod-web"}, {"web": "osv_mod_web:plugin"})
    assert excinfo.value.hint == "pip install osv-mod-web"
    # A recorded target the scan still finds under its name loads normally.
    modules = osv.load_modules(
        ["good"], {"good": "osv-mod-other"}, {"good": "osv_mod_good"}
    )
    assert _by_name(modules.loaded)["good"].distribution == "osv-mod-good"
