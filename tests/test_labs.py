"""Tests for levers.grading.labs and the lab notebooks: format checks, student versions, probes."""

import copy
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from levers.grading import labs

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
MARKERS = (labs.BEGIN_SOLUTION, labs.END_SOLUTION, labs.BEGIN_HIDDEN, labs.END_HIDDEN)


def nbgrader(grade_id, *, grade=False, solution=False, locked=None, points=None):
    meta = {"grade": grade, "solution": solution, "locked": not solution if locked is None
            else locked, "grade_id": grade_id, "schema_version": 3}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


SOLUTION_SRC = '''def double(x):
    """Twice x."""
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION


class Scaler:
    def scale(self, x):
        ### BEGIN SOLUTION
        y = 3 * x
        return y
        ### END SOLUTION'''
HIDDEN_SRC = """### BEGIN HIDDEN TESTS
def probe(seed: int) -> dict:
    return {'y': double(seed)}
### END HIDDEN TESTS"""


def tiny_notebook():
    """A minimal well-formed solution notebook: one question, every kind of cell."""
    return new_notebook(cells=[
        new_markdown_cell("# Lab 0\nDouble a number."),
        new_code_cell(SOLUTION_SRC, metadata=nbgrader("q1-solution", solution=True),
                      execution_count=3, outputs=[nbformat.v4.new_output("stream", text="hi")]),
        new_code_cell("assert double(2) == 4",
                      metadata=nbgrader("q1-public", grade=True, points=1)),
        new_code_cell(HIDDEN_SRC, metadata=nbgrader("q1-hidden", grade=True, points=2)),
        new_markdown_cell("Why?", metadata=nbgrader("q2-answer", solution=True)),
    ])


def read(path):
    return nbformat.read(path, as_version=4)


def split_lines(source):
    """(lines inside solution or hidden regions, lines outside them) of one cell, stripped."""
    inside, secret, shown = False, set(), set()
    for line in source.splitlines():
        if line.strip() in (labs.BEGIN_SOLUTION, labs.BEGIN_HIDDEN):
            inside = True
        elif line.strip() in (labs.END_SOLUTION, labs.END_HIDDEN):
            inside = False
        elif line.strip():
            (secret if inside else shown).add(line.strip())
    return secret, shown


# --- the student version of the tiny notebook -------------------------------------------------

def test_solution_regions_become_stubs_at_their_indentation():
    student = labs.student_version(tiny_notebook())
    assert student.cells[1].source == '''def double(x):
    """Twice x."""
    # YOUR CODE HERE
    raise NotImplementedError()


class Scaler:
    def scale(self, x):
        # YOUR CODE HERE
        raise NotImplementedError()'''
    compile(student.cells[1].source, "student", "exec")


def test_hidden_cell_keeps_only_a_comment_and_markdown_answer_is_cleared():
    student = labs.student_version(tiny_notebook())
    assert student.cells[3].source == labs.HIDDEN_STUB
    assert student.cells[4].source == labs.ANSWER_STUB
    assert student.cells[2].source == "assert double(2) == 4"


def test_outputs_cleared_metadata_kept_input_untouched():
    nb = tiny_notebook()
    before = copy.deepcopy(nb)
    student = labs.student_version(nb)
    assert nb == before
    for s, c in zip(student.cells, nb.cells, strict=True):
        kept = {k: v for k, v in s.metadata.items() if k not in ("editable", "deletable")}
        assert kept == c.metadata and s.id == c.id
        if s.cell_type == "code":
            assert s.outputs == [] and s.execution_count is None


