"""OSv's REST API end to end: a guest boots with the module and is asked over HTTP."""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GCC = shutil.which("gcc")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists("/dev/kvm"), reason="these tests boot VMs and need /dev/kvm"
    ),
    pytest.mark.skipif(GCC is None, reason="the guest program is compiled with gcc"),
]


def osv_command() -> list[str]:
    script = Path(sys.executable).parent / "osv"
    return [str(script)] if script.exists() else [sys.executable, "-m", "osv"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def guest_program(tmp_path_factory) -> Path:
    """A static program that runs for two minutes, watching /tmp for requests."""
    program = tmp_path_factory.mktemp("guest") / "rest_guest"
    subprocess.run(
        [GCC, "-O1", "-static", "-o", str(program), str(FIXTURES / "rest_guest.c")],
        check=True,
    )
    return program


def build(image: Path, program: Path, module: str) -> Path:
    built = subprocess.run(
        [*osv_command(), "build", "-o", str(image), "--fs", "ramfs",
         "--module", module, "--from-host", str(program),
         "--from-host", "/etc/os-release", "--cmdline", str(program)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return image


def call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict | None = None) -> tuple[int, bytes]:  # fmt: skip
    """One HTTP request to the REST server on a loopback port."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_for_server(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            call(port, "GET", "/os/name")
            return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no REST server: {process.communicate()}")


class Guest:
    """A booted image with the REST server on a loopback port of its own."""

    def __init__(self, image: Path) -> None:
        self.port = free_port()
        # The port goes into the image's stored command line: the server
        # reads its options from there (see the module's README).
        subprocess.run(
            [*osv_command(), "image", "setargs", str(image),
             f"--httpserver-port={self.port}", "--rootfs=ramfs", _program_of(image)],
            check=True,
        )  # fmt: skip
        self.process = subprocess.Popen(
            [*osv_command(), "run", str(image)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for_server(self.port, self.process)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes]:  # fmt: skip
        return call(self.port, method, path, body, headers)

    def json(self, method: str, path: str) -> object:
        status, body = self.request(method, path)
        assert status == 200, (status, body)
        return json.loads(body)

    def stop(self) -> tuple[int, str]:
        if self.process.poll() is None:
            self.request("POST", "/os/shutdown")
        out, err = self.process.communicate(timeout=30)
        return self.process.returncode, out + err


def _program_of(image: Path) -> str:
    getargs = subprocess.run(
        [*osv_command(), "image", "getargs", str(image)], capture_output=True, text=True
    )
    assert getargs.returncode == 0, getargs.stderr
    return getargs.stdout.split()[-1]


@pytest.fixture
def guest(tmp_path, guest_program):
    booted = Guest(build(tmp_path / "full.img", guest_program, "httpserver"))
    yield booted
    if booted.process.poll() is None:
        booted.process.kill()
    # Collects the output and closes the pipes, whoever ended the guest.
    booted.process.communicate()


def test_cmdline_is_the_boot_command_line_and_post_stores_the_next_one(
    tmp_path, guest_program
):
    image = build(tmp_path / "cmd.img", guest_program, "httpserver")
    stored = subprocess.run(
        [*osv_command(), "image", "getargs", str(image)], capture_output=True, text=True
    ).stdout.strip()
    # Booted without overrides, so that the line booted is the stored one.
    port = free_port()
    subprocess.run(
        [*osv_command(), "image", "setargs", str(image),
         f"--httpserver-port={port}", *stored.split()],
        check=True,
    )  # fmt: skip
    process = subprocess.Popen(
        [*osv_command(), "run", str(image)], stdout=subprocess.PIPE, text=True
    )
    try:
        wait_for_server(port, process)
        status, body = call(port, "GET", "/os/cmdline")
        assert json.loads(body) == f"--httpserver-port={port} {stored}"

        new = "--rootfs=ramfs /bin/true"
        query = urllib.parse.urlencode({"cmdline": new})
        status, body = call(port, "POST", f"/os/cmdline?{query}")
        assert (status, json.loads(body)) == (200, new)
        assert call(port, "POST", "/os/shutdown")[0] == 200
    finally:
        process.communicate(timeout=30)
    getargs = subprocess.run(
        [*osv_command(), "image", "getargs", str(image)], capture_output=True, text=True
    )
    assert getargs.stdout.strip() == new


def test_files_of_the_image_are_read_and_listed(guest):
    status, body = guest.request("GET", "/file/etc/os-release?op=GET")
    assert status == 200
    assert body == Path("/etc/os-release").read_bytes()

    listing = guest.json("GET", "/file/etc?op=LISTSTATUS")
    assert "os-release" in {entry["pathSuffix"] for entry in listing}
    (entry,) = [e for e in listing if e["pathSuffix"] == "os-release"]
    assert entry["type"] == "FILE"
    assert entry["length"] == Path("/etc/os-release").stat().st_size

    matched = guest.json("GET", "/file/etc/os-rel*?op=LISTSTATUS")
    assert [e["pathSuffix"] for e in matched] == ["os-release"]


def test_writes_under_tmp_are_seen_by_the_guest_program(guest):
    status, _ = guest.request("PUT", "/file/tmp/note?op=WRITE&content=hello%20guest&overwrite=true")  # fmt: skip
    assert status == 200
    assert guest.request("GET", "/file/tmp/note?op=GET") == (200, b"hello guest")
    time.sleep(0.5)  # the guest looks for the file every 20 ms
    status, output = guest.stop()
    assert status == 0
    assert "note: hello guest" in output


def test_threads_and_free_memory_are_the_guests(guest):
    threads = guest.json("GET", "/os/threads")
    assert [t["id"] for t in threads["list"]] == [2]
    assert threads["list"][0]["name"] == "rest_guest"

    before = guest.json("GET", "/os/memory/free")
    assert 0 < before < guest.json("GET", "/os/memory/total")
    guest.request("PUT", "/file/tmp/alloc?op=WRITE&content=x&overwrite=true")
    deadline = time.monotonic() + 10
    while guest.json("GET", "/os/memory/free") > before - (60 << 20):
        assert time.monotonic() < deadline, "free memory did not drop by 64 MiB"
        time.sleep(0.1)


def test_shutdown_ends_the_vm_and_osv_run_exits(guest):
    status, _ = guest.request("POST", "/os/shutdown")
    assert status == 200
    assert guest.process.wait(timeout=15) == 0


def test_paths_leaving_the_guest_tree_and_bad_parameters_get_400(guest):
    for path in ("/file/../etc/passwd?op=GET", "/file/etc/%2e%2e/etc?op=GET"):
        status, body = guest.request("GET", path)
        assert status == 400, path
        assert json.loads(body)["code"] == 400
    status, body = guest.request("GET", "/file/etc/os-release?op=NOPE")
    assert (status, json.loads(body)["code"]) == (400, 400)
    status, body = guest.request("GET", "/file/etc/os-release")
    assert json.loads(body) == {"message": "Missing mandatory parameter 'op'", "code": 400}  # fmt: skip
    # The host's own files are not reachable: only the image's are there.
    status, _ = guest.request("GET", "/file/etc/passwd?op=GET")
    assert status == 404


def test_the_monitoring_flavour_refuses_every_mutating_route(tmp_path, guest_program):
    image = build(tmp_path / "mon.img", guest_program, "httpserver-monitoring")
    monitored = Guest(image)
    try:
        assert monitored.json("GET", "/os/name") == "OSv"
        document = monitored.json("GET", "/openapi.json")
        methods = {m for ops in document["paths"].values() for m in ops}
        assert methods == {"get", "post"}
        assert [p for p, ops in document["paths"].items() if "post" in ops] == [
            "/api/batch"
        ]
        for method, path in [
            ("POST", "/os/shutdown"), ("POST", "/os/cmdline?cmdline=x"),
            ("POST", "/os/hostname?name=x"), ("PUT", "/file/tmp/x?op=WRITE&content=x"),
            ("DELETE", "/file/tmp?op=DELETE"), ("POST", "/api/stop"),
            ("PUT", "/app/?command=x"), ("POST", "/env/HOME?val=x"),
        ]:  # fmt: skip
            status, _ = monitored.request(method, path)
            assert status in (404, 405), (method, path, status)
        batch = urllib.parse.urlencode(
            {"batch": '[{"method": "POST", "relative_url": "/os/shutdown"}]'}
        ).encode()
        status, body = monitored.request(
            "POST", "/api/batch", batch,
            {"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert status == 200
        assert json.loads(body)[0]["code"] in (404, 405)
        assert monitored.process.poll() is None
    finally:
        monitored.process.kill()
        monitored.process.communicate()


def test_the_openapi_document_holds_against_the_server(guest, tmp_path, monkeypatch):
    schemathesis = pytest.importorskip("schemathesis")
    # Hypothesis keeps its example directory in the working directory.
    monkeypatch.chdir(tmp_path)

    schema = schemathesis.openapi.from_url(
        f"http://127.0.0.1:{guest.port}/openapi.json"
    )
    failures = []
    for operation in schema.get_all_operations():
        operation = operation.ok()
        # The routes that stop the guest or the server are left out here;
        # the tests above check them.
        if operation.path in (
            "/os/shutdown",
            "/os/poweroff",
            "/os/reboot",
            "/api/stop",
        ):
            continue
        try:
            _conforms(operation)
        except Exception as error:  # noqa: BLE001 - gathered and reported below
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    assert guest.process.poll() is None
    assert not failures, "\n".join(failures)


def _conforms(operation) -> None:  # noqa: ANN001
    """Generated requests to one operation: no 5xx, every answer as documented."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    # No answer may be a 5xx.
    checks = (
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    )

    @given(operation.as_strategy())
    @settings(max_examples=15, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def check(case) -> None:  # noqa: ANN001
        response = case.call()
        status = response.status_code
        assert status < 500, (case.method, case.formatted_path, response.text)
        case.validate_response(response, checks=checks)

    check()


def test_app_launches_a_program_beside_the_guest_and_reports_it_finished(guest):
    program = guest.json("GET", "/os/cmdline").split()[-1]
    command = urllib.parse.quote(f"{program} --once")
    status, body = guest.request("PUT", f"/app/?command={command}")
    assert status == 200, body
    tid = json.loads(body)
    deadline = time.monotonic() + 20
    while json.loads(guest.request("GET", f"/app/finished?tid={tid}")[1]) != "1":
        assert time.monotonic() < deadline, "the launched program did not finish"
        time.sleep(0.1)
    status, body = guest.request("PUT", "/app/?command=/no/such/program")
    assert status == 400
    assert "Failed to load object" in json.loads(body)["message"]


def test_env_set_is_seen_by_programs_launched_afterwards(guest):
    assert guest.request("POST", "/env/GREETING?val=hello")[0] == 200
    assert guest.json("GET", "/env/GREETING") == "hello"
    assert "GREETING=hello" in guest.json("GET", "/env/")


def test_tracing_is_an_honest_not_found(guest):
    status, body = guest.request("GET", "/trace/status")
    assert status == 404
    assert "tracing is not available" in json.loads(body)["message"]


def test_reboot_boots_the_image_again(guest):
    assert guest.request("POST", "/os/reboot")[0] == 200
    # The same `osv run` boots the image again: the server answers anew.
    deadline = time.monotonic() + 20
    while True:
        try:
            if guest.request("GET", "/os/uptime")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "no server after the reboot"
        time.sleep(0.1)
    assert guest.process.poll() is None
    status, output = guest.stop()
    assert status == 0
    assert output.count("Booted up in") == 2


def _certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    files = {name: directory / name for name in (
        "ca.key", "ca.pem", "server.key", "server.csr", "server.pem",
        "client.key", "client.csr", "client.pem", "san.cnf")}  # fmt: skip
    files["san.cnf"].write_text("subjectAltName = IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=test CA", "-keyout", str(files["ca.key"]),
            "-out", str(files["ca.pem"]))  # fmt: skip
    for name, extra in (
        ("server", ["-extfile", str(files["san.cnf"])]),
        ("client", []),
    ):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", str(files[f"{name}.key"]), "-out", str(files[f"{name}.csr"]))  # fmt: skip
        openssl("x509", "-req", "-in", str(files[f"{name}.csr"]), "-days", "2",
                "-CA", str(files["ca.pem"]), "-CAkey", str(files["ca.key"]),
                "-CAcreateserial", "-out", str(files[f"{name}.pem"]), *extra)  # fmt: skip
    return files


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")
def test_tls_requires_a_client_certificate_and_cors_answers(tmp_path, guest_program):
    import ssl

    pki = tmp_path / "pki"
    pki.mkdir()
    files = _certificates(pki)
    image = tmp_path / "tls.img"
    built = subprocess.run(
        [*osv_command(), "build", "-o", str(image), "--fs", "ramfs",
         "--module", "httpserver", "--from-host", str(guest_program),
         "--from-host", str(pki), "--cmdline", str(guest_program)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    port = free_port()
    subprocess.run(
        [*osv_command(), "image", "setargs", str(image),
         f"--httpserver-port={port}", "--httpserver-ssl",
         f"--httpserver-cert={files['server.pem']}",
         f"--httpserver-key={files['server.key']}",
         f"--httpserver-cacert={files['ca.pem']}",
         "--httpserver-access-allow=true", "--rootfs=ramfs", str(guest_program)],
        check=True,
    )  # fmt: skip
    process = subprocess.Popen(
        [*osv_command(), "run", str(image)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    trusted = ssl.create_default_context(cafile=str(files["ca.pem"]))
    trusted.load_cert_chain(str(files["client.pem"]), str(files["client.key"]))

    def tls_call(context, method: str, path: str, headers=None):  # noqa: ANN001, ANN202
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=context, timeout=10
        )
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, headers, body = tls_call(
                    trusted, "GET", "/os/name", {"Origin": "http://example.test"}
                )
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert status == 200 and json.loads(body) == "OSv"
        assert headers.get("Access-Control-Allow-Origin") == "*"
        # Without a client certificate the handshake is refused.
        anonymous = ssl.create_default_context(cafile=str(files["ca.pem"]))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            tls_call(anonymous, "GET", "/os/name")
        # Plain HTTP gets no answer from a TLS server.
        with pytest.raises((http.client.HTTPException, OSError)):
            call(port, "GET", "/os/name")
        assert tls_call(trusted, "POST", "/os/shutdown")[0] == 200
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
