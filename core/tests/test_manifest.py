"""OSv-syntax manifests: each form of line, the errors, and --from-host trees."""

import os
import textwrap

import pytest

from osv.image import (
    ManifestEntry,
    ManifestError,
    ManifestText,
    manifest_from_paths,
    read_manifest,
)


@pytest.fixture
def host(tmp_path):
    """A small host tree: files, a directory, and a manifest directory beside it."""
    root = tmp_path / "host"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "libfoo.so.1").write_bytes(b"foo")
    (root / "bin").mkdir()
    (root / "bin" / "hello").write_bytes(b"hello")
    (root / "etc").mkdir()
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "empty").mkdir()
    return root


def manifest(text, name="test.manifest", **kwargs):
    return read_manifest(ManifestText(textwrap.dedent(text), name), **kwargs)


def as_tuples(entries):
    return [(e.guest, e.kind, e.host, e.target) for e in entries]


def test_file_line_maps_guest_path_to_absolute_host_path(host):
    entries = manifest("/hello: bin/hello\n", base_dir=host)

    assert entries == [
        ManifestEntry(
            "/hello", "file", str(host / "bin/hello"), None, "test.manifest:1"
        )
    ]


def test_header_comments_and_blank_lines_are_ignored(host):
    text = """\
        [manifest]
        # a comment

           # an indented comment
          [manifest]
        /hello: bin/hello
    """
    entries = manifest(text, base_dir=host)

    assert [(e.guest, e.origin) for e in entries] == [("/hello", "test.manifest:6")]


def test_separator_is_colon_space_so_guest_paths_may_hold_colons(host):
    entries = manifest("/a:b: bin/hello\n", base_dir=host)

    assert entries[0].guest == "/a:b"


def test_both_sides_are_stripped_of_whitespace(host):
    entries = manifest("   /hello   :    bin/hello   \n", base_dir=host)

    assert as_tuples(entries) == [("/hello", "file", str(host / "bin/hello"), None)]


def test_text_after_a_second_separator_is_ignored_with_a_warning(host, caplog):
    entries = manifest("/hello: bin/hello: trailing\n", base_dir=host)

    assert entries[0].host == str(host / "bin/hello")
    assert "trailing" in caplog.text


def test_windows_line_endings_are_accepted(host):
    entries = manifest("[manifest]\r\n/hello: bin/hello\r\n", base_dir=host)

    assert [e.guest for e in entries] == ["/hello"]


def test_arrow_makes_a_guest_symlink_without_reading_the_host():
    entries = manifest("/etc/mnttab: ->/proc/mounts\n")

    assert as_tuples(entries) == [("/etc/mnttab", "symlink", None, "/proc/mounts")]


def test_host_directory_makes_an_empty_guest_directory(host):
    entries = manifest("/tmp: empty\n/etc: etc\n", base_dir=host)

    assert as_tuples(entries) == [
        ("/tmp", "dir", str(host / "empty"), None),
        ("/etc", "dir", str(host / "etc"), None),
    ]


def test_host_symlink_is_dereferenced_to_the_final_file(host):
    (host / "lib" / "libfoo.so").symlink_to("libfoo.so.1")
    (host / "lib" / "libfoo-alias.so").symlink_to("libfoo.so")

    entries = manifest("/usr/lib/libfoo.so: lib/libfoo-alias.so\n", base_dir=host)

    assert as_tuples(entries) == [
        ("/usr/lib/libfoo.so", "file", str(host / "lib/libfoo.so.1"), None)
    ]


def test_absolute_symlink_target_is_searched_upward_like_a_sysroot(tmp_path):
    # An unpacked foreign root: its absolute links mean paths inside it.
    sysroot = tmp_path / "sysroot"
    (sysroot / "usr/lib").mkdir(parents=True)
    (sysroot / "usr/lib/libbar.so.2").write_bytes(b"bar")
    (sysroot / "usr/lib/libbar.so").symlink_to("/usr/lib/libbar.so.2")

    entries = manifest("/libbar.so: usr/lib/libbar.so\n", base_dir=sysroot)

    assert entries[0].host == str(sysroot / "usr/lib/libbar.so.2")


def test_bang_keeps_a_host_symlink_as_a_symlink(host):
    (host / "lib" / "libfoo.so").symlink_to("libfoo.so.1")

    entries = manifest("/usr/lib/libfoo.so: !lib/libfoo.so\n", base_dir=host)

    assert as_tuples(entries) == [
        ("/usr/lib/libfoo.so", "symlink", None, "libfoo.so.1")
    ]


def test_bang_on_a_regular_file_takes_it_as_is(host):
    entries = manifest("/hello: !bin/hello\n", base_dir=host)

    assert as_tuples(entries) == [("/hello", "file", str(host / "bin/hello"), None)]