def test_locked_cells_carry_nbgrader_lock_flags():
    student = labs.student_version(tiny_notebook())
    flags = [{k: c.metadata[k] for k in ("editable", "deletable") if k in c.metadata}
             for c in student.cells]
    # set-up (plain), solution, public test, hidden check, markdown answer
    assert flags == [{}, {"deletable": False}, {"deletable": False, "editable": False},
                     {"deletable": False, "editable": False}, {"deletable": False}]


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_lab_lock_flags_are_the_ones_nbgrader_sets(solution):
    """Outside oracle: nbgrader's own LockCells preprocessor, on the solution's cells."""
    lockcells = pytest.importorskip("nbgrader.preprocessors").LockCells
    sol, lab = read(solution), read(ROOT / "labs" / solution.name)
    locked, _ = lockcells().preprocess(copy.deepcopy(sol), {})
    for want, got in zip(locked.cells, lab.cells, strict=True):
        for key in ("editable", "deletable"):
            assert got.metadata.get(key) == want.metadata.get(key), (got.id, key)


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_nbgrader_source_hidden_cells_fail_closed_and_show_no_probe(solution):
    from levers.grading.nbgrader_course import nbgrader_source

    sol = read(solution)
    source = nbgrader_source(sol)
    hidden = [c for c in source.cells if labs.BEGIN_HIDDEN in c.source]
    assert hidden and len(hidden) == sum(labs.BEGIN_HIDDEN in c.source for c in sol.cells)
    for cell in hidden:
        assert "probe" not in cell.source
        with pytest.raises(AssertionError, match="levers grade"):
            exec(compile(cell.source, "hidden", "exec"), {})
    # Not a solution for `levers grade` (no probes): it cannot be mistaken for one.
    with pytest.raises(ValueError, match="hidden check"):
        labs.validate_solution(source)


def test_build_is_deterministic_and_lab_is_current(tmp_path):
    nbformat.write(tiny_notebook(), tmp_path / "lab00.ipynb")
    out = tmp_path / "labs"
    written = labs.build_labs(tmp_path, out)
    assert written == [out / "lab00.ipynb"]
    first = written[0].read_bytes()
    labs.build_lab(tmp_path / "lab00.ipynb", written[0])
    assert written[0].read_bytes() == first
    assert labs.lab_is_current(tmp_path / "lab00.ipynb", written[0])
    written[0].write_bytes(first.replace(b"NotImplementedError", b"RuntimeError"))
    assert not labs.lab_is_current(tmp_path / "lab00.ipynb", written[0])
    assert not labs.lab_is_current(tmp_path / "lab00.ipynb", tmp_path / "missing.ipynb")


def test_build_rejects_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="solutions_dir must be an existing folder"):
        labs.build_labs(tmp_path / "nowhere", tmp_path / "labs")
    with pytest.raises(ValueError, match="solution must be an existing .ipynb"):
        labs.build_lab(tmp_path / "nowhere.ipynb", tmp_path / "lab.ipynb")


# --- validate_solution rejects each malformed case ---------------------------------------------

def _set(index, **changes):
    def edit(nb):
        cell = nb.cells[index]
        for key, value in changes.items():
            if key == "source":
                cell.source = value
            else:
                cell.metadata.setdefault("nbgrader", {})[key] = value
    return edit


def _drop_points(nb):
    del nb.cells[2].metadata.nbgrader["points"]


def _drop_metadata(nb):
    del nb.cells[1].metadata["nbgrader"]


def _forbidden_str(nb):
    nb.cells[1].metadata["levers"] = {"forbidden": "bfloat16"}


MALFORMED = {
    "begin without end": (_set(1, source="def f():\n    ### BEGIN SOLUTION\n    return 1"),
                          "never closed"),
    "end without begin": (_set(1, source="def f():\n    return 1\n    ### END SOLUTION"),
                          "has no matching"),
    "nested begin": (_set(1, source=SOLUTION_SRC.replace("return 2 * x", "### BEGIN SOLUTION")),
                     "inside an open region"),
    "hidden never closed": (_set(3, source=HIDDEN_SRC.rsplit("\n", 1)[0]), "never closed"),
    "look-alike marker": (_set(1, source=SOLUTION_SRC.replace("### END", "## END", 1)),
                          "looks like a marker"),
    "duplicate grade_id": (_set(3, grade_id="q1-public"), "duplicate grade_id 'q1-public'"),
    "missing grade_id": (_set(2, grade_id=""), "grade_id must be a non-empty string"),
    "graded cell without points": (_drop_points, "needs metadata.nbgrader.points"),
    "zero points": (_set(2, points=0), "needs metadata.nbgrader.points"),
    "boolean points": (_set(2, points=True), "needs metadata.nbgrader.points"),
    "hidden cell without probe": (_set(3, source=HIDDEN_SRC.replace("probe(seed", "check(seed")),
                                  "must define `def probe"),
    "code outside hidden region": (_set(3, source="x = 1\n" + HIDDEN_SRC), "whole body"),
    "solution markers in a plain cell": (_drop_metadata, "is not a solution cell"),
    "hidden markers in an ungraded cell": (_set(3, grade=False), "is not a graded cell"),
    "solution cell without region": (_set(1, source="def f():\n    return 1"),
                                     "needs a '### BEGIN SOLUTION'"),
    "old schema": (_set(2, schema_version=1), "schema_version must be 3"),
    "unlocked test cell": (_set(2, locked=False), "must be a locked code cell"),
    "grade and solution": (_set(2, solution=True), "not both"),
    "grade not a bool": (_set(2, grade="yes"), "grade must be true or false"),
    "forbidden not a list": (_forbidden_str, "forbidden must be a list"),
}


