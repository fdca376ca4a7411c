"""Run an assembled notebook, then its probes, in a sandboxed kernel that may misbehave.

Cells run in order with a per-cell timeout and a deadline for the whole submission that every
step keeps: kernel starts (retried once, with twice the time, before the grader blames
itself), cells, probes and shutdowns. A cell
that times out or kills the kernel (``os._exit``, a crash, the memory limit) is recorded, the
kernel is discarded (its PID namespace takes every child process with it), and a fresh kernel
replays the notebook *without* that cell, so one bad cell costs only what depends on it. After
the last cell, each hidden check's probe is sent as code and its result read back as marked
JSON in display data of a private MIME type (`levers.grading.values`); the probe's own output
never reaches the feedback.
Each cell keeps at most ``Limits.output_chars`` characters of output, and the notebook
`BoundedClient.TOTAL_CELLS` times that.
"""

from __future__ import annotations

import asyncio
import copy
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nbformat
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from levers.grading.client import (
    CUT,
    SHUTDOWN,
    BoundedClient,
    boot,
    finish,
    flood,
    new_client,
    shutdown,
)
from levers.grading.sandbox import MAX_MESSAGE, Limits, Sandbox
from levers.grading.values import PROBE_MIME, ProbeDataError, parse_reply, probe_code

MAX_RESTARTS = 3
# Seconds to wait for a cell's last output after its reply (`_unfinished` says why it did not
# come: the channel cut, a flood of widget messages, or more output than the grader could read).
IOPUB_TIMEOUT = 10
PROBE_OUTPUT = MAX_MESSAGE * 3 // 4  # characters of a probe's reply (it must fit one message)
# The first code of every kernel: the lab's rules (`levers.grading.guard`), before student code.
PRELUDE = ("import levers.grading.guard\n"
           "levers.grading.guard.install({withheld!r}, {instructor!r})\n")


@dataclass
class CellRun:
    """How one cell ended: ``ok``, ``error``, ``timeout``, ``died``, ``not run``."""

    status: str = "not run"
    error: str = ""


@dataclass
class Execution:
    """Everything the scorer needs from one run."""

    notebook: nbformat.NotebookNode
    cells: list[CellRun]
    probes: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    grader_fault: bool = False  # a kernel could not start: the grading machine's fault


class _Restart(Exception):
    """The kernel is gone or stuck: replay the notebook in a fresh one."""


class _Stop(Exception):
    """Grading of this submission ends here (its time limit, or a kernel that cannot start)."""

    def __init__(self, note: str, fault: bool = False):
        super().__init__(note)
        self.note, self.fault = note, fault


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failing_line(error: dict) -> str:
    r"""The line IPython's traceback marks (``----> 4 assert ...``) in the cell that ran, or "".

    Examples
    --------
    >>> failing_line({"traceback": ["Traceback", "Cell In[3], line 2\n      1 x = 1\n"
    ...                             "----> 2 assert x == 2, f'x is {x}'\n"]})
    "line 2: assert x == 2, f'x is {x}'"
    """
    frames = [ANSI.sub("", str(t)) for t in error.get("traceback", []) if isinstance(t, str)]
    for frame in frames:  # the outermost frame, the cell's own, comes first
        for ln in frame.splitlines():
            if m := re.match(r"\s*-+>\s*(\d+)\s(.*)", ln):
                return f"line {m.group(1)}: {m.group(2).strip()}"[:300]
    return ""


def _error_text(cell: nbformat.NotebookNode, reply: dict) -> str:
    content = reply.get("content", {})
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    ename, evalue = (content.get("ename"), content.get("evalue")) if content.get("ename") else (
        (errors[-1].ename, errors[-1].evalue) if errors else ("an error", ""))
    text = (f"{ename}: {evalue}" if evalue else str(ename))[:500]
    where = failing_line(errors[-1]) if errors else ""
    return f"{text} (at {where})" if where else text


