"""Throughput of ``levers grade`` under attack: honest submissions mixed with hostile ones.

    python benchmarks/bench_grade.py [--honest 90] [--hostile 2] [--jobs 2] [--lab SOLUTION]

Grades copies of a lab's solution (honest, full marks) together with ``--hostile`` copies of
each attack of tests/fixtures/grading/hostile.py at full size (forked busy loops, a memory bomb
over several processes, 60 widget messages of 60 MB, an 8 MB cell, 512 MB of shared memory left
behind), ``--jobs`` kernels at a time. Prints the honest submissions' scores (all must be full),
the batch time, the grader's peak memory (its own process, not the kernels') and the score
and first note of each hostile submission. The reference: 100 submissions in at most 10 minutes
on the 2-core machine, every honest one full, the grader under 1 GB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from levers.grading.cli import main as grade

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "grading"))
import hostile  # noqa: E402


def peak_rss_reset() -> None:
    """Measure this process's peak resident memory from now on (Linux ``clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    """This process's peak resident memory since `peak_rss_reset`, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) << 10
    return 0


def main() -> None:
    """Run the benchmark and print its figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--honest", type=int, default=90)
    p.add_argument("--hostile", type=int, default=2, help="copies of each of the 5 attacks")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--lab", type=Path, default=ROOT / "solutions" / "lab01-precision.ipynb")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-grade-"))
    try:
        subs = work / "submissions"
        subs.mkdir()
        for i in range(args.honest):
            shutil.copyfile(args.lab, subs / f"honest{i:03d}.ipynb")
        for name, size in hostile.FULL.items():
            for i in range(args.hostile):
                hostile.write(args.lab, name, size, subs / f"hostile-{name}{i}.ipynb")
        total = args.honest + args.hostile * len(hostile.FULL)
        peak_rss_reset()
        start = time.perf_counter()
        status = grade([str(args.lab), str(subs), "--out", str(work / "grades"),
                        "--jobs", str(args.jobs), "--seed", "0", "--quiet"])
        seconds, peak = time.perf_counter() - start, peak_rss()
        reports = {p.name: json.loads((p / "results.json").read_text())
                   for p in (work / "grades").iterdir() if (p / "results.json").exists()}
        honest = Counter(r["score"] for n, r in reports.items() if n.startswith("honest"))
        full = max(r["tests"] and sum(t["max_score"] for t in r["tests"])
                   for r in reports.values())
        print(f"graded {total} submissions ({args.honest} honest, {total - args.honest} "
              f"hostile) with --jobs {args.jobs}: exit status {status}, "
              f"{len(reports)} reports")
        print(f"honest scores: {dict(sorted(honest.items()))} (full marks: {full:g}; "
              f"{honest[full]} of {args.honest} full)")
        print(f"batch time {seconds:.0f} s ({seconds / 60:.1f} min; "
              f"{seconds * args.jobs / total:.1f} s of a job slot per submission)")
        print(f"grader peak memory {peak / 2**20:.0f} MB (its own process)")
        for name in sorted(n for n in reports if n.startswith("hostile")):
            note = reports[name]["output"].split("\n")[1:2] or [""]
            print(f"  {name}: {reports[name]['score']:g} / {full:g}  {note[0][:110]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
