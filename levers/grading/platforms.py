"""What GitHub Actions, Classroom 50 and an LMS receive, made from ``levers grade``'s reports.

Every platform file is made from a submission's ``results.json`` (the grader's one record per
submission, Gradescope's format) with no rounding of its own: points are the grader's, rounded
once to 0.01 (`levers.grading.score.DECIMALS`).

- **GitHub Actions** (`actions_summary`, `annotations`): a Markdown job summary with the score
  and a table per check, and ``::error`` annotations on the notebook for failed checks.
  Before the release date (``--release``), hidden checks show neither points nor messages
  (their messages name expected values), and the summary gives the public part of the score.
- **Classroom 50** (`classroom50`): the ``classroom50/result/v1`` document its runner reads
  from ``./result.json``. That schema takes integer points only, so it counts **hundredths of
  a point** (a 15-point lab has ``max-score`` 1500): exact, with no second rounding.
- **Class CSV** (`class_csv`): one row per student from the ``score.json`` each run leaves,
  optionally in Canvas's or Moodle's import layout (`lms_rows`).

Run as ``python -m levers.grading.platforms {actions,classroom50,class-csv} ...`` (the
workflows in ``grading/`` do).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import sys
from pathlib import Path

LAYOUTS = ("canvas", "moodle")
CENTI = 100  # Classroom 50's integer points: hundredths of a point


def _fmt(x: float) -> str:
    return f"{x:g}"


def released(release: dt.datetime | None, now: dt.datetime | None = None) -> bool:
    """Are hidden-check details shown? Yes without a release date, or once it has passed.

    Examples
    --------
    >>> day = dt.datetime(2026, 12, 20, tzinfo=dt.timezone.utc)
    >>> released(day, day - dt.timedelta(seconds=1)), released(day, day), released(None)
    (False, True, True)
    """
    return release is None or (now or dt.datetime.now(dt.UTC)) >= release


def parse_release(text: str | None) -> dt.datetime | None:
    """An ISO 8601 date or time (UTC unless it says otherwise); empty means no release date.

    Examples
    --------
    >>> parse_release("2026-12-20")
    datetime.datetime(2026, 12, 20, 0, 0, tzinfo=datetime.timezone.utc)
    >>> parse_release("") is None
    True
    """
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"release must be an ISO 8601 date or time such as 2026-12-20 or "
                         f"2026-12-20T17:00:00Z, got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _public(results: dict) -> tuple[float, float]:
    tests = [t for t in results["tests"] if t["visibility"] == "visible"]
    return (round(sum(t["score"] for t in tests), 2), sum(t["max_score"] for t in tests))


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell: one line, no pipes, no HTML."""
    text = " ".join(str(text).split())
    for a, b in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("`", "'")):
        text = text.replace(a, b)
    return text[:300]


def actions_summary(results: dict | None, student: str, lab: str, show_hidden: bool,
                    release: dt.datetime | None = None) -> str:
    """The Markdown job summary of one graded submission (or of a grading failure).

    Parameters
    ----------
    results : dict or None
        The submission's ``results.json``; None when grading produced none.
    student, lab : str
        Who and what, for the title.
    show_hidden : bool
        Whether hidden checks' points and messages are shown (see `released`).
    release : datetime, optional
        The release date, quoted while hidden details are withheld.

    Returns
    -------
    str
        Markdown: a title, the score line, and a table with a row per check.
    """
    title = f"## {lab}: {student}\n\n"
    if results is None:
        return title + ("**Grading failed**: no report was written, so this submission scores "
                        "0 for now. The log of the step *Grade* says why.\n")
    lines = []
    if show_hidden:
        lines.append(f"**Score: {_fmt(results['score'])} / "
                     f"{_fmt(sum(t['max_score'] for t in results['tests']))}**")
    else:
        got, most = _public(results)
        when = release.strftime("%Y-%m-%d %H:%M UTC") if release else "the release date"
        lines.append(f"**Public tests: {_fmt(got)} / {_fmt(most)}**. Hidden checks were graded; "
                     f"their points, and your total, are shown from {when} (run the workflow "
                     "again then).")
    lines += ["", "| question | check | points | status | message |", "|---|---|---:|---|---|"]
    for t in results["tests"]:
        question, _, kind = t["name"].partition(" ")
        if t["visibility"] != "visible" and not show_hidden:
            lines.append(f"| {_cell(question)} | {kind} | – | graded | withheld until release |")
            continue
        mark = "✅ passed" if t["status"] == "passed" else "❌ failed"
        lines.append(f"| {_cell(question)} | {kind} | {_fmt(t['score'])} / {_fmt(t['max_score'])}"
                     f" | {mark} | {_cell(t.get('output', ''))} |")
    return title + "\n".join(lines) + "\n"


