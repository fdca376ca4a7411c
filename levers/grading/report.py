"""What the grader writes: platform JSON, a feedback notebook, a gradebook and a summary.

Per submission, in ``OUT/<student>/``:

- ``results.json``: Gradescope's autograder format (``score``, ``execution_time``, ``output``
  with ``output_format`` ``md``, ``tests[]`` with ``name``, ``score``, ``max_score``,
  ``status``, ``output`` (plain text), ``visibility``; public tests ``visible``, hidden checks
  ``after_published``; a ``leaderboard`` from the experiment questions' measured accuracy). It
  is the one per-submission record the other platforms' files are made from
  (`levers.grading.platforms`);
- ``feedback.ipynb``: the notebook as it ran, with a result cell under each question. It is
  inert: the student's markdown and raw cells appear as plain text in a fenced block (no
  heading, image, link or HTML of theirs renders), outputs keep only plain text and bitmaps
  (no HTML, SVG, JavaScript, Markdown or widget), and no cell but the grader's carries the
  grader's mark, so only the grader's cells can look like grader results.

Per batch, ``OUT/gradebook.csv`` (one row per student, one column per question; optionally
Canvas's or Moodle's import layout) and a summary table for the terminal. Points are the ones
`levers.grading.score` rounded once (to 0.01); nothing here rounds again. Everything except
``execution_time`` is a function of the submission and the seed, so grading twice with one seed
writes the same files.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nbformat

from levers.grading import platforms
from levers.grading.score import DECIMALS, Report
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


PUBLISHED = ("Hidden checks, and with them your total score, appear when your instructor "
             "publishes the grades; until then you see the public tests only.")


def leaderboard(report: Report, lab: Lab) -> list[dict]:
    """Gradescope leaderboard entries: the measured accuracies of passed experiment questions.

    For an experiment the grader measured (``measure``), the numbers it measured; otherwise an
    entry per top-level float value, named ``...accuracy...``, of a hidden check's probe
    result, or per key the check's ``metadata.levers.leaderboard`` lists; only from a check
    that passed, so a typed-in number never reaches the board.

    Examples
    --------
    >>> leaderboard(Report("ada", 1), None)
    []
    """
    if report.execution is None or lab is None:
        return []
    listed = {grade_id(c): c.get("metadata", {}).get("levers", {}).get("leaderboard")
              for c in lab.notebook.cells if grade_id(c)}
    entries = []
    for c in report.checks:
        if c.kind != "hidden" or c.status != "passed":
            continue
        if c.measured:  # an experiment the grader measured itself
            entries += [{"name": f"{c.question} {k}".replace("_", " "), "value": round(v, 4),
                         "order": order} for k, (v, order) in c.measured.items()]
            continue
        value = report.execution.probes.get(c.grade_id, {}).get("value")
        if not isinstance(value, dict):
            continue
        keys = listed.get(c.grade_id) or [k for k in value if "accuracy" in str(k)]
        entries += [{"name": f"{c.question} {k}".replace("_", " "), "value": round(value[k], 4),
                     "order": "desc"}
                    for k in keys if isinstance(value.get(k), float)]
    return entries


def gradescope(report: Report, lab: Lab | None = None) -> dict:
    """The Gradescope ``results.json`` for one submission."""
    head = (f"**Score {_fmt(report.score)} / {_fmt(report.max_score)}**"
            + (f" (probe seed {report.seed})." if _hidden(report) else "."))
    lines = [head]
    if _hidden(report):
        lines += ["", PUBLISHED]
    if report.notes:  # they can quote the student's own text: never rendered as Markdown
        lines += ["", "Notes:", "", _verbatim("\n\n".join(report.notes))]
    out = {
        "score": report.score,
        "execution_time": int(round(report.seconds)),
        "output": "\n".join(lines),
        "output_format": "md",
        "test_output_format": "text",
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
    board = leaderboard(report, lab)
    if board:
        out["leaderboard"] = board
    return out


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
    """Write ``results.json`` and ``feedback.ipynb`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    results = json.dumps(clean(gradescope(report, lab)), indent=2)
    (folder / "results.json").write_text(results + "\n")
    nb = nbformat.from_dict(clean(feedback(report, lab)))
    nbformat.write(nb, folder / "feedback.ipynb")


def question_scores(report: Report, lab: Lab) -> dict[str, float]:
    """Points per question."""
    return {q.name: round(sum(c.score for c in report.checks if c.question == q.name),
                          DECIMALS)
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


LAYOUTS = platforms.LAYOUTS


def lms_gradebook(reports: list[Report], lab: Lab, path: Path, layout: str) -> None:
    """The batch's totals in Canvas's or Moodle's import layout (`platforms.lms_rows`)."""
    rows = [{"student": r.student, "score": r.score, "max_score": r.max_score,
             "notes": clean(" | ".join(r.notes)[:500])} for r in reports]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(platforms.lms_rows(rows, lab.path.stem, lab.points, layout))


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
