"""OSv-syntax manifests: which host file, directory or symlink becomes which guest
path; manifests written for OSv's build scripts work unchanged."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

from ._errors import ManifestError

logger = logging.getLogger(__name__)

EntryKind = Literal["file", "dir", "symlink"]

# Lines that carry no mapping: blank lines, comments and the optional
# "[manifest]" header, each possibly indented.  Matched after rstrip().
_IGNORED_LINE = re.compile(r"[ \t]*(#.*|\[manifest\])?")

# The separator between the guest and the host path is exactly colon + space,
# so a guest path such as "/etc/a:b" needs no escaping.
_SEPARATOR = ": "

# Host-side substitutions: "%(name)s" takes a define, "%%" is a literal "%".
# Any other "%" is refused (OSv's Python %-formatting would fail on it too).
_SUBSTITUTION = re.compile(r"%(?:\((?P<name>[^)]*)\)s|(?P<percent>%))?")

# Symlink chains longer than this are treated as loops, as the kernel does.
_MAX_SYMLINK_HOPS = 40

_FROM_HOST = "<from-host>"

# File systems whose files the host kernel makes up as they are read (process
# state, devices, kernel settings): copying them gives an image of the build
# machine's state at that moment, and reading some of them fails or never
# ends. A tree given to --from-host that holds one (a whole root, "/") skips
# it with a warning; naming a path inside one is an error.
PSEUDO_FILESYSTEMS = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "proc",
        "pstore",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "sysfs",
        "tracefs",
    }
)
_MOUNT_TABLE = "/proc/self/mounts"
# /proc/self/mounts writes a space, tab, newline or backslash in a path as a
# three-digit octal escape.
_MOUNT_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One object to place in the image.

    ``host`` is the absolute host path whose content (file) or existence (dir)
    is copied; it is None for symlinks, whose ``target`` is stored instead.
    ``origin`` says which manifest line produced the entry (``file:line``).
    """

    guest: str
    kind: EntryKind
    host: str | None
    target: str | None
    origin: str


@dataclasses.dataclass(frozen=True)
class ManifestText:
    """A manifest held in memory; ``name`` stands for the file name in messages."""

    text: str
    name: str = "<manifest>"


