"""One control group per sandboxed kernel: memory, processes and CPU share for all of it.

Resource limits (``setrlimit``) count per process: sixty-four processes of 4 GiB each are still
"within" a 4 GiB ``RLIMIT_AS``. A control group counts the whole sandbox: every process the
kernel starts joins it (the launcher enters it before it execs anything), so the memory limit,
the process limit and the CPU share hold for the sandbox as a whole, and the grader can tell
afterwards whether the kernel was killed for memory or refused a process.

Both hierarchies are handled: cgroup v2 (``/sys/fs/cgroup/cgroup.controllers``; controllers
``memory``, ``pids``, ``cpu`` enabled in the grader's own group) and cgroup v1 (one hierarchy per
controller, ``/sys/fs/cgroup/<controller>/``). The group is made inside the grader's own group
of each hierarchy, so an outer limit (a container's, a CI job's) still holds. Where neither can
be written, `Cgroup.create` says why and the sandbox keeps its per-process limits only.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
CPU_SHARE = 1024  # v1 cpu.shares; v2 cpu.weight 100: one share, whatever it forks


def _own(controller: str, table: str) -> str | None:
    """The grader's group in a hierarchy, from ``/proc/self/cgroup`` (``""`` for v2)."""
    for line in table.splitlines():
        _, names, path = line.split(":", 2)
        if (controller == "" and names == "") or controller in names.split(","):
            return path
    return None


@dataclass
class Cgroup:
    """A sandbox's control group(s): one folder per hierarchy (v2: one folder).

    Parameters
    ----------
    dirs : dict of str to Path
        Controller (``"v2"`` for the unified hierarchy) -> the group's folder.
    """

    dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def v2(self) -> bool:
        return "v2" in self.dirs

    @classmethod
    def create(cls, memory: int, pids: int) -> tuple[Cgroup | None, str]:
        """A fresh group limited to ``memory`` bytes and ``pids`` tasks, or None and why not."""
        name = f"levers-{secrets.token_hex(6)}"
        try:
            table = Path("/proc/self/cgroup").read_text()
        except OSError as exc:
            return None, f"no cgroups ({exc})"
        group = cls()
        try:
            if (ROOT / "cgroup.controllers").exists():
                group._make_v2(name, table, memory, pids)
            else:
                group._make_v1(name, table, memory, pids)
        except OSError as exc:
            group.remove()
            return None, f"cgroups not writable ({exc.strerror or exc}: {exc.filename or ''})"
        return group, ""

    def _make_v2(self, name: str, table: str, memory: int, pids: int) -> None:
        parent = ROOT / (_own("", table) or "/").lstrip("/")
        wanted = set(CONTROLLERS) - set((parent / "cgroup.subtree_control").read_text().split())
        if wanted:  # fails (EBUSY) when the grader's own group holds processes: see the guide
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        folder = parent / name
        folder.mkdir()
        self.dirs["v2"] = folder
        (folder / "memory.max").write_text(str(memory))
        if (folder / "memory.swap.max").exists():
            (folder / "memory.swap.max").write_text("0")
        (folder / "pids.max").write_text(str(pids))
        (folder / "cpu.weight").write_text("100")

    def _make_v1(self, name: str, table: str, memory: int, pids: int) -> None:
        for controller in CONTROLLERS:
            own = _own(controller, table)
            if own is None or not (ROOT / controller).is_dir():
                raise OSError(0, f"no cgroup v1 {controller} hierarchy", str(ROOT / controller))
            folder = ROOT / controller / own.lstrip("/") / name
            folder.mkdir()
            self.dirs[controller] = folder
        mem = self.dirs["memory"]
        (mem / "memory.limit_in_bytes").write_text(str(memory))
        if (mem / "memory.memsw.limit_in_bytes").exists():  # swap must not extend the limit
            (mem / "memory.memsw.limit_in_bytes").write_text(str(memory))
        (self.dirs["pids"] / "pids.max").write_text(str(pids))
        (self.dirs["cpu"] / "cpu.shares").write_text(str(CPU_SHARE))

    def procs(self) -> list[str]:
        """The ``cgroup.procs`` files a process writes its PID to, to join the group."""
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def _read(self, controller: str, file: str) -> str:
        folder = self.dirs.get("v2", self.dirs.get(controller))
        try:
            return (folder / file).read_text() if folder else ""
        except OSError:
            return ""

    def _count(self, controller: str, file: str, key: str) -> int:
        for line in self._read(controller, file).splitlines():
            k, _, v = line.partition(" ")
            if k == key and v.strip().isdigit():
                return int(v)
        return 0

    def events(self) -> dict[str, int]:
        """How often the kernel hit a limit: ``{"memory": kills, "pids": refused forks}``."""
        oom = (self._count("memory", "memory.events", "oom_kill") if self.v2
               else self._count("memory", "memory.oom_control", "oom_kill"))
        return {"memory": oom, "pids": self._count("pids", "pids.events", "max")}

    def peak(self) -> int:
        """The most memory the group used, bytes (0 when unknown)."""
        text = self._read("memory", "memory.peak" if self.v2 else "memory.max_usage_in_bytes")
        return int(text) if text.strip().isdigit() else 0

    def pids(self) -> list[int]:
        """Processes in the group now."""
        return [int(p) for p in self._read("pids", "cgroup.procs").split() if p.isdigit()]

    def kill(self, attempts: int = 50) -> bool:
        """SIGKILL everything in the group; True when it is empty."""
        if self.v2 and (self.dirs["v2"] / "cgroup.kill").exists():
            try:
                (self.dirs["v2"] / "cgroup.kill").write_text("1")
            except OSError:
                pass
        for _ in range(attempts):  # a process forking while we kill: its pids limit bounds it
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)
        return not self.pids()

    def remove(self) -> None:
        """Kill what is left and delete the group's folders."""
        if self.dirs:
            self.kill()
        for folder in self.dirs.values():
            for _ in range(50):  # a killed task leaves the group a moment after it died
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.dirs.clear()
