"""Throughput of ``levers grade`` under attack: honest submissions mixed with hostile ones.

    python benchmarks/bench_grade.py [--honest 90] [--hostile 2] [--jobs 2] [--lab SOLUTION]
                                     [--summary book/_static/bench-grade.txt]

Grades copies of a lab's solution (honest, full marks) together with ``--hostile`` copies of
each attack of tests/fixtures/grading/hostile.py at full size (forked busy loops, a memory bomb
over several processes, 60 widget messages of 60 MB, an 8 MB cell, 512 MB of shared memory left
behind), ``--jobs`` kernels at a time. Prints the honest submissions' scores (all must be full),
the batch time, an honest submission's time, where the time goes (kernel start, the lab's
rules, the cells, the hidden checks, the shutdown, the reading of the code), the grader's peak
memory (its own process, not the kernels') and the score, time and notes of each hostile
submission, and writes the same summary to ``--summary`` (stored with the book).

What the design guarantees is a bound, not a speed: every submission ends within its wall limit
(``--wall``, 600 s), so a batch ends within the sum of its submissions' wall limits over the job
slots, plus the reference run: 100 x 600 s / 2, over 8 hours, for the default batch. (The old
reference, 100 submissions in 10 minutes, was no guarantee, and every full run here missed it.)
What a batch costs is what its submissions cost. On the book's 2-core machine, shared with
other work (load average 4 to 7), an honest Lab 1 submission took 7 to 13 s of a job slot,
about 80 % of it the kernel's start (bubblewrap, Python, torch's import) and the lab's rules
(`levers.grading.guard`, about 3 s), its own cells about a second; a hostile one took 8 s (the
shared memory) to 95 s (the 8 MB cell; the comm flood about 60 s, nearly all of it the kernel
sending 3.5 GB). The grader itself stayed under 400 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import levers.grading.execute as execute
import levers.grading.grader as grader
from levers.grading.cli import main as grade

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "grading"))
import hostile  # noqa: E402

# The steps of one submission timed (module, function, label), in the order they run.
STEPS = [(execute, "boot", "kernel start"), (execute._Run, "setup", "lab's rules"),
         (execute._Run, "cells", "cells"), (execute._Run, "probe", "hidden checks"),
         (execute, "shutdown", "shutdown"), (grader, "analyse", "reading its code")]


def peak_rss_reset() -> None:
    """Measure this process's peak resident memory from now on (Linux ``clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    """This process's peak resident memory since `peak_rss_reset`, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) << 10
    return 0


def timed_steps() -> dict[str, float]:
    """Wrap each of `STEPS` so that its seconds add up, summed over the batch, in the result.

    Each step's time is wall time while it ran; with two job slots the two overlap.
    """
    spent: dict[str, float] = defaultdict(float)
    for owner, name, label in STEPS:
        original = getattr(owner, name)

        async def step(*args: object, _original=original, _label=label, **kwargs: object):
            start = time.perf_counter()
            try:
                return await _original(*args, **kwargs)
            finally:
                spent[_label] += time.perf_counter() - start

        setattr(owner, name, step)
    return spent


def timed_submissions() -> dict[str, float]:
    """Wrap `grader.grade_one` and `grader.reference`: the seconds of each submission (by its
    student name) and of the reference run (``"reference"``) in the result."""
    seconds: dict[str, float] = {}
    one, reference = grader.grade_one, grader.reference

    async def grade_one(*args: object, **kwargs: object):
        start = time.perf_counter()
        try:
            return await one(*args, **kwargs)
        finally:
            seconds[str(args[2])] = time.perf_counter() - start

    async def timed_reference(*args: object, **kwargs: object):
        start = time.perf_counter()
        try:
            return await reference(*args, **kwargs)
        finally:
            seconds["reference"] = time.perf_counter() - start

    grader.grade_one, grader.reference = grade_one, timed_reference
    return seconds


def notes(report: dict) -> str:
    """The notes of a report (the text block under "Notes:"), on one line."""
    text = report["output"].split("Notes:", 1)[1:]
    lines = [ln for ln in "".join(text).splitlines() if ln.strip() and not ln.startswith("```")]
    return " / ".join(lines)


