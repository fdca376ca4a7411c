"""nbclient with bounded memory (an output budget per cell and per notebook, no comms), and
the start and end of its sandboxed kernel.

Everything a kernel sends the grader either fits a budget or is dropped on arrival: the grader
holds every report until its batch ends, and one submission's flood must not cost the others.
"""

from __future__ import annotations

import asyncio

import nbformat
from jupyter_client import AsyncKernelManager
from nbclient import NotebookClient

from levers.grading.sandbox import Limits, Sandbox

SHUTDOWN = 10  # seconds a kernel's shutdown may take (after its sandbox was killed)


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


class BoundedClient(NotebookClient):
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

    def handle_comm_msg(self, outs, msg, cell_index):  # noqa: ANN001, ANN201
        return None  # no widget state, no output widgets: nothing a kernel sends is kept

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


def new_client(nb: nbformat.NotebookNode, km: AsyncKernelManager, limits: Limits,
               iopub_timeout: float) -> BoundedClient:
    """A client for ``nb`` on kernel ``km`` with the limits' timeouts and output budget."""
    return BoundedClient(nb, km=km, timeout=limits.cell_timeout, allow_errors=True,
                         startup_timeout=int(limits.start_timeout), limit=limits.output_chars,
                         record_timing=False, shutdown_kernel="immediate",
                         store_widget_state=False,
                         coalesce_streams=True,  # chunking varies between runs; text does not
                         raise_on_iopub_timeout=True, iopub_timeout=iopub_timeout)


async def boot(client: BoundedClient) -> None:
    """Start the kernel and wait until it answers."""
    await client.async_start_new_kernel()
    await client.async_start_new_kernel_client()


async def shutdown(client: BoundedClient, sandbox: Sandbox) -> None:
    """End the kernel at once: everything in its sandbox is killed, then the manager told."""
    sandbox.stop()
    try:
        if client.kc is not None:
            client.kc.stop_channels()
        if client.km is not None and client.km.has_kernel:
            await asyncio.wait_for(client.km.shutdown_kernel(now=True), SHUTDOWN)
    except Exception:  # noqa: BLE001 - a dead kernel may fail to shut down; it is gone anyway
        pass


def finish(run, client, cells, fatal, fatal_outputs, label) -> list[str]:  # noqa: ANN001
    """Put the grader's note on each skipped or truncated cell's outputs; the notes."""
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
