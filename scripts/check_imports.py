"""Check the repository's import contracts (.importlinter) with import-linter.

Usage: python3 scripts/check_imports.py [REPOSITORY_ROOT]
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path


def source_dirs(root: Path) -> list[Path]:
    """The src/ directories of the core and of every module."""
    return [root / "core" / "src", *sorted(root.glob("modules/*/src"))]


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else Path(__file__).resolve().parents[1]

    # import-linter finds packages through the import path, so every package's
    # src/ goes on it; nothing needs to be installed.
    path = [str(directory) for directory in source_dirs(root)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}

    # Prefer the lint-imports installed beside this interpreter (a nox
    # session's virtual environment) over whatever else is on PATH.
    beside = Path(sys.executable).parent / "lint-imports"
    program = str(beside) if beside.exists() else shutil.which("lint-imports")
    if program is None:
        print("check_imports: lint-imports is not installed", file=sys.stderr)
        return 2
    command = [program, "--no-cache", "--no-logo", str(root / ".importlinter")]
    return subprocess.run(command, cwd=root, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