def test_tiny_notebook_is_valid():
    labs.validate_solution(tiny_notebook())


@pytest.mark.parametrize("case", MALFORMED)
def test_validate_rejects_malformed(case):
    edit, message = MALFORMED[case]
    nb = tiny_notebook()
    edit(nb)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        labs.validate_solution(nb)
    assert str(info.value).startswith("cell ")  # the message says where
    with pytest.raises(ValueError):
        labs.student_version(nb)


def test_validate_rejects_non_notebooks():
    with pytest.raises(TypeError, match="NotebookNode"):
        labs.validate_solution({"cells": []})
    nb = tiny_notebook()
    nb.nbformat = 3
    with pytest.raises(ValueError, match="nbformat 4"):
        labs.validate_solution(nb)


# --- the real labs -----------------------------------------------------------------------------

def test_there_are_labs():
    assert SOLUTIONS, "solutions/ holds no lab notebooks"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_labs_folder_is_up_to_date(solution, tmp_path):
    lab = ROOT / "labs" / solution.name
    labs.build_lab(solution, tmp_path / solution.name)
    assert lab.is_file(), f"{lab} is missing; run `levers labs build`"
    assert lab.read_bytes() == (tmp_path / solution.name).read_bytes(), (
        f"{lab} is out of date with {solution}; run `levers labs build`")
    assert labs.lab_is_current(solution, lab)


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_lab_has_no_solution_code_or_hidden_tests(solution):
    sol, lab = read(solution), read(ROOT / "labs" / solution.name)
    secret, public = set(), set()
    for cell in sol.cells:
        inside, outside = split_lines(cell.source)
        secret |= inside
        public |= outside  # a line also written outside every region (e.g. "try:") is no leak
    shown = {line.strip() for cell in lab.cells for line in cell.source.splitlines()}
    assert secret, "the solution notebook has no solution or hidden regions"
    assert not (secret & shown) - public, sorted((secret & shown) - public)
    text = "\n".join(cell.source for cell in lab.cells)
    assert not any(marker in text for marker in MARKERS)
    assert "def probe(" not in text


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_lab_keeps_cells_grade_ids_and_public_tests(solution):
    sol, lab = read(solution), read(ROOT / "labs" / solution.name)
    assert [c.id for c in lab.cells] == [c.id for c in sol.cells]
    for s, c in zip(sol.cells, lab.cells, strict=True):
        assert c.metadata.get("nbgrader") == s.metadata.get("nbgrader")
        assert c.metadata.get("levers") == s.metadata.get("levers")
        meta = s.metadata.get("nbgrader", {})
        if not meta.get("solution") and labs.BEGIN_HIDDEN not in s.source:
            assert c.source == s.source, f"cell {s.id} changed"
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_forbidden_names_appear_in_neither_reference_nor_stub(solution):
    """The given code must not name what its question forbids or withholds (the grading
    kernel replaces withheld functions by stubs that raise)."""
    sol, lab = read(solution), read(ROOT / "labs" / solution.name)
    checked = 0
    for s, c in zip(sol.cells, lab.cells, strict=True):
        rules = s.metadata.get("levers", {})
        for name in rules.get("forbidden", []) + rules.get("withheld", []):
            assert name not in s.source and name not in c.source, (s.id, name)
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_every_question_is_complete(solution):
    nb = read(solution)
    labs.validate_solution(nb)
    kinds: dict[str, set[str]] = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        if meta is None:
            continue
        question = meta["grade_id"].split("-")[0]
        hidden = labs.BEGIN_HIDDEN in cell.source
        kind = "solution" if meta["solution"] else "hidden" if hidden else "public"
        kinds.setdefault(question, set()).add(kind)
        if hidden:
            assert re.search(r"^def probe\(seed: int\) -> dict:", cell.source, re.MULTILINE)
    assert len(kinds) >= 4
    assert all(k == {"solution", "public", "hidden"} for k in kinds.values()), kinds