async def execute(nb: nbformat.NotebookNode, sandbox: Sandbox, limits: Limits,
                  probes: list[tuple], seed: int,
                  label: Callable[[int], str] = lambda i: f"Cell {i + 1}",
                  deadline: float | None = None, withheld: list[str] | None = None,
                  instructor: list[int] | None = None) -> Execution:
    """Execute ``nb`` and then ``probes`` (``(grade_id, probe source)``) with ``seed``.

    Parameters
    ----------
    nb : NotebookNode
        The assembled notebook (not modified).
    sandbox : Sandbox
        Where and how the kernel runs.
    limits : Limits
        Timeouts and output budget.
    probes : list of (str, str) or (str, str, ops, dtypes[, in_place])
        Hidden checks to run after the last cell, with the operator rules observed while each
        runs (`levers.grading.guard.observe`); with ``in_place`` a check runs right after its
        own (placeholder) cell instead, on the state the question's cells left, so that later
        scratch cells change nothing.
    seed : int
        Passed to every ``probe(seed)``.
    label : callable
        How notes name cell ``i`` (the student's own numbering, `Assembled.label`).
    deadline : float, optional
        ``time.monotonic()`` by which everything, shutdowns included, is over (default: now
        plus ``limits.wall_timeout``).
    withheld : list of str, optional
        Library functions replaced by raising stubs before the first cell
        (`levers.grading.guard.install`).
    instructor : list of int, optional
        `levers.grading.guard.cell_hash` of the instructor's cells, which may still call them.

    Returns
    -------
    Execution
        The executed notebook, each cell's status, each probe's reply and notes.
    """
    start = time.monotonic()
    probes = [(p[0], p[1], *(tuple(p[2:4]) if len(p) > 2 else ((), ())),
               bool(p[4]) if len(p) > 4 else False) for p in probes]
    run_ = _Run(sandbox, limits, probes, seed,
                deadline if deadline is not None else start + limits.wall_timeout)
    run_.prelude = PRELUDE.format(withheld=list(withheld or []),
                                  instructor=list(instructor or []))
    restarts, fault = 0, False
    while True:
        run = copy.deepcopy(nb)
        cells = [CellRun() for _ in run.cells]
        client = run_.client(run)
        try:
            await run_.start(client, first=restarts == 0)
            await run_.setup(client, run)
            await run_.cells(client, run, cells)
            await run_.probe(client, run)
            break
        except _Restart:
            restarts += 1
            if restarts > MAX_RESTARTS or run_.left() <= 1:
                run_.notes.append("Grading stopped: too many restarts or the time limit was "
                                  "reached.")
                break
        except _Stop as stop:
            run_.notes.append(stop.note)
            fault = stop.fault
            break
        finally:
            await shutdown(client, sandbox)
            run_.notes += [n for n in sandbox.notes() if n not in run_.notes]
            cell_notes = finish(run, client, cells, run_.fatal, run_.fatal_outputs, label)
    notes = run_.notes + cell_notes + [f"{label(i)}: {why}." for i, why in run_.limit_notes]
    hits = sandbox.limit_hits()  # what no cell was blamed for (a process killed in between)
    if hits["memory"] > run_.blamed["memory"]:
        notes.append(f"The sandbox used all of its {limits.memory >> 20} MB of memory: "
                     f"{hits['memory'] - run_.blamed['memory']} process(es) killed.")
    for gid, *_ in probes:
        run_.results.setdefault(gid, {"ok": False,
                                      "error": "not run: the notebook did not finish"})
    return Execution(run, cells, run_.results, notes, time.monotonic() - start, fault)


