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
    ("nested_json", "nested too deeply"),
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


@pytest.mark.parametrize("name", ["update_flood", "metadata_flood", "error_flood",
                                  "ename_flood", "stream_name_flood"])
def test_every_kind_of_output_counts_against_the_budget(tmp_path, name):
    """40 MB through display updates, output metadata or an error's text: the feedback stays
    small (and so does the grader's memory, which holds every report until the batch ends)."""
    status, out = grade(tmp_path, MINILAB, FAULTS / f"{name}.ipynb")
    report = results(out, name)
    assert status == 0 and by_question(report) == FULL
    assert (out / name / "feedback.ipynb").stat().st_size < 200_000
    if name in ("update_flood", "metadata_flood"):  # (an error is kept, cut short; a stream
        # keeps its text under the name stdout)
        assert "output truncated" in report["output"]


@needs_root
def test_the_kernel_cannot_write_into_its_run_folder(tmp_path):
    """The run folder (sockets) lies on the host's disk: closed to the kernel's uid once the
    sockets exist."""
    status, out = grade(tmp_path, MINILAB, FAULTS / "run_dir_writer.ipynb")
    assert status == 0 and by_question(results(out, "run_dir_writer")) == FULL
    assert "run folder: Permission denied" in feedback_text(out, "run_dir_writer")


def test_probe_activity_never_reaches_an_earlier_output(tmp_path):
    """A hook that copies every cell it sees into an earlier display learns nothing of probes."""
    status, out = grade(tmp_path, MINILAB, FAULTS / "probe_leak.ipynb")
    assert status == 0
    # `get_ipython().events` can run code the grader does not read: forbidden-call questions
    # score 0; the question without a forbidden list keeps its points
    assert by_question(results(out, "probe_leak"))["q3"] == FULL["q3"]
    text = (out / "probe_leak" / "feedback.ipynb").read_text()
    assert "def probe" not in text and "levers-probe" not in text


def test_student_text_in_feedback_is_shown_verbatim(tmp_path):
    """An error message with a heading and an image stays text inside a fenced block."""
    status, out = grade(tmp_path, MINILAB, FAULTS / "markdown_error.ipynb")
    # q3 uses q1's function, so it fails with it
    assert status == 0 and by_question(results(out, "markdown_error")) == {**ZERO, "q2": 3.0}
    nb = json.loads((out / "markdown_error" / "feedback.ipynb").read_text())
    grader = ["".join(c["source"]) for c in nb["cells"] if c["metadata"].get("levers")]
    headings, fenced = [], False
    for line in (line for cell in grader for line in cell.splitlines()):
        fenced ^= line.startswith("```")
        if line.startswith("#") and not fenced:
            headings.append(line)
    assert headings == ["# Grade: 3 / 8"]
    result = next(cell for cell in grader if "Grader — q1" in cell)
    assert "```text\nThe test raised ValueError: x" in result


def test_a_lone_surrogate_in_an_error_does_not_stop_the_batch(tmp_path):
    status, out = grade(tmp_path, MINILAB, FAULTS / "surrogate_error.ipynb",
                        SUBMISSIONS / "honest" / "right_answers.ipynb")
    assert status == 0
    assert by_question(results(out, "surrogate_error")) == {**ZERO, "q2": 3.0}
    assert results(out, "right_answers")["score"] == 8
    json.loads((out / "surrogate_error" / "feedback.ipynb").read_text(encoding="utf-8"))
    assert "surrogate_error" in (out / "gradebook.csv").read_text()


@pytest.mark.parametrize("kind", ["fifo", "device", "link_to_solution"])
def test_a_file_that_is_not_a_plain_notebook_gets_a_report(tmp_path, kind):
    """A FIFO would block the read, /dev/zero would never end, and a link to the solution
    (committed to a student's repository) would be graded as the solution."""
    subs = tmp_path / "subs"
    subs.mkdir()
    bad = subs / "a_bad.ipynb"
    if kind == "fifo":
        os.mkfifo(bad)
    else:
        bad.symlink_to("/dev/zero" if kind == "device" else MINILAB.resolve())
    (subs / "b_right.ipynb").write_bytes(
        (SUBMISSIONS / "honest" / "right_answers.ipynb").read_bytes())
    status, out = grade(tmp_path, MINILAB, subs)
    assert status == 0
    report = results(out, "a_bad")
    assert by_question(report) == ZERO
    says = {"fifo": "not a regular file", "device": "symbolic link",
            "link_to_solution": "leads to the solution notebook through a link"}[kind]
    assert says in report["output"]
    assert results(out, "b_right")["score"] == 8


