"""Student versions of lab notebooks, generated from the instructor's solution notebooks.

A lab's source of truth is ``solutions/labNN-name.ipynb`` in nbgrader's authoring format: cells
carry ``metadata.nbgrader`` (``grade``, ``solution``, ``locked``, ``grade_id``, ``points``,
``schema_version: 3``); solution cells hold the reference code between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; hidden check cells hold a ``def probe(seed)`` between
``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``.

The student version keeps everything else byte for byte: each solution region becomes
``# YOUR CODE HERE`` + ``raise NotImplementedError()`` at the region's indentation (so the
``def`` line and docstring above it survive), each hidden region disappears, and every output is
cleared. The nbgrader metadata stays, so the grader can match a submission's cells by
``grade_id``, and locked cells get the flags nbgrader's ``generate_assignment`` sets
(``deletable: false`` on solution and locked cells, ``editable: false`` on locked ones), so
JupyterLab refuses to edit or delete them as it does in an nbgrader release.
Writing is deterministic: rebuilding gives the same bytes, which is how a test notices a
``labs/`` folder that is out of date.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
from nbformat import NotebookNode

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
ANSWER_STUB = "YOUR ANSWER HERE"
HIDDEN_STUB = "# Hidden checks run when your lab is graded."

# A line that looks like a marker but is not exactly one (``## BEGIN SOLUTION``) would leak the
# solution silently, so validation rejects it.
_MARKER_LIKE = re.compile(r"#*\s*(BEGIN|END)\s+(SOLUTION|HIDDEN TESTS)\b")
_MARKERS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN)
_PROBE_DEF = re.compile(r"^def probe\(\s*seed\b", re.MULTILINE)
_CELL_METADATA_KEPT = ("nbgrader", "levers", "tags")


def _where(index: int, cell: NotebookNode) -> str:
    grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
    return f"cell {index}" + (f" (grade_id {grade_id!r})" if grade_id else "")


def _regions(lines: list[str], begin: str, end: str, where: str) -> list[tuple[int, int]]:
    """Return (begin line, end line) index pairs; raise ValueError if unbalanced or nested."""
    regions, start = [], None
    for i, line in enumerate(lines):
        text = line.strip()
        if text == begin:
            if start is not None:
                raise ValueError(f"{where}: {begin!r} on line {i + 1} inside an open region "
                                 f"(opened on line {start + 1}); close it with {end!r} first")
            start = i
        elif text == end:
            if start is None:
                raise ValueError(f"{where}: {end!r} on line {i + 1} has no matching {begin!r}")
            regions.append((start, i))
            start = None
    if start is not None:
        raise ValueError(f"{where}: {begin!r} on line {start + 1} is never closed by {end!r}")
    return regions


def _check_metadata(index: int, cell: NotebookNode, seen: dict[str, int]) -> None:
    where = _where(index, cell)
    meta = cell.metadata.nbgrader
    for key in ("grade", "solution", "locked"):
        if not isinstance(meta.get(key), bool):
            raise ValueError(f"{where}: metadata.nbgrader.{key} must be true or false, "
                             f"got {meta.get(key)!r}")
    grade_id = meta.get("grade_id")
    if not isinstance(grade_id, str) or not grade_id:
        raise ValueError(f"{where}: metadata.nbgrader.grade_id must be a non-empty string, "
                         f"got {grade_id!r}")
    if grade_id in seen:
        raise ValueError(f"{where}: duplicate grade_id {grade_id!r} (also cell {seen[grade_id]}); "
                         "every nbgrader cell needs its own grade_id")
    seen[grade_id] = index
    if meta.get("schema_version") != 3:
        raise ValueError(f"{where}: metadata.nbgrader.schema_version must be 3, "
                         f"got {meta.get('schema_version')!r}")
    if meta["grade"]:
        points = meta.get("points")
        if isinstance(points, bool) or not isinstance(points, int | float) or not points > 0:
            raise ValueError(f"{where}: a graded cell needs metadata.nbgrader.points, a positive "
                             f"number, got {points!r}")
        if meta["solution"]:
            raise ValueError(f"{where}: a cell is either a solution cell or a graded test cell, "
                             "not both (grade and solution are both true)")
        if not meta["locked"] or cell.cell_type != "code":
            raise ValueError(f"{where}: a graded test cell must be a locked code cell")
    forbidden = cell.metadata.get("levers", {}).get("forbidden", [])
    if not isinstance(forbidden, list) or not all(isinstance(f, str) and f for f in forbidden):
        raise ValueError(f"{where}: metadata.levers.forbidden must be a list of non-empty "
                         f"strings, got {forbidden!r}")


def _check_markers(index: int, cell: NotebookNode) -> None:
    where = _where(index, cell)
    meta = cell.metadata.get("nbgrader", {})
    lines = cell.source.splitlines()
    for i, line in enumerate(lines):
        if _MARKER_LIKE.search(line) and line.strip() not in _MARKERS:
            raise ValueError(f"{where}: line {i + 1} {line.strip()!r} looks like a marker but is "
                             f"not one of {list(_MARKERS)}")
    solutions = _regions(lines, BEGIN_SOLUTION, END_SOLUTION, where)
    hidden = _regions(lines, BEGIN_HIDDEN, END_HIDDEN, where)
    if solutions and not meta.get("solution"):
        raise ValueError(f"{where}: has {BEGIN_SOLUTION!r} but is not a solution cell "
                         "(metadata.nbgrader.solution must be true)")
    if hidden and not meta.get("grade"):
        raise ValueError(f"{where}: has {BEGIN_HIDDEN!r} but is not a graded cell "
                         "(metadata.nbgrader.grade must be true)")
    if meta.get("solution") and cell.cell_type == "code" and not solutions:
        raise ValueError(f"{where}: a code solution cell needs a {BEGIN_SOLUTION!r} / "
                         f"{END_SOLUTION!r} region")
    if hidden:
        inside = {i for start, stop in hidden for i in range(start, stop + 1)}
        outside = [line for i, line in enumerate(lines) if i not in inside and line.strip()]
        if outside:
            raise ValueError(f"{where}: a hidden check cell's whole body must sit between "
                             f"{BEGIN_HIDDEN!r} and {END_HIDDEN!r}; found {outside[0].strip()!r}")
        if not _PROBE_DEF.search("\n".join(lines[hidden[0][0]:hidden[-1][1]])):
            raise ValueError(f"{where}: a hidden check cell must define `def probe(seed: int) "
                             "-> dict:` at top level inside its hidden region")


def validate_solution(nb: NotebookNode) -> None:
    """Check that a solution notebook follows the lab format; raise ValueError if not.

    Parameters
    ----------
    nb : NotebookNode
        A solution notebook (nbformat 4), e.g. from ``nbformat.read(path, as_version=4)``.

    Returns
    -------
    None
        Returns quietly for a well-formed notebook. Raises ValueError naming the cell and what
        is wrong: unbalanced or nested markers, a look-alike marker, markers in a cell of the
        wrong kind, duplicate or missing ``grade_id``, a graded cell without positive
        ``points``, a hidden check cell without ``def probe(seed``.

    Examples
    --------
    >>> cell = nbformat.v4.new_code_cell("x = 1\\n### END SOLUTION")
    >>> validate_solution(nbformat.v4.new_notebook(cells=[cell]))
    Traceback (most recent call last):
    ...
    ValueError: cell 0: '### END SOLUTION' on line 2 has no matching '### BEGIN SOLUTION'
    """
    if not isinstance(nb, NotebookNode):
        raise TypeError(f"nb must be an nbformat NotebookNode, got {type(nb).__name__}")
    if nb.get("nbformat") != 4:
        raise ValueError(f"nb must be an nbformat 4 notebook, got nbformat {nb.get('nbformat')!r}")
    seen: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        if "nbgrader" in cell.metadata:
            _check_metadata(index, cell, seen)
        if cell.cell_type in ("code", "markdown"):
            _check_markers(index, cell)


def _replace_regions(source: str, begin: str, end: str, stub: tuple[str, ...]) -> str:
    lines = source.splitlines()
    out: list[str] = []
    last = 0
    for start, stop in _regions(lines, begin, end, "cell"):
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        out += lines[last:start] + [indent + s for s in stub]
        last = stop + 1
    return "\n".join(out + lines[last:])


def lock_flags(meta: dict) -> dict[str, bool]:
    """The cell flags nbgrader's ``LockCells`` sets for a cell with this nbgrader metadata.

    Examples
    --------
    >>> lock_flags({"grade": True, "solution": False, "locked": True})
    {'deletable': False, 'editable': False}
    >>> lock_flags({"grade": False, "solution": True, "locked": False})
    {'deletable': False}
    """
    if meta.get("solution"):
        return {"deletable": False}
    if meta.get("grade") or meta.get("locked"):
        return {"deletable": False, "editable": False}
    return {}


def _student_cell(cell: NotebookNode) -> NotebookNode:
    cell = copy.deepcopy(cell)
    cell.metadata = NotebookNode(
        {k: v for k, v in cell.metadata.items() if k in _CELL_METADATA_KEPT})
    meta = cell.metadata.get("nbgrader", {})
    cell.metadata.update(lock_flags(meta))
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
        if meta.get("solution"):
            cell.source = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, CODE_STUB)
        if meta.get("grade") and BEGIN_HIDDEN in cell.source:
            kept = _replace_regions(cell.source, BEGIN_HIDDEN, END_HIDDEN, ()).strip("\n")
            cell.source = kept if kept.strip() else HIDDEN_STUB
    elif cell.cell_type == "markdown" and meta.get("solution"):
        if BEGIN_SOLUTION in cell.source:
            cell.source = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION,
                                           (ANSWER_STUB,))
        else:
            cell.source = ANSWER_STUB
    return cell


def student_version(nb: NotebookNode) -> NotebookNode:
    """Return the student version of a solution notebook (the input is not modified).

    Parameters
    ----------
    nb : NotebookNode
        A solution notebook; it is validated first with `validate_solution`.

    Returns
    -------
    NotebookNode
        A new notebook: solution regions replaced by ``# YOUR CODE HERE`` and
        ``raise NotImplementedError()``, hidden regions removed (a cell left empty keeps only
        ``# Hidden checks run when your lab is graded.``), outputs and execution counts
        cleared, cell metadata reduced to ``nbgrader``, ``levers`` and ``tags`` plus
        nbgrader's lock flags (`lock_flags`).

    Examples
    --------
    >>> src = "def f(x):\\n    ### BEGIN SOLUTION\\n    return 2 * x\\n    ### END SOLUTION"
    >>> cell = nbformat.v4.new_code_cell(src, metadata={"nbgrader": {
    ...     "grade": False, "solution": True, "locked": False, "grade_id": "q1-solution",
    ...     "schema_version": 3}})
    >>> print(student_version(nbformat.v4.new_notebook(cells=[cell])).cells[0].source)
    def f(x):
        # YOUR CODE HERE
        raise NotImplementedError()
    """
    validate_solution(nb)
    out = copy.deepcopy(nb)
    out.cells = [_student_cell(cell) for cell in nb.cells]
    # Only what a kernel needs: the executor's Python patch version must not dirty labs/.
    meta = {"kernelspec": nb.metadata.get("kernelspec"),
            "language_info": {"name": nb.metadata.get("language_info", {}).get("name", "python")}}
    out.metadata = NotebookNode({k: v for k, v in meta.items() if v is not None})
    return out


def _read(path: str | Path) -> NotebookNode:
    path = Path(path)
    if path.suffix != ".ipynb" or not path.is_file():
        raise ValueError(f"solution must be an existing .ipynb file, got {str(path)!r}")
    return nbformat.read(path, as_version=4)


def _dumps(nb: NotebookNode) -> bytes:
    """Serialize exactly as ``nbformat.write`` does (sorted keys, indent 1, final newline)."""
    text = nbformat.writes(nb)
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def build_lab(solution: str | Path, lab: str | Path) -> None:
    """Write the student version of one solution notebook.

    Parameters
    ----------
    solution : str or Path
        Path of the solution notebook (``solutions/labNN-name.ipynb``).
    lab : str or Path
        Path to write the student notebook to; parent folders are created.

    Returns
    -------
    None
    """
    data = _dumps(student_version(_read(solution)))
    lab = Path(lab)
    lab.parent.mkdir(parents=True, exist_ok=True)
    lab.write_bytes(data)


def build_labs(
    solutions_dir: str | Path = "solutions", labs_dir: str | Path = "labs"
) -> list[Path]:
    """Write the student version of every ``*.ipynb`` in `solutions_dir` into `labs_dir`.

    Parameters
    ----------
    solutions_dir : str or Path
        Folder of solution notebooks (default ``solutions``).
    labs_dir : str or Path
        Folder for the student notebooks, same file names (default ``labs``).

    Returns
    -------
    list of Path
        The notebooks written, in sorted order.
    """
    solutions_dir, labs_dir = Path(solutions_dir), Path(labs_dir)
    if not solutions_dir.is_dir():
        raise ValueError(f"solutions_dir must be an existing folder, got {str(solutions_dir)!r}")
    written = []
    for solution in sorted(solutions_dir.glob("*.ipynb")):
        build_lab(solution, labs_dir / solution.name)
        written.append(labs_dir / solution.name)
    return written


def lab_is_current(solution: str | Path, lab: str | Path) -> bool:
    """Tell whether `lab` holds exactly the student version of `solution`.

    Parameters
    ----------
    solution : str or Path
        Path of the solution notebook.
    lab : str or Path
        Path of the student notebook; a missing file is not current.

    Returns
    -------
    bool
        True when rebuilding would write the same bytes.
    """
    lab = Path(lab)
    return lab.is_file() and lab.read_bytes() == _dumps(student_version(_read(solution)))
