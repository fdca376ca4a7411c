"""``levers grade``: grade submitted notebooks against a solution, offline.

    levers grade SOLUTION.ipynb SUBMISSION.ipynb... [--out DIR] [--jobs N] [--timeout S]
                 [--wall S] [--memory MB] [--seed N] [--public-only]

Writes ``DIR/<student>/{results.json, classroom.json, feedback.ipynb}``, ``DIR/gradebook.csv``
and prints a summary table. Exit status: 0 when grading ran (whatever the students scored),
2 when it could not (bad arguments, or a solution that is not a valid, cleanly running lab).
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
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    return p


def expand(paths: list[Path]) -> list[Path]:
    """Folders become the ``*.ipynb`` files inside them, sorted."""
    out: list[Path] = []
    for p in paths:
        out += sorted(p.glob("*.ipynb")) if p.is_dir() else [p]
    return out


def main(argv: list[str] | None = None) -> int:
    """Run ``levers grade``; returns the exit status."""
    from levers.grading import report as rep
    from levers.grading.grader import grade_batch
    from levers.grading.spec import LabError, read_solution

    args = parser().parse_args(argv)
    try:
        limits = Limits(cell_timeout=args.timeout, wall_timeout=args.wall,
                        memory=args.memory << 20)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        if args.seed is not None and args.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {args.seed}")
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
                                          root, done))
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
