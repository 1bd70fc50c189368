"""The Python version pyproject.toml asks for is the one the code needs: vermin reads the code for what it uses."""

import re
import subprocess
import sys
from pathlib import Path

from helpers.settings import REPO_ROOT


def requires_python() -> tuple[int, int]:
    floor = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (REPO_ROOT / "pyproject.toml").read_text())
    return int(floor[1]), int(floor[2])


def vermin(major: int, minor: int) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("vermin")), "--no-tips", "--violations", f"-t={major}.{minor}-", "helpers", "benchmarks", "tests"]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)


def test_the_code_runs_on_the_python_it_asks_for_and_needs_it():
    major, minor = requires_python()
    result = vermin(major, minor)
    assert result.returncode == 0, result.stdout
    older = vermin(major, minor - 1)  # the floor is needed, not only allowed: lower it when this passes
    assert older.returncode != 0 and "requires" in older.stdout, older.stdout
