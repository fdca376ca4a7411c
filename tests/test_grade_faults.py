"""Every broken submission gets a report, 0 only where it is broken, and the batch goes on.

One fixture per fault (tests/fixtures/grading/submissions/fault/). Faults inside a notebook are
added to a copy of the *solution*, so everything not broken by the fault keeps full marks.
"""

from __future__ import annotations

import json
import os

import pytest
from test_grade_support import MINILAB, SUBMISSIONS, by_question, grade, results

FAULTS = SUBMISSIONS / "fault"
FULL = {"q1": 3.0, "q2": 3.0, "q3": 2.0}
# Without root the sandbox is resource limits only: no network or filesystem isolation, and no
# process limit (RLIMIT_NPROC would count every process of the user running the tests).
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the full sandbox needs root")
ZERO = {"q1": 0.0, "q2": 0.0, "q3": 0.0}


def feedback_text(out, student: str) -> str:
    """All sources and outputs of a feedback notebook, as one string."""
    nb = json.loads((out / student / "feedback.ipynb").read_text())
    parts = []
    for cell in nb["cells"]:
        parts.append("".join(cell["source"]))
        for o in cell.get("outputs", []):
            text = o.get("text", "")
            parts.append("".join(text) if isinstance(text, list) else text)
            parts.append(f"{o.get('ename', '')}: {o.get('evalue', '')}")
    return "\n".join(parts)


@pytest.mark.parametrize("name, reason", [
    ("not_json", "not JSON"),
    ("json_not_notebook", "JSON but not a Jupyter notebook"),
    ("nbformat3", "nbformat version 3"),
    ("non_utf8", "not UTF-8"),
])
def test_unreadable_file_scores_zero_with_the_reason(tmp_path, name, reason):
    status, out = grade(tmp_path, MINILAB, FAULTS / f"{name}.ipynb")
    assert status == 0
    report = results(out, name)
    assert by_question(report) == ZERO
    assert reason in report["output"]
    assert all(reason in t["output"] for t in report["tests"])
    assert "Grade: 0 / 8" in feedback_text(out, name)


@pytest.mark.parametrize("name, note", [
    ("deleted_cells", "Put back deleted cell 'q1-public'"),
    ("reordered", "reordered"),
    # Cells pasted into a fresh notebook: no metadata, so every cell is the student's own.
    ("no_metadata", "lost the lab's cell metadata"),
    ("bom", "Score 8 / 8"),
])
def test_deleted_or_reordered_cells_are_repaired(tmp_path, name, note):
    status, out = grade(tmp_path, MINILAB, FAULTS / f"{name}.ipynb")
    report = results(out, name)
    assert status == 0 and by_question(report) == FULL
    assert note in report["output"]
    if name == "no_metadata":  # one note on what happened, not one per cell "deleted"
        assert "missing" not in report["output"] and "deleted" not in report["output"]


@pytest.mark.parametrize("name, evidence", [
    ("infinite_loop", "ran longer than 3 s"),
    pytest.param("fork_bomb", "ran longer than 3 s", marks=needs_root),
    ("memory_bomb", "MemoryError"),
    ("disk_filler", "File too large"),
    ("sys_exit", "SystemExit"),
    ("os_exit", "kernel died"),
    ("kernel_crash", "kernel died"),
    pytest.param("network", "Network is unreachable", marks=needs_root),
    # The kernel's replies become unreadable: the cell is skipped like a crash.
    ("json_dumps_patch", "stopped answering properly"),
])
def test_a_misbehaving_cell_costs_only_itself(tmp_path, name, evidence):
    status, out = grade(tmp_path, MINILAB, FAULTS / f"{name}.ipynb")
    assert status == 0
    assert by_question(results(out, name)) == FULL
    assert evidence in feedback_text(out, name)


def test_output_flood_is_truncated_in_feedback(tmp_path):
    status, out = grade(tmp_path, MINILAB, FAULTS / "output_flood.ipynb")
    report = results(out, "output_flood")
    assert status == 0 and by_question(report) == FULL
    assert "output truncated" in report["output"]
    assert (out / "output_flood" / "feedback.ipynb").stat().st_size < 200_000


