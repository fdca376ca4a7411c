"""What the grader writes: platform JSON, a feedback notebook, a gradebook and a summary.

Per submission, in ``OUT/<student>/``:

- ``results.json``: Gradescope's autograder format (``score``, ``execution_time``, ``output``,
  ``tests[]`` with ``name``, ``score``, ``max_score``, ``status``, ``output``, ``visibility``;
  public tests ``visible``, hidden checks ``after_published``);
- ``classroom.json``: the runner result GitHub Classroom's grading reporter reads
  (``version``, ``status``, ``max_score``, ``tests[]`` with ``name``, ``status``, ``score``,
  ``message``, ``test_code``, ``filename``, ``line_no``, ``duration``), base64-encode it into
  ``<RUNNER>_RESULTS``;
- ``feedback.ipynb``: the notebook as it ran, with a result cell under each question. It is
  inert: the student's markdown and raw cells appear as plain text in a fenced block (no
  heading, image, link or HTML of theirs renders), outputs keep only plain text and bitmaps
  (no HTML, SVG, JavaScript, Markdown or widget), and no cell but the grader's carries the
  grader's mark, so only the grader's cells can look like grader results.

Per batch, ``OUT/gradebook.csv`` (one row per student, one column per question) and a summary
table for the terminal. Everything except ``execution_time`` is a function of the submission and
the seed, so grading twice with one seed writes the same files.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nbformat

from levers.grading.score import Report
from levers.grading.spec import Lab, grade_id, question_name

VISIBILITY = {"public": "visible", "hidden": "after_published"}
LABEL = {"public": "public test", "hidden": "hidden check"}
MARK = {"passed": "✅", "failed": "❌", "error": "⚠️"}


def _fmt(x: float) -> str:
    return f"{x:g}"


def clean(obj: object) -> object:
    """`obj` with every string made encodable: a kernel can send lone surrogates (``"\\ud800"``)."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace").decode("utf-8")
    if isinstance(obj, dict):
        return type(obj)({clean(k): clean(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [clean(v) for v in obj]
    return obj


def _verbatim(text: str) -> str:
    """`text` as a fenced block, so that nothing in it renders as Markdown or HTML."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text}\n{fence}"


# Output formats that cannot run code or fetch anything when the feedback is opened.
INERT = ("text/plain", "image/png", "image/jpeg", "image/gif")


def _inert_output(output: dict) -> dict:
    """An output with only inert formats and no metadata (a note says what was left out)."""
    output = dict(output)
    if "data" in output:
        data = {k: v for k, v in output["data"].items() if k in INERT}
        dropped = sorted(k for k in output["data"] if k not in INERT)
        if dropped:
            note = f"[grader] not shown in feedback: {', '.join(dropped)[:200]}"
            data["text/plain"] = (str(data["text/plain"]) + "\n" + note
                                  if "text/plain" in data else note)
        output["data"] = data
        output["metadata"] = {}
    return output


def inert(cell: nbformat.NotebookNode, grader: bool = False) -> nbformat.NotebookNode:
    r"""A cell of the run as the feedback shows it: nothing of the student's renders or runs.

    Markdown and raw cells become their text in a fenced block; code cells keep their source
    and only inert outputs; no metadata but the nbgrader cell's id survives, so no cell claims
    to be the grader's. ``grader`` (the lab's own markdown) keeps markdown as it is.

    Examples
    --------
    >>> cell = nbformat.v4.new_markdown_cell("# Grade: 8 / 8", metadata={"levers": {"grader": 1}})
    >>> shown = inert(cell)
    >>> shown.source, shown.metadata
    ('```text\n# Grade: 8 / 8\n```', {})
    """
    keep = {"nbgrader": cell.metadata["nbgrader"]} if "nbgrader" in cell.get("metadata", {}) else {}
    if cell.cell_type == "code":
        out = nbformat.v4.new_code_cell(cell.source, metadata=keep)
        out.outputs = [nbformat.from_dict(_inert_output(o)) for o in cell.get("outputs", [])]
        out.execution_count = cell.get("execution_count")
        return out
    if grader and cell.cell_type == "markdown":
        return nbformat.v4.new_markdown_cell(cell.source, metadata=keep)
    return nbformat.v4.new_markdown_cell(_verbatim(cell.source), metadata=keep)


def _hidden(report: Report) -> bool:
    """Did hidden checks run (the seed matters)? Not in a ``--public-only`` preview."""
    return any(c.kind == "hidden" for c in report.checks)


def gradescope(report: Report) -> dict:
    """The Gradescope ``results.json`` for one submission."""
    return {
        "score": report.score,
        "execution_time": int(round(report.seconds)),
        "output": "\n".join([f"Score {_fmt(report.score)} / {_fmt(report.max_score)}"
                            + (f" (probe seed {report.seed})." if _hidden(report) else "."),
                            *report.notes]),
        "tests": [{
            "name": f"{c.question} {LABEL[c.kind]}",
            "number": c.grade_id,
            "score": c.score,
            "max_score": c.max_score,
            "status": "passed" if c.status == "passed" else "failed",
            "output": c.message,
            "visibility": VISIBILITY[c.kind],
        } for c in report.checks],
        "extra_data": {"seed": report.seed},
    }


def classroom(report: Report) -> dict:
    """The GitHub Classroom runner result for one submission."""
    errored = any(c.status == "error" for c in report.checks)
    status = "pass" if report.score == report.max_score else ("error" if errored else "fail")
    return {
        "version": 1,
        "status": status,
        "max_score": report.max_score,
        "tests": [{
            "name": f"{c.question} {LABEL[c.kind]}",
            "status": {"passed": "pass", "failed": "fail"}.get(c.status, "error"),
            "score": c.score,
            "message": c.message,
            "test_code": "",
            "filename": "",
            "line_no": 0,
            "duration": 0,
        } for c in report.checks],
    }


def _result_cell(report: Report, question: str) -> nbformat.NotebookNode:
    # Messages can quote the student's own error text: shown verbatim, never as Markdown.
    lines = [f"**Grader — {question}**", ""]
    for c in report.checks:
        if c.question == question:
            lines += [f"{MARK[c.status]} {LABEL[c.kind]}: {_fmt(c.score)} / {_fmt(c.max_score)}",
                      "", _verbatim(c.message), ""]
    return nbformat.v4.new_markdown_cell("\n".join(lines).rstrip(),
                                         metadata={"levers": {"grader": True}})


def feedback(report: Report, lab: Lab) -> nbformat.NotebookNode:
    """The executed submission with the grade on top and a result cell under each question."""
    head = [f"# Grade: {_fmt(report.score)} / {_fmt(report.max_score)}", "",
            f"Graded against `{lab.path.name}`"
            + (f" with probe seed {report.seed}." if _hidden(report) else ".")]
    if report.notes:
        head += ["", "Notes:", "", _verbatim("\n\n".join(report.notes))]
    cells = [nbformat.v4.new_markdown_cell("\n".join(head), metadata={"levers": {"grader": True}})]
    if report.execution is not None:
        ran = report.execution.notebook.cells
        last = {}
        for i, cell in enumerate(ran):
            if grade_id(cell):
                last[question_name(grade_id(cell))] = i
        after = {i: q for q, i in last.items() if q in {c.question for c in report.checks}}
        origin = report.assembled.origin if report.assembled is not None else []
        for i, cell in enumerate(ran):
            cells.append(inert(cell, grader=i < len(origin) and origin[i] == "instructor"))
            if i in after:
                cells.append(_result_cell(report, after[i]))
    else:
        cells += [_result_cell(report, q.name) for q in lab.questions]
    nb = nbformat.v4.new_notebook(cells=cells, metadata=dict(lab.notebook.metadata))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids: same submission and seed, same file
    return nb


def write(report: Report, lab: Lab, folder: Path) -> None:
    """Write ``results.json``, ``classroom.json`` and ``feedback.ipynb`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(clean(gradescope(report)), indent=2) + "\n")
    (folder / "classroom.json").write_text(json.dumps(clean(classroom(report)), indent=2) + "\n")
    nb = nbformat.from_dict(clean(feedback(report, lab)))
    nbformat.write(nb, folder / "feedback.ipynb")


def question_scores(report: Report, lab: Lab) -> dict[str, float]:
    """Points per question."""
    return {q.name: round(sum(c.score for c in report.checks if c.question == q.name), 6)
            for q in lab.questions}


def gradebook(reports: list[Report], lab: Lab, path: Path) -> None:
    """One row per student, one column per question, then total, maximum and notes."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["student", *[q.name for q in lab.questions], "total", "max", "notes"])
        for r in sorted(reports, key=lambda r: r.student):
            scores = question_scores(r, lab)
            out.writerow([r.student, *[_fmt(scores[q.name]) for q in lab.questions],
                          _fmt(r.score), _fmt(r.max_score), clean(" | ".join(r.notes)[:500])])


def summary(reports: list[Report], lab: Lab) -> str:
    """A plain-text table of every student's points per question."""
    names = [q.name for q in lab.questions]
    head = ["student", *[f"{q.name}/{_fmt(q.points)}" for q in lab.questions],
            f"total/{_fmt(lab.points)}"]
    rows = [[r.student, *[_fmt(question_scores(r, lab)[n]) for n in names], _fmt(r.score)]
            for r in sorted(reports, key=lambda r: r.student)]
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)
    text = ["  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                      for i, (v, w) in enumerate(zip(row, widths, strict=True)))
            for row in [head, *rows]]
    return "\n".join([text[0], line, *text[1:]])
