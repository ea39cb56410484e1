"""Every hook the core calls, and the markers modules use to implement them.

A module implements a hook by defining a function of the same name decorated
with ``osv.hookimpl``; it may leave out parameters it does not need.
"""

import pluggy

PROJECT_NAME = "osv"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ---------------------------------------------------------------------------
# Registries: what a module adds to the kernel's tables
# ---------------------------------------------------------------------------


@hookspec
def osv_filesystem_types():
    """Name the file-system types this module provides.

    Return a list of classes. Each has a class attribute ``name`` (for example
    ``"ramfs"``), the type name images and mount options use. Two classes
    claiming one name stop the kernel with an error naming both.

    Implemented by the core for ramfs, devfs and procfs, and by every
    file-system module (rofs, zfs, nfs, virtiofs).
    """


@hookspec
def osv_syscall_families():
    """Contribute handlers to the Linux system-call table.

    Return a list of mappings from system-call number (x86-64 numbering) to
    the handler serving it. The core merges them into one table; two families
    claiming one number stop the kernel with an error naming both.

    Implemented by the core for the calls it serves itself (files, memory,
    processes) and by modules that own a family, such as net for sockets.
    """


@hookspec
def osv_loader_options():
    """Add options to the boot command line the kernel accepts.

    Return a list of ``osv.boot.LoaderOption``. The boot-option parser is
    strict: an option no module declared stops the boot, and two modules
    declaring one option name is an error naming both.

    Implemented by modules with settings chosen at boot, such as net (IP
    configuration) or httpserver (its port).
    """


@hookspec
def osv_rest_routes(kernel):
    """Add routes to the REST API served by the httpserver module.

    Return a list of ``(method, path, handler)`` or ``(method, path, handler,
    operation)`` tuples. ``method`` is an HTTP method (``"GET"``, ``"POST"``,
    ``"PUT"``, ``"DELETE"``); ``path`` starts with ``/`` and may end with one
    ``{name}`` parameter, which takes the rest of the URL, slashes included.
    ``handler(params)`` gets the path, query and form parameters as a dict of
    strings and returns what the response carries as JSON; it raises
    ``ValueError`` for a bad request (400) and ``LookupError`` for something
    that does not exist (404). ``operation`` is an OpenAPI 3 operation object
    (summary, parameters, responses) for ``/openapi.json``. Two modules
    claiming one method and path is an error naming both. The read-only
    (monitoring) server keeps only the GET routes.

    :param kernel: the booted kernel the handlers report on.

    Implemented by httpserver for OSv's own route groups, and by modules that
    expose their state over the REST API, such as a language runtime's.
    """


# ---------------------------------------------------------------------------
# Lifecycle: what a module does while the VM runs
# ---------------------------------------------------------------------------


@hookspec
def osv_boot(kernel):
    """Start this module's services once the root file system is mounted.

    Return None. Called once per boot, before the application starts; an
    exception stops the boot with an error naming the module.

    :param kernel: the booting kernel, its root file system already mounted.

    Implemented by modules that run services beside the application, such as
    httpserver.
    """


@hookspec
def osv_shutdown(kernel):
    """Stop this module's services when the VM stops.

    Return None. Modules are called in the reverse of the order ``osv_boot``
    ran in; every module is called even if an earlier one fails.

    :param kernel: the stopping kernel; the application has exited.

    Implemented by every module that implements ``osv_boot``.
    """


# ---------------------------------------------------------------------------
# Image assembly: what a module adds to the disk images that include it
# ---------------------------------------------------------------------------


@hookspec
def osv_image_files(config):
    """Add files to an image that includes this module.

    Return a list of ``(guest_path, host_path)`` pairs: an absolute path
    inside the image and the host file copied there. Two modules adding one
    guest path is an error naming both.

    :param config: the configuration of the image being assembled.

    Implemented by modules that need files inside the guest, such as
    httpserver (its static pages).
    """
