"""The ``levers`` command.

    levers notebooks run PATH...     re-execute notebooks in place, reproducibly
    levers labs build                write labs/ (student versions) from solutions/
    levers labs nbgrader COURSE      write an nbgrader course's source/ from solutions/
    levers grade SOLUTION SUB...     autograde submissions (see the instructor guide)
    levers bench [PATH...]           time notebook execution and the book build
    levers i18n build|status         build the Chinese edition; list stale translations
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from levers.repro import CONFLICTING, NUMERIC_ENV

#: Seconds one cell may run before execution is abandoned.
CELL_TIMEOUT = 600


def kernel_env(**overrides: str) -> dict[str, str]:
    """The environment a notebook kernel gets: the pinned numeric settings, no progress bars."""
    inherited = {k: v for k, v in os.environ.items() if k not in CONFLICTING}
    return {**inherited, **NUMERIC_ENV, "LEVERS_EXECUTING": "1", **overrides}


def run_notebook(path: Path, out: Path | None = None, timeout: int = CELL_TIMEOUT,
                 env: dict[str, str] | None = None) -> float:
    """Execute the notebook at `path` with a fresh kernel and write it to `out` (default: in
    place); return the seconds execution took. The kernel starts in the notebook's folder with
    `env` (default: `kernel_env()`)."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", coalesce_streams=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute(
                       env=env or kernel_env())
    elapsed = time.perf_counter() - start
    for cell in nb.cells:  # execution timestamps would make every run a diff
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(nb, out or path)
    return elapsed


def _notebooks(paths: list[str]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(p.glob("*.ipynb"))
        elif p.suffix == ".ipynb" and p.is_file():
            found.append(p)
        else:
            raise SystemExit(f"levers: {p} is not a notebook or a folder of notebooks")
    return found


def cmd_notebooks_run(args: argparse.Namespace) -> int:
    for path in _notebooks(args.paths):
        print(f"{path}: {run_notebook(path):.1f} s", flush=True)
    return 0


def cmd_labs_build(args: argparse.Namespace) -> int:
    from levers.grading.labs import build_labs

    for path in build_labs(args.solutions, args.labs):
        print(f"wrote {path}")
    return 0


def cmd_labs_nbgrader(args: argparse.Namespace) -> int:
    from levers.grading.nbgrader_course import export_course

    for path in export_course(args.solutions, args.course):
        print(f"wrote {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    rows = []
    for path in _notebooks(args.paths):
        scratch = Path(args.scratch) / path.parent.name / path.name
        scratch.parent.mkdir(parents=True, exist_ok=True)
        rows.append((str(path), run_notebook(path, out=scratch)))
        print(f"{rows[-1][0]:45s} {rows[-1][1]:6.1f} s", flush=True)
    if args.book:
        start = time.perf_counter()
        jupyter_book = Path(sys.executable).with_name("jupyter-book")
        subprocess.run([str(jupyter_book), "build", ".", "-n", "-W", "--keep-going",
                        "--path-output", args.scratch], check=True, stdout=subprocess.DEVNULL)
        rows.append(("book build", time.perf_counter() - start))
        print(f"{'book build':45s} {rows[-1][1]:6.1f} s", flush=True)
    over = [name for name, seconds in rows if seconds > 60]
    print(f"budget 60 s each: {'all within' if not over else 'OVER: ' + ', '.join(over)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["grade"]:
        from levers.grading.cli import main as grade_main

        return grade_main(argv[1:])
    if argv[:1] == ["i18n"]:  # levers i18n build|status: the Chinese edition
        from levers.i18n import main as i18n_main

        return i18n_main(argv[1:])
    parser = argparse.ArgumentParser(prog="levers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    nbs = sub.add_parser("notebooks", help="work with the book's notebooks")
    nbs_sub = nbs.add_subparsers(dest="action", required=True)
    run = nbs_sub.add_parser("run", help="re-execute notebooks in place, reproducibly")
    run.add_argument("paths", nargs="+", help="notebooks or folders of notebooks")
    run.set_defaults(func=cmd_notebooks_run)
    labs = sub.add_parser("labs", help="work with the labs")
    labs_sub = labs.add_subparsers(dest="action", required=True)
    build = labs_sub.add_parser("build", help="write student labs from solutions")
    build.add_argument("--solutions", default="solutions")
    build.add_argument("--labs", default="labs")
    build.set_defaults(func=cmd_labs_build)
    course = labs_sub.add_parser(
        "nbgrader", help="write COURSE/source/ for nbgrader (hidden checks fail closed)")
    course.add_argument("course", help="the nbgrader course folder")
    course.add_argument("--solutions", default="solutions")
    course.set_defaults(func=cmd_labs_nbgrader)
    sub.add_parser("grade", help="autograde submissions (levers grade --help)")
    bench = sub.add_parser("bench", help="time notebook execution and the book build")
    bench.add_argument("paths", nargs="*", default=["chapters", "solutions"])
    bench.add_argument("--no-book", dest="book", action="store_false")
    bench.add_argument("--scratch", default="_build/bench")
    bench.set_defaults(func=cmd_bench)
    # handed to levers.i18n before parsing (above); listed here for --help
    sub.add_parser("i18n", help="the Chinese edition (levers i18n --help)")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