def read_manifest(
    source: str | os.PathLike[str] | ManifestText,
    *,
    defines: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> list[ManifestEntry]:
    """Read an OSv-syntax manifest and return its entries in manifest order.

    Relative host paths are taken from *base_dir*; by default that is the
    directory holding the manifest file, or the current directory for a
    ``ManifestText``.  *defines* supplies the ``%(name)s`` variables.
    """
    text, name, default_base = _load(source)
    base = os.path.abspath(base_dir if base_dir is not None else default_base)
    defines = dict(defines or {})

    entries = _Entries()
    for guest, host, origin in _mapping_lines(text, name):
        for entry in _expand_mapping(guest, host, origin, defines, base):
            entries.add(entry)
    logger.debug("manifest %s: %d entries", name, len(entries.items))
    return entries.items


def manifest_from_paths(paths: Iterable[str | os.PathLike[str]]) -> list[ManifestEntry]:
    """Entries placing each host path at the same path in the guest.

    A file (a symlink given here is followed) becomes a file; a directory
    becomes a directory together with its whole tree, in which subdirectories,
    files and symlinks keep their kind (symlinks are not followed). A
    dynamically linked ELF file, given or inside a given tree, brings its
    dynamic linker and the closure of its DT_NEEDED libraries, each at the
    host path where the loader finds it.
    """
    entries = _Entries()
    mounts = host_mounts()
    for number, raw_path in enumerate(paths, 1):
        origin = f"{_FROM_HOST}:{number}"
        path = os.path.abspath(os.fspath(raw_path))
        resolved = os.path.realpath(path)
        try:
            mode = os.stat(resolved).st_mode
        except OSError as error:
            raise ManifestError(
                f"{origin}: cannot use {path}: {error.strerror}"
            ) from None
        guest = _guest_path(path, origin)
        mount_point, fs_type = _mount_of(resolved, mounts)
        if fs_type in PSEUDO_FILESYSTEMS:
            raise ManifestError(
                f"{origin}: {path} is on the {fs_type} file system mounted at "
                f"{mount_point}, whose files the host kernel makes up as they are "
                "read; it cannot be put in an image"
            )

        if stat.S_ISREG(mode):
            entries.add(ManifestEntry(guest, "file", resolved, None, origin))
            for needed in _elf_dependencies(resolved, origin):
                needed_guest = _guest_path(os.path.normpath(needed), origin)
                if needed_guest not in entries:
                    entries.add(
                        ManifestEntry(
                            needed_guest, "file", os.path.realpath(needed), None, origin
                        )
                    )
        elif stat.S_ISDIR(mode):
            entries.add(ManifestEntry(guest, "dir", resolved, None, origin))
            tree = list(_directory_tree(guest, resolved, origin, mounts))
            for entry in tree:
                entries.add(entry)
            # Shared objects in the tree (Python extension modules, say)
            # bring the libraries they need, as OSv's manifest_from_host -r.
            for entry in tree:
                if entry.kind == "file":
                    for needed in _elf_dependencies(entry.host, origin):
                        needed_guest = _guest_path(os.path.normpath(needed), origin)
                        if needed_guest not in entries:
                            entries.add(
                                ManifestEntry(
                                    needed_guest,
                                    "file",
                                    os.path.realpath(needed),
                                    None,
                                    origin,
                                )
                            )
        else:
            raise ManifestError(f"{origin}: {path} is not a regular file or directory")
    return entries.items


def check_tree(entries: Iterable[ManifestEntry]) -> None:
    """Refuse a guest path that is a file (or link) and also holds other paths.

    Such an image could be written, but could never be unpacked or mounted:
    the error belongs at build time, naming both lines.
    """
    leaves: dict[str, ManifestEntry] = {}
    for entry in entries:
        if entry.kind != "dir":
            leaves[entry.guest] = entry
    for entry in entries:
        parent = entry.guest.rsplit("/", 1)[0]
        while parent:
            leaf = leaves.get(parent)
            if leaf is not None:
                raise ManifestError(
                    f"{entry.origin}: {entry.guest} lies inside {parent}, which "
                    f"{leaf.origin} makes a {leaf.kind}"
                )
            parent = parent.rsplit("/", 1)[0]


def _elf_dependencies(path: str, origin: str) -> list[str]:
    """Host paths of the interpreter and libraries a dynamic ELF file needs.

    A path found through an $ORIGIN run path may hold ".." ("$ORIGIN/../lib");
    callers normalise it into the guest path the loader will reach.
    """
    with open(path, "rb") as stream:
        if stream.read(4) != b"\x7fELF":
            return []
    from osv.elf import ElfError, resolve_dependencies

    try:
        dependencies = resolve_dependencies(path)
    except ElfError as error:
        raise ManifestError(f"{origin}: {error}") from None
    found = list(dependencies.libraries)
    if dependencies.interpreter:
        found.append(dependencies.interpreter)
    return found


class _Entries:
    """Entries in order, where a later entry for the same guest path replaces
    the earlier one but keeps its position (as OSv's ordered mapping does)."""

    def __init__(self) -> None:
        self.items: list[ManifestEntry] = []
        self._position: dict[str, int] = {}

    def __contains__(self, guest: str) -> bool:
        return guest in self._position

    def add(self, entry: ManifestEntry) -> None:
        position = self._position.get(entry.guest)
        if position is None:
            self._position[entry.guest] = len(self.items)
            self.items.append(entry)
            return
        logger.debug(
            "%s: %s replaces the entry from %s",
            entry.origin,
            entry.guest,
            self.items[position].origin,
        )
        self.items[position] = entry


def _load(source: str | os.PathLike[str] | ManifestText) -> tuple[str, str, str]:
    """Return the manifest's text, its name for messages and its default base."""
    if isinstance(source, ManifestText):
        return _universal_newlines(source.text), source.name, os.getcwd()

    path = os.fspath(source)
    try:
        with open(path, encoding="utf-8") as manifest:
            text = manifest.read()
    except UnicodeDecodeError as error:
        raise ManifestError(
            f"{path}: the manifest is not UTF-8 text: {error}"
        ) from None
    except OSError as error:
        raise ManifestError(f"{path}: cannot read manifest: {error.strerror}") from None
    return text, path, os.path.dirname(os.path.abspath(path))


def _universal_newlines(text: str) -> str:
    # Files are read in text mode, which turns "\r\n" and "\r" into "\n";
    # in-memory text gets the same treatment so both split identically.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _mapping_lines(text: str, name: str) -> Iterator[tuple[str, str, str]]:
    """Yield (guest, host, origin) for every line that holds a mapping."""
    for number, raw_line in enumerate(text.split("\n"), 1):
        line = raw_line.rstrip()
        if _IGNORED_LINE.fullmatch(line):
            continue

        origin = f"{name}:{number}"
        pieces = line.split(_SEPARATOR, 2)
        if len(pieces) < 2:
            raise ManifestError(
                f"{origin}: expected '<guest path>: <host path>', got {line!r}"
            )
        if len(pieces) > 2:
            # OSv splits on the first two separators and uses only the first
            # two pieces; we do the same, but say so, since a host path that
            # contains ": " is silently cut short that way.
            logger.warning(
                "%s: text after a second ': ' is ignored: %r", origin, pieces[2]
            )
        yield pieces[0].strip(), pieces[1].strip(), origin


def _substitute(text: str, defines: Mapping[str, str], origin: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["percent"]:
            return "%"
        name = match["name"]
        if name is None:
            raise ManifestError(
                f"{origin}: stray '%' in {text!r}; write '%%' for a literal '%' "
                "or '%(name)s' for a defined variable"
            )
        try:
            return defines[name]
        except KeyError:
            raise ManifestError(
                f"{origin}: unknown variable %({name})s (no define given for it)"
            ) from None

    return _SUBSTITUTION.sub(replace, text)


def _expand_mapping(
    guest: str, host: str, origin: str, defines: Mapping[str, str], base: str
) -> Iterator[ManifestEntry]:
    """Turn one manifest line into the entries it stands for."""
    host = _substitute(host, defines, origin)

    # "->target": a symlink made in the guest; nothing is read from the host.
    if host.startswith("->"):
        target = host[2:]
        if not target:
            raise ManifestError(f"{origin}: symlink target missing after '->'")
        if "/&/" in guest or guest.endswith("/**"):
            raise ManifestError(
                f"{origin}: a '->' symlink needs a plain guest path, got {guest!r}"
            )
        yield ManifestEntry(_guest_path(guest, origin), "symlink", None, target, origin)
        return

    # "!path": take the host path literally, keeping a host symlink a symlink.
    literal = host.startswith("!")
    if literal:
        host = host[1:]
    if not host:
        raise ManifestError(f"{origin}: the host path is empty")

    # "prefix/**: dir/**": every file below dir, at the same place below prefix.
    guest_tree, host_tree = guest.endswith("/**"), host.endswith("/**")
    if guest_tree != host_tree:
        raise ManifestError(
            f"{origin}: '/**' must end both the guest and the host path "
            f"(got {guest!r}: {host!r})"
        )
    if guest_tree:
        host_dir = os.path.join(base, host[:-2])
        yield from _manifest_tree(guest[:-2], host_dir, literal, origin)
        return

    # "prefix/&/suffix: dir/&": the suffix is appended to both sides, so a
    # path is written once ("/&/etc/hosts: static/&" is /etc/hosts from
    # static/etc/hosts).
    guest_basename, host_basename = "/&/" in guest, host.endswith("/&")
    if guest_basename != host_basename:
        raise ManifestError(
            f"{origin}: the '/&/' form needs '/&/' in the guest path and a host "
            f"path ending in '/&' (got {guest!r}: {host!r})"
        )
    if guest_basename:
        prefix, suffix = guest.split("/&/", 1)
        guest = f"{prefix}/{suffix}"
        host = host[:-1] + suffix

    guest = _guest_path(guest, origin)
    yield _host_object(guest, os.path.join(base, host), literal, origin, in_tree=False)


def _guest_path(text: str, origin: str) -> str:
    """Return the normalised absolute guest path, refusing anything ambiguous."""
    if not text.startswith("/"):
        raise ManifestError(f"{origin}: guest path {text!r} is not absolute")
    if "\0" in text:
        raise ManifestError(f"{origin}: guest path {text!r} contains a NUL byte")

    parts = [part for part in text.split("/") if part]
    for part in parts:
        if part in (".", ".."):
            raise ManifestError(f"{origin}: guest path {text!r} contains {part!r}")
        if part == "**":
            raise ManifestError(
                f"{origin}: '**' may only end both paths of a line, got {text!r}"
            )
    return "/" + "/".join(parts)


def _manifest_tree(
    guest_prefix: str, host_dir: str, literal: bool, origin: str
) -> Iterator[ManifestEntry]:
    """Entries for every non-directory below *host_dir*, as OSv's "/**" form.

    As in OSv, directories themselves (so empty ones too) are not produced,
    and symlinks to directories are neither followed nor copied.
    """
    if not os.path.isdir(host_dir):
        raise ManifestError(f"{origin}: host directory {host_dir} does not exist")

    def fail(error: OSError) -> None:
        raise ManifestError(f"{origin}: cannot list {error.filename}: {error.strerror}")

    for dirpath, dirnames, filenames in os.walk(host_dir, onerror=fail):
        dirnames.sort()
        relative_dir = os.path.relpath(dirpath, host_dir)
        for filename in sorted(filenames):
            relative = os.path.normpath(os.path.join(relative_dir, filename))
            guest = _guest_path(f"{guest_prefix}/{relative}", origin)
            host = os.path.join(dirpath, filename)
            entry = _host_object(guest, host, literal, origin, in_tree=True)
            if entry is not None:
                yield entry


def _host_object(
    guest: str, host: str, literal: bool, origin: str, *, in_tree: bool
) -> ManifestEntry | None:
    """The entry for one host path; None for a special file found in a tree."""
    if literal:
        try:
            mode = os.lstat(host).st_mode
        except OSError as error:
            raise ManifestError(
                f"{origin}: cannot use {host}: {error.strerror}"
            ) from None
        if stat.S_ISLNK(mode):
            return ManifestEntry(guest, "symlink", None, os.readlink(host), origin)
        parent, name = os.path.split(host)
        resolved = os.path.join(os.path.realpath(parent), name)
    else:
        resolved = os.path.realpath(_dereference(host, origin))
        try:
            mode = os.stat(resolved).st_mode
        except OSError as error:
            raise ManifestError(
                f"{origin}: cannot use {host}: {error.strerror}"
            ) from None

    if stat.S_ISREG(mode):
        return ManifestEntry(guest, "file", resolved, None, origin)
    if stat.S_ISDIR(mode) and not in_tree:
        # A directory named on a line only creates the (empty) guest directory.
        return ManifestEntry(guest, "dir", resolved, None, origin)
    if in_tree:
        logger.warning("%s: skipping %s: not a regular file", origin, host)
        return None
    raise ManifestError(f"{origin}: {host} is not a regular file or directory")


def _dereference(path: str, origin: str) -> str:
    """Follow *path* through symlinks the way OSv's build scripts do.

    A relative link target is taken from the link's directory.  An absolute
    target is looked up sysroot-style: first below the link's own directory,
    then below each parent in turn, ending with the real root; this lets a
    manifest point into an unpacked foreign root file system whose links are
    absolute.  Returns a path that is not a symlink.
    """
    for _ in range(_MAX_SYMLINK_HOPS):
        try:
            target = os.readlink(path)
        except OSError as error:
            if error.errno == errno.EINVAL:
                return path
            raise ManifestError(
                f"{origin}: cannot use {path}: {error.strerror}"
            ) from None

        if not target.startswith("/"):
            path = os.path.join(os.path.dirname(path), target)
            continue

        base = os.path.dirname(path)
        while not os.path.exists(base.rstrip("/") + target):
            if base == "/":
                raise ManifestError(
                    f"{origin}: symlink {path} points to {target}, which does not exist"
                )
            base = os.path.dirname(base)
        path = base.rstrip("/") + target
    raise ManifestError(f"{origin}: too many levels of symlinks at {path}")


def host_mounts() -> dict[str, str]:
    """This host's mount points and the type of file system mounted on each.

    Empty when the mount table cannot be read (no /proc): nothing is then
    known to be a pseudo file system.
    """
    try:
        with open(_MOUNT_TABLE, encoding="utf-8", errors="surrogateescape") as table:
            lines = table.read().splitlines()
    except OSError as error:
        logger.debug("cannot read %s: %s", _MOUNT_TABLE, error.strerror)
        return {}
    mounts = {}
    for line in lines:
        fields = line.split()
        if len(fields) >= 3:
            point = _MOUNT_ESCAPE.sub(lambda m: chr(int(m[1], 8)), fields[1])
            # A later line is a mount on top of an earlier one at that point.
            mounts[point] = fields[2]
    return mounts


def _read_link(path: str, origin: str) -> str:
    """The target of the host symlink *path*; ``ManifestError`` if unreadable."""
    try:
        return os.readlink(path)
    except OSError as error:
        raise ManifestError(
            f"{origin}: cannot read the symlink {path}: {error.strerror}"
        ) from None


def _mount_of(path: str, mounts: Mapping[str, str]) -> tuple[str, str]:
    """The mount point holding the real path *path*, and its file-system type."""
    probe = path
    while True:
        fs_type = mounts.get(probe)
        if fs_type is not None or probe == "/":
            return probe, fs_type or ""
        probe = os.path.dirname(probe)


def _directory_tree(
    guest_root: str, host_root: str, origin: str, mounts: Mapping[str, str]
) -> Iterator[ManifestEntry]:
    """Every directory, file and symlink below *host_root*, kinds kept as they are.

    A directory on which a pseudo file system is mounted is skipped, with a
    warning.
    """
    pending = [(guest_root, host_root)]
    while pending:
        guest_dir, host_dir = pending.pop()
        try:
            with os.scandir(host_dir) as listing:
                children = sorted(listing, key=lambda child: child.name)
        except OSError as error:
            raise ManifestError(
                f"{origin}: cannot list {host_dir}: {error.strerror}"
            ) from None

        subdirectories = []
        for child in children:
            guest = _guest_path(f"{guest_dir}/{child.name}", origin)
            try:
                if child.is_symlink():
                    yield ManifestEntry(
                        guest, "symlink", None, _read_link(child.path, origin), origin
                    )
                elif child.is_dir(follow_symlinks=False):
                    fs_type = mounts.get(child.path, "")
                    if fs_type in PSEUDO_FILESYSTEMS:
                        logger.warning(
                            "%s: skipping %s: a %s file system, whose files the "
                            "host kernel makes up",
                            origin,
                            child.path,
                            fs_type,
                        )
                        continue
                    yield ManifestEntry(guest, "dir", child.path, None, origin)
                    subdirectories.append((guest, child.path))
                elif child.is_file(follow_symlinks=False):
                    yield ManifestEntry(guest, "file", child.path, None, origin)
                else:
                    logger.warning(
                        "%s: skipping %s: not a regular file", origin, child.path
                    )
            except OSError as error:
                # The type of an entry is looked up when the listing does not
                # carry it, and that can fail as well.
                raise ManifestError(
                    f"{origin}: cannot use {child.path}: {error.strerror}"
                ) from None
        # Reversed so that the stack visits subdirectories in name order.
        pending.extend(reversed(subdirectories))