def test_recursive_form_maps_every_file_below_the_host_directory(host):
    (host / "lib" / "sub" / "deeper").mkdir(parents=True)
    (host / "lib" / "sub" / "deeper" / "x.dat").write_bytes(b"x")
    (host / "lib" / "sub" / "hollow").mkdir()  # empty: produces nothing
    (host / "lib" / "dirlink").symlink_to("sub")  # directory symlink: not followed
    (host / "lib" / "filelink").symlink_to("libfoo.so.1")  # file symlink: followed

    entries = manifest("/usr/lib/**: lib/**\n", base_dir=host)

    assert as_tuples(entries) == [
        ("/usr/lib/filelink", "file", str(host / "lib/libfoo.so.1"), None),
        ("/usr/lib/libfoo.so.1", "file", str(host / "lib/libfoo.so.1"), None),
        ("/usr/lib/sub/deeper/x.dat", "file", str(host / "lib/sub/deeper/x.dat"), None),
    ]


def test_recursive_form_at_the_guest_root(host):
    entries = manifest("/**: etc/**\n", base_dir=host)

    assert [e.guest for e in entries] == ["/hosts"]


def test_recursive_form_with_bang_keeps_file_symlinks(host):
    (host / "lib" / "libfoo.so").symlink_to("libfoo.so.1")

    entries = manifest("/usr/lib/**: !lib/**\n", base_dir=host)

    assert as_tuples(entries) == [
        ("/usr/lib/libfoo.so", "symlink", None, "libfoo.so.1"),
        ("/usr/lib/libfoo.so.1", "file", str(host / "lib/libfoo.so.1"), None),
    ]


def test_basename_form_appends_the_suffix_to_both_sides(host):
    # The skeleton's own example: "/&/etc/hosts: ../../static/&".
    entries = manifest("/&/etc/hosts: ./&\n", base_dir=host)

    assert as_tuples(entries) == [("/etc/hosts", "file", str(host / "etc/hosts"), None)]


def test_basename_form_keeps_the_guest_prefix(host):
    entries = manifest("/usr/&/bin/hello: ./&\n", base_dir=host)

    assert entries[0].guest == "/usr/bin/hello"
    assert entries[0].host == str(host / "bin/hello")


def test_defines_substitute_into_host_paths(host):
    entries = manifest(
        "/lib/libfoo.so.1: %(libdir)s/libfoo.so.1\n",
        defines={"libdir": str(host / "lib")},
    )

    assert entries[0].host == str(host / "lib/libfoo.so.1")


def test_double_percent_is_a_literal_percent(host):
    (host / "100%").write_bytes(b"full")

    entries = manifest("/full: 100%%\n", base_dir=host)

    assert entries[0].host == str(host / "100%")


def test_defines_also_apply_to_symlink_targets():
    entries = manifest("/link: ->%(target)s\n", defines={"target": "/proc/self"})

    assert entries[0].target == "/proc/self"


def test_later_duplicate_replaces_the_entry_but_keeps_its_position(host):
    text = """\
        /a: bin/hello
        /b: etc/hosts
        /a: lib/libfoo.so.1
    """
    entries = manifest(text, base_dir=host)

    assert [(e.guest, e.host, e.origin) for e in entries] == [
        ("/a", str(host / "lib/libfoo.so.1"), "test.manifest:3"),
        ("/b", str(host / "etc/hosts"), "test.manifest:2"),
    ]


def test_guest_paths_are_normalised(host):
    entries = manifest("//usr///bin/: bin/hello\n", base_dir=host)

    assert entries[0].guest == "/usr/bin"


def test_relative_host_paths_default_to_the_manifest_files_directory(host, tmp_path):
    manifest_file = host / "usr.manifest"
    manifest_file.write_text("[manifest]\n/hello: bin/hello\n")

    entries = read_manifest(manifest_file)

    assert entries[0].host == str(host / "bin/hello")
    assert entries[0].origin == f"{manifest_file}:2"


def test_in_memory_manifests_default_to_the_current_directory(host, monkeypatch):
    monkeypatch.chdir(host)

    entries = manifest("/hello: bin/hello\n")

    assert entries[0].host == str(host / "bin/hello")


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("/hello bin/hello", "expected '<guest path>: <host path>'"),
        ("/hello:bin/hello", "expected '<guest path>: <host path>'"),
        ("/hello: ", "expected '<guest path>: <host path>'"),
        ("hello: bin/hello", "is not absolute"),
        (": bin/hello", "is not absolute"),
        ("/a/../hello: bin/hello", "contains '..'"),
        ("/lib/**: lib", "'/**' must end both"),
        ("/lib: lib/**", "'/**' must end both"),
        ("/a/**/b: bin/hello", "'**' may only end both paths"),
        ("/&/hello: bin/hello", "the '/&/' form"),
        ("/hello: bin/&", "the '/&/' form"),
        ("/hello: bin/missing", "cannot use"),
        ("/lib/**: nowhere/**", "does not exist"),
        ("/x: %(undefined)s/x", "unknown variable %(undefined)s"),
        ("/x: 100%/x", "stray '%'"),
        ("/x: ->", "symlink target missing"),
        ("/x/**: ->/y", "needs a plain guest path"),
        ("/x: !", "host path is empty"),
    ],
)
def test_bad_line_is_reported_with_file_and_line(host, line, complaint):
    with pytest.raises(ManifestError) as raised:
        manifest(f"[manifest]\n# comment\n{line}\n", base_dir=host)

    message = str(raised.value)
    assert message.startswith("test.manifest:3: ")
    assert complaint in message