# --- executing the labs ------------------------------------------------------------------------

def execute(nb, allow_errors=False):
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=allow_errors,
                   resources={"metadata": {"path": str(ROOT / "solutions")}}).execute()
    return nb


CHECK_PLAIN = '''
import numpy as _np
import torch as _torch


def _check_plain(value, where="probe()"):
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value), where
        for k, v in value.items():
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    else:
        assert value is None or isinstance(value, (str, int, float, bool, _torch.Tensor,
                                                   _np.ndarray)), (where, type(value))


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, _torch.Tensor):
        return a.dtype == b.dtype and _torch.equal(a, b)
    if isinstance(a, _np.ndarray):
        return a.dtype == b.dtype and _np.array_equal(a, b)
    return a == b
'''
CALL_PROBE = '''
_results = [probe(seed) for seed in (0, 1, 2026)]
for _r in _results:
    assert isinstance(_r, dict) and _r
    _check_plain(_r)
assert _same(probe(0), _results[0]), "probe(0) must be deterministic"
if _uses_seed:  # an experiment's probe reports a result and may ignore the seed
    assert not _same(_results[0], _results[1]), "probe must depend on its seed"
'''


@pytest.mark.notebooks
@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_student_lab_stops_only_at_student_code(solution):
    nb = execute(read(ROOT / "labs" / solution.name), allow_errors=True)
    stub_ran = False  # did the question's own solution cell (an experiment) raise already?
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        errors = [e.ename for e in cell.outputs if e.output_type == "error"]
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and meta["grade_id"].endswith("-public"):
            # A public test fails at the stub it calls, or at the result an experiment's stub
            # never produced.
            assert len(errors) == 1, (cell.id, errors)
            assert stub_ran or errors == ["NotImplementedError"], (cell.id, errors)
        elif meta.get("solution"):
            # A function stub raises only when called; an experiment cell runs its own stub.
            assert errors in ([], ["NotImplementedError"]), (cell.id, errors)
            stub_ran = bool(errors)
        else:
            assert errors == [], (cell.id, errors)


@pytest.mark.notebooks
@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_reference_pasted_into_lab_passes_and_probes_run(solution):
    """Paste the reference solution and hidden cells into the student lab by grade_id, call
    every probe on three seeds, and check it returns plain, deterministic, seed-dependent data."""
    reference = {c.metadata.nbgrader.grade_id: c for c in read(solution).cells
                 if "nbgrader" in c.metadata}
    lab = read(ROOT / "labs" / solution.name)
    cells, probes = [], 0
    for cell in lab.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id and (cell.metadata.nbgrader.solution or cell.source == labs.HIDDEN_STUB):
            cell.source = reference[grade_id].source
        cells.append(cell)
        if cell.cell_type == "code" and not any(c.cell_type == "code" for c in cells[:-1]):
            cells.append(new_code_cell(CHECK_PLAIN))  # after the set-up cell (levers first)
        if labs.BEGIN_HIDDEN in cell.source:
            body = cell.source.split("def probe(seed", 1)[1].split("\n", 1)[1]
            uses_seed = re.search(r"\bseed\b", body) is not None
            cells.append(new_code_cell(f"_uses_seed = {uses_seed}\n{CALL_PROBE}"))
            probes += 1
    lab.cells = cells
    execute(lab)
    assert probes == sum(labs.BEGIN_HIDDEN in c.source for c in read(solution).cells) >= 4
