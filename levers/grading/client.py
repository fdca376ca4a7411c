"""nbclient with bounded memory: an output budget per cell and per notebook, and no comms.

Everything a kernel sends the grader either fits a budget or is dropped on arrival: the grader
holds every report until its batch ends, and one submission's flood must not cost the others.
"""

from __future__ import annotations

from nbclient import NotebookClient


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