def test_one_huge_output_is_dropped_before_it_reaches_the_grader(tmp_path):
    """A 200 MB print exceeds the 128 MB message cap: the cell is skipped, nothing else lost."""
    status, out = grade(tmp_path, MINILAB, FAULTS / "huge_output.ipynb")
    report = results(out, "huge_output")
    assert status == 0 and by_question(report) == FULL
    assert "output channel" in report["output"]


@needs_root
@pytest.mark.parametrize("where", ["repository", "tmp"])
def test_the_kernel_cannot_read_the_solution(tmp_path, where):
    """The solution file and its folder are hidden from the student's kernel."""
    solution = MINILAB
    if where == "tmp":
        solution = tmp_path / "secret" / "minilab.ipynb"
        solution.parent.mkdir()
        solution.write_bytes(MINILAB.read_bytes())
    attack = tmp_path / "read_solution.ipynb"
    attack.write_text((FAULTS / "read_solution.ipynb").read_text().replace(
        "SOLUTION_PATH", str(solution)))
    status, out = grade(tmp_path, solution, attack)
    assert status == 0
    text = feedback_text(out, "read_solution")
    assert f"blocked {solution} FileNotFoundError" in text
    # The folder is an empty mount (repository) or absent (/tmp is the kernel's own tmpfs).
    assert (f"list {solution.parent} []" in text
            or f"blocked {solution.parent} FileNotFoundError" in text)
    assert "BEGIN SOLUTION" not in text and "def probe" not in text
    assert by_question(results(out, "read_solution")) == ZERO


@needs_root
def test_the_kernel_sees_only_the_levers_package_of_the_repository(tmp_path):
    """Copies of the solution in the repository (fixtures, _build/) are out of reach."""
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    attack = tmp_path / "read_repository.ipynb"
    attack.write_text((FAULTS / "read_repository.ipynb").read_text().replace(
        "REPO_PATH", str(repo)))
    status, out = grade(tmp_path, MINILAB, attack)
    assert status == 0
    text = feedback_text(out, "read_repository")
    listing = eval(text.split("listing ")[1].split("\n")[0])  # noqa: S307 - our own print
    assert "levers" in listing and set(listing) <= {"levers", ".venv"}
    assert "blocked tests/fixtures/grading/submissions/honest/solution_copy.ipynb" in text
    assert "blocked pyproject.toml" in text and "read levers/__init__.py True" in text


def test_hidden_checks_never_reach_the_feedback(tmp_path):
    status, out = grade(tmp_path, MINILAB, SUBMISSIONS / "honest" / "right_answers.ipynb")
    text = (out / "right_answers" / "feedback.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" not in text and "def probe" not in text
    assert "levers-probe" not in text


@needs_root
def test_the_kernel_runs_unprivileged_alone_and_cannot_write_to_the_host(tmp_path):
    import nbformat

    nb = nbformat.read(SUBMISSIONS / "honest" / "right_answers.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import os, resource\n"
        "print('uid', os.getuid(), 'pid', os.getpid(), 'procs',\n"
        "      sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
        "print('nproc', resource.getrlimit(resource.RLIMIT_NPROC)[0])\n"
        "print('env', sorted(k for k in os.environ if 'TOKEN' in k or 'SECRET' in k))\n"
        "for d in ['/run/lock', '/var/tmp', os.getcwd()]:\n"
        "    try:\n"
        "        open(os.path.join(d, 'probe.txt'), 'w').write('x')\n"
        "        print('writable', d)\n"
        "    except OSError as e:\n"
        "        print('read-only', d, e.errno)\n"))
    path = tmp_path / "whoami.ipynb"
    nbformat.write(nb, path)
    os.environ["LEVERS_TEST_SECRET_TOKEN"] = "do-not-leak"
    try:
        status, out = grade(tmp_path, MINILAB, path)
    finally:
        del os.environ["LEVERS_TEST_SECRET_TOKEN"]
    text = feedback_text(out, "whoami")
    uid = int(text.split("uid ")[1].split()[0])
    assert uid >= 100_000
    assert "pid 2 procs ['1', '2']" in text
    assert "nproc 64" in text and "env []" in text
    assert "read-only /run/lock 30" in text  # EROFS: the host's root filesystem
    assert "writable /var/tmp" in text  # a private tmpfs, gone with the kernel
    assert not os.path.exists("/var/tmp/probe.txt")
