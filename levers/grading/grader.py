"""Grade a batch: the reference once per seed, then every submission in its own sandbox.

`grade_batch` never stops because one submission is broken and never leaves one without a
report: a file that is not a notebook, a kernel that cannot start, even an unexpected error in
the grader itself becomes a report with 0 points and the reason. Only a broken *solution* (it
does not parse, a cell of it fails, or a probe fails on it) raises `LabError`, because then no
grade would mean anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from levers.grading.analysis import AnalysisError, analyse
from levers.grading.assemble import Assembled, assemble
from levers.grading.execute import execute
from levers.grading.guard import cell_hash
from levers.grading.sandbox import Limits, Sandbox, exposed, masked_paths
from levers.grading.score import Report, zero
from levers.grading.spec import Lab, LabError, SubmissionError, read_submission

# Of the whole-submission wall limit, this share is kept for the analysis after the run (its
# code, read in a child process: `levers.grading.analysis`), and at most ANALYSIS_SECONDS.
ANALYSIS_SHARE, ANALYSIS_SECONDS = 0.1, 60.0
# A last resort: a submission's grading is cancelled this long after its wall limit, whatever
# step it is in (every step has its own deadline within the limit).
GRACE = 15.0

_REFERENCE: dict[tuple[str, int], dict[str, object]] = {}


def probes(lab: Lab) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...], bool]]:
    """``(grade_id, probe source, ops, dtypes, in_place)`` of every hidden check, in order."""
    return [(c.grade_id, c.probe, q.ops, q.dtypes, c.in_place) for q in lab.questions
            for c in q.checks if c.kind == "hidden"]


def instructor_cells(assembled: Assembled) -> list[int]:
    """`cell_hash` of every instructor code cell: the lab's own code may use withheld functions."""
    return [cell_hash(c.source) for c, o in zip(assembled.notebook.cells, assembled.origin,
                                                 strict=True)
            if o == "instructor" and c.cell_type == "code"]


async def reference(lab: Lab, seed: int, limits: Limits, root: Path, mask: list[str],
                    files: dict[str, str]) -> dict[str, object]:
    """Run the solution and its probes once per (solution, seed); raise `LabError` on failure."""
    key = (hashlib.sha256(lab.path.read_bytes()).hexdigest(), seed)
    if key in _REFERENCE:
        return _REFERENCE[key]
    # The solution is trusted: it gets generous time, so a tight --timeout meant for students
    # cannot make the reference fail.
    limits = replace(limits, cell_timeout=max(limits.cell_timeout, 600),
                     wall_timeout=max(limits.wall_timeout, 3600))
    sandbox = Sandbox(root, limits, mask, files)
    try:
        done = assemble(lab, lab.notebook)
        ran = await execute(done.notebook, sandbox, limits, probes(lab), seed,
                            withheld=lab.all_withheld, instructor=instructor_cells(done))
    finally:
        sandbox.cleanup()
    failed = [f"cell {i + 1}: {c.status} {c.error}" for i, c in enumerate(ran.cells)
              if c.status != "ok"]
    failed += [f"{gid}: {p['error']}" for gid, p in ran.probes.items() if not p["ok"]]
    failed += [f"{gid}: the solution breaks its own rules ({p.get('removed') or p['violations']})"
               for gid, p in ran.probes.items() if p.get("violations") or p.get("removed")]
    if failed:
        raise LabError(f"the solution {lab.path.name} does not run cleanly in the sandbox: "
                       + "; ".join(failed[:5]) + (f" ({'; '.join(ran.notes)})"
                                                 if ran.notes else ""))
    _REFERENCE[key] = {gid: p["value"] for gid, p in ran.probes.items()}
    return _REFERENCE[key]


async def grade_one(lab: Lab, path: Path, student: str, seed: int, limits: Limits, root: Path,
                    mask: list[str], files: dict[str, str], ref: dict[str, object]) -> Report:
    """Grade one submission within its wall limit; every failure becomes a report."""
    try:
        return await asyncio.wait_for(_grade_one(lab, path, student, seed, limits, root, mask,
                                                 files, ref), limits.wall_timeout + GRACE)
    except TimeoutError:
        return zero(lab, student, seed, f"Grading stopped: the submission's time limit "
                                        f"({limits.wall_timeout:g} s) was reached.")