def wrapped(lines: list[str], width: int = 79) -> str:
    """``lines`` cut to ``width`` columns (the book's code column), continued indented.

    Examples
    --------
    >>> print(wrapped(["one two three four"], width=10), end="")
    one two
        three
        four
    """
    return "".join(textwrap.fill(line, width, subsequent_indent="    ", break_long_words=True,
                                 break_on_hyphens=False) + "\n" for line in lines)


def machine() -> str:
    """Cores, CPU model and memory of this machine."""
    model = next((ln.split(":", 1)[1].strip() for ln in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{os.cpu_count()} cores ({model}), {memory / 2**30:.0f} GiB"


def main() -> None:
    """Run the benchmark, print its figures and write them to ``--summary``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--honest", type=int, default=90)
    p.add_argument("--hostile", type=int, default=2, help="copies of each of the 5 attacks")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--lab", type=Path, default=ROOT / "solutions" / "lab01-precision.ipynb")
    p.add_argument("--summary", type=Path, default=ROOT / "book" / "_static" / "bench-grade.txt",
                   help="where to write the summary ('-': nowhere)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-grade-"))
    lines = [f"$ python benchmarks/bench_grade.py --honest {args.honest} --hostile "
             f"{args.hostile} --jobs {args.jobs}  # "
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}"]

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        subs = work / "submissions"
        subs.mkdir()
        for i in range(args.honest):
            shutil.copyfile(args.lab, subs / f"honest{i:03d}.ipynb")
        for name, size in hostile.FULL.items():
            for i in range(args.hostile):
                hostile.write(args.lab, name, size, subs / f"hostile-{name}{i}.ipynb")
        total = args.honest + args.hostile * len(hostile.FULL)
        spent, each = timed_steps(), timed_submissions()
        peak_rss_reset()
        load, start = os.getloadavg(), time.perf_counter()
        status = grade([str(args.lab), str(subs), "--out", str(work / "grades"),
                        "--jobs", str(args.jobs), "--seed", "0", "--quiet"])
        seconds, peak = time.perf_counter() - start, peak_rss()
        reports = {p.name: json.loads((p / "results.json").read_text())
                   for p in (work / "grades").iterdir() if (p / "results.json").exists()}
        honest = Counter(r["score"] for n, r in reports.items() if n.startswith("honest"))
        full = max(r["tests"] and sum(t["max_score"] for t in r["tests"])
                   for r in reports.values())
        say(f"graded {total} submissions ({args.honest} honest, {total - args.honest} "
            f"hostile) of {args.lab.name} with --jobs {args.jobs}: exit status {status}, "
            f"{len(reports)} reports")
        say(f"honest scores: {dict(sorted(honest.items()))} (full marks: {full:g}; "
            f"{honest[full]} of {args.honest} full)")
        say(f"batch time {seconds:.0f} s ({seconds / 60:.1f} min; "
            f"{seconds * args.jobs / total:.1f} s of a job slot per submission, the reference "
            f"run included); load average before {load[0]:.1f}, after "
            f"{os.getloadavg()[0]:.1f}")
        mine = sorted(v for k, v in each.items() if k.startswith("honest"))
        if mine:
            say(f"an honest submission: median {statistics.median(mine):.1f} s of a job slot "
                f"(range {mine[0]:.1f}-{mine[-1]:.1f} s); the reference run "
                f"{each.get('reference', 0):.1f} s")
        say("time in each step, summed over all submissions and the reference run: "
            + ", ".join(f"{label} {spent[label]:.0f} s" for *_, label in STEPS))
        say(f"grader peak memory {peak / 2**20:.0f} MB (VmHWM of its own process, not the "
            "kernels')")
        for name in sorted(n for n in reports if n.startswith("hostile")):
            say(f"  {name}: {reports[name]['score']:g} / {full:g} in {each.get(name, 0):.0f} s; "
                f"{notes(reports[name]) or 'no notes'}")
        guaranteed = 600 * total / args.jobs
        say(f"bound: at most {guaranteed:.0f} s plus the reference run (each submission's "
            f"600 s wall limit over {args.jobs} job slots)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if str(args.summary) != "-":
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(wrapped(lines))
        print(f"wrote {args.summary}")


if __name__ == "__main__":
    main()
