"""Run an assembled notebook, then its probes, in a sandboxed kernel that may misbehave.

Cells run in order with a per-cell timeout and a deadline for the whole submission. A cell
that times out or kills the kernel (``os._exit``, a crash, the memory limit) is recorded, the
kernel is discarded (its PID namespace takes every child process with it), and a fresh kernel
replays the notebook *without* that cell, so one bad cell costs only what depends on it. After
the last cell, each hidden check's probe is sent as code and its result read back as marked
JSON in display data of a private MIME type (`levers.grading.values`); the probe's own output
never reaches the feedback.
Each cell keeps at most ``Limits.output_chars`` characters of output, and the notebook
`_Client.TOTAL_CELLS` times that.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from levers.grading.sandbox import MAX_MESSAGE, Limits, Sandbox
from levers.grading.values import PROBE_MIME, ProbeDataError, parse_reply, probe_code

MAX_RESTARTS = 3
# Seconds to wait for a cell's last output after its reply; longer means the output channel
# was cut (ZeroMQ drops a kernel that sends one message over MAX_MESSAGE).
IOPUB_TIMEOUT = 10
PROBE_OUTPUT = 64 << 20


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


class _Restart(Exception):
    """The kernel is gone or stuck: replay the notebook in a fresh one."""


def _size(content: dict) -> int:
    """Characters of an output message: text, data, metadata, and an error's parts."""
    try:
        parts = [content.get("text", ""), content.get("name", ""), content.get("ename", ""),
                 content.get("evalue", ""),
                 *content.get("traceback", []), *content.get("data", {}).values(),
                 *content.get("metadata", {}).values()]
        return sum(len(p) if isinstance(p, str) else len(str(p)) for p in parts)
    except Exception:  # noqa: BLE001 - a hand-made message of the wrong shape: never kept
        return 1 << 62


class _Client(NotebookClient):
    """nbclient with a per-cell output budget (an output flood cannot fill memory or reports).

    Every kind of output counts: streams, displays with their metadata, errors (kept, since the
    status needs them, but cut to `ERROR_CHARS`) and updates of earlier displays. While probes
    run (``probing``), a display update from the kernel changes nothing: probe activity must not
    reach the feedback through an earlier cell's output.
    """

    ERROR_CHARS = 4000
    #: The whole notebook keeps at most this many cells' worth of output (a notebook of many
    #: cells cannot add up to a flood either).
    TOTAL_CELLS = 50

    def __init__(self, *args: object, limit: int, **kwargs: object):
        super().__init__(*args, **kwargs)
        self.limit, self.used, self.dropped = limit, {}, {}
        self.total = 0
        self.current, self.probing = -1, False

    def _admit(self, cell_index: int, size: int) -> bool:
        over_total = not self.probing and self.total + size > self.TOTAL_CELLS * self.limit
        if over_total or self.used.get(cell_index, 0) + size > self.limit:
            self.dropped[cell_index] = self.dropped.get(cell_index, 0) + size
            return False
        self.used[cell_index] = self.used.get(cell_index, 0) + size
        if not self.probing:
            self.total += size
        return True

    def process_message(self, msg, cell, cell_index):  # noqa: ANN001, ANN201
        self.current = cell_index
        return super().process_message(msg, cell, cell_index)

    def _update_display_id(self, display_id, msg):  # noqa: ANN001, ANN202
        if self.probing or not self._admit(self.current, _size(msg.get("content", {}))):
            return
        super()._update_display_id(display_id, msg)

    def output(self, outs, msg, display_id, cell_index):  # noqa: ANN001, ANN201
        content = msg.get("content", {})
        if msg["msg_type"] == "stream" and content.get("name") not in ("stdout", "stderr"):
            content["name"] = "stdout"  # a stream's name is the kernel's to choose, and unbounded
        if msg["msg_type"] == "error":  # kept, since the cell's status needs it, but cut short
            content["ename"] = str(content.get("ename", ""))[:200]
            content["evalue"] = str(content.get("evalue", ""))[:self.ERROR_CHARS]
            trace = "\n".join(map(str, content.get("traceback", [])))
            content["traceback"] = [trace[-self.ERROR_CHARS:]] if trace else []
            if not self._admit(cell_index, _size(content)):
                content["evalue"], content["traceback"] = "", []
        elif not self._admit(cell_index, _size(content)):
            return None
        return super().output(outs, msg, display_id, cell_index)