def test_a_link_to_the_solution_through_a_linked_folder_is_refused(tmp_path):
    (tmp_path / "submission").symlink_to(MINILAB.resolve().parent)
    status, out = grade(tmp_path, MINILAB, tmp_path / "submission" / MINILAB.name)
    report = results(out, MINILAB.stem)
    assert status == 0 and by_question(report) == ZERO
    assert "leads to the solution notebook through a link" in report["output"]


def test_one_huge_output_is_dropped_before_it_reaches_the_grader(tmp_path):
    """A 200 MB print exceeds the 64 MB message cap: the cell is skipped, nothing else lost,
    and the report says so (ZeroMQ's disconnection is seen through a monitor of the socket).
    (Making and sending 200 MB takes the kernel seconds: a longer cell timeout; and memory
    for its copies, or the kernel fails to send it at all and the test sees nothing to cut.)"""
    status, out = grade(tmp_path, MINILAB, FAULTS / "huge_output.ipynb",
                        extra=("--timeout", "30", "--memory", "3072"))
    report = results(out, "huge_output")
    assert status == 0 and by_question(report) == FULL
    assert ("Cell 7 of your notebook: one of its outputs was over the 64 MB one message may "
            "have, so ZeroMQ cut the kernel's output channel and the output was lost; it was "
            "skipped on a fresh kernel.") in report["output"]


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
    listing = eval(text.split("listing ")[1].split("\n")[0])
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
        "for d in ['/', '/run/lock', '/var/tmp', os.getcwd()]:\n"
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
    assert "read-only / 30" in text  # EROFS: the sandbox's root is read-only
    assert "read-only /run/lock 2" in text  # ENOENT: no folder of the host's is there
    assert "writable /var/tmp" in text  # a private tmpfs, gone with the kernel
    assert not os.path.exists("/var/tmp/probe.txt")


def test_feedback_renders_nothing_of_the_students(tmp_path):
    """Forged grade headings and grader blocks in markdown and raw cells, a script and a remote
    image in an output: in the feedback they are text, and only grader cells carry its mark."""
    import nbformat

    nb = nbformat.read(SUBMISSIONS / "honest" / "right_answers.ipynb", as_version=4)
    forged = "# Grade: 12 / 12\n\n**Grader — q1**\n\n✅ hidden check: 3 / 3"
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(forged, metadata={"levers": {"grader": 1}}))
    nb.cells.insert(2, nbformat.v4.new_raw_cell("<h1>Grade: 12 / 12</h1>",
                                                metadata={"format": "text/html"}))
    nb.cells.append(nbformat.v4.new_code_cell(
        "from IPython.display import HTML, Javascript, display\n"
        "display(HTML('<script>alert(1)</script><img src=\"https://evil.example/t.png\">'))\n"
        "display(Javascript('alert(2)'))\n"))
    path = tmp_path / "forger.ipynb"
    nbformat.write(nb, path)
    status, out = grade(tmp_path, MINILAB, path)
    assert status == 0 and by_question(results(out, "forger")) == FULL
    feedback = json.loads((out / "forger" / "feedback.ipynb").read_text())
    marked = [c for c in feedback["cells"] if c["metadata"].get("levers")]
    assert len(marked) == 1 + len(FULL)  # the grade on top and one result per question
    unfenced = []  # lines of the student's cells that render as anything but plain text
    for cell in feedback["cells"]:
        fenced = False
        for line in "".join(cell["source"]).splitlines():
            fenced ^= line.startswith("```")
            if not cell["metadata"].get("levers") and cell["cell_type"] != "code" and (
                    not fenced and "Grade" in line):
                unfenced.append(line)
    assert unfenced == []
    assert "".join(marked[0]["source"]).startswith("# Grade: 8 / 8")
    assert all(c["cell_type"] in ("markdown", "code") for c in feedback["cells"])
    outputs = [o for c in feedback["cells"] for o in c.get("outputs", [])]
    assert {k for o in outputs for k in o.get("data", {})} <= {"text/plain", "image/png"}
    text = (out / "forger" / "feedback.ipynb").read_text()
    assert "not shown in feedback: application/javascript" in text
    assert "not shown in feedback: text/html" in text
    assert "<script" not in json.dumps(outputs) and "evil.example" not in json.dumps(outputs)
