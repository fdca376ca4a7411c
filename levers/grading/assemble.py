"""Build the notebook the grader runs: the instructor's cells in the instructor's order.

Test cells belong to the instructor. Every locked or graded cell of the solution is emitted from
the solution, whatever the student did to it (edited to ``pass``, deleted, moved, re-tagged).
Solution cells come from the student, matched by ``grade_id``. A student's free cells (no known
``grade_id``) stay right after the tagged cell they followed in the submission, so scratch work
runs where the student put it. Hidden checks become a one-line placeholder: their probe code is
sent to the kernel only after all student code has run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nbformat

from levers.grading.spec import (
    HIDDEN_PLACEHOLDER,
    Lab,
    comments_only,
    grade_id,
    is_instructor_cell,
    nbgrader,
)

STUB = "# Solution cell {gid!r} was missing from the submission.\nraise NotImplementedError()\n"


@dataclass
class Assembled:
    """The notebook to execute, who wrote each cell, and what was repaired."""

    notebook: nbformat.NotebookNode
    origin: list[str]  # per cell: "instructor", "student" (solution cell) or "free"
    notes: list[str] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)  # solution cells replaced by a stub

    def student_sources(self) -> list[tuple[int, str, str]]:
        """``(index, origin, source)`` of every code cell the student wrote."""
        return [
            (i, o, c.source)
            for i, (o, c) in enumerate(zip(self.origin, self.notebook.cells, strict=True))
            if o != "instructor" and c.cell_type == "code"
        ]


def _instructor_copy(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    source = HIDDEN_PLACEHOLDER if "### BEGIN HIDDEN TESTS" in cell.source else cell.source
    make = nbformat.v4.new_code_cell if cell.cell_type == "code" else nbformat.v4.new_markdown_cell
    return make(source=source, metadata={"nbgrader": dict(nbgrader(cell))})


def _free_copy(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    make = nbformat.v4.new_code_cell if cell.cell_type == "code" else nbformat.v4.new_markdown_cell
    return make(source=cell.source)


def assemble(lab: Lab, submission: nbformat.NotebookNode) -> Assembled:
    """Merge a submission into the lab's skeleton.

    Parameters
    ----------
    lab : Lab
        The parsed solution notebook.
    submission : NotebookNode
        The student's notebook, as returned by `read_submission`.

    Returns
    -------
    Assembled
        The notebook to run, the origin of each cell and notes on repairs.
    """
    tagged = {grade_id(c): c for c in lab.notebook.cells if grade_id(c)}
    anchors: dict[str | None, list] = {None: []}
    student: dict[str, nbformat.NotebookNode] = {}
    current: str | None = None
    edited: dict[str, nbformat.NotebookNode] = {}
    for cell in submission.cells:
        gid = grade_id(cell)
        if gid in tagged and gid not in anchors:
            current = gid
            anchors[gid] = []
            if is_instructor_cell(tagged[gid]):
                # Unchanged means: as in the solution, or as in the student version.
                theirs = tagged[gid]
                hidden = "### BEGIN HIDDEN TESTS" in theirs.source
                if cell.source.strip() != theirs.source.strip() and not (
                        hidden and comments_only(cell.source)):
                    edited[gid] = cell
            else:
                student[gid] = cell
        else:
            anchors[current].append(cell)

    cells, origin, missing = [], [], set()
    notes = [f"Restored the instructor's version of edited cell {g!r} (your text in it ran "
             "just before it, as a cell of your own)." for g in edited]

    def emit_free(gid: str | None) -> None:
        for free in anchors.get(gid, []):
            cells.append(free)
            origin.append("free")

    emit_free(None)
    order = [g for g in anchors if g is not None]
    if order != sorted(order, key=list(tagged).index):
        notes.append("Cells were reordered; they ran in the lab's order.")
    for gid, cell in tagged.items():
        if is_instructor_cell(cell):
            if gid in edited:  # keep what the student wrote there, as their own free cell
                cells.append(_free_copy(edited[gid]))
                origin.append("free")
            cells.append(_instructor_copy(cell))
            origin.append("instructor")
            if gid not in anchors and cell.cell_type == "code":
                notes.append(f"Put back deleted cell {gid!r}.")
        elif gid in student:
            make = (nbformat.v4.new_code_cell if cell.cell_type == "code"
                    else nbformat.v4.new_markdown_cell)
            cells.append(make(source=student[gid].source,
                              metadata={"nbgrader": dict(nbgrader(cell))}))
            origin.append("student")
        elif cell.cell_type == "code":
            cells.append(nbformat.v4.new_code_cell(
                source=STUB.format(gid=gid), metadata={"nbgrader": dict(nbgrader(cell))}))
            origin.append("student")
            missing.add(gid)
            notes.append(f"Solution cell {gid!r} is missing from the submission.")
        else:
            cells.append(_instructor_copy(cell))
            origin.append("instructor")
        emit_free(gid)
    nb = nbformat.v4.new_notebook(cells=cells, metadata=dict(lab.notebook.metadata))
    return Assembled(nb, origin, notes, missing)
