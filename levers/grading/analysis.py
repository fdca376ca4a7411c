"""Score a run, static analysis included, in a child process with its own limits.

Reading the student's code (`levers.grading.static`) costs time and memory in proportion to
it, and the grader holds every report of the batch: a notebook crafted to be slow to read must
not stall the other ``--jobs`` slot (the event loop) or exhaust the grader. So the scoring of one
submission runs in a forked child with an address-space and a CPU-time limit, waited for
without blocking the event loop and killed at the submission's deadline; only its result, a few
kilobytes, comes back.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import resource
import signal
import tempfile
import traceback
from pathlib import Path

from levers.grading.assemble import Assembled
from levers.grading.execute import Execution
from levers.grading.score import CheckResult, Report, renumber, score
from levers.grading.spec import Lab
from levers.grading.static import tampering

MEMORY = 1 << 30  # bytes the analysis may add to the grader's own address space


class AnalysisError(Exception):
    """The analysis did not finish within its limits."""


def _score(lab: Lab, assembled: Assembled, ran: Execution, ref: dict[str, object],
           student: str, seed: int, hidden: bool) -> tuple[list[CheckResult], list[str]]:
    report = score(lab, assembled, ran, ref, student, seed)
    code = [(i, s) for i, _, s in assembled.student_sources()]
    instructor = [c.source for c, o in zip(assembled.notebook.cells, assembled.origin,
                                           strict=True) if o == "instructor"]
    suspicious = renumber(tampering(code, instructor), assembled)
    if suspicious and hidden:  # a public-only preview has no hidden check to say so
        report.notes.append("Suspicious code (it patches shared objects or defines "
                            "comparisons that can lie; it earns nothing, since hidden checks "
                            "compare values in the grader): "
                            + ", ".join(str(f) for f in suspicious[:5]))
    return report.checks, report.notes


def _vsize() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


async def analyse(lab: Lab, assembled: Assembled, ran: Execution, ref: dict[str, object],
                  student: str, seed: int, hidden: bool, timeout: float) -> Report:
    """`score` plus the tampering check, in a limited child process; raise `AnalysisError`.

    Parameters
    ----------
    lab, assembled, ran, ref, student, seed
        As for `levers.grading.score.score`.
    hidden : bool
        Whether the lab has hidden checks (then tampering is noted).
    timeout : float
        Seconds the analysis may take (the child is killed after them).

    Returns
    -------
    Report
        The submission's report, with the execution and the assembled notebook attached.
    """
    fd, out = tempfile.mkstemp(prefix="levers-analysis-")
    os.close(fd)
    limit = _vsize() + MEMORY
    pid = os.fork()
    if pid == 0:  # the child: no event loop, no sockets touched, never returns
        status = 1
        try:
            gc.disable()  # (nothing of the parent's, such as ZeroMQ sockets, is finalized here)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            cpu = max(1, int(timeout) + 1)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
            result = _score(lab, assembled, ran, ref, student, seed, hidden)
            Path(out).write_bytes(pickle.dumps(result))
            status = 0
        except MemoryError:
            status = 3
        except BaseException:  # the grader's own fault: say where, for the instructor
            traceback.print_exc()
        finally:
            os._exit(status)
    waiting = asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
    try:
        try:
            _, status = await asyncio.wait_for(asyncio.shield(waiting), max(timeout, 1))
        except TimeoutError:
            raise AnalysisError(f"it took longer than {max(timeout, 1):.0f} s") from None
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise AnalysisError("it needed more than the memory or time the grader allows"
                                if code in (3, -signal.SIGXCPU, -signal.SIGKILL)
                                else f"it stopped with status {code}")
        checks, notes = pickle.loads(Path(out).read_bytes())
    finally:  # (also when the grading of this submission is cancelled)
        if not waiting.done():
            os.kill(pid, signal.SIGKILL)
            await asyncio.shield(waiting)
        Path(out).unlink(missing_ok=True)
    return Report(student, seed, checks, notes, execution=ran, assembled=assembled,
                  seconds=ran.seconds)
