"""The code base stays ruff-clean (pyproject.toml holds the rules, RUF100 included), notebooks and
generated labs too: the same check as ``make lint``."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise",
                             "levers", "tests", "chapters", "solutions", "labs", "conftest.py",
                             "benchmarks"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
