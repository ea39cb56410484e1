"""The example module, installed, as the kernel sees it."""

from importlib import metadata

import osv
import osv_mod_example


def test_kernel_finds_the_module_through_its_entry_point():
    modules = osv.load_modules(["example"])

    (example,) = [module for module in modules.loaded if module.name == "example"]
    assert example.distribution == "osv-mod-example"
    assert example.version == metadata.version("osv-mod-example")
    assert example.hooks == ("osv_image_files",)
    assert modules.plugin_manager.get_plugin("example") is osv_mod_example


def test_images_that_include_the_module_get_its_message_of_the_day():
    pm = osv.plugin_manager(builtins=False)
    pm.register(osv_mod_example, name="example")

    files = osv.image_files(pm, config=None)

    assert files == [("/etc/motd", osv_mod_example.MOTD_SOURCE)]
    assert osv_mod_example.MOTD_SOURCE.read_text().startswith("Welcome")
