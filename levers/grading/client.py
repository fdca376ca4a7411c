"""nbclient with bounded memory (an output budget per cell and per notebook, no comms), and
the start and end of its sandboxed kernel.

Everything a kernel sends the grader either fits a budget or is dropped on arrival: the grader
holds every report until its batch ends, and one submission's flood must not cost the others.
Widget (comm) messages are dropped as they arrive, unread and counted (`Channel`), and ZeroMQ
cutting the output channel (one message over `MAX_MESSAGE`) is seen, not guessed.
"""

from __future__ import annotations

import asyncio
import json
import time
from queue import Empty

import nbformat
import zmq
from jupyter_client import AsyncKernelClient, AsyncKernelManager
from jupyter_client.channels import AsyncZMQSocketChannel
from nbclient import NotebookClient
from traitlets import Type
from zmq.utils.monitor import parse_monitor_message

from levers.grading.sandbox import MAX_MESSAGE, Limits, Sandbox

SHUTDOWN = 10  # seconds a kernel's shutdown may take (after its sandbox was killed)
CUT = (f"an output of the cell was over the {MAX_MESSAGE >> 20} MB one message may have, so "
       "ZeroMQ cut the kernel's output channel and the output was lost")
# A message's header and parent header are a few hundred bytes; larger ones are not read.
HEADER_BYTES = 64 << 10


class Channel(AsyncZMQSocketChannel):
    """The kernel's output (IOPub) channel: comm messages are dropped before they are read.

    A widget message is recognised by its header frame alone (a few hundred bytes): its content,
    however large, is neither parsed nor its signature checked (the kernel holds the key anyway,
    so a signature proves nothing of it), and so costs the grader a copy, not seconds of JSON.
    ``dropped`` counts, per request (the parent header's ``msg_id``), the messages dropped and
    their bytes; ``cuts`` counts the times ZeroMQ disconnected the kernel (a message over
    ``MAXMSGSIZE``), read from a monitor of the socket.
    """

    def __init__(self, socket: zmq.asyncio.Socket, session: object, loop: object = None):
        super().__init__(socket, session, loop)
        self.dropped: dict[str, list[int]] = {}
        self.cuts = 0
        self.monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    async def get_msg(self, timeout: float | None = None) -> dict:
        """The next message that is not a comm message (`queue.Empty` after ``timeout`` s)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = None if end is None else max(0, int((end - time.monotonic()) * 1000))
            if not await self.socket.poll(wait):
                raise Empty
            frames = await self.socket.recv_multipart()
            _, parts = self.session.feed_identities(frames)
            if not self._drop(parts):
                return self.session.deserialize(parts)

    def _drop(self, parts: list[bytes]) -> bool:
        """Whether ``parts`` is a comm message (or one with an unreadable header): counted."""
        kind, parent = "", ""
        if len(parts) >= 3 and len(parts[1]) <= HEADER_BYTES and len(parts[2]) <= HEADER_BYTES:
            try:
                kind = str(json.loads(parts[1]).get("msg_type", ""))
                parent = str(json.loads(parts[2]).get("msg_id", ""))
            except (ValueError, AttributeError, UnicodeDecodeError):
                kind = "unreadable"
        else:
            kind = "unreadable"
        if not kind.startswith("comm_") and kind != "unreadable":
            return False
        if parent in self.dropped or len(self.dropped) < 10_000:
            count = self.dropped.setdefault(parent, [0, 0])
            count[0] += 1
            count[1] += sum(map(len, parts))
        return True

    async def cut(self) -> int:
        """How often ZeroMQ cut the connection to the kernel so far."""
        while await self.monitor.poll(0):
            event = parse_monitor_message(await self.monitor.recv_multipart())
            self.cuts += event["event"] == zmq.EVENT_DISCONNECTED
        return self.cuts

    def close(self) -> None:
        """Close the socket and its monitor."""
        if not self.monitor.closed:
            self.socket.disable_monitor()
            self.monitor.close(linger=0)
        super().close()


class KernelClient(AsyncKernelClient):
    """A kernel client whose output channel is a `Channel`; remembers its last request."""

    iopub_channel_class = Type(Channel)
    last_request = ""

    def execute(self, *args: object, **kwargs: object) -> str:
        """Send an execute request; its ``msg_id``."""
        self.last_request = super().execute(*args, **kwargs)
        return self.last_request


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
        self.comms: dict[int, list[int]] = {}  # cell -> comm messages dropped, their bytes
        self.cuts: dict[int, int] = {}  # cell -> times ZeroMQ cut the output channel
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

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):  # noqa: ANN001, ANN201
        """nbclient's, and what the output channel dropped meanwhile (`comms`, `cuts`)."""
        channel = getattr(self.kc, "_iopub_channel", None)
        if not isinstance(channel, Channel):
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        cuts = await channel.cut()
        try:
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        finally:
            if got := channel.dropped.pop(getattr(self.kc, "last_request", ""), None):
                count = self.comms.setdefault(cell_index, [0, 0])
                count[0] += got[0]
                count[1] += got[1]
            if cut := await channel.cut() - cuts:
                self.cuts[cell_index] = self.cuts.get(cell_index, 0) + cut

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


def amount(size: int) -> str:
    """``size`` bytes in MB or GB (of 2**20 and 2**30 bytes).

    Examples
    --------
    >>> amount(60 * 63 << 20), amount(12 << 20)
    ('3.7 GB', '12 MB')
    """
    return f"{size / 2**30:.1f} GB" if size >= 1 << 30 else f"{size / 2**20:.0f} MB"


def notable(comms: list[int]) -> bool:
    """Whether a cell's dropped comm messages (``[count, bytes]``) are worth a note: a progress
    bar's few small updates are not, a flood is.

    Examples
    --------
    >>> notable([46, 40_000]), notable([60, 60 * 12 << 20]), notable([5_000, 5_000_000 // 2])
    (False, True, True)
    """
    return comms[1] >= 1 << 20 or comms[0] >= 1_000


def flood(comms: list[int]) -> str:
    """What the grader dropped of a cell's comm messages (``[count, bytes]``).

    Examples
    --------
    >>> flood([60, 60 * 60 << 20])
    'sent 60 widget messages (3.5 GB), which the grader drops unread'
    """
    plural = "s" if comms[0] != 1 else ""
    return (f"sent {comms[0]} widget message{plural} ({amount(comms[1])}), which the "
            "grader drops unread")


def new_client(nb: nbformat.NotebookNode, km: AsyncKernelManager, limits: Limits,
               iopub_timeout: float) -> BoundedClient:
    """A client for ``nb`` on kernel ``km`` with the limits' timeouts and output budget."""
    km.client_factory = KernelClient
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
            cell.outputs = fatal_outputs.get(i, [])
            said = [(fatal[i].error, f"{label(i)}: {fatal[i].error}.")]
        else:
            said = []
        if cell.cell_type == "code" and i not in fatal:
            if (comms := client.comms.get(i)) and notable(comms):
                said.append((f"this cell {flood(comms)}", f"{label(i)} {flood(comms)}."))
            if client.cuts.get(i):
                said.append((CUT, f"{label(i)}: {CUT}."))
        if (dropped := client.dropped.get(i)) and cell.cell_type == "code":
            said.append((f"output truncated: {dropped} more characters not shown",
                         f"{label(i)}: output truncated ({dropped} characters not shown)."))
        for text, note in said:
            cell.outputs.append(nbformat.v4.new_output("stream", name="stderr",
                                                       text=f"[grader] {text}\n"))
            notes.append(note)
    return notes
