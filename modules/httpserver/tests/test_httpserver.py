"""The httpserver module, installed, against a kernel-shaped object over real HTTP."""

import http.client
import json
import time
from collections import deque
from importlib import metadata
from types import SimpleNamespace

import pytest

import osv
import osv_mod_httpserver
import osv_mod_httpserver.monitoring
from osv.boot import parse_loader_options
from osv.vfs import RamFs, Vfs


def test_both_flavours_are_found_through_their_entry_points():
    modules = osv.load_modules(["httpserver"])
    (full,) = [m for m in modules.loaded if m.name == "httpserver"]
    assert full.distribution == "osv-mod-httpserver"
    assert full.version == metadata.version("osv-mod-httpserver")
    assert full.hooks == (
        "osv_boot",
        "osv_loader_options",
        "osv_rest_routes",
        "osv_shutdown",
    )
    monitoring = osv.load_modules(["httpserver-monitoring"]).plugin_manager
    assert monitoring.get_plugin("httpserver-monitoring") is (
        osv_mod_httpserver.monitoring
    )


def test_one_image_cannot_carry_both_flavours():
    pm = osv.plugin_manager(builtins=False)
    pm.register(osv_mod_httpserver, name="httpserver")
    pm.register(osv_mod_httpserver.monitoring, name="httpserver-monitoring")
    with pytest.raises(osv.ModuleError, match="declared by both"):
        osv.loader_options(pm)


def test_loader_options_give_the_server_settings():
    options = parse_loader_options(
        ["--httpserver-port=8123", "--httpserver-access-allow=true"],
        extra=osv_mod_httpserver.LOADER_OPTIONS,
    )
    config = osv_mod_httpserver.ServerConfig.from_options(options, "full")
    assert (config.ipaddress, config.port) == ("127.0.0.1", 8123)
    assert config.access_allow == ("*",)
    assert not config.ssl


@pytest.fixture
def kernel():
    """What the server reads of a kernel: a real VFS, memory counters, a log."""
    vfs = Vfs()
    vfs.mount(RamFs(), "none", "/")
    vfs.mkdir("/etc", 0o755)
    hosts = vfs.open("/etc/hosts", 0o101, 0o644)  # O_WRONLY | O_CREAT
    hosts.write(b"127.0.0.1 localhost\n")
    hosts.close()
    disk = SimpleNamespace(size=4096, readonly=True, read=lambda o, n: b"--x app\0")
    return SimpleNamespace(
        boot_ns=time.monotonic_ns(),
        version="0.1",
        hostname="osv.local",
        dmesg=deque(["VFS: mounting ramfs at /"]),
        phys=SimpleNamespace(total_frames=1024, free_frames=1000),
        vfs=vfs,
        current=None,
        vcpu_count=1,
        block_devices={"vblk0": disk},
        loader_options=parse_loader_options(
            ["--httpserver-port=0"], extra=osv_mod_httpserver.LOADER_OPTIONS
        ),
        log=lambda line: None,
    )


def _serve(kernel, plugin, name):
    pm = osv.plugin_manager(builtins=False)
    pm.register(plugin, name=name)
    kernel.plugins = pm
    osv.run_boot(pm, kernel)
    return pm, osv_mod_httpserver.server_of(kernel).port


def _get(port, method, path):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_server_answers_from_the_kernel_and_stops_with_it(kernel):
    pm, port = _serve(kernel, osv_mod_httpserver, "httpserver")
    try:
        assert json.loads(_get(port, "GET", "/os/name")[1]) == "OSv"
        assert json.loads(_get(port, "GET", "/os/memory/free")[1]) == 1000 * 4096
        assert json.loads(_get(port, "GET", "/os/dmesg")[1]) == (
            "VFS: mounting ramfs at /\n"
        )
        assert _get(port, "GET", "/file/etc/hosts?op=GET") == (
            200,
            b"127.0.0.1 localhost\n",
        )
        assert json.loads(_get(port, "GET", "/os/cmdline")[1]) == "--x app"
        status, body = _get(port, "GET", "/file/etc/../etc/hosts?op=GET")
        assert status == 400 and json.loads(body)["code"] == 400
        status, body = _get(port, "GET", "/trace/status")
        assert status == 404
        assert "tracing is not available" in json.loads(body)["message"]
        assert _get(port, "GET", "/no/such/route")[0] == 404
    finally:
        osv.run_shutdown(pm, kernel)
    assert osv_mod_httpserver.server_of(kernel) is None


def test_the_monitoring_flavour_serves_no_mutating_route(kernel):
    pm, port = _serve(kernel, osv_mod_httpserver.monitoring, "httpserver-monitoring")
    try:
        status, body = _get(port, "GET", "/openapi.json")
        paths = json.loads(body)["paths"]
        assert {m for ops in paths.values() for m in ops} == {"get", "post"}
        assert _get(port, "PUT", "/file/etc/x?op=MKDIRS")[0] == 405
        assert _get(port, "DELETE", "/file/etc/hosts?op=DELETE")[0] == 405
        assert kernel.vfs.resolve("/etc/hosts").is_reg
    finally:
        osv.run_shutdown(pm, kernel)
