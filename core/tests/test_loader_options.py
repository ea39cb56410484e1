"""Loader options: splitting the boot command line and OSv's strict option rules."""

import pytest

from osv.boot import (
    BUILTIN_LOADER_OPTIONS,
    LoaderOption,
    LoaderOptionError,
    MountRequest,
    Redirect,
    parse_loader_options,
    split_cmdline,
    usage_text,
)

# ---------------------------------------------------------------------------
# split_cmdline
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens", "app"),
    [
        ("", [], ""),
        ("   \t\n ", [], ""),
        ("/hello", [], "/hello"),
        ("  /hello a  b ", [], "/hello a  b "),
        ("--verbose /hello", ["--verbose"], "/hello"),
        ("--verbose   --env=A=1\t\n/hello x", ["--verbose", "--env=A=1"], "/hello x"),
        ("--verbose --nomount", ["--verbose", "--nomount"], ""),
        # A backslash makes the next character part of the option.
        (r"--env=BB=bb1\ bb2 app.so", ["--env=BB=bb1 bb2"], "app.so"),
        (r"--env=A=back\\slash /x", [r"--env=A=back\slash"], "/x"),
        (r"--env=A=x\	y /x", ["--env=A=x\ty"], "/x"),
        (r"--env=A=x\ ", ["--env=A=x "], ""),
        ("--env=A=trailing\\", ["--env=A=trailing"], ""),
        # Quotes mean nothing to loader options.
        ('--env="A B" /x', ['--env="A'], 'B" /x'),
        # Only the start of a word decides; the application part is verbatim.
        ("-x /a --verbose", ["-x"], "/a --verbose"),
        (r"/a\ b --c", [], r"/a\ b --c"),
        (r"\-x /a", [], r"\-x /a"),
    ],
)
def test_split_cmdline_separates_options_from_the_application(text, tokens, app):
    assert split_cmdline(text) == (tokens, app)


# ---------------------------------------------------------------------------
# parse_loader_options: the rules
# ---------------------------------------------------------------------------


def test_flags_and_values_are_recognised():
    options = parse_loader_options(
        ["--verbose", "--env=A=1", "--cwd=/tmp", "--bootchart", "--rootfs=rofs"]
    )

    assert options.verbose
    assert options.bootchart
    assert not options.nomount
    assert options.env == ["A=1"]
    assert options.cwd == "/tmp"
    assert options.rootfs == "rofs"
    assert "verbose" in options
    assert "nomount" not in options


def test_nothing_given_means_defaults():
    options = parse_loader_options([])

    assert not options.verbose
    assert options.env == []
    assert options.cwd is None
    assert options.rootfs is None
    assert options.redirect is None
    assert options.mount_fs == []
    assert options.warnings == []


def test_repeated_value_option_accumulates():
    options = parse_loader_options(["--env=A=1", "--env=B=2 3", "--env=A=4"])

    assert options.env == ["A=1", "B=2 3", "A=4"]


def test_value_may_contain_equals_signs():
    options = parse_loader_options(["--env=PATH=/bin:/usr/bin=x"])

    assert options.env == ["PATH=/bin:/usr/bin=x"]


def test_non_repeatable_value_uses_the_first_and_warns():
    options = parse_loader_options(["--cwd=/a", "--cwd=/b"])

    assert options.cwd == "/a"
    assert options.values("cwd") == ["/a", "/b"]
    assert options.warnings == ["--cwd given 2 times; using the first value (/a)"]


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["--cwd", "/tmp"], "not an option: /tmp"),
        (["-v"], "not an option: -v"),
        (["--"], "not an option: --"),
        (["--=x"], "not an option: --=x"),
        (["--env="], "the required argument for option '--env' is missing"),
        (["--env"], "the required argument for option '--env' is missing"),
        (["--verbose", "--verbose"], "duplicate option: --verbose"),
        (["--env=A=1", "--env"], "duplicate option: --env"),
        (["--env", "--env=A=1"], "duplicate option: --env"),
        (["--verbose=yes"], "option '--verbose' does not take any arguments"),
        (["--maxnic=two"], "the argument ('two') for option '--maxnic' is invalid"),
        (["--maxnic=1.5"], "the argument ('1.5') for option '--maxnic' is invalid"),
        (["--sampler=0x10"], "the argument ('0x10') for option '--sampler' is invalid"),
        (["--delay=soon"], "the argument ('soon') for option '--delay' is invalid"),
        (["--delay=inf"], "the argument ('inf') for option '--delay' is invalid"),
        (["--delay=nan"], "the argument ('nan') for option '--delay' is invalid"),
        (["--redirect=>>"], "the argument ('>>') for option '--redirect' is invalid"),
        (["--frobnicate"], "unrecognized option: frobnicate"),
        (["--frobnicate=3"], "unrecognized option: frobnicate"),
        (["--leak"], "unrecognized option: leak"),
        (["--assign-net"], "unrecognized option: assign-net"),
        (["--strace"], "unrecognized option: strace"),
    ],
)
def test_malformed_or_unknown_option_is_refused_with_osv_message(tokens, message):
    with pytest.raises(LoaderOptionError) as raised:
        parse_loader_options(tokens)

    assert str(raised.value) == message


def test_every_unknown_option_is_named():
    with pytest.raises(LoaderOptionError) as raised:
        parse_loader_options(["--a", "--verbose", "--b=1"])

    assert str(raised.value) == "unrecognized option: a\nunrecognized option: b"


