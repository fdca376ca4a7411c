"""nbgrader as a home for the labs: the course's ``source/`` and its ``gradebook.db``.

``levers labs nbgrader COURSE`` writes ``COURSE/source/<lab>/<lab>.ipynb`` for every solution:
the solution notebook with each hidden check's probe replaced by a statement that **fails
closed**. nbgrader's ``autograde`` only runs cells, and a probe cell only *defines* ``probe``,
so it would pass for any submission, a blank one included; the exported cell raises instead,
with a message that ``levers grade`` does the hidden grading, and it shows no probe code in
nbgrader's feedback. Public tests are unchanged, so nbgrader's own autograde scores them as
usual (a blank lab gets 0). It also writes ``COURSE/nbgrader_config.py`` (unless one exists)
with an execute timeout the labs' longest cells fit in.

`write_scores` then puts ``levers grade``'s points into the course's ``gradebook.db`` as the
cells' manual scores (nbgrader's override of its own automatic score), so formgrader, feedback
and ``nbgrader export`` show the sandboxed, value-checked grade.
"""

from __future__ import annotations

import copy
from pathlib import Path

from nbformat import NotebookNode

from levers.grading.labs import (
    BEGIN_HIDDEN,
    END_HIDDEN,
    HIDDEN_STUB,
    _dumps,
    _read,
    validate_solution,
)

FAIL_CLOSED = ('raise AssertionError("This hidden check is graded by `levers grade`, not by '
               'nbgrader: 0 points here until the instructor imports its scores.")')

#: Seconds per cell for nbgrader's kernel: the labs' training cells take up to a minute alone
#: on a 2-core machine (nbgrader's default, 30 s, cuts them off).
EXECUTE_TIMEOUT = 300

CONFIG = f"""\
# Written by `levers labs nbgrader`; edit freely (it is not overwritten).
c = get_config()
# The labs' training cells take up to a minute; nbgrader's default (30 s) cuts them off.
c.ExecutePreprocessor.timeout = {EXECUTE_TIMEOUT}
# The kernel must be the course's environment (torch, levers): register it with
#   .venv/bin/python -m ipykernel install --user --name python3
c.ExecutePreprocessor.kernel_name = "python3"
"""


def nbgrader_source(nb: NotebookNode) -> NotebookNode:
    """The solution notebook as an nbgrader source notebook whose hidden checks fail closed.

    Parameters
    ----------
    nb : NotebookNode
        A solution notebook; validated first.

    Returns
    -------
    NotebookNode
        A copy in which every hidden region holds `FAIL_CLOSED` instead of its probe, after the
        line students see (``# Hidden checks run when your lab is graded.``).

    Examples
    --------
    >>> import nbformat
    >>> src = "### BEGIN HIDDEN TESTS\\ndef probe(seed):\\n    return {}\\n### END HIDDEN TESTS"
    >>> cell = nbformat.v4.new_code_cell(src, metadata={"nbgrader": {
    ...     "grade": True, "solution": False, "locked": True, "grade_id": "q1-hidden",
    ...     "points": 1, "schema_version": 3}})
    >>> out = nbgrader_source(nbformat.v4.new_notebook(cells=[cell])).cells[0].source
    >>> print(out.splitlines()[0]); "probe" in out
    # Hidden checks run when your lab is graded.
    False
    """
    validate_solution(nb)
    out = copy.deepcopy(nb)
    for cell in out.cells:
        if cell.cell_type == "code" and BEGIN_HIDDEN in cell.source:
            cell.source = "\n".join([HIDDEN_STUB, BEGIN_HIDDEN, FAIL_CLOSED, END_HIDDEN])
    return out


def export_course(solutions_dir: str | Path, course: str | Path) -> list[Path]:
    """Write ``course/source/<lab>/<lab>.ipynb`` for every solution, and a config if none.

    Parameters
    ----------
    solutions_dir : str or Path
        Folder of solution notebooks.
    course : str or Path
        The nbgrader course folder (created if missing).

    Returns
    -------
    list of Path
        The source notebooks written, sorted.
    """
    solutions_dir, course = Path(solutions_dir), Path(course)
    if not solutions_dir.is_dir():
        raise ValueError(f"solutions_dir must be an existing folder, got {str(solutions_dir)!r}")
    written = []
    for solution in sorted(solutions_dir.glob("*.ipynb")):
        target = course / "source" / solution.stem / solution.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_dumps(nbgrader_source(_read(solution))))
        written.append(target)
    config = course / "nbgrader_config.py"
    if not config.exists():
        config.write_text(CONFIG)
    return written


def write_scores(db: str | Path, entries: list[tuple[str, str, str, dict[str, float]]]
                 ) -> list[str]:
    """Store points per cell as nbgrader manual scores; return the students not found.

    Parameters
    ----------
    db : str or Path
        The course's ``gradebook.db`` (an existing file).
    entries : list of (student, assignment, notebook, {grade_id: points})
        One per graded submission; the submission must have been autograded (or at least
        collected and imported) by nbgrader first, so its cells exist in the gradebook.

    Returns
    -------
    list of str
        ``student/assignment/notebook`` of every entry the gradebook has no submission for.
    """
    from nbgrader.api import Gradebook, MissingEntry

    db = Path(db)
    if not db.is_file():
        raise ValueError(f"gradebook must be an existing nbgrader gradebook.db, got {str(db)!r}")
    missing = []
    with Gradebook(f"sqlite:///{db.resolve()}") as gb:
        for student, assignment, notebook, points in entries:
            try:
                gb.find_submission_notebook(notebook, assignment, student)
            except MissingEntry:
                missing.append(f"{student}/{assignment}/{notebook}")
                continue
            for gid, score in points.items():
                try:
                    grade = gb.find_grade(gid, notebook, assignment, student)
                except MissingEntry:
                    continue
                grade.manual_score = score
                grade.needs_manual_grade = False
            gb.db.commit()
    return missing
