"""Sandboxed kernels: limits, a staging folder per kernel, and the kernel spec that confines it.

Each kernel gets its own folder under a private staging root: ``run/`` holds the connection file
and the ZeroMQ Unix sockets, ``work/`` becomes the kernel's working directory (a fresh tmpfs
holding only the lab's declared files). The kernel spec starts `levers.grading.launcher`,
which confines the process and execs ipykernel; see that module for what is enforced.
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

from levers.repro import NUMERIC_ENV

KERNEL_NAME = "levers-sandbox"
MAX_MESSAGE = 128 << 20  # bytes per ZeroMQ message from the kernel (probe results fit)
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
        Seconds the whole submission may take, restarts included.
    memory : int
        Address-space limit of each kernel process, bytes (``RLIMIT_AS``).
    processes : int
        Processes and threads of the kernel's uid (``RLIMIT_NPROC``, when running as root).
    file_size : int
        Largest file the kernel may write, bytes (``RLIMIT_FSIZE``).
    open_files : int
        Open file descriptors (``RLIMIT_NOFILE``).
    disk : str
        Size of the working-directory tmpfs (``/tmp`` gets a quarter of it).
    output_chars : int
        Characters of output kept per cell in the feedback notebook.
    """

    cell_timeout: float = 120.0
    wall_timeout: float = 600.0
    memory: int = 4 << 30
    processes: int = 64
    file_size: int = 64 << 20
    open_files: int = 256
    disk: str = "256m"
    output_chars: int = 20_000

    def __post_init__(self) -> None:
        for name in ("cell_timeout", "wall_timeout", "memory", "processes", "file_size",
                     "open_files", "output_chars"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")


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
    """One confined kernel's folders, configuration and kernel manager.

    Parameters
    ----------
    root : Path
        The batch's staging root (`staging_root`).
    limits : Limits
        Resource limits.
    mask : list of str
        Paths the kernel must not read (solution, submissions, grader output).
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
        if os.geteuid() == 0:
            os.chown(self.run, self.uid, self.uid)
            os.chown(self.work, self.uid, self.uid)
        for name, path in files.items():
            shutil.copyfile(path, self.work / name)
        config = {
            "uid": self.uid,
            "run_dir": str(self.run),
            "connection_file": str(self.run / "connection.json"),
            "note_file": str(self.dir / "sandbox.json"),
            "work_dir": str(self.work),
            "files": {name: str(self.work / name) for name in files},
            "mask": [m for m in mask if Path(m).exists()],
            "expose": exposed(),
            "hide": [str(t)] if (t := source_tree()) else [],
            "tmp_size": _quarter(limits.disk),
            "work_size": limits.disk,
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
        for old in self.run.iterdir():
            old.unlink()
        ksm = KernelSpecManager(kernel_dirs=[str(self.dir / "kernels")])
        # A message larger than this (one print of a huge string) is dropped by ZeroMQ before
        # the grader holds it in memory; the kernel's own memory limit would allow gigabytes.
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        self.contexts.append(context)
        return _Manager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm, transport="ipc",
                        ip=str(self.run / "ipc"), context=context,
                        connection_file=str(self.run / "connection.json"))

    def notes(self) -> list[str]:
        """What the launcher reported it could not enforce."""
        try:
            return json.loads((self.dir / "sandbox.json").read_text())["notes"]
        except (OSError, ValueError, KeyError):
            return []

    def cleanup(self) -> None:
        """Kill whatever still runs under the kernel's uid, then remove the staging folder."""
        if os.geteuid() == 0:
            kill_uid(self.uid)
        for context in self.contexts:
            context.destroy(linger=0)
        shutil.rmtree(self.dir, ignore_errors=True)


def kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` (a child becomes ``uid`` and signals -1).

    With PID namespaces the kernel's processes die with it already; where namespaces are
    unavailable this stops a process that left the kernel's process group.
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def source_tree() -> Path | None:
    """The repository levers runs from (an editable install), or None for an installed package.

    Everything in it but the ``levers`` package and the environment is hidden from the kernel:
    it holds copies of solutions (``_build/``, test fixtures) that masking one folder misses.
    """
    import levers

    root = Path(levers.__file__).resolve().parent.parent
    if root == Path("/") or not any((root / m).exists() for m in (".git", "pyproject.toml")):
        return None
    return root


def exposed() -> list[str]:
    """Folders the kernel must be able to read: the interpreter and the levers package.

    Nothing else of the source tree is listed (a ``sys.path`` entry such as ``tests/`` would
    otherwise be bound back into the sandbox), except the environment when it lives there.
    """
    import levers

    package = Path(levers.__file__).resolve().parent
    envs = [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()]
    paths = {*envs, package} | {Path(p).resolve() for p in sys.path if p and Path(p).is_dir()}
    tree = source_tree()

    def allowed(p: Path) -> bool:
        return (tree is None or not (p == tree or tree in p.parents)
                or any(k == p or k in p.parents for k in [package, *envs]))

    return sorted(str(p) for p in paths if p != Path("/") and allowed(p))


def _quarter(size: str) -> str:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    n = int(size[:-1]) * units[size[-1].lower()] if size[-1].lower() in units else int(size)
    return str(max(n // 4, 1 << 20))


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