def _error_text(cell: nbformat.NotebookNode, reply: dict) -> str:
    content = reply.get("content", {})
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    ename, evalue = (content.get("ename"), content.get("evalue")) if content.get("ename") else (
        (errors[-1].ename, errors[-1].evalue) if errors else ("an error", ""))
    return (f"{ename}: {evalue}" if evalue else str(ename))[:500]


async def execute(nb: nbformat.NotebookNode, sandbox: Sandbox, limits: Limits,
                  probes: list[tuple[str, str]], seed: int,
                  label: Callable[[int], str] = lambda i: f"Cell {i + 1}") -> Execution:
    """Execute ``nb`` and then ``probes`` (``(grade_id, probe source)``) with ``seed``.

    Parameters
    ----------
    nb : NotebookNode
        The assembled notebook (not modified).
    sandbox : Sandbox
        Where and how the kernel runs.
    limits : Limits
        Timeouts and output budget.
    probes : list of (str, str)
        Hidden checks to run after the last cell.
    seed : int
        Passed to every ``probe(seed)``.
    label : callable
        How notes name cell ``i`` (the student's own numbering, `Assembled.label`).

    Returns
    -------
    Execution
        The executed notebook, each cell's status, each probe's reply and notes.
    """
    start = time.monotonic()
    deadline = start + limits.wall_timeout
    fatal: dict[int, CellRun] = {}
    fatal_outputs: dict[int, list] = {}
    results: dict[str, dict] = {}
    notes: list[str] = []
    restarts = 0
    while True:
        run = copy.deepcopy(nb)
        cells = [CellRun() for _ in run.cells]
        client = _Client(run, km=sandbox.kernel_manager(), timeout=limits.cell_timeout,
                         allow_errors=True, startup_timeout=60, limit=limits.output_chars,
                         record_timing=False, shutdown_kernel="immediate",
                         coalesce_streams=True,  # chunking varies between runs; text does not
                         raise_on_iopub_timeout=True, iopub_timeout=IOPUB_TIMEOUT)
        replies: dict[int, dict] = {}

        async def keep(cell_index: int, execute_reply: dict, **_: object) -> None:
            content = execute_reply.get("content", {})  # only what `_error_text` reads, cut short
            replies[cell_index] = {"content": {  # noqa: B023
                "status": content.get("status"), "ename": str(content.get("ename", ""))[:200],
                "evalue": str(content.get("evalue", ""))[:500]}}

        client.on_cell_executed = keep
        try:
            await _run(client, run, cells, replies, fatal, fatal_outputs, results, probes,
                       seed, limits, deadline)
            break
        except _Restart:
            restarts += 1
            if restarts > MAX_RESTARTS or time.monotonic() >= deadline:
                notes.append("Grading stopped: too many restarts or the time limit was reached.")
                break
        except RuntimeError as exc:  # the kernel never came up
            notes.append(f"The kernel could not start: {exc}")
            break
        finally:
            await _shutdown(client)
            notes += [n for n in sandbox.notes() if n not in notes]
            cell_notes = _finish(run, client, cells, fatal, fatal_outputs, label)
    notes += cell_notes
    for gid, _ in probes:
        results.setdefault(gid, {"ok": False, "error": "not run: the notebook did not finish"})
    return Execution(run, cells, results, notes, time.monotonic() - start)