def test_misuse_of_a_known_option_is_reported_before_unknown_ones():
    with pytest.raises(LoaderOptionError, match="does not take any arguments"):
        parse_loader_options(["--unknown", "--verbose=1"])


def test_strace_is_recognised_together_with_trace():
    options = parse_loader_options(["--trace=vfs_*,sched*", "--strace"])

    assert options.flag("strace")
    assert options.values("trace") == ["vfs_*,sched*"]


def test_numbers_are_converted():
    options = parse_loader_options(["--maxnic=2", "--delay=0.5", "--sampler=+100"])

    assert options.get("maxnic") == 2
    assert options.get("delay") == 0.5
    assert options.get("sampler") == 100


# ---------------------------------------------------------------------------
# Convenience views
# ---------------------------------------------------------------------------


def test_redirect_truncates_or_appends():
    assert parse_loader_options(["--redirect=/out.log"]).redirect == Redirect(
        "/out.log", append=False
    )
    assert parse_loader_options(["--redirect=>>/out.log"]).redirect == Redirect(
        "/out.log", append=True
    )


def test_valid_mount_fs_values_become_mount_requests():
    options = parse_loader_options(
        [
            "--mount-fs=nfs,nfs://192.168.1.2/export,/data",
            "--mount-fs=virtiofs,/dev/virtiofs1,/mnt",
        ]
    )

    assert options.mount_fs == [
        MountRequest("nfs", "nfs://192.168.1.2/export", "/data"),
        MountRequest("virtiofs", "/dev/virtiofs1", "/mnt"),
    ]
    assert options.warnings == []


@pytest.mark.parametrize(
    "value", ["nfs,url", "nfs,url,/a,extra", "nfs,,/a", ",url,/a", "x,y,"]
)
def test_invalid_mount_fs_is_ignored_with_a_warning(value):
    options = parse_loader_options([f"--mount-fs={value}", "--mount-fs=ramfs,none,/r"])

    assert options.mount_fs == [MountRequest("ramfs", "none", "/r")]
    assert options.warnings == [
        f"Ignoring value: '{value}' for option --mount-fs, expected "
        "TYPE,SOURCE,DIR (three non-empty comma-separated fields)"
    ]


def test_accessors_refuse_names_and_kinds_that_do_not_fit():
    options = parse_loader_options([])

    with pytest.raises(KeyError):
        options.get("frobnicate")
    with pytest.raises(TypeError):
        options.flag("env")
    with pytest.raises(TypeError):
        options.values("verbose")


# ---------------------------------------------------------------------------
# Options from modules and the usage text
# ---------------------------------------------------------------------------


def test_module_options_are_recognised_beside_the_built_ins():
    port = LoaderOption(
        "httpserver-port", True, "port of the REST server", value_type=int
    )
    quiet = LoaderOption("httpserver-quiet", False, "log no requests")

    options = parse_loader_options(
        ["--httpserver-port=8000", "--httpserver-quiet", "--verbose"],
        extra=[port, quiet],
    )

    assert options.get("httpserver-port") == 8000
    assert options.flag("httpserver-quiet")
    assert options.verbose


def test_module_may_not_redefine_a_built_in_option():
    with pytest.raises(LoaderOptionError, match="--verbose is declared twice"):
        parse_loader_options([], extra=[LoaderOption("verbose", False, "mine")])


@pytest.mark.parametrize(
    "arguments",
    [
        ("Bad Name", False, "x"),
        ("-x", False, "x"),
        ("x", True, "x", False, bytes),
        ("x", False, "x", True),
        ("x", False, "x", False, int),
    ],
)
def test_malformed_option_definition_is_refused(arguments):
    with pytest.raises(LoaderOptionError):
        LoaderOption(*arguments)


def test_built_ins_cover_osvs_option_list():
    # The list in OSv's reference, less --leak (memory-tracker builds only)
    # and --assign-net (documented by OSv but never parsed).
    expected = {
        "help", "verbose", "bootchart", "console", "env", "cwd", "redirect",
        "rootfs", "mount-fs", "nomount", "nopivot", "noinit", "norandom",
        "noshutdown", "power-off-on-abort", "delay", "nopci", "maxnic", "ip",
        "defaultgw", "nameserver", "disable_rofs_cache", "extra-zfs-pools",
        "preload-zfs-library", "trace", "trace-backtrace", "trace-list",
        "strace", "sampler",
    }  # fmt: skip
    names = [option.name for option in BUILTIN_LOADER_OPTIONS]

    assert set(names) == expected
    assert len(names) == len(expected)


def test_usage_text_lists_every_option_with_its_help():
    extra = LoaderOption("a-module-option-with-a-very-long-name", True, "long one")
    text = usage_text([*BUILTIN_LOADER_OPTIONS, extra])

    lines = text.splitlines()
    for option in [*BUILTIN_LOADER_OPTIONS, extra]:
        assert any(line.strip().startswith(option.synopsis) for line in lines)
        assert option.help in text
    assert "  --env=KEY=VALUE" in text
    assert all(len(line) <= 80 for line in lines)


def test_boot_package_exports_its_public_api():
    import osv.boot

    expected = {
        "BUILTIN_LOADER_OPTIONS", "BootError", "Command", "CommandLineError",
        "LoaderOption", "LoaderOptionError", "LoaderOptions", "MountRequest",
        "Redirect", "parse_command_line", "parse_loader_options", "split_cmdline",
        "usage_text",
    }  # fmt: skip
    assert expected <= set(osv.boot.__all__)
    for name in osv.boot.__all__:
        assert getattr(osv.boot, name) is not None
