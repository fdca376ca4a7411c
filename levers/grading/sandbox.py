"""Sandboxed kernels: limits, a staging folder and a control group per kernel, and the kernel spec.

Each kernel gets its own folder under a private staging root: ``run/`` holds the connection file
and the ZeroMQ Unix sockets, ``work/`` names the kernel's working directory (inside the sandbox a
fresh tmpfs holding only the lab's declared files), and its own control group
(`levers.grading.cgroups`) bounds the memory, processes and CPU share of all it starts. The
kernel spec starts `levers.grading.launcher`, which confines the process with bubblewrap and
execs ipykernel; see that module for what is enforced.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import zmq
import zmq.asyncio
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager

from levers.grading.cgroups import Cgroup
from levers.repro import NUMERIC_ENV

KERNEL_NAME = "levers-sandbox"
MAX_MESSAGE = 64 << 20  # bytes per ZeroMQ message from the kernel (probe results fit)
# Messages ZeroMQ queues in the grader per socket before it stops reading (the rest waits in
# the kernel's own queue, in the kernel's memory, or is dropped): with MAX_MESSAGE, what one
# kernel can make the grader hold before it has read it (256 MB at most).
QUEUE = 4
# Run in the kernel before any cell: import the heavy modules (not bound to names), so a cell's
# time limit measures the student's code, not torch's import; and take the working folder off
# sys.path, so that a module the notebook writes there cannot be imported (code the grader
# never reads).
PRELOAD = "[__import__(m) for m in ('numpy', 'torch', 'levers') if __import__('importlib.util')" \
          ".util.find_spec(m)] and None; __import__('sys').path.__setitem__(slice(None), " \
          "[p for p in __import__('sys').path if p not in ('', '.', __import__('os').getcwd())])"


@dataclass(frozen=True)
class Limits:
    """What one submission may use.

    Parameters
    ----------
    cell_timeout : float
        Seconds one cell (or one probe) may run.
    wall_timeout : float
        Seconds the whole submission may take: kernel starts and shutdowns, every cell of every
        restart, the probes and the static analysis.
    memory : int
        Memory of the whole sandbox, bytes (its cgroup), and the address space of each of its
        processes (``RLIMIT_AS``).
    processes : int
        Processes and threads of the sandbox (its cgroup's ``pids.max``, and ``RLIMIT_NPROC``
        of the kernel's uid).
    file_size : int
        Largest file the kernel may write, bytes (``RLIMIT_FSIZE``).
    open_files : int
        Open file descriptors (``RLIMIT_NOFILE``).
    disk : str
        Size of the working-directory tmpfs (``/tmp`` gets a quarter of it).
    output_chars : int
        Characters of output kept per cell in the feedback notebook.
    start_timeout : float
        Seconds a kernel may take to start; a retry waits twice as long.
    """

    cell_timeout: float = 120.0
    wall_timeout: float = 600.0
    memory: int = 4 << 30
    processes: int = 64
    file_size: int = 64 << 20
    open_files: int = 256
    disk: str = "256m"
    output_chars: int = 20_000
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name in ("cell_timeout", "wall_timeout", "memory", "processes", "file_size",
                     "open_files", "output_chars", "start_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")


INSTALL = ("bubblewrap is not installed: the grader runs every kernel in a bubblewrap sandbox "
           "(install it with `apt-get install bubblewrap` on Debian or Ubuntu, `dnf install "
           "bubblewrap` on Fedora)")


def bubblewrap() -> str | None:
    """The path of ``bwrap``, or None when it is missing (needed only when running as root)."""
    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)), None)


def host_warnings() -> list[str]:
    """What this host cannot enforce, to say once before a batch (empty when all holds)."""
    if os.geteuid() != 0 or sys.platform != "linux":
        return ["not running as root: kernels get resource limits only (no filesystem, "
                "network, IPC or uid isolation, no cgroup)"]
    group, why = Cgroup.create(1 << 30, 8)
    if group is None:
        return [f"{why}: each kernel's memory and processes are limited per process "
                "(rlimits), not per sandbox; see the instructor guide"]
    group.remove()
    return []


def staging_root() -> Path:
    """A private folder for this batch's kernels: others may pass through, not list it."""
    root = Path(tempfile.mkdtemp(prefix="levers-grade-"))
    root.chmod(0o711)
    return root


class _Manager(AsyncKernelManager):
    """A kernel manager whose clients share its ZeroMQ context (and so its socket limits)."""

    def client(self, **kwargs: object) -> object:
        kwargs.setdefault("context", self.context)
        return super().client(**kwargs)


class Sandbox:
    """One confined kernel's folders, control group, configuration and kernel manager.

    Parameters
    ----------
    root : Path
        The batch's staging root (`staging_root`).
    limits : Limits
        Resource limits.
    mask : list of str
        Paths the kernel must not read (solution, submissions, grader output); only those
        inside a folder the kernel is given (`exposed`) need hiding, the rest does not exist
        in the sandbox.
    files : dict of str to str
        Name in the working directory -> path of a file the lab needs.
    """

    def __init__(self, root: Path, limits: Limits, mask: list[str], files: dict[str, str]):
        self.dir = Path(tempfile.mkdtemp(dir=root, prefix="k-"))
        self.dir.chmod(0o711)
        self.run, self.work = self.dir / "run", self.dir / "work"
        self.run.mkdir(mode=0o700)
        self.work.mkdir(mode=0o700)
        self.uid = 100_000 + secrets.randbelow(800_000)
        self.contexts: list[zmq.asyncio.Context] = []
        root_user = os.geteuid() == 0 and sys.platform == "linux"
        self.cgroup, why = Cgroup.create(limits.memory, limits.processes) if root_user else (
            None, "")
        notes = [f"{why}: memory and processes limited per process only"] if why else []
        if root_user:
            os.chown(self.run, self.uid, self.uid)
            os.chown(self.work, self.uid, self.uid)
        for name, path in files.items():  # (used as is only without root: no sandbox)
            shutil.copyfile(path, self.work / name)
        expose = exposed()
        config = {
            "uid": self.uid,
            "run_dir": str(self.run),
            "connection_file": str(self.run / "connection.json"),
            "note_file": str(self.dir / "sandbox.json"),
            "log_file": str(self.dir / "bwrap.log"),
            "work_dir": str(self.work),
            "files": {name: str(Path(path).resolve()) for name, path in files.items()},
            "mask": [m for m in mask if Path(m).exists() and any(
                Path(m) == Path(e) or Path(e) in Path(m).parents for e in expose)],
            "expose": expose,
            "bwrap": bubblewrap(),
            "cgroup_procs": self.cgroup.procs() if self.cgroup else [],
            "notes": notes,
            "tmp_size": _quarter(limits.disk),
            "work_size": _bytes(limits.disk),
            "env": {**NUMERIC_ENV, "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "agg",
                    **({"PYTHONPATH": os.environ["PYTHONPATH"]}
                       if "PYTHONPATH" in os.environ else {})},
            "limits": {**asdict(limits), "cpu_seconds": int(limits.wall_timeout) + 60},
        }
        (self.dir / "config.json").write_text(json.dumps(config))
        spec = self.dir / "kernels" / KERNEL_NAME
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "levers.grading.launcher", str(self.dir / "config.json"),
                     "--", sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                     "--HistoryManager.enabled=False", f"--IPKernelApp.exec_lines={PRELOAD}"],
            "display_name": "levers sandbox",
            "language": "python",
            "interrupt_mode": "message",
        }))

    def kernel_manager(self) -> AsyncKernelManager:
        """A manager for a fresh kernel in this sandbox (Unix-socket transport)."""
        self.stop()  # nothing of an earlier kernel survives into the next one
        for old in self.run.iterdir():
            old.unlink()
        if os.geteuid() == 0:  # (sealed by the previous kernel's start)
            os.chown(self.run, self.uid, self.uid)
        ksm = KernelSpecManager(kernel_dirs=[str(self.dir / "kernels")])
        # A message larger than this (one print of a huge string) is dropped by ZeroMQ before
        # the grader holds it in memory; the kernel's own memory limit would allow gigabytes.
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        context.setsockopt(zmq.RCVHWM, QUEUE)
        self.contexts.append(context)
        return _Manager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm, transport="ipc",
                        ip=str(self.run / "ipc"), context=context,
                        connection_file=str(self.run / "connection.json"))

    def seal(self) -> None:
        """Close the run folder to the kernel once its sockets exist (it lies on the host's disk).

        The kernel's uid had to create its sockets there; connecting to them needs no write
        access to the folder, and the student's code, which runs only after the kernel has
        answered, must not fill the host's disk through it.
        """
        if os.geteuid() == 0:
            os.chown(self.run, 0, 0)
            self.run.chmod(0o711)

    def notes(self) -> list[str]:
        """What the launcher reported it could not enforce."""
        try:
            return json.loads((self.dir / "sandbox.json").read_text())["notes"]
        except (OSError, ValueError, KeyError):
            return []

    def start_error(self) -> str:
        """Why bubblewrap could not build the sandbox (its own message), or ``""``."""
        try:
            return (self.dir / "bwrap.log").read_text(errors="replace")[-500:].strip()
        except OSError:
            return ""

    def limit_hits(self) -> dict[str, int]:
        """How often the sandbox hit its cgroup limits so far (memory kills, refused forks)."""
        return self.cgroup.events() if self.cgroup else {"memory": 0, "pids": 0}

    def stop(self) -> None:
        """Kill every process of the sandbox (its cgroup, else its uid)."""
        if self.cgroup is not None:
            self.cgroup.kill()
        elif os.geteuid() == 0:
            kill_uid(self.uid)

    def cleanup(self) -> None:
        """Kill whatever still runs in the sandbox, then remove its cgroup and staging folder."""
        self.stop()
        if self.cgroup is not None:
            self.cgroup.remove()
        for context in self.contexts:
            context.destroy(linger=0)
        self.contexts.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` (a child becomes ``uid`` and signals -1).

    The kernel's processes die with its PID namespace already; without a cgroup this stops a
    process that outlived it some other way.
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def exposed() -> list[str]:
    """Folders the kernel may read: the Python environment(s) and the levers package.

    The allow-list of the sandbox's filesystem (besides ``/usr`` and its own scratch folders).
    Other ``sys.path`` entries count only inside an environment or when they are package
    folders (``site-packages``, ``dist-packages``): the current folder or a script's folder
    (``tests/``, a class's files) stays out.
    """
    import levers

    package = Path(levers.__file__).resolve().parent
    envs = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    extra = {Path(p).resolve() for p in sys.path if p and Path(p).is_dir()}
    extra = {p for p in extra if p.name in ("site-packages", "dist-packages")
             or any(e == p or e in p.parents for e in envs)}
    paths = {*envs, package, *extra} - {Path("/")}
    # (a folder inside another one already given adds nothing)
    return sorted(str(p) for p in paths if not any(q in p.parents for q in paths))


def _bytes(size: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].lower() in units else int(size)


def _quarter(size: str) -> int:
    return max(_bytes(size) // 4, 1 << 20)


def masked_paths(sensitive: list[Path], keep: list[Path]) -> list[str]:
    """Folders (or, when a folder holds something the kernel needs, files) to hide.

    Parameters
    ----------
    sensitive : list of Path
        Files and folders the kernel must not read.
    keep : list of Path
        Paths the kernel needs (the Python environment, the levers package).
    """
    keep = [k.resolve() for k in keep]
    out: set[str] = set()
    for path in sensitive:
        path = path.resolve()
        for candidate in ([path.parent, path] if path.is_file() else [path]):
            if candidate == Path("/") or any(k == candidate or candidate in k.parents
                                            for k in keep):
                continue
            out.add(str(candidate))
            break
        repo = next((p for p in [path, *path.parents] if (p / ".git").exists()), None)
        if repo is not None:
            out.add(str(repo / ".git"))
    return sorted(out)