async def _grade_one(lab: Lab, path: Path, student: str, seed: int, limits: Limits,
                     root: Path, mask: list[str], files: dict[str, str],
                     ref: dict[str, object]) -> Report:
    start = time.monotonic()
    reserve = min(ANALYSIS_SECONDS, ANALYSIS_SHARE * limits.wall_timeout)
    try:
        if path.resolve() == lab.path.resolve() and path.absolute() != lab.path.absolute():
            raise SubmissionError("its path leads to the solution notebook through a link")
        nb = read_submission(path)
    except SubmissionError as exc:
        return zero(lab, student, seed, f"The submission could not be graded: {exc}.")
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, the batch goes on
        return zero(lab, student, seed, f"The submission could not be read: "
                                        f"{type(exc).__name__}: {exc}.")
    sandbox = None
    try:
        assembled = assemble(lab, nb)
        sandbox = Sandbox(root, limits, mask, files)
        ran = await execute(assembled.notebook, sandbox, limits, probes(lab), seed,
                            assembled.label, deadline=start + limits.wall_timeout - reserve,
                            withheld=lab.all_withheld, instructor=instructor_cells(assembled))
        sandbox.cleanup()  # the kernel's resources go back before the analysis runs
        report = await analyse(lab, assembled, ran, ref, student, seed, bool(probes(lab)),
                               start + limits.wall_timeout - time.monotonic())
        if ran.grader_fault:
            report.notes.insert(0, "GRADER FAULT: grade this submission again (see below).")
        return report
    except AnalysisError as exc:
        return zero(lab, student, seed, f"The submission's code could not be analysed within "
                                        f"the grader's limits ({exc}); nothing is scored.")
    except Exception as exc:  # noqa: BLE001 - the batch must go on; the reason is reported
        return zero(lab, student, seed, f"Internal grader error on this submission: "
                                        f"{type(exc).__name__}: {exc}")
    finally:
        if sandbox is not None:
            sandbox.cleanup()


def student_names(paths: list[Path]) -> list[str]:
    """Safe, unique folder names for the reports, from the files' names.

    The stem, with anything but letters, digits, ``.``, ``_`` and ``-`` replaced (a file named
    ``...ipynb`` must not write its report outside the output folder); the parent folder's name
    is prefixed when two files share a stem, and a counter when that is not enough.

    Examples
    --------
    >>> student_names([Path("a/lab.ipynb"), Path("b/lab.ipynb"), Path("ada lovelace.ipynb")])
    ['a-lab', 'b-lab', 'ada_lovelace']
    """
    def safe(name: str) -> str:
        name = re.sub(r"[^\w.-]", "_", name).lstrip(".-") or "submission"
        return name + "_" if name == "gradebook.csv" else name

    def short(name: str) -> str:  # a folder name must fit in 255 bytes (100 characters here)
        if len(name.encode()) <= 100:
            return name
        return name.encode()[:80].decode(errors="ignore") + "-" + hashlib.sha256(
            name.encode()).hexdigest()[:12]

    stems = [safe(p.stem) for p in paths]
    names = [short(f"{safe(p.parent.name)}-{s}" if stems.count(s) > 1 else s)
             for p, s in zip(paths, stems, strict=True)]
    taken: set[str] = set()
    unique = []
    for name in names:
        candidate, n = name, 1
        while candidate.lower() in taken:  # case-blind, for case-insensitive file systems
            n += 1
            candidate = f"{name}-{n}"
        taken.add(candidate.lower())
        unique.append(candidate)
    return unique


async def grade_batch(lab: Lab, submissions: list[Path], out: Path, seed: int, limits: Limits,
                      jobs: int, root: Path,
                      on_done: Callable[[Report], None] = lambda r: None,
                      names: list[str] | None = None) -> list[Report]:
    """Grade every submission, ``jobs`` at a time, against one reference run.

    Parameters
    ----------
    lab : Lab
        The parsed solution.
    submissions : list of Path
        Notebooks to grade.
    out : Path
        The output folder (hidden from the kernels, like the solution and the submissions).
    seed : int
        Probe seed for the whole batch.
    limits : Limits
        Sandbox limits.
    jobs : int
        Kernels running at once.
    root : Path
        Staging root for the kernels' folders.
    on_done : callable
        Called with each report as it completes (progress bar, writing files).
    names : list of str, optional
        The reports' folder names (default: `student_names` of the submissions).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}")
    keep = [Path(p) for p in exposed()] + [Path(sys.executable)]
    mask = masked_paths([lab.path, *submissions, out], keep)
    files = {Path(f).name: str(lab.path.parent / f) for f in lab.files}
    # Without hidden checks (a --public-only preview) there is nothing to compare against.
    ref = await reference(lab, seed, limits, root, mask, files) if probes(lab) else {}
    gate = asyncio.Semaphore(jobs)

    async def one(path: Path, student: str) -> Report:
        async with gate:
            report = await grade_one(lab, path, student, seed, limits, root, mask, files, ref)
        try:
            on_done(report)
        except Exception as exc:  # noqa: BLE001 - e.g. a report that cannot be written
            report = zero(lab, student, seed, f"Internal grader error while writing this "
                                              f"submission's report: {type(exc).__name__}: {exc}")
            try:
                on_done(report)
            except Exception as again:  # noqa: BLE001 - the gradebook row still says why
                print(f"levers grade: could not write the report of {student}: {again}",
                      file=sys.stderr)
        return report

    names = names or student_names(submissions)
    return list(await asyncio.gather(*(one(p, n) for p, n in zip(submissions, names,
                                                                     strict=True))))