def _escape(text: str, prop: bool = False) -> str:
    """Escape a workflow command's data (GitHub's rules: ``%``, CR, LF; ``:`` ``,`` in props)."""
    text = str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def annotations(results: dict | None, notebook: str, show_hidden: bool) -> list[str]:
    """``::error`` workflow commands for failed checks (hidden ones only once released).

    Examples
    --------
    >>> r = {"tests": [{"name": "q1 public test", "status": "failed", "output": "50%\\nno",
    ...                 "visibility": "visible", "score": 0, "max_score": 1}]}
    >>> annotations(r, "lab.ipynb", False)
    ['::error file=lab.ipynb,title=q1 public test::50%25%0Ano']
    """
    if results is None:
        return [f"::error file={_escape(notebook, True)},title=levers grade::Grading failed: "
                "no report was written (see the step Grade)."]
    return [f"::error file={_escape(notebook, True)},title={_escape(t['name'], True)}::"
            f"{_escape(t.get('output', ''))[:4000]}"
            for t in results["tests"]
            if t["status"] != "passed" and (show_hidden or t["visibility"] == "visible")]


def score_row(results: dict | None, student: str) -> dict:
    """The scores a run leaves for the class CSV: total, maximum and points per question."""
    if results is None:
        return {"student": student, "score": 0, "max_score": None, "questions": {},
                "notes": "grading failed"}
    questions: dict[str, float] = {}
    for t in results["tests"]:
        q = t["name"].split(" ", 1)[0]
        questions[q] = round(questions.get(q, 0) + t["score"], 2)
    return {"student": student, "score": results["score"],
            "max_score": sum(t["max_score"] for t in results["tests"]),
            "questions": questions, "notes": ""}


def classroom50(results: dict | None, env: dict[str, str], now: dt.datetime | None = None,
                show_hidden: bool = True) -> dict:
    """The ``classroom50/result/v1`` document for one submission (points in hundredths).

    ``env`` is the runner's environment (``CLASSROOM``, ``ASSIGNMENT``, ``SUBMISSION_TAG``,
    ``COMMIT_URL``, ``RELEASE_URL``, ``REVIEW_URL``, ``OWNER`` or ``USERNAME``,
    ``ASSIGNMENT_TYPE``, ``COMMIT_DATE``). The per-test ``message`` of a hidden check is left
    out until released (the runner publishes result.json on the student's repository).
    """
    now = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tests = []
    for t in (results or {"tests": []})["tests"]:
        entry = {"test-name": t["name"], "passed": t["status"] == "passed",
                 "score": round(t["score"] * CENTI), "max-score": round(t["max_score"] * CENTI),
                 "points": t["score"], "max-points": t["max_score"]}
        if show_hidden or t["visibility"] == "visible":
            entry["message"] = t.get("output", "")
        tests.append(entry)
    return {
        "schema": "classroom50/result/v1",
        "classroom": env["CLASSROOM"],
        "assignment": env["ASSIGNMENT"],
        "assignment_type": env.get("ASSIGNMENT_TYPE") or "individual",
        "owner": env.get("OWNER") or env["USERNAME"],
        "submission": env["SUBMISSION_TAG"],
        "commit": env["COMMIT_URL"],
        "release": env["RELEASE_URL"],
        "review": env.get("REVIEW_URL") or env["COMMIT_URL"],
        "datetime": env.get("COMMIT_DATE") or now,
        "graded_at": now,
        "score": sum(t["score"] for t in tests),
        "max-score": sum(t["max-score"] for t in tests),
        "tests": tests,
    }


