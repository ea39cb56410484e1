"""The repository's entry points: README's first commands, scripts/setup and .ci/run."""

import re
import shlex


def _readme_commands(repo_root):
    """The shell commands in README.md's code blocks, in order."""
    readme = (repo_root / "README.md").read_text()
    blocks = re.findall(r"^```(?:sh|bash|console)\n(.*?)^```", readme, re.S | re.M)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def _ci_commands(repo_root):
    lines = (repo_root / ".ci" / "run").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def _without_assignments(command):
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words.pop(0)
    return words


def test_readme_starts_with_the_setup_and_test_commands(repo_root):
    readme = (repo_root / "README.md").read_text()
    first_block = readme.index("```")
    assert readme[:first_block].count("\n") <= 4, "the commands come first"
    setup, test = _readme_commands(repo_root)[:2]
    assert setup == "bash scripts/setup && python3 -m nox -s demo"
    assert shlex.split(test)[:3] == ["python3", "-m", "nox"]


def test_ci_runs_the_readme_test_command_with_compiled_code_required(repo_root):
    test = _readme_commands(repo_root)[1]
    ci_lines = _ci_commands(repo_root)
    runs_test = [
        line for line in ci_lines if _without_assignments(line) == shlex.split(test)
    ]
    assert len(runs_test) == 1, f".ci/run does not run {test!r}"
    assert shlex.split(runs_test[0])[0] == "OSV_REQUIRE_CEXT=1"
    assert "bash scripts/setup" in ci_lines


def test_ci_stops_at_the_first_failure(repo_root):
    assert "set -euo pipefail" in _ci_commands(repo_root)


def test_setup_installs_the_tools_the_sessions_use(repo_root):
    setup = (repo_root / "scripts" / "setup").read_text()
    assert "set -euo pipefail" in setup
    assert setup.count("apt-get update") == 1
    for package in ("gcc", "musl-tools", "busybox-static", "qemu-utils", "strace"):
        assert re.search(rf"\b{package}\b", setup), package
    for package in ("nox", "build"):
        assert re.search(rf"PIP_PACKAGES=\(.*\b{package}\b.*\)", setup), package
