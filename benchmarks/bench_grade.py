"""Throughput of ``levers grade``: 100 copies of a Lab 1 submission, two kernels at a time.

    python benchmarks/bench_grade.py [--copies 100] [--jobs 2] [--lab SOLUTION.ipynb]

Prints the total time, the time per submission, the notebook's own execution time (its cells
run once in an ordinary, already started kernel) and the grader's overhead per submission
beyond it: kernel start-up in the sandbox, probes, comparison and writing the reports. The target is
100 submissions in at most 10 minutes on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from levers.grading.cli import main as grade

ROOT = Path(__file__).resolve().parent.parent


def plain_run_seconds(notebook: Path) -> float:
    """Seconds the notebook's cells take in an ordinary, already started kernel."""
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True)
    with client.setup_kernel():
        start = time.perf_counter()
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
        return time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print its figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--copies", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--lab", type=Path, default=ROOT / "solutions" / "lab01-precision.ipynb")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-grade-"))
    try:
        subs = work / "submissions"
        subs.mkdir()
        for i in range(args.copies):
            shutil.copyfile(args.lab, subs / f"student{i:03d}.ipynb")
        own = plain_run_seconds(args.lab)
        start = time.perf_counter()
        status = grade([str(args.lab), str(subs), "--out", str(work / "grades"),
                        "--jobs", str(args.jobs), "--seed", "0", "--quiet"])
        total = time.perf_counter() - start
        per = total * args.jobs / args.copies  # kernel-seconds each submission occupied
        print(f"graded {args.copies} submissions with --jobs {args.jobs}: exit status {status}")
        print(f"total {total:.0f} s ({total / 60:.1f} min; target <= 10 min for 100)")
        print(f"per submission {per:.1f} s of a job slot; its cells alone run in {own:.1f} s")
        print(f"grader overhead per submission: {per - own:.1f} s (sandboxed kernel start-up "
              "with torch preloaded, probes, comparison, reports; the reference run amortized)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
