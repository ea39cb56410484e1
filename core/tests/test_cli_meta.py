"""The osv command's own behaviour: --version, osv modules, errors and exit status."""

import os
import subprocess
import sys
import textwrap
import types

import pytest

import osv
from osv import _cext, cli

GOOD = """
    from osv import hookimpl

    @hookimpl
    def osv_image_files(config):
        return []
"""


def _run_osv(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "osv", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_version_names_the_core_its_build_and_every_module(install_module, capsys):
    install_module("good", GOOD, version="2.3.4")

    assert cli.main(["--version"]) == 0

    lines = capsys.readouterr().out.splitlines()
    build = "compiled" if _cext.is_compiled() else "pure Python"
    assert lines[0] == f"osv-core {osv.__version__} ({build})"
    assert "osv-mod-good 2.3.4" in lines[1:]


def test_version_says_pure_python_when_compiled_code_is_disabled():
    result = _run_osv("--version", env={"OSV_DISABLE_CEXT": "1"})
    assert result.returncode == 0
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"osv-core {osv.__version__} (pure Python")


@pytest.mark.skipif(
    os.environ.get("OSV_REQUIRE_CEXT") != "1",
    reason="only a build with OSV_REQUIRE_CEXT=1 is known to be compiled",
)
def test_version_reports_the_compiled_core_of_a_build_that_required_it():
    result = _run_osv("--version")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == f"osv-core {osv.__version__} (compiled)"


def test_version_imports_no_subcommand():
    script = textwrap.dedent(
        """
        import sys
        from osv.cli import main
        main(["--version"])
        print(sorted(name for name in sys.modules if name.startswith("osv._cmd_")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "[]"


def test_modules_lists_builtins_and_installed_modules(install_module, capsys):
    install_module("good", GOOD, version="2.3.4")

    assert cli.main(["modules"]) == 0

    out = capsys.readouterr().out
    assert f"core  osv-core {osv.__version__}  (built in)\n" in out
    assert "good  osv-mod-good 2.3.4\n    hooks: osv_image_files\n" in out


def test_modules_lists_failed_modules_with_the_reason(install_module, capsys):
    install_module("good", GOOD)
    install_module("broken", "import osv_mod_missing_dependency\n", version="0.2.0")

    assert cli.main(["modules"]) == 1

    out = capsys.readouterr().out
    assert "good  osv-mod-good 1.0.0\n" in out
    assert (
        "broken  osv-mod-broken 0.2.0  FAILED\n"
        "    reason: module 'broken' failed to import: ModuleNotFoundError: "
        "No module named 'osv_mod_missing_dependency'\n"
    ) in out


def test_a_typed_error_is_one_line_on_stderr_and_exit_status_1(install_module, capsys):
    install_module("nfs", GOOD, distribution="osv-mod-nfs")
    install_module("nfs", GOOD, distribution="other-nfs")

    assert cli.main(["modules"]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "osv: error: module name 'nfs' is claimed by both "
        "osv-mod-nfs 1.0.0 and other-nfs 1.0.0\n"
    )


def test_an_unexpected_error_is_one_line_without_a_traceback(monkeypatch, capsys):
    command = types.ModuleType("fake_command")
    command.add_arguments = lambda parser: None

    def run(args):
        raise ZeroDivisionError("division by zero")

    command.run = run
    monkeypatch.setitem(sys.modules, "fake_command", command)
    monkeypatch.setitem(cli.COMMANDS, "crash", cli.Command("fake_command", "crash"))

    assert cli.main(["crash"]) == 1

    err = capsys.readouterr().err
    assert err == (
        "osv: internal error: ZeroDivisionError: division by zero "
        "(run with -vv to see where)\n"
    )


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["modules", "--bogus"]])
def test_usage_errors_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.main(argv)
    assert excinfo.value.code == 2
    assert "osv: error: " in capsys.readouterr().err


def test_python_dash_m_osv_runs_the_command_line():
    result = _run_osv("modules")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"core  osv-core {osv.__version__}  (built in)")
    assert "Traceback" not in result.stderr