def lms_rows(rows: list[dict], title: str, points: float, layout: str) -> list[list[str]]:
    """A class's totals as the rows of Canvas's or Moodle's gradebook import CSV.

    Canvas: ``Student, ID, SIS User ID, SIS Login ID, Section, <title>``, a ``Points Possible``
    row, then a row per student (name in ``Student`` and ``SIS Login ID``). Moodle:
    ``Username, <title>, Feedback``.

    Examples
    --------
    >>> lms_rows([{"student": "ada", "score": 13.33, "max_score": 15, "notes": ""}],
    ...          "lab01", 15, "moodle")
    [['Username', 'lab01', 'Feedback'], ['ada', '13.33', '13.33 / 15.']]
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    rows = sorted(rows, key=lambda r: r["student"])
    if layout == "canvas":
        return [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", title],
                ["Points Possible", "", "", "", "", _fmt(points)],
                *[[r["student"], "", "", r["student"], "", _fmt(r["score"])] for r in rows]]
    return [["Username", title, "Feedback"],
            *[[r["student"], _fmt(r["score"]),
               f"{_fmt(r['score'])} / {_fmt(r['max_score'] or points)}. {r['notes']}".strip()]
              for r in rows]]


def class_csv(folder: Path, out: Path, title: str, layout: str | None = None) -> int:
    """Merge every ``score.json`` under `folder` into one CSV; return the number of students.

    The plain layout has ``student``, one column per question, ``total``, ``max``, ``notes``.
    """
    rows = [json.loads(p.read_text()) for p in sorted(folder.rglob("score.json"))]
    if not rows:
        raise ValueError(f"no score.json under {str(folder)!r}")
    points = max((r["max_score"] or 0) for r in rows)
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        if layout:
            w.writerows(lms_rows(rows, title, points, layout))
        else:
            questions = sorted({q for r in rows for q in r["questions"]})
            w.writerow(["student", *questions, "total", "max", "notes"])
            w.writerows([r["student"], *[_fmt(r["questions"].get(q, 0)) for q in questions],
                         _fmt(r["score"]), _fmt(r["max_score"] or points), r["notes"]]
                        for r in sorted(rows, key=lambda r: r["student"]))
    return len(rows)


def _report(grades: Path) -> dict | None:
    found = sorted(grades.glob("*/results.json")) if grades.is_dir() else []
    return json.loads(found[0].read_text()) if found else None


def main(argv: list[str] | None = None) -> int:
    """``python -m levers.grading.platforms``: the platform files of a graded submission."""
    p = argparse.ArgumentParser(prog="python -m levers.grading.platforms")
    sub = p.add_subparsers(dest="command", required=True)
    act = sub.add_parser("actions", help="job summary, annotations and score.json")
    c50 = sub.add_parser("classroom50", help="write Classroom 50's result.json")
    for s in (act, c50):
        s.add_argument("grades", type=Path, help="levers grade's --out folder")
        s.add_argument("--release", default=os.environ.get("LEVERS_RELEASE", ""),
                       help="show hidden checks' details from this date [LEVERS_RELEASE]")
    act.add_argument("--lab", required=True)
    act.add_argument("--student", required=True)
    act.add_argument("--notebook", required=True, help="the notebook's path, for annotations")
    act.add_argument("--score", type=Path, default=Path("score.json"))
    c50.add_argument("--out", type=Path, default=Path("result.json"))
    c50.add_argument("--body", type=Path, default=Path("release-body.md"))
    csv_ = sub.add_parser("class-csv", help="merge the runs' score.json into one CSV")
    csv_.add_argument("folder", type=Path)
    csv_.add_argument("--out", type=Path, default=Path("class.csv"))
    csv_.add_argument("--title", default="lab")
    csv_.add_argument("--lms", choices=LAYOUTS, default=None)
    args = p.parse_args(argv)
    try:
        if args.command == "class-csv":
            n = class_csv(args.folder, args.out, args.title, args.lms)
            print(f"{n} students in {args.out}")
            return 0
        release = parse_release(args.release)
    except ValueError as exc:
        print(f"levers platforms: error: {exc}", file=sys.stderr)
        return 2
    results, show = _report(args.grades), released(release)
    if args.command == "classroom50":
        env = dict(os.environ)
        student = env.get("OWNER") or env.get("USERNAME", "student")
        args.out.write_text(json.dumps(classroom50(results, env, show_hidden=show), indent=2))
        args.body.write_text(actions_summary(results, student, env.get("ASSIGNMENT", "lab"),
                                             show, release))
        return 0
    summary = actions_summary(results, args.student, args.lab, show, release)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        with open(target, "a") as f:
            f.write(summary)
    else:
        print(summary)
    for line in annotations(results, args.notebook, show):
        print(line)
    args.score.write_text(json.dumps(score_row(results, args.student), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