class _Run:
    """The state of one submission's run across restarts: fatal cells, probe results, notes."""

    def __init__(self, sandbox: Sandbox, limits: Limits, probes: list[tuple],
                 seed: int, deadline: float):
        self.sandbox, self.limits, self.probes, self.seed = sandbox, limits, probes, seed
        self.deadline = deadline
        self.fatal: dict[int, CellRun] = {}
        self.fatal_outputs: dict[int, list] = {}
        self.results: dict[str, dict] = {}
        self.notes: list[str] = []
        self.limit_notes: list[tuple[int, str]] = []
        self.replies: dict[int, dict] = {}
        self.blamed = {"memory": 0, "pids": 0}  # limit hits already put down to a cell
        self.prelude = ""

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def client(self, run: nbformat.NotebookNode) -> BoundedClient:
        client = new_client(run, self.sandbox.kernel_manager(), self.limits, IOPUB_TIMEOUT)
        self.replies = {}

        async def keep(cell_index: int, execute_reply: dict, **_: object) -> None:
            content = execute_reply.get("content", {})  # only what `_error_text` reads, cut
            self.replies[cell_index] = {"content": {
                "status": content.get("status"), "ename": str(content.get("ename", ""))[:200],
                "evalue": str(content.get("evalue", ""))[:500]}}

        client.on_cell_executed = keep
        return client

    async def start(self, client: BoundedClient, first: bool) -> None:
        """Start the kernel; once more with twice the time; then it is the grader's fault."""
        errors = []
        for wait in (self.limits.start_timeout, 2 * self.limits.start_timeout):
            wait = min(wait, self.left() - 1)
            if wait < 1:
                raise _Stop("Grading stopped: the submission's time limit was reached "
                            "before a kernel could start.")
            client.startup_timeout = int(wait)
            try:
                await asyncio.wait_for(boot(client), wait + 5)
            except Exception as exc:  # noqa: BLE001 - whatever it was, a retry may work
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}"
                              if str(exc) else type(exc).__name__)
                await shutdown(client, self.sandbox)
                client.km, client.kc = self.sandbox.kernel_manager(), None
                continue
            self.sandbox.seal()
            return
        why = "; ".join(errors + ([f"sandbox: {e}"] if (e := self.sandbox.start_error()) else []))
        raise _Stop(f"The grader could not start a kernel (twice, the second time waiting "
                    f"{2 * self.limits.start_timeout:g} s: {why}). This is a fault of the "
                    "grading machine, not of the submission: grade it again."
                    + ("" if first else " (after a restart; cells before it ran)"), fault=True)

    async def setup(self, client: BoundedClient, run: nbformat.NotebookNode) -> None:
        """Install the lab's rules in a fresh kernel, before any cell of the submission."""
        cell = nbformat.v4.new_code_cell(self.prelude)
        run.cells.append(cell)
        # It imports torch and the library: the kernel's start-up time, not a cell's.
        wait = max(self.limits.cell_timeout, self.limits.start_timeout)
        client.timeout = int(max(1, min(wait, self.left() - SHUTDOWN)))
        try:
            await _send(client, cell, len(run.cells) - 1, store_history=False)
        except Exception as exc:  # noqa: BLE001 - a kernel that cannot take the rules
            raise _Stop(f"The grader could not set up the lab's rules in the kernel "
                        f"({type(exc).__name__}): grade it again.", fault=True) from None
        finally:
            run.cells.remove(cell)
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            raise _Stop(f"The grader could not set up the lab's rules in the kernel "
                        f"({errors[0].ename}: {errors[0].evalue}).", fault=True)

    async def cells(self, client: BoundedClient, run: nbformat.NotebookNode,
                    cells: list[CellRun]) -> None:
        for i, cell in enumerate(run.cells):
            if i in self.fatal:
                continue
            if cell.cell_type != "code" or not cell.source.strip():
                cells[i].status = "ok"
                continue
            remaining = self.left() - SHUTDOWN
            if remaining <= 1:
                cells[i] = CellRun("not run", "the submission's time limit was reached")
                continue
            walled = remaining < self.limits.cell_timeout
            client.timeout = int(max(1, min(self.limits.cell_timeout, remaining)))
            await self._cell(client, cell, i, walled)
            reply = self.replies.get(i, {})
            status = reply.get("content", {}).get("status", "error")
            cells[i] = (CellRun("ok") if status == "ok"
                        else CellRun("error", _error_text(cell, reply)))
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            here = [p for p in self.probes if p[0] == gid and p[4]]
            if here:
                limit = client.limit
                try:
                    await self.probe(client, run, here)
                finally:
                    client.limit, client.probing = limit, False

    async def _cell(self, client: BoundedClient, cell: nbformat.NotebookNode, i: int,
                    walled: bool) -> None:
        before = self.sandbox.limit_hits()
        try:
            await _send(client, cell, i)
        except (CellTimeoutError, TimeoutError) as exc:
            if "IOPub" in str(exc):
                what = _unfinished(client, i)
            elif walled:
                self.fatal[i] = CellRun("timeout", "the submission's time limit "
                                        f"({self.limits.wall_timeout:g} s) was reached while "
                                        "this cell ran")
                self.fatal_outputs[i] = list(cell.get("outputs", []))
                raise _Stop("Grading stopped: the submission's time limit was reached.") from None
            else:
                what = f"the cell ran longer than {client.timeout} s and was stopped"
            self.fatal[i] = CellRun("timeout", f"{what}; it was skipped on a fresh kernel")
        except DeadKernelError:
            self.fatal[i] = CellRun("died", f"{self._death(before)}; it was skipped on a fresh "
                                    "kernel")
        except Exception as exc:  # noqa: BLE001 - e.g. the kernel's messages became unreadable
            self.fatal[i] = CellRun("died", f"the kernel stopped answering properly after this "
                                    f"cell ({type(exc).__name__}: {str(exc)[:200]}); it was "
                                    "skipped on a fresh kernel")
        else:
            self._limits_hit(i, before)
            return
        self.fatal_outputs[i] = list(cell.get("outputs", []))
        raise _Restart

    def _death(self, before: dict[str, int]) -> str:
        """Why the kernel died, as exactly as the sandbox's cgroup can tell."""
        hits = self.blamed = self.sandbox.limit_hits()
        if hits["memory"] > before["memory"]:
            return (f"the sandbox used all of its {self.limits.memory >> 20} MB of memory and "
                    "the kernel was killed")
        if hits["pids"] > before["pids"]:
            return (f"the kernel died after the sandbox reached its limit of "
                    f"{self.limits.processes} processes and threads")
        return "the kernel died while running this cell (exit, crash or memory limit)"

    def _limits_hit(self, i: int, before: dict[str, int]) -> None:
        hits = self.blamed = self.sandbox.limit_hits()
        if hits["pids"] > before["pids"]:
            self.limit_notes.append((i, f"reached the sandbox's limit of "
                                        f"{self.limits.processes} processes and threads (new "
                                        "ones were refused)"))
        if hits["memory"] > before["memory"]:
            self.limit_notes.append((i, f"a process was killed: the sandbox used all of its "
                                        f"{self.limits.memory >> 20} MB of memory"))

    async def probe(self, client: BoundedClient, run: nbformat.NotebookNode,
                    probes: list[tuple] | None = None) -> None:
        client.limit, client.probing = PROBE_OUTPUT, True
        for gid, source, ops, dtypes, _ in self.probes if probes is None else probes:
            if gid in self.results:
                continue
            remaining = self.left() - SHUTDOWN
            if remaining <= 1:
                self.results[gid] = {"ok": False, "error": "not run: the time limit was reached"}
                continue
            marker = f"@@levers-probe-{secrets.token_hex(8)}@@"
            code = probe_code(source, self.seed, marker, ops, dtypes)
            self.results[gid] = await self._one_probe(client, run, gid, code, marker, remaining)

    async def _one_probe(self, client: BoundedClient, run: nbformat.NotebookNode, gid: str,
                         code: str, marker: str, remaining: float) -> dict:
        probe_cell = nbformat.v4.new_code_cell(code)
        run.cells.append(probe_cell)  # nbclient indexes cells; removed again below
        index = len(run.cells) - 1
        before = self.sandbox.limit_hits()
        client.timeout = int(max(1, min(self.limits.cell_timeout, remaining)))
        try:
            await _send(client, probe_cell, index, store_history=False)
        except (CellTimeoutError, TimeoutError) as exc:
            if client.cuts.get(index):
                why = f"its result was larger than the {MAX_MESSAGE >> 20} MB a check may send"
            elif "IOPub" in str(exc):
                why = _unfinished(client, index).replace("the cell", "the check")
            else:
                why = f"timed out after {client.timeout} s"
            self.results[gid] = {"ok": False, "error": why}
            raise _Restart from None
        except DeadKernelError:
            self.results[gid] = {"ok": False, "error": self._death(before)
                                 .replace("running this cell", "checking this question")}
            raise _Restart from None
        except Exception as exc:  # noqa: BLE001 - the kernel's messages became unreadable
            self.results[gid] = {"ok": False, "error": "the kernel stopped answering properly "
                                 f"while checking this question ({type(exc).__name__})"}
            raise _Restart from None
        finally:
            run.cells.remove(probe_cell)
        if client.dropped.pop(index, 0):
            return {"ok": False, "error": f"its result was larger than the {PROBE_OUTPUT >> 20} "
                                          "MB a check may return"}
        text = "\n".join(str(o.get("data", {}).get(PROBE_MIME, "")) for o in probe_cell.outputs
                         if o.get("output_type") == "display_data")
        try:
            return parse_reply(text, marker)
        except ProbeDataError as exc:
            return {"ok": False, "error": str(exc)}
        except (ValueError, TypeError, RecursionError) as exc:  # forged, malformed values
            return {"ok": False, "error": f"the check's values could not be read "
                                          f"({type(exc).__name__})"}


def _unfinished(client: BoundedClient, i: int) -> str:
    """Why cell ``i``'s output did not end within `IOPUB_TIMEOUT` of its reply, as far as seen."""
    if client.cuts.get(i):
        return CUT.replace("an output of the cell", "one of its outputs")
    if comms := client.comms.get(i):
        return (f"the cell {flood(comms)}, and they had not stopped {IOPUB_TIMEOUT} s after "
                "the cell ended")
    return f"its output had not ended {IOPUB_TIMEOUT} s after the cell ended"


async def _send(client: BoundedClient, cell: nbformat.NotebookNode, index: int,
                **kwargs: object) -> None:
    """Run one cell; nbclient's own timeouts apply, and this one if they do not fire."""
    await asyncio.wait_for(client.async_execute_cell(cell, index, **kwargs),
                           client.timeout + IOPUB_TIMEOUT + 5)