async def _run(client, run, cells, replies, fatal, fatal_outputs, results, probes, seed, limits,
               deadline) -> None:  # noqa: ANN001
    await client.async_start_new_kernel()
    await client.async_start_new_kernel_client()
    for i, cell in enumerate(run.cells):
        if i in fatal:
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            cells[i].status = "ok"
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 1:
            cells[i] = CellRun("not run", "the submission's time limit was reached")
            continue
        client.timeout = int(max(1, min(limits.cell_timeout, remaining)))
        await _cell(client, cell, i, cells, replies, fatal, fatal_outputs, limits)
        reply = replies.get(i, {})
        status = reply.get("content", {}).get("status", "error")
        cells[i] = CellRun("ok") if status == "ok" else CellRun("error", _error_text(cell, reply))
    client.limit, client.probing = PROBE_OUTPUT, True
    for gid, source in probes:
        if gid in results:
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 1:
            results[gid] = {"ok": False, "error": "not run: the time limit was reached"}
            continue
        marker = f"@@levers-probe-{secrets.token_hex(8)}@@"
        probe_cell = nbformat.v4.new_code_cell(probe_code(source, seed, marker))
        run.cells.append(probe_cell)  # nbclient indexes cells; removed again below
        try:
            client.timeout = int(max(1, min(limits.cell_timeout, remaining)))
            await client.async_execute_cell(probe_cell, len(run.cells) - 1, store_history=False)
        except CellTimeoutError:
            results[gid] = {"ok": False, "error": f"timed out after {client.timeout} s"}
            raise _Restart from None
        except DeadKernelError:
            results[gid] = {"ok": False, "error": "the kernel died while checking this question"}
            raise _Restart from None
        except Exception as exc:  # noqa: BLE001 - the kernel's messages became unreadable
            results[gid] = {"ok": False, "error": "the kernel stopped answering properly while "
                                                  f"checking this question ({type(exc).__name__})"}
            raise _Restart from None
        finally:
            run.cells.remove(probe_cell)
        text = "\n".join(str(o.get("data", {}).get(PROBE_MIME, "")) for o in probe_cell.outputs
                         if o.get("output_type") == "display_data")
        try:
            results[gid] = parse_reply(text, marker)
        except ProbeDataError as exc:
            results[gid] = {"ok": False, "error": str(exc)}
        except (ValueError, TypeError, RecursionError) as exc:  # forged, malformed values
            results[gid] = {"ok": False, "error": f"the check's values could not be read "
                                                  f"({type(exc).__name__})"}


async def _cell(client, cell, i, cells, replies, fatal, fatal_outputs, limits) -> None:  # noqa: ANN001
    try:
        await client.async_execute_cell(cell, i)
    except CellTimeoutError as exc:
        what = ("its output broke the kernel's output channel (one output over "
                f"{MAX_MESSAGE >> 20} MB?)" if "IOPub" in str(exc) else
                f"the cell ran longer than {client.timeout} s and was stopped")
        fatal[i] = CellRun("timeout", f"{what}; it was skipped on a fresh kernel")
    except DeadKernelError:
        fatal[i] = CellRun("died", "the kernel died while running this cell (exit, crash or "
                                   "memory limit); it was skipped on a fresh kernel")
    except Exception as exc:  # noqa: BLE001 - e.g. the kernel's messages became unreadable
        fatal[i] = CellRun("died", f"the kernel stopped answering properly after this cell "
                                   f"({type(exc).__name__}: {str(exc)[:200]}); it was skipped "
                                   "on a fresh kernel")
    else:
        return
    fatal_outputs[i] = list(cell.get("outputs", []))
    raise _Restart


async def _shutdown(client: NotebookClient) -> None:
    try:
        if client.kc is not None:
            client.kc.stop_channels()
        if client.km is not None and client.km.has_kernel:
            await asyncio.wait_for(client.km.shutdown_kernel(now=True), timeout=30)
    except Exception:  # noqa: BLE001 - a dead kernel may fail to shut down; it is gone anyway
        pass


def _finish(run, client, cells, fatal, fatal_outputs, label) -> list[str]:  # noqa: ANN001
    notes = []
    for i, cell in enumerate(run.cells):
        if i in fatal:
            cells[i] = fatal[i]
            note = f"[grader] {fatal[i].error}\n"
            cell.outputs = fatal_outputs.get(i, []) + [
                nbformat.v4.new_output("stream", name="stderr", text=note)]
            notes.append(f"{label(i)}: {fatal[i].error}.")
        dropped = client.dropped.get(i)
        if dropped and cell.cell_type == "code":
            cell.outputs.append(nbformat.v4.new_output(
                "stream", name="stderr",
                text=f"[grader] output truncated: {dropped} more characters not shown\n"))
            notes.append(f"{label(i)}: output truncated ({dropped} characters not shown).")
    return notes
