"""Classroom 50 autograder: grade the student's lab with ``levers grade``.

Put this file at ``CLASSROOM/autograders/ASSIGNMENT/autograder.py`` in the classroom50
repository, with the course beside it as ``course/`` (``levers/``, ``solutions/``,
``grading/requirements.txt``, ``pyproject.toml``), and give the assignment the runtime
``{"python": "3.11", "apt": ["bubblewrap"]}``. Classroom 50's runner starts it in the student's
checkout with ``CLASSROOM``, ``ASSIGNMENT``, ``SUBMISSION_TAG``, ``COMMIT_URL``, ``RELEASE_URL``,
``REVIEW_URL``, ``OWNER`` in the environment; it writes ``./result.json`` (schema
``classroom50/result/v1``, points in hundredths) and ``./release-body.md`` (the score table),
and exits non-zero when grading could not run, which the runner reports as an error.

``LAB`` (default: the assignment's slug) names the solution; ``LEVERS_RELEASE`` (ISO date)
withholds the hidden checks' messages until then, as everything here is published on the
student's repository.
"""

import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COURSE = Path(os.environ.get("LEVERS_COURSE", HERE / "course"))
LAB = os.environ.get("LAB") or os.environ["ASSIGNMENT"]
PY = Path(os.environ.get("LEVERS_PY", COURSE / ".venv" / "bin" / "python"))


def install() -> None:
    """The grader's small runtime set, once per runner."""
    subprocess.run([sys.executable, "-m", "venv", str(COURSE / ".venv")], check=True)
    pip = [str(PY), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--extra-index-url", "https://download.pytorch.org/whl/cpu",
                    "-r", str(COURSE / "grading" / "requirements.txt")], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(COURSE)], check=True)


def main() -> int:
    notebooks = sorted(p for p in Path.cwd().rglob(f"{LAB}.ipynb")
                       if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        print(f"::error::No {LAB}.ipynb in the repository.", file=sys.stderr)
        return 1
    if not PY.exists():
        install()
    # result.json's datetime is the submission instant: the graded commit's committer date.
    stamp = subprocess.run(["git", "log", "-1", "--format=%ct"], capture_output=True,
                           text=True, check=False).stdout.strip()
    if stamp.isdigit():
        os.environ["COMMIT_DATE"] = dt.datetime.fromtimestamp(
            int(stamp), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    grades = Path(tempfile.mkdtemp())
    root = [] if os.geteuid() == 0 else ["sudo", "-E"]  # as root the sandbox is complete
    ran = subprocess.run([*root, str(PY), "-m", "levers.grading.cli",
                          str(COURSE / "solutions" / f"{LAB}.ipynb"), str(notebooks[0]),
                          "--out", str(grades), "--quiet"], check=False)
    if ran.returncode != 0:
        return 1
    return subprocess.run([str(PY), "-m", "levers.grading.platforms", "classroom50",
                           str(grades), "--out", "result.json", "--body", "release-body.md"],
                          check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
