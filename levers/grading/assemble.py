"""Build the notebook the grader runs: the instructor's cells in the instructor's order.

Test cells belong to the instructor. Every locked or graded cell of the solution is emitted from
the solution, whatever the student did to it (edited to ``pass``, deleted, moved, re-tagged).
The lab's untagged code before its first tagged cell (imports, set-up) counts as the
instructor's too and runs first. Solution cells come from the student, matched by ``grade_id``.
A student's free cells (no known ``grade_id``; a second copy of a known one loses its metadata)
stay right after the tagged cell they followed in the submission, so scratch work runs where the
student put it. Hidden checks become a one-line placeholder: their probe code is sent to the
kernel only after all student code has run.
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
    position: list[int | None] = field(default_factory=list)  # per cell: its number in the
    # submission (1-based), None for the lab's own cells and stubs

    def label(self, index: int) -> str:
        """How a note names cell ``index``: by its number in the student's notebook."""
        number = self.position[index] if index < len(self.position) else None
        if number is not None:
            return f"Cell {number} of your notebook"
        gid = grade_id(self.notebook.cells[index])
        return f"The lab's cell {gid!r}" if gid else "The lab's set-up cell"

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
    """The student's cell without its metadata: a copy of a known ``grade_id`` is not graded."""
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
    # The lab's untagged code before its first tagged cell (imports, set-up) is the
    # instructor's: it runs first, whatever the student did with it; their unchanged copies go.
    first = next((i for i, c in enumerate(lab.notebook.cells) if grade_id(c)), 0)
    preamble = [c for c in lab.notebook.cells[:first] if c.cell_type == "code" and c.source.strip()]
    setup = {c.source.strip() for c in preamble}
    anchors: dict[str | None, list] = {None: []}  # free cells (cell, number) after each one
    student: dict[str, tuple] = {}
    current: str | None = None
    edited: dict[str, tuple] = {}
    for number, cell in enumerate(submission.cells, start=1):
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
                    edited[gid] = (cell, number)
            else:
                student[gid] = (cell, number)
        elif not (cell.cell_type == "code" and cell.source.strip() in setup):
            # a free cell, even one carrying a known grade_id: it loses that metadata
            anchors[current].append((_free_copy(cell), number))

    cells, origin, position, missing = [], [], [], set()
    notes = [f"Restored the instructor's version of edited cell {g!r} (your text in it ran "
             "just before it, as a cell of your own)." for g in edited]
    stripped = len(anchors) == 1 and bool(anchors[None])  # no cell kept the lab's metadata
    if stripped:
        notes.append("Your notebook has lost the lab's cell metadata (cells copied into a new "
                     "notebook?): the lab's cells were restored, and all of yours ran as your "
                     "own cells.")

    def add(cell: nbformat.NotebookNode, who: str, number: int | None = None) -> None:
        cells.append(cell)
        origin.append(who)
        position.append(number)

    def emit_free(gid: str | None) -> None:
        for free, number in anchors.get(gid, []):
            add(free, "free", number)

    for cell in preamble:
        add(_instructor_copy(cell), "instructor")
    emit_free(None)
    order = [g for g in anchors if g is not None]
    if order != sorted(order, key=list(tagged).index):
        notes.append("Cells were reordered; they ran in the lab's order.")
    for gid, cell in tagged.items():
        if is_instructor_cell(cell):
            if gid in edited:  # keep what the student wrote there, as their own free cell
                add(_free_copy(edited[gid][0]), "free", edited[gid][1])
            add(_instructor_copy(cell), "instructor")
            if gid not in anchors and cell.cell_type == "code" and not stripped:
                notes.append(f"Put back deleted cell {gid!r}.")
        elif gid in student:
            make = (nbformat.v4.new_code_cell if cell.cell_type == "code"
                    else nbformat.v4.new_markdown_cell)
            add(make(source=student[gid][0].source, metadata={"nbgrader": dict(nbgrader(cell))}),
                "student", student[gid][1])
        elif cell.cell_type == "code":
            add(nbformat.v4.new_code_cell(source=STUB.format(gid=gid),
                                          metadata={"nbgrader": dict(nbgrader(cell))}), "student")
            missing.add(gid)
            if not stripped:
                notes.append(f"Solution cell {gid!r} is missing from the submission.")
        else:
            add(_instructor_copy(cell), "instructor")
        emit_free(gid)
    nb = nbformat.v4.new_notebook(cells=cells, metadata=dict(lab.notebook.metadata))
    return Assembled(nb, origin, notes, missing, position)
