"""``levers grade``: grade submitted notebooks against a solution, offline.

    levers grade SOLUTION.ipynb SUBMISSION.ipynb|FOLDER... [--out DIR] [--jobs N] [--timeout S]
                 [--wall S] [--memory MB] [--seed N] [--public-only] [--lms canvas|moodle]
                 [--nbgrader-db gradebook.db]

Folders are searched recursively. Writes ``DIR/<student>/{results.json, feedback.ipynb}``,
``DIR/gradebook.csv`` (and ``DIR/gradebook-<lms>.csv``) and prints a summary table. An nbgrader
``submitted/<student>/<assignment>/<notebook>.ipynb`` tree names each report after its student,
and ``--nbgrader-db`` writes the points into the course's ``gradebook.db``.
Exit status: 0 when grading ran (whatever the students scored), 2 when it could not (bad
arguments, or a solution that is not a valid, cleanly running lab).
A student previews the public part of their score with
``levers grade labs/lab01-precision.ipynb mine.ipynb --public-only``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path

from levers.grading import report as rep
from levers.grading.sandbox import INSTALL, Limits, bubblewrap, host_warnings, staging_root


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``levers grade``."""
    p = argparse.ArgumentParser(
        prog="levers grade",
        description="Grade submitted lab notebooks against the solution, offline and sandboxed.")
    p.add_argument("solution", type=Path, help="the solution notebook (solutions/labNN-*.ipynb)")
    p.add_argument("submissions", type=Path, nargs="+", help="submitted notebooks or folders")
    p.add_argument("--out", type=Path, default=Path("grades"), help="output folder [grades]")
    p.add_argument("--jobs", type=int, default=1, help="kernels at once [1]")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per cell [120]")
    p.add_argument("--wall", type=float, default=600.0,
                   help="seconds per submission, restarts included [600]")
    p.add_argument("--memory", type=int, default=4096,
                   help="MB of address space per kernel process [4096]")
    p.add_argument("--seed", type=int, default=None,
                   help="probe seed (default: drawn at random and printed)")
    p.add_argument("--public-only", action="store_true",
                   help="score only the public tests (a student's preview against labs/)")
    p.add_argument("--lms", choices=rep.LAYOUTS, action="append", default=[],
                   help="also write gradebook-<lms>.csv in that LMS's import layout")
    p.add_argument("--nbgrader-db", type=Path, default=None,
                   help="write the points into this nbgrader gradebook.db (submissions from "
                        "its course's submitted/ tree, autograded by nbgrader first)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    return p


def expand(paths: list[Path]) -> list[Path]:
    """Folders become the ``*.ipynb`` files anywhere inside them (not in checkpoints), sorted.

    Examples
    --------
    >>> expand([Path("one.ipynb")])
    [PosixPath('one.ipynb')]
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*.ipynb")
                          if ".ipynb_checkpoints" not in f.relative_to(p).parts)
        else:
            out.append(p)
    return out


def nbgrader_ids(paths: list[Path]) -> list[tuple[str, str, str]] | None:
    """``(student, assignment, notebook)`` per path if all sit in an nbgrader ``submitted/``.

    Examples
    --------
    >>> nbgrader_ids([Path("c/submitted/ada/lab01/lab01-precision.ipynb")])
    [('ada', 'lab01', 'lab01-precision')]
    >>> nbgrader_ids([Path("ada.ipynb")]) is None
    True
    """
    ids = []
    for p in paths:
        parts = p.parts
        if len(parts) < 4 or parts[-4] != "submitted":
            return None
        ids.append((parts[-3], parts[-2], p.stem))
    return ids


def main(argv: list[str] | None = None) -> int:
    """Run ``levers grade``; returns the exit status."""
    from levers.grading.grader import grade_batch, student_names
    from levers.grading.spec import LabError, read_solution

    args = parser().parse_args(argv)
    try:
        limits = Limits(cell_timeout=args.timeout, wall_timeout=args.wall,
                        memory=args.memory << 20)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        if args.seed is not None and args.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {args.seed}")
        if args.nbgrader_db is not None and not args.nbgrader_db.is_file():
            raise ValueError(f"--nbgrader-db must be an existing gradebook.db, "
                             f"got {str(args.nbgrader_db)!r}")
        lab = read_solution(args.solution, public_only=args.public_only)
    except (ValueError, LabError) as exc:
        print(f"levers grade: error: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() == 0 and sys.platform == "linux" and bubblewrap() is None:
        print(f"levers grade: error: {INSTALL}", file=sys.stderr)
        return 2
    for warning in host_warnings():
        print(f"levers grade: warning: {warning}", file=sys.stderr)
    submissions = expand(args.submissions)
    if not submissions:
        print("levers grade: error: no submissions found", file=sys.stderr)
        return 2
    ids = nbgrader_ids(submissions)
    if args.nbgrader_db is not None and ids is None:
        print("levers grade: error: --nbgrader-db needs submissions from an nbgrader "
              "submitted/<student>/<assignment>/ tree", file=sys.stderr)
        return 2
    # An nbgrader tree: one report per student, named after the student (made safe, unique).
    names = student_names([Path(f"{s}.ipynb") for s, _, _ in ids]) if ids else None
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    args.out.mkdir(parents=True, exist_ok=True)
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(submissions), desc="grading", unit="nb")

    def done(r: rep.Report) -> None:
        rep.write(r, lab, args.out / r.student)
        if bar is not None:
            bar.update(1)

    root = staging_root()

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that the staging folder is removed below, as on Ctrl-C

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main_thread else None
    try:
        reports = asyncio.run(grade_batch(lab, submissions, args.out, seed, limits, args.jobs,
                                          root, done, names))
    except LabError as exc:
        print(f"levers grade: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the kernels die with us (see the launcher); reports so far stay
        print("levers grade: interrupted", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(root, ignore_errors=True)
        if bar is not None:
            bar.close()
    rep.gradebook(reports, lab, args.out / "gradebook.csv")
    for layout in args.lms:
        rep.lms_gradebook(reports, lab, args.out / f"gradebook-{layout}.csv", layout)
    if args.nbgrader_db is not None:
        from levers.grading.nbgrader_course import write_scores

        by_name = dict(zip(names, ids, strict=True))
        missing = write_scores(args.nbgrader_db, [
            (*by_name[r.student], {c.grade_id: c.score for c in r.checks}) for r in reports])
        if missing:
            print(f"levers grade: warning: not in {args.nbgrader_db} (run nbgrader autograde "
                  f"first): {', '.join(missing[:20])}", file=sys.stderr)
    faults = [r.student for r in reports if r.notes and r.notes[0].startswith("GRADER FAULT")]
    if faults:
        print(f"levers grade: warning: no kernel could start for {len(faults)} submission(s), "
              f"a fault of this machine: grade them again: {', '.join(faults[:20])}",
              file=sys.stderr)
    if not args.quiet:
        print(rep.summary(reports, lab))
        seeded = "" if args.public_only else f"seed {seed}; "
        print(f"\n{seeded}reports in {args.out}/; gradebook {args.out / 'gradebook.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
