"""What each platform receives: Gradescope (run_autograder in a simulated layout), GitHub
Actions (the workflow's own steps), Classroom 50 (its autograder contract), and the CSVs.

Every platform is checked on the same three submissions of the fixture lab: the solution, the
blank lab and a half-right answer; the points must be the grader's, rounded once.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from test_grade_support import BLANK, MINILAB, SUBMISSIONS, bubblewrap_or_skip, grade, results

from levers.grading import platforms
from levers.grading.cli import expand, nbgrader_ids

ROOT = Path(__file__).parent.parent
GRADING = ROOT / "grading"
HALF = SUBMISSIONS / "honest" / "half_right.ipynb"
# The three submissions and what the fixture lab (8 points) gives them.
CASES = {"solution": (MINILAB, 8), "blank": (BLANK, 0), "half": (HALF, 5)}
UTC = dt.UTC

# Gradescope's documented results.json fields (autograder specifications page).
GRADESCOPE = {
    "type": "object",
    "required": ["tests"],
    "properties": {
        "score": {"type": "number"},
        "execution_time": {"type": "integer"},
        "output": {"type": "string"},
        "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "test_output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "extra_data": {"type": "object"},
        "tests": {"type": "array", "items": {
            "type": "object", "required": ["name", "score", "max_score"],
            "properties": {
                "score": {"type": "number"}, "max_score": {"type": "number"},
                "status": {"enum": ["passed", "failed"]}, "name": {"type": "string"},
                "number": {"type": "string"}, "output": {"type": "string"},
                "visibility": {"enum": ["hidden", "after_due_date", "after_published",
                                        "visible"]}}}},
        "leaderboard": {"type": "array", "items": {
            "type": "object", "required": ["name", "value"],
            "properties": {"name": {"type": "string"}, "value": {"type": ["number", "string"]},
                           "order": {"enum": ["asc", "desc"]}}}},
    },
}

# Classroom 50's result.json contract as its wiki documents it (Advanced Autograding).
STAMP = r"^\d{4}-\d{2}-\d{2}T([01]\d|2[0-3]):[0-5]\d:[0-5]\dZ$"
CLASSROOM50 = {
    "type": "object", "additionalProperties": False,
    "required": ["schema", "classroom", "assignment", "assignment_type", "owner", "submission",
                 "commit", "release", "review", "datetime", "score", "max-score", "tests"],
    "properties": {
        "schema": {"const": "classroom50/result/v1"},
        **{k: {"type": "string", "minLength": 1}
           for k in ("classroom", "assignment", "owner", "commit", "release", "review")},
        "assignment_type": {"enum": ["individual", "group"]},
        "submission": {"type": "string", "pattern": "^submit/"},
        "datetime": {"type": "string", "pattern": STAMP},
        "graded_at": {"type": "string", "pattern": STAMP},
        "score": {"type": "integer", "minimum": 0},
        "max-score": {"type": "integer", "minimum": 0},
        "tests": {"type": "array", "items": {
            "type": "object", "required": ["test-name", "passed", "score", "max-score"],
            "properties": {"test-name": {"type": "string", "minLength": 1},
                           "passed": {"type": "boolean"},
                           "score": {"type": "integer", "minimum": 0},
                           "max-score": {"type": "integer", "minimum": 0}}}},
        "submitted_by": {"type": "object"},
    },
}
C50_ENV = {"CLASSROOM": "levers-2026", "ASSIGNMENT": "minilab", "OWNER": "ada",
           "ASSIGNMENT_TYPE": "individual", "SUBMISSION_TAG": "submit/2026-12-02T01-00-00Z-abc",
           "COMMIT_URL": "https://example.org/c", "RELEASE_URL": "https://example.org/r",
           "REVIEW_URL": "https://example.org/v"}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict[str, dict]:
    """results.json of the three submissions, graded in one batch."""
    tmp = tmp_path_factory.mktemp("graded")
    subs = tmp / "subs"
    subs.mkdir()
    for name, (path, _) in CASES.items():
        shutil.copy(path, subs / f"{name}.ipynb")
    status, out = grade(tmp, MINILAB, *sorted(subs.iterdir()), extra=("--lms", "canvas",
                                                                     "--lms", "moodle"))
    assert status == 0
    return {"out": out, **{name: results(out, name) for name in CASES}}


# --- units: no kernel --------------------------------------------------------------------------

def _results(public_ok: bool, hidden_score: float) -> dict:
    return {"score": (1 if public_ok else 0) + hidden_score, "tests": [
        {"name": "q1 public test", "score": 1 if public_ok else 0, "max_score": 1,
         "status": "passed" if public_ok else "failed", "output": "The test raised x | y",
         "visibility": "visible"},
        {"name": "q1 hidden check", "score": hidden_score, "max_score": 2,
         "status": "passed" if hidden_score == 2 else "failed",
         "output": "value['a']: expected 42, got 41", "visibility": "after_published"}]}


def test_summary_withholds_hidden_details_until_the_release_date():
    release = dt.datetime(2026, 12, 20, tzinfo=UTC)
    r = _results(True, 1.33)
    before = platforms.actions_summary(r, "ada", "lab01", False, release)
    assert "Public tests: 1 / 1" in before and "2026-12-20 00:00 UTC" in before
    assert "expected 42" not in before and "1.33" not in before and "2.33" not in before
    assert "| q1 | hidden check | – | graded | withheld until release |" in before
    after = platforms.actions_summary(r, "ada", "lab01", True, release)
    assert "**Score: 2.33 / 3**" in after and "expected 42" in after
    assert "| q1 | public test | 1 / 1 | ✅ passed | The test raised x \\| y |" in after
    assert "Grading failed" in platforms.actions_summary(None, "ada", "lab01", True)


def test_annotations_escape_and_withhold():
    r = _results(False, 0)
    lines = platforms.annotations(r, "dir,x/lab.ipynb", False)
    assert lines == ["::error file=dir%2Cx/lab.ipynb,title=q1 public test::The test raised x | y"]
    assert len(platforms.annotations(r, "lab.ipynb", True)) == 2
    assert platforms.annotations(None, "lab.ipynb", True)[0].startswith("::error")


def test_release_dates():
    assert platforms.parse_release("2026-12-20T17:00:00Z") == dt.datetime(2026, 12, 20, 17,
                                                                           tzinfo=UTC)
    with pytest.raises(ValueError, match="release must be an ISO 8601"):
        platforms.parse_release("next week")
    assert platforms.main(["actions", ".", "--lab", "x", "--student", "a", "--notebook", "n",
                           "--release", "soon"]) == 2


def test_classroom50_result_counts_hundredths_exactly():
    now = dt.datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC)
    doc = platforms.classroom50(_results(True, 1.33), C50_ENV, now, show_hidden=False)
    jsonschema.validate(doc, CLASSROOM50)
    assert (doc["score"], doc["max-score"]) == (233, 300)
    assert [t["score"] for t in doc["tests"]] == [100, 133]
    assert "message" not in doc["tests"][1] and doc["datetime"] == "2026-12-02T01:02:03Z"


def test_lms_layouts():
    rows = [{"student": "bob", "score": 0, "max_score": 8, "notes": ""},
            {"student": "ada", "score": 13.33, "max_score": 15, "notes": "a note"}]
    canvas = platforms.lms_rows(rows, "lab01", 15, "canvas")
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "lab01"]
    assert canvas[1] == ["Points Possible", "", "", "", "", "15"]
    assert canvas[2] == ["ada", "", "", "ada", "", "13.33"]
    moodle = platforms.lms_rows(rows, "lab01", 15, "moodle")
    assert moodle[:2] == [["Username", "lab01", "Feedback"], ["ada", "13.33", "13.33 / 15. a note"]]
    with pytest.raises(ValueError, match="layout must be one of"):
        platforms.lms_rows(rows, "lab01", 15, "blackboard")


def test_submitted_tree_is_found_recursively_and_named_by_student(tmp_path):
    for student in ("ada", "bob"):
        nb = tmp_path / "submitted" / student / "lab01" / "lab01-precision.ipynb"
        nb.parent.mkdir(parents=True)
        nb.write_text("{}")
        (nb.parent / ".ipynb_checkpoints").mkdir()
        (nb.parent / ".ipynb_checkpoints" / "lab01-precision-checkpoint.ipynb").write_text("{}")
    found = expand([tmp_path / "submitted"])
    assert [p.relative_to(tmp_path).parts[1] for p in found] == ["ada", "bob"]
    assert nbgrader_ids(found) == [("ada", "lab01", "lab01-precision"),
                                   ("bob", "lab01", "lab01-precision")]


def test_workflow_always_reports_and_classroom_is_gone():
    flow = yaml.safe_load((GRADING / "levers-grade.yml").read_text())
    steps = flow["jobs"]["grade"]["steps"]
    names = [s.get("name") for s in steps]
    assert names.index("Grade") < names.index("Report")
    for step in steps[names.index("Report"):]:
        assert step["if"] == "always()"
    for script in ("setup.sh", "run_autograder", "export-class.sh"):
        subprocess.run(["bash", "-n", str(GRADING / script)], check=True)
    assert not (GRADING / "classroom.yml").exists()
    text = "\n".join(p.read_text() for p in GRADING.rglob("*") if p.is_file())
    assert "autograding-grading-reporter" not in text and "classroom.json" not in text


def test_grading_requirements_are_a_small_subset_of_the_lock():
    lock = dict(re.findall(r"^([\w.-]+)==(\S+)", (ROOT / "requirements.txt").read_text(), re.M))
    grading = dict(re.findall(r"^([\w.-]+)==(\S+)",
                              (GRADING / "requirements.txt").read_text(), re.M))
    assert {"torch", "ipykernel", "nbclient", "mlxtend"} <= set(grading)
    assert not {"jupyter-book", "sphinx", "playwright", "pytest", "nbgrader"} & set(grading)
    assert all(lock.get(name) == version for name, version in grading.items())
    assert len(grading) < len(lock) / 2


# --- what each platform receives for the solution, the blank lab and a half-right answer ----

def test_one_rounding_everywhere(graded):
    """Points in results.json, the gradebook and the LMS CSVs are the same numbers."""
    book = {r["student"]: r for r in csv.DictReader((graded["out"] / "gradebook.csv").open())}
    canvas = list(csv.reader((graded["out"] / "gradebook-canvas.csv").open()))
    moodle = list(csv.reader((graded["out"] / "gradebook-moodle.csv").open()))
    assert canvas[1][-1] == "8" and moodle[0] == ["Username", "minilab", "Feedback"]
    for name, (_, points) in CASES.items():
        r = graded[name]
        assert r["score"] == points == round(sum(t["score"] for t in r["tests"]), 2)
        assert all(t["score"] == round(t["score"], 2) for t in r["tests"])
        assert float(book[name]["total"]) == points
        assert [float(row[-1]) for row in canvas if row[0] == name] == [points]
        assert [float(row[1]) for row in moodle if row[0] == name] == [points]


def test_gradescope_run_autograder_in_a_simulated_layout(tmp_path):
    bubblewrap_or_skip()
    source = tmp_path / "autograder" / "source"
    (source / "solutions").mkdir(parents=True)
    (source / ".venv" / "bin").mkdir(parents=True)
    python = source / ".venv" / "bin" / "python"  # setup.sh's venv: this test's Python
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    shutil.copy(MINILAB, source / "solutions" / "minilab.ipynb")
    got = {}
    for name, (path, points) in CASES.items():
        submission = tmp_path / "autograder" / f"submission-{name}"
        submission.mkdir()
        shutil.copy(path, submission / "my lab.ipynb")
        out = tmp_path / "autograder" / f"results-{name}" / "results.json"
        env = {**os.environ, "LAB": "minilab", "SOURCE": str(source), "CELL": "10",
               "SUBMISSION": str(submission), "RESULTS": str(out), "WALL": "120"}
        subprocess.run(["bash", str(GRADING / "run_autograder")], env=env, check=True,
                       timeout=300)
        got[name] = json.loads(out.read_text())
        jsonschema.validate(got[name], GRADESCOPE)
        assert got[name]["score"] == points and got[name]["output_format"] == "md"
        assert {t["visibility"] for t in got[name]["tests"]} == {"visible", "after_published"}
        assert "publishes the grades" in got[name]["output"]
    # Out of time (Gradescope's limit nearly reached): a zero report that says so.
    slow = {**env, "LIMIT": "48", "RESULTS": str(tmp_path / "slow.json")}
    subprocess.run(["bash", str(GRADING / "run_autograder")], env=slow, check=True, timeout=60)
    late = json.loads((tmp_path / "slow.json").read_text())
    jsonschema.validate(late, GRADESCOPE)
    assert late["score"] == 0 and "ran out of time" in late["output"]
    # No notebook at all: a zero report with the reason, never nothing.
    empty = tmp_path / "autograder" / "empty"
    empty.mkdir()
    env = {**os.environ, "LAB": "minilab", "SOURCE": str(source), "SUBMISSION": str(empty),
           "RESULTS": str(tmp_path / "none.json")}
    subprocess.run(["bash", str(GRADING / "run_autograder")], env=env, check=True, timeout=60)
    none = json.loads((tmp_path / "none.json").read_text())
    jsonschema.validate(none, GRADESCOPE)
    assert none["score"] == 0 and "No .ipynb" in none["output"]


def _workflow_step(name: str) -> str:
    flow = yaml.safe_load((GRADING / "levers-grade.yml").read_text())
    return next(s["run"] for s in flow["jobs"]["grade"]["steps"] if s.get("name") == name)


@pytest.mark.parametrize("case", list(CASES))
def test_actions_workflow_steps_run_as_written(tmp_path, case):
    """The workflow's Grade and Report steps, run by bash as the runner would; the Report step
    before the release date, then without one."""
    bubblewrap_or_skip()
    path, points = CASES[case]
    (tmp_path / "submission").mkdir()
    shutil.copy(path, tmp_path / "submission" / "minilab.ipynb")
    # The course checkout: its solution; levers itself is the installed package.
    (tmp_path / "course" / "solutions").mkdir(parents=True)
    shutil.copy(MINILAB, tmp_path / "course" / "solutions" / "minilab.ipynb")
    env = {**os.environ, "LAB": "minilab", "WALL": "120", "LEVERS_PY": sys.executable,
           "AS_ROOT": "", "GITHUB_REPOSITORY": "levers-course/minilab-ada",
           "GITHUB_WORKSPACE": str(tmp_path), "LEVERS_SRC": str(tmp_path / "course")}
    subprocess.run(["bash", "-e", "-c", _workflow_step("Grade")], cwd=tmp_path, env=env,
                   check=True, timeout=300)
    env["LEVERS_SRC"] = str(ROOT)  # the Report step reads platforms.py from the course
    for release in ("2099-01-01", ""):
        summary = tmp_path / f"summary{release}.md"
        env.update(RELEASE=release, GITHUB_STEP_SUMMARY=str(summary))
        report = subprocess.run(["bash", "-e", "-c", _workflow_step("Report")], cwd=tmp_path,
                                env=env, check=True, timeout=60, capture_output=True,
                                text=True)
        text = summary.read_text()
        row = json.loads((tmp_path / "score.json").read_text())
        assert row["student"] == "minilab-ada" and row["score"] == points
        assert text.startswith("## minilab: minilab-ada")
        errors = [line for line in report.stdout.splitlines() if line.startswith("::error")]
        assert all("file=minilab.ipynb," in line for line in errors)
        if release:
            assert "withheld until release" in text and "hidden check" not in "".join(errors)
            assert "Your values differ" not in text
        else:
            assert f"**Score: {points} / 8**" in text
            assert ("hidden check" in "".join(errors)) == (points < 8)
        assert (not errors) == (points == 8)


def test_actions_report_step_reports_a_failed_grading(tmp_path):
    summary = tmp_path / "summary.md"
    # No grades folder, and only the system's Python (the install may have failed).
    env = {**os.environ, "LAB": "minilab", "RELEASE": "", "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_REPOSITORY": "levers-course/minilab-ada", "PATH": "/usr/bin:/bin",
           "GITHUB_WORKSPACE": str(tmp_path), "LEVERS_SRC": str(ROOT)}
    report = subprocess.run(["bash", "-e", "-c", _workflow_step("Report")], cwd=tmp_path,
                            env=env, check=True, capture_output=True, text=True, timeout=60)
    assert "Grading failed" in summary.read_text()
    assert report.stdout.startswith("::error")
    assert json.loads((tmp_path / "score.json").read_text())["notes"] == "grading failed"


def test_class_csv_from_the_runs_score_artifacts(graded, tmp_path):
    for name in CASES:
        run = tmp_path / "runs" / f"minilab-{name}"
        run.mkdir(parents=True)
        row = platforms.score_row(graded[name], f"minilab-{name}")
        (run / "score.json").write_text(json.dumps(row))
    out = tmp_path / "class.csv"
    assert platforms.main(["class-csv", str(tmp_path / "runs"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["student"]: float(r["total"]) for r in rows} == {
        f"minilab-{n}": p for n, (_, p) in CASES.items()}
    assert platforms.main(["class-csv", str(tmp_path / "runs"), "--out", str(out),
                           "--lms", "canvas", "--title", "minilab"]) == 0
    assert next(csv.reader(out.open()))[-1] == "minilab"


def test_classroom50_autograder_follows_the_documented_contract(tmp_path):
    bubblewrap_or_skip()
    course = tmp_path / "classroom50" / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copy(MINILAB, course / "solutions" / "minilab.ipynb")
    for name, (path, points) in CASES.items():
        checkout = tmp_path / f"checkout-{name}"
        checkout.mkdir()
        shutil.copy(path, checkout / "minilab.ipynb")
        env = {**os.environ, **C50_ENV, "LEVERS_COURSE": str(course),
               "LEVERS_PY": sys.executable}
        subprocess.run([sys.executable, str(GRADING / "classroom50" / "autograder.py")],
                       cwd=checkout, env=env, check=True, timeout=300)
        doc = json.loads((checkout / "result.json").read_text())
        jsonschema.validate(doc, CLASSROOM50)
        assert (doc["score"], doc["max-score"]) == (points * 100, 800)
        assert sum(t["points"] for t in doc["tests"]) == points
        assert (checkout / "release-body.md").read_text().startswith("## minilab: ada")


def test_gradescope_leaderboard_takes_measured_accuracy_of_passed_checks_only():
    from types import SimpleNamespace

    import nbformat

    from levers.grading import report as rep
    from levers.grading.score import CheckResult, Report

    meta = {"nbgrader": {"grade_id": "q5-hidden", "grade": True}}
    lab = SimpleNamespace(notebook=nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("", metadata=meta)]))
    value = {"qat2_accuracy": 0.91234567, "bits": 2, "ptq_accuracy": [0.5]}
    run = SimpleNamespace(probes={"q5-hidden": {"ok": True, "value": value}})
    passed = Report("ada", 1, [CheckResult("q5-hidden", "hidden", "q5", 4, 4, "passed", "")],
                    execution=run)
    assert rep.gradescope(passed, lab)["leaderboard"] == [
        {"name": "q5 qat2 accuracy", "value": 0.9123, "order": "desc"}]
    jsonschema.validate(rep.gradescope(passed, lab), GRADESCOPE)
    passed.checks[0].status = "failed"
    assert "leaderboard" not in rep.gradescope(passed, lab)
    meta["levers"] = {"leaderboard": ["bits"]}  # listed keys replace the automatic choice
    passed.checks[0].status = "passed"
    lab.notebook.cells[0].metadata = nbformat.from_dict(meta)
    assert rep.leaderboard(passed, lab) == []  # bits is an int, not a measured float
