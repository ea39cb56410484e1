"""CPython's own regression tests, run inside the unikernel by `python3 -m test`.

The interpreter is the one running these tests (its real executable, its
standard library and its test package). Every test must pass, except those
that need what a unikernel does not offer: a second process (fork, exec,
subprocess) or a network (sockets, which the net module provides). Those
are listed below with their reason, and the list is exact: a test that
starts passing must be removed from it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig

import pytest

MODULES = [
    "test_json",
    "test_re",
    "test_math",
    "test_hashlib",
    "test_sqlite3",
    "test_os",
    "test_string",
    "test_struct",
    "test_collections",
    "test_itertools",
    "test_functools",
    "test_textwrap",
    "test_base64",
    "test_binascii",
    "test_bisect",
    "test_heapq",
    "test_operator",
    "test_enum",
    "test_fractions",
    "test_statistics",
    "test_random",
    "test_csv",
    "test_difflib",
    "test_zlib",
    "test_dataclasses",
    "test_tempfile",
    "test_shutil",
    "test_glob",
    "test_fnmatch",
    "test_threading",
]

# Tests that fail here, each with why. Reasons start with the category.
EXPECTED_FAILURES = {
    "test.test_base64.TestMain.test_decode": "fork/exec: runs a child process",
    "test.test_base64.TestMain.test_encode_decode": "fork/exec: runs a child process",
    "test.test_base64.TestMain.test_encode_file": "fork/exec: runs a child process",
    "test.test_base64.TestMain.test_encode_from_stdin": "fork/exec: runs a child process",
    "test.test_base64.TestMain.test_prints_usage_with_help_flag": "fork/exec: runs a child process",
    "test.test_base64.TestMain.test_prints_usage_with_invalid_flag": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_broken_pipe_error": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_compact": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_ensure_ascii_default": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_help_flag": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_indent": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_infile_outfile": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_infile_stdout": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_jsonlines": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_no_ensure_ascii_flag": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_no_indent": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_non_ascii_infile": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_sort_keys_flag": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_stdin_stdout": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_tab": "fork/exec: runs a child process",
    "test.test_json.test_tool.TestTool.test_writing_in_place": "fork/exec: runs a child process",
    "test.test_os.EnvironTests.test_putenv_unsetenv": "fork/exec: runs a child process",
    "test.test_os.ForkTests.test_fork": "fork/exec: runs a child process",
    "test.test_os.PidTests.test_getppid": "fork/exec: runs a child process",
    "test.test_os.PidTests.test_waitpid": "fork/exec: runs a child process",
    "test.test_os.PidTests.test_waitstatus_to_exitcode": "fork/exec: runs a child process",
    "test.test_os.PidTests.test_waitstatus_to_exitcode_kill": "fork/exec: runs a child process",
    "test.test_os.PosixUidGidTests.test_setregid_neg1": "fork/exec: runs a child process",
    "test.test_os.PosixUidGidTests.test_setreuid_neg1": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_nowait": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_spawnl": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_spawnle": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_spawnlp": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_spawnlpe": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_spawnv": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_spawnve": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_spawnve_bytes": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_spawnve_invalid_env": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_spawnvp": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_spawnvpe": "fork/exec: runs a child process",
    "test.test_os.SpawnTests.test_spawnvpe_invalid_env": "fork/exec: runs a child process",
    "test.test_os.TermsizeTests.test_stty_match": "fork/exec: runs a child process",
    "test.test_os.TestSendfile.test_invalid_offset": "network: needs sockets (asyncio self-pipe)",
    "test.test_os.TestSendfile.test_keywords": "network: needs sockets (asyncio self-pipe)",
    "test.test_os.TestSendfile.test_offset_overflow": "network: needs sockets (asyncio self-pipe)",
    "test.test_os.TestSendfile.test_send_at_certain_offset": "network: needs sockets (asyncio self-pipe)",
    "test.test_os.TestSendfile.test_send_whole_file": "network: needs sockets (asyncio self-pipe)",
    "test.test_os.URandomTests.test_urandom_subprocess": "fork/exec: runs a child process",
    "test.test_random.TestModule.test_after_fork": "fork/exec: runs a child process",
    "test.test_re.ReTests.test_regression_gh94675": "fork/exec: runs a child process",
    "test.test_sqlite3.test_dbapi.MultiprocessTests.test_ctx_mgr_rollback_if_commit_failed": "fork/exec: runs a child process",
    "test.test_struct.StructTest.test_struct_cleans_up_at_runtime_shutdown": "fork/exec: runs a child process",
    "test.test_tempfile.TestMkstempInner.test_noinherit": "fork/exec: runs a child process",
    "test.test_tempfile.TestRandomNameSequence.test_process_awareness": "fork/exec: runs a child process",
    "test.test_tempfile.TestTemporaryDirectory.test_del_on_shutdown": "fork/exec: runs a child process",
    "test.test_tempfile.TestTemporaryDirectory.test_del_on_shutdown_ignore_errors": "fork/exec: runs a child process",
    "test.test_tempfile.TestTemporaryDirectory.test_exit_on_shutdown": "fork/exec: runs a child process",
    "test.test_threading.AtexitTests.test_atexit_after_shutdown": "fork/exec: runs a child process",
    "test.test_threading.AtexitTests.test_atexit_called_once": "fork/exec: runs a child process",
    "test.test_threading.AtexitTests.test_atexit_output": "fork/exec: runs a child process",
    "test.test_threading.SubinterpThreadingTests.test_daemon_threads_fatal_error": "fork/exec: runs a child process",
    "test.test_threading.ThreadJoinOnShutdown.test_1_join_on_shutdown": "fork/exec: runs a child process",
    "test.test_threading.ThreadJoinOnShutdown.test_2_join_in_forked_process": "fork/exec: runs a child process",
    "test.test_threading.ThreadJoinOnShutdown.test_3_join_in_forked_from_thread": "fork/exec: runs a child process",
    "test.test_threading.ThreadJoinOnShutdown.test_4_daemon_threads": "fork/exec: runs a child process",
    "test.test_threading.ThreadJoinOnShutdown.test_clear_threads_states_after_fork": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_dummy_thread_after_fork": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_finalization_shutdown": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_finalize_running_thread": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_finalize_with_trace": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_fork_at_exit": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_import_from_another_thread": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_is_alive_after_fork": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_join_nondaemon_on_shutdown": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_locals_at_exit": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_main_thread_after_fork": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_main_thread_after_fork_from_nonmain_thread": "fork/exec: runs a child process",
    "test.test_threading.ThreadTests.test_main_thread_during_shutdown": "fork/exec: runs a child process",
    "test.test_threading.ThreadingExceptionTests.test_print_exception": "fork/exec: runs a child process",
    "test.test_threading.ThreadingExceptionTests.test_print_exception_stderr_is_none_1": "fork/exec: runs a child process",
    "test.test_threading.ThreadingExceptionTests.test_print_exception_stderr_is_none_2": "fork/exec: runs a child process",
    "test.test_threading.ThreadingExceptionTests.test_recursion_limit": "fork/exec: runs a child process",
}


BASE_PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
STDLIB = sysconfig.get_paths(
    vars={"base": sys.base_prefix, "installed_base": sys.base_prefix}
)["stdlib"]
# bootfs records hold names of at most 110 bytes.
BOOTFS_NAME_MAX = 110

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists("/dev/kvm"), reason="boots VMs: needs /dev/kvm"
    ),
    pytest.mark.skipif(
        not os.path.isdir(os.path.join(STDLIB, "test", "libregrtest")),
        reason="this interpreter was installed without its test suite",
    ),
]


def osv(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "osv", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def regrtest_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    work = tmp_path_factory.mktemp("cpython")
    manifest = work / "stdlib.manifest"
    with open(manifest, "w") as out:
        for directory, subdirs, files in os.walk(STDLIB):
            skip = ("__pycache__", "site-packages", "lib-dynload")
            subdirs[:] = [d for d in subdirs if d not in skip]
            for name in files:
                host = os.path.join(directory, name)
                if len(host) <= BOOTFS_NAME_MAX:
                    out.write(f"{host}: {host}\n")
    image = work / "cpython.img"
    built = osv(
        "build", "--fs", "ramfs", "--format", "raw", "-o", str(image),
        "--from-host", BASE_PYTHON,
        "--from-host", os.path.join(STDLIB, "lib-dynload"),
        "--from-host", "/etc/passwd",
        "--from-host", "/etc/group",
        "--manifest", str(manifest),
        "--cmdline", f"--env=HOME=/tmp {BASE_PYTHON} -m test -v " + " ".join(MODULES),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    result = osv("run", "-m", "3G", str(image))
    output = result.stdout + result.stderr
    assert "program fault" not in result.stderr, result.stderr[-3000:]
    assert result.returncode in (0, 2), output[-3000:]
    return output


SUMMARY = re.compile(r"^(ERROR|FAIL): (\S+) \((\S+)\)", re.MULTILINE)
RAN = re.compile(r"^test_\S+ \((\S+)\) \.\.\. ", re.MULTILINE)


def test_regrtest_ran_every_module(regrtest_output: str) -> None:
    ran = {test_id.split(".")[1] for test_id in RAN.findall(regrtest_output)}
    assert set(MODULES) <= ran, sorted(set(MODULES) - ran)
    assert len(MODULES) >= 20


def test_only_expected_failures(regrtest_output: str) -> None:
    failed = {test_id for _, _, test_id in SUMMARY.findall(regrtest_output)}
    unexpected = sorted(failed - set(EXPECTED_FAILURES))
    now_passing = sorted(set(EXPECTED_FAILURES) - failed)
    assert not unexpected, f"unexpected failures: {unexpected}"
    assert not now_passing, f"listed as failing but passed: {now_passing}"


def test_expected_failures_have_allowed_reasons() -> None:
    # Only what the unikernel does not offer by design may fail: a second
    # process, or a network (the net module's job).
    allowed = ("fork/exec", "network")
    assert all(reason.split(":")[0] in allowed for reason in EXPECTED_FAILURES.values())
