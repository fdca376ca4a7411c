"""The real nbgrader (pinned in requirements.in) on a course made by ``levers labs nbgrader``:
generate_assignment reproduces labs/, autograde fails the hidden checks closed (a blank lab
scores 0, the solution only its public points), and ``levers grade --nbgrader-db`` puts the
sandboxed grade into the course's gradebook.db, reports named by student."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_grade_support import SEED, bubblewrap_or_skip

from levers.grading.cli import main
from levers.grading.nbgrader_course import EXECUTE_TIMEOUT, export_course

api = pytest.importorskip("nbgrader.api")

ROOT = Path(__file__).parent.parent
LAB = "lab01-precision"
NBGRADER = Path(sys.executable).with_name("nbgrader")


def _nbgrader(course: Path, *args: str) -> None:
    subprocess.run([str(NBGRADER), *args, LAB, "--force"], cwd=course, check=True,
                   timeout=900, capture_output=True)


def _scores(course: Path, student: str) -> tuple[float, float, dict[str, float]]:
    with api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        nb = gb.find_submission_notebook(LAB, LAB, student)
        return nb.score, nb.max_score, {g.name: g.score for g in nb.grades}


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """An nbgrader course with Lab 1, released and autograded for two students."""
    tmp = tmp_path_factory.mktemp("nbgrader")
    solutions = tmp / "solutions"
    solutions.mkdir()
    shutil.copy(ROOT / "solutions" / f"{LAB}.ipynb", solutions)
    course = tmp / "course"
    export_course(solutions, course)
    assert f"timeout = {EXECUTE_TIMEOUT}" in (course / "nbgrader_config.py").read_text()
    _nbgrader(course, "generate_assignment")
    for student, notebook in (("ada", ROOT / "solutions"), ("bob", ROOT / "labs")):
        target = course / "submitted" / student / LAB / f"{LAB}.ipynb"
        target.parent.mkdir(parents=True)
        shutil.copy(notebook / f"{LAB}.ipynb", target)
    _nbgrader(course, "autograde")
    return course


def test_generate_assignment_reproduces_labs(course):
    release = nbformat.read(course / "release" / LAB / f"{LAB}.ipynb", as_version=4)
    lab = nbformat.read(ROOT / "labs" / f"{LAB}.ipynb", as_version=4)
    assert len(release.cells) == len(lab.cells)
    for r, c in zip(release.cells, lab.cells, strict=True):
        assert r.source.strip() == c.source.strip(), c.id
        for key in ("editable", "deletable"):
            assert r.metadata.get(key) == c.metadata.get(key), (c.id, key)
    assert "probe" not in json.dumps(release.cells)


def test_autograde_fails_hidden_checks_closed(course):
    lab = nbformat.read(ROOT / "solutions" / f"{LAB}.ipynb", as_version=4)
    hidden = {c.metadata.nbgrader.grade_id for c in lab.cells if "BEGIN HIDDEN" in c.source}
    public = sum(c.metadata.nbgrader.get("points", 0) for c in lab.cells
                 if c.metadata.get("nbgrader", {}).get("grade") and "BEGIN HIDDEN" not in c.source)
    blank, most, _ = _scores(course, "bob")
    assert blank == 0 and most > public > 0
    solved, _, grades = _scores(course, "ada")
    assert solved == public and all(grades[g] == 0 for g in hidden)
    autograded = (course / "autograded" / "ada" / LAB / f"{LAB}.ipynb").read_text()
    assert "graded by `levers grade`" in autograded and "def probe" not in autograded


def test_levers_grade_writes_the_course_gradebook(course, tmp_path):
    bubblewrap_or_skip()
    out = tmp_path / "grades"
    status = main([str(ROOT / "solutions" / f"{LAB}.ipynb"), str(course / "submitted"),
                   "--out", str(out), "--seed", str(SEED), "--quiet",
                   "--nbgrader-db", str(course / "gradebook.db")])
    assert status == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["ada", "bob"]
    solved, most, _ = _scores(course, "ada")
    assert solved == most == json.loads((out / "ada" / "results.json").read_text())["score"]
    assert _scores(course, "bob")[0] == 0
