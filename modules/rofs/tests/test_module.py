"""The rofs module, installed, as the kernel sees it: found by its entry point."""

from importlib import metadata

import osv
import osv_mod_rofs
from osv_mod_rofs import RoFs


def test_kernel_finds_the_module_through_its_entry_point():
    modules = osv.load_modules(["rofs"])

    (rofs,) = [module for module in modules.loaded if module.name == "rofs"]
    assert rofs.distribution == "osv-mod-rofs"
    assert rofs.version == metadata.version("osv-mod-rofs")
    assert rofs.hooks == ("osv_filesystem_types",)
    assert modules.plugin_manager.get_plugin("rofs") is osv_mod_rofs


def test_the_module_registers_the_rofs_type_beside_the_core_ones():
    pm = osv.plugin_manager()
    pm.register(osv_mod_rofs, name="rofs")

    types = osv.filesystem_types(pm)

    assert types["rofs"] is RoFs
    assert {"ramfs", "devfs", "procfs", "rofs"} <= set(types)
    assert RoFs.name == "rofs" and RoFs.nodev is False
    assert callable(RoFs.mkfs)


def test_the_package_exports_exactly_its_public_api():
    assert sorted(osv_mod_rofs.__all__) == sorted(
        name
        for name in vars(osv_mod_rofs)
        if not name.startswith("_") and name != "hookimpl"
    )