def test_dangling_symlink_is_an_error(host):
    (host / "dangling").symlink_to("nowhere")

    with pytest.raises(ManifestError, match=r"^test.manifest:1: cannot use"):
        manifest("/x: dangling\n", base_dir=host)


def test_dangling_absolute_symlink_is_an_error(host):
    (host / "dangling").symlink_to("/no/such/file/anywhere")

    with pytest.raises(ManifestError, match=r"points to /no/such/file/anywhere"):
        manifest("/x: dangling\n", base_dir=host)


def test_symlink_loop_is_an_error(host):
    (host / "loop1").symlink_to("loop2")
    (host / "loop2").symlink_to("loop1")

    with pytest.raises(ManifestError, match="too many levels of symlinks"):
        manifest("/x: loop1\n", base_dir=host)


def test_special_host_file_is_refused(host):
    os.mkfifo(host / "fifo")

    with pytest.raises(ManifestError, match="not a regular file or directory"):
        manifest("/x: fifo\n", base_dir=host)


def test_special_file_inside_a_tree_is_skipped_with_a_warning(host, caplog):
    os.mkfifo(host / "etc" / "fifo")

    entries = manifest("/etc/**: etc/**\n", base_dir=host)

    assert [e.guest for e in entries] == ["/etc/hosts"]
    assert "fifo" in caplog.text


def test_missing_manifest_file_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="cannot read manifest"):
        read_manifest(tmp_path / "absent.manifest")


def test_non_utf8_manifest_is_a_manifest_error(tmp_path):
    path = tmp_path / "bad.manifest"
    path.write_bytes(b"/x: \xff\n")

    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(path)


def test_from_host_file_lands_at_the_same_path(host):
    entries = manifest_from_paths([host / "bin" / "hello"])

    path = str(host / "bin/hello")
    assert entries == [ManifestEntry(path, "file", path, None, "<from-host>:1")]


def test_from_host_symlink_argument_is_followed(host):
    (host / "bin" / "hi").symlink_to("hello")

    entries = manifest_from_paths([host / "bin" / "hi"])

    assert as_tuples(entries) == [
        (str(host / "bin/hi"), "file", str(host / "bin/hello"), None)
    ]


def test_from_host_directory_brings_its_tree_and_keeps_symlinks(host):
    (host / "lib" / "libfoo.so").symlink_to("libfoo.so.1")
    (host / "lib" / "sub" / "inner").mkdir(parents=True)
    (host / "lib" / "sub" / "inner" / "data").write_bytes(b"d")
    (host / "lib" / "subdir-link").symlink_to("sub")
    lib = str(host / "lib")

    entries = manifest_from_paths([lib])

    assert as_tuples(entries) == [
        (lib, "dir", lib, None),
        (f"{lib}/libfoo.so", "symlink", None, "libfoo.so.1"),
        (f"{lib}/libfoo.so.1", "file", f"{lib}/libfoo.so.1", None),
        (f"{lib}/sub", "dir", f"{lib}/sub", None),
        (f"{lib}/subdir-link", "symlink", None, "sub"),
        (f"{lib}/sub/inner", "dir", f"{lib}/sub/inner", None),
        (f"{lib}/sub/inner/data", "file", f"{lib}/sub/inner/data", None),
    ]


def test_from_host_keeps_empty_directories(host):
    empty = str(host / "empty")

    assert as_tuples(manifest_from_paths([empty])) == [(empty, "dir", empty, None)]


def test_from_host_missing_path_is_an_error(host):
    with pytest.raises(ManifestError, match=r"^<from-host>:2: cannot use"):
        manifest_from_paths([host / "bin", host / "absent"])


def test_a_file_that_also_holds_paths_is_refused_naming_both(tmp_path) -> None:
    from osv.image import check_tree

    host = tmp_path / "f"
    host.write_text("x")
    manifest = tmp_path / "m.manifest"
    manifest.write_text(f"/x: {host}\n/x/y: {host}\n")
    entries = read_manifest(manifest)
    with pytest.raises(
        ManifestError,
        match=r"m.manifest:2: /x/y lies inside /x, which .*m.manifest:1 makes a file",
    ):
        check_tree(entries)
