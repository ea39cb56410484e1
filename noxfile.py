"""Sessions that test, lint, demonstrate and benchmark every package of the repository.

Run ``python3 -m nox -l`` to list them. Every session installs the packages it
needs from wheels built here, into a fresh virtual environment.
"""

import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
WHEEL_DIR = ROOT / ".nox" / "_wheels"

nox.options.sessions = ["lint", "tests", "e2e"]

CORE = "core"
# Each module is its own package; new directories are picked up on their own.
MODULES = sorted(
    str(path.parent.relative_to(ROOT)) for path in ROOT.glob("modules/*/pyproject.toml")
)
# The template a third party copies to start a module is a real package too,
# tested like one so that it keeps working.
TEMPLATE = "docs/module-template"
PACKAGES = [CORE, *MODULES, TEMPLATE]

LINT_REQUIREMENTS = ["ruff==0.17.6", "import-linter==2.17"]
TEST_REQUIREMENTS = ["pytest>=8"]
# schemathesis checks the REST module's OpenAPI document against the live server.
E2E_REQUIREMENTS = [*TEST_REQUIREMENTS, "import-linter==2.17", "schemathesis>=4,<5"]

# Wheels built during this nox run, by package directory; every session of
# the run installs the same wheel instead of building it again.
_built: dict[str, Path] = {}


@nox.session
@nox.parametrize("package", PACKAGES, ids=[Path(p).name for p in PACKAGES])
def tests(session: nox.Session, package: str) -> None:
    """Run one package's tests against wheels of the core and that package."""
    _install(session, [CORE, package], extras="test")
    session.chdir(ROOT / package)
    # Every package's pytest configuration names its tests/ as testpaths.
    # Slow tests run only when asked, e.g. `nox -s tests -- -m slow`.
    args = session.posargs or ["-m", "not slow"]
    session.run("python", "-m", "pytest", *args)


@nox.session
def e2e(session: nox.Session) -> None:
    """Run the end-to-end tests in tests/ against the core and every module."""
    session.install(*E2E_REQUIREMENTS)
    _install(session, [CORE, *MODULES])
    session.chdir(ROOT)
    session.run("python", "-m", "pytest", "tests", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style, formatting and the import contracts between packages."""
    session.install(*LINT_REQUIREMENTS)
    session.chdir(ROOT)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("python", "scripts/check_imports.py")


@nox.session
def demo(session: nox.Session) -> None:
    """Install the core and every module, then run the main job on a real program."""
    _install(session, [CORE, *MODULES])
    session.run("osv", "--version")
    session.run("osv", "modules")
    # The main job: an image of Debian's static busybox with a data file, then a
    # boot that runs three of its commands one after another.
    image = str(Path(session.create_tmp()) / "demo.img")
    busybox = shutil.which("busybox") or "/bin/busybox"
    session.run(
        "osv",
        "build",
        "-o",
        image,
        "--from-host",
        busybox,
        "--from-host",
        "/etc/os-release",
        "--cmdline",
        f"{busybox} uname -a; {busybox} sha256sum /etc/os-release; "
        f"{busybox} ls -l /etc",
    )
    session.run("osv", "run", image)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks in bench/run.py against the core and every module."""
    script = ROOT / "bench" / "run.py"
    if not script.exists():
        session.skip("there are no benchmarks yet: bench/run.py does not exist")
    _install(session, [CORE, *MODULES])
    # In-process runs, whatever `osv serve` the machine has listening; the
    # one figure taken with a server starts its own.
    session.env["OSV_NO_SERVER"] = "1"
    session.run("python", str(script), *session.posargs)
    session.run("python", str(ROOT / "bench" / "rofs.py"), *session.posargs)
    session.run("python", str(ROOT / "bench" / "dynamic.py"), *session.posargs)
    session.run("python", str(ROOT / "bench" / "httpserver.py"), *session.posargs)


def _install(session: nox.Session, packages: list[str], extras: str = "") -> None:
    """Build wheels of the packages (once per nox run) and install them."""
    wheels = []
    for package in dict.fromkeys(packages):
        wheel = _built.get(package) or _build_wheel(session, package)
        _built[package] = wheel
        wheels.append(f"{wheel}[{extras}]" if extras else str(wheel))
    session.install(*wheels)


def _build_wheel(session: nox.Session, package: str) -> Path:
    source = ROOT / package
    out = WHEEL_DIR / Path(package).name
    shutil.rmtree(out, ignore_errors=True)
    # setuptools builds in the source tree; output left by an earlier build
    # would go into the new wheel, even files deleted from the source since.
    shutil.rmtree(source / "build", ignore_errors=True)
    session.run(
        "python",
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--quiet",
        "-w",
        str(out),
        str(source),
    )
    (wheel,) = out.glob("*.whl")
    return wheel
