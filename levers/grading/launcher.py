"""The sandbox launcher: confine this process, then exec the kernel.

Run as ``python -m levers.grading.launcher CONFIG.json -- python -m ipykernel_launcher ...``.
The grader writes the kernel spec that calls it. As root on Linux it:

1. enters new mount, network and PID namespaces (no network: only a downed loopback; the
   kernel's ZeroMQ sockets are Unix sockets, which need none);
2. forks: the child is PID 1 of the new namespace, so when it dies every process the student
   started dies with it (a fork bomb cannot outlive its kernel);
3. hides what the student must not read: the source tree levers runs from except the ``levers``
   package and the environment, the solution notebook, the submissions folder and the grader's
   output (an empty read-only tmpfs over a folder, ``/dev/null`` over a file), gives
   ``/tmp``, ``/var/tmp``, ``/dev/shm`` and the working directory fresh size-limited tmpfs
   mounts, mounts a ``/proc`` that shows only the sandbox's processes, and makes the rest of
   the root filesystem read-only;
4. drops to an unprivileged uid unique to this kernel (so ``RLIMIT_NPROC`` counts only its
   processes and other kernels' files are closed to it), sets the resource limits, a clean
   environment, and execs the kernel.

Without root (or where namespaces are unavailable) it applies only the resource limits and
says so in a note file the grader puts in the reports.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import stat
import sys
import time

CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
KEEP_ENV = ("PATH", "LANG", "LC_ALL", "TZ")

libc = ctypes.CDLL(None, use_errno=True)


def _call(name: str, *args: object) -> None:
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    """mount(2), raising OSError."""
    _call("mount", source.encode(), target.encode(), fstype.encode() if fstype else None,
          ctypes.c_ulong(flags), data.encode() if data else None)


def tmpfs(target: str, size: str, mode: str = "1777", readonly: bool = False) -> None:
    """A fresh, empty, size-limited tmpfs at ``target``."""
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | (MS_RDONLY if readonly else 0),
          f"size={size},mode={mode}")


def blocked_ancestor(path: str) -> str | None:
    """The first folder above ``path`` that other users cannot enter (e.g. ``/root``)."""
    parts = os.path.abspath(path).split(os.sep)[1:]
    for depth in range(1, len(parts)):
        folder = os.sep + os.path.join(*parts[:depth])
        if not os.stat(folder).st_mode & 0o001:
            return folder
    return None


def expose(paths: list[str], hidden: list[str] = ()) -> None:
    """Replace folders by an empty tmpfs with only the paths the kernel needs bound back in.

    Two kinds of folder: one other users cannot enter that holds the Python installation
    (pyenv under ``/root``), made reachable this way; and the ``hidden`` ones (the source tree
    levers runs from, with its copies of solutions), of which only the ``levers`` package and
    the environment stay. Everything else in them disappears from the sandbox.
    """
    by_folder: dict[str, list[str]] = {h: [] for h in hidden}
    for path in paths:
        folder = blocked_ancestor(path)
        if folder is not None:
            by_folder.setdefault(folder, []).append(path)
    for h in hidden:
        by_folder[h] += [p for p in paths if p.startswith(h + os.sep)]
    for folder in sorted(by_folder, key=len):  # outer first: an inner one is then re-covered
        needed = [p for p in by_folder[folder] if p != folder and os.path.isdir(p)]
        fds = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in needed}
        tmpfs(folder, "1m", "755")
        for path, fd in fds.items():
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            readonly(path)
            os.close(fd)


def readonly(path: str) -> None:
    """Make a bind mount read-only (remounting ``/`` read-only does not reach bind mounts)."""
    mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def confine(cfg: dict) -> None:
    """Mounts, inside the new namespaces (as root)."""
    uid, run, work = cfg["uid"], cfg["run_dir"], cfg["work_dir"]
    files = {name: open(path, "rb").read() for name, path in cfg["files"].items()}
    run_fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    expose(cfg["expose"], [h for h in cfg.get("hide", []) if os.path.isdir(h)])
    for path in cfg["mask"]:
        if os.path.isdir(path):
            tmpfs(path, "1k", "755", readonly=True)
        elif os.path.exists(path):
            mount("/dev/null", path, None, MS_BIND)
    scratches = [d for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(d)]
    # What the kernel needs may live under a scratch folder (a clone in /tmp, its .venv): keep a
    # handle on it, with the masks inside it, to bind it back over the fresh scratch mount.
    keep = sorted({p for p in cfg["expose"]
                   if any(p == d or p.startswith(d + os.sep) for d in scratches)})
    keep = [p for p in keep if not any(p.startswith(q + os.sep) for q in keep)]
    keep_fds = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in keep if os.path.isdir(p)}
    for scratch in scratches:
        tmpfs(scratch, cfg["tmp_size"])
    for path, fd in keep_fds.items():
        os.makedirs(path, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        readonly(path)
        os.close(fd)
    # The run folder (connection file, sockets) may have been under /tmp: bring it back.
    os.makedirs(run, exist_ok=True)
    mount(f"/proc/self/fd/{run_fd}", run, None, MS_BIND)
    os.close(run_fd)
    os.makedirs(work, exist_ok=True)
    tmpfs(work, cfg["work_size"], "700")
    for name, data in files.items():
        with open(os.path.join(work, name), "wb") as f:
            f.write(data)
    os.chown(work, uid, uid)
    for root, dirs, names in os.walk(work):
        for n in dirs + names:
            os.chown(os.path.join(root, n), uid, uid)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV)
    # The rest of the root filesystem becomes read-only in here: no world-writable corner of the
    # host (/run/lock, ...) keeps anything after the kernel is gone.
    mount("none", "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def limit(cfg: dict) -> None:
    """Resource limits: memory, processes, file size, open files, CPU time, no core files."""
    lim = cfg["limits"]
    for res, value in ((resource.RLIMIT_AS, lim["memory"]), (resource.RLIMIT_FSIZE,
                       lim["file_size"]), (resource.RLIMIT_NOFILE, lim["open_files"]),
                       (resource.RLIMIT_CPU, lim["cpu_seconds"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def run_kernel(cfg: dict, argv: list[str], root: bool) -> None:
    """Drop privileges, limit, clean the environment and exec the kernel (never returns)."""
    work = cfg["work_dir"]
    if root:
        uid = cfg["uid"]
        os.chown(cfg["connection_file"], uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["limits"]["processes"],) * 2)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    limit(cfg)
    env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
    env.update(cfg["env"], HOME=work, IPYTHONDIR=os.path.join(work, ".ipython"),
               MPLCONFIGDIR=os.path.join(work, ".matplotlib"), TMPDIR="/tmp" if root else work)
    os.chdir(work)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # so Python installs KeyboardInterrupt again
    # Writes to the raw file descriptors must not reach the grader's terminal.
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.execve(argv[0], argv, env)


def init(cfg: dict, argv: list[str]) -> None:
    """PID 1 of the sandbox: start the kernel as PID 2, reap orphans, exit with the kernel.

    The kernel is not PID 1 itself because PID 1 ignores signals it has no handler for (a
    crash by ``raise(SIGSEGV)`` would not kill it) and must reap every orphaned process.
    """
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    kernel = os.fork()
    if kernel == 0:
        run_kernel(cfg, argv, root=True)
    seal(cfg, kernel)
    while True:
        pid, status = os.wait()
        if pid == kernel:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def seal(cfg: dict, kernel: int, sockets: int = 5) -> None:
    """Make the run folder read-only in here once the kernel has bound its sockets in it.

    The kernel's uid must be able to write there to create its ZeroMQ sockets (shell, iopub,
    stdin, control, heartbeat), but afterwards the folder, which lives on the host's disk, would
    let the student's code write outside the size-limited tmpfs. The kernel binds them before it
    answers the grader, so before any of the student's code runs; connecting to a socket still
    works on a read-only mount.
    """
    run, deadline = cfg["run_dir"], time.monotonic() + 120
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, kernel, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return  # the kernel is gone: nothing to protect; init's loop reaps it
        with os.scandir(run) as entries:
            bound = sum(stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode) for e in entries)
        if bound >= sockets:
            try:
                readonly(run)
            except OSError as exc:
                write_note(cfg, [f"the kernel's run folder stays writable ({exc})"])
            return
        time.sleep(0.002)


def write_note(cfg: dict, notes: list[str]) -> None:
    """Tell the grader which protections are in force (read back into the report).

    The note goes to a root-owned folder the kernel cannot write to, so it cannot be forged.
    """
    with open(cfg["note_file"], "w") as f:
        json.dump({"notes": notes}, f)


def main() -> None:
    """Entry point: ``launcher CONFIG.json -- KERNEL ARGV``."""
    cfg = json.load(open(sys.argv[1]))
    argv = sys.argv[sys.argv.index("--") + 1 :]
    if sys.platform == "linux":  # if the grader dies (Ctrl-C, crash), so does every kernel
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    root = os.geteuid() == 0 and sys.platform == "linux"
    notes: list[str] = []
    if not root:
        notes.append("not root: resource limits only (no network, filesystem or uid isolation)")
        write_note(cfg, notes)
        run_kernel(cfg, argv, root=False)
    try:
        _call("unshare", CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
    except OSError as exc:
        notes.append(f"namespaces unavailable ({exc}): no network or filesystem isolation")
        blocked = sorted({b for b in map(blocked_ancestor, cfg["expose"]) if b})
        if blocked:  # fail closed rather than run the student's code as root
            notes.append(f"the kernel cannot start: Python lives under {blocked}, which other "
                         "users cannot enter; install it elsewhere (e.g. a venv in /opt)")
            write_note(cfg, notes)
            os._exit(70)
        write_note(cfg, notes)
        run_kernel(cfg, argv, root=True)
    write_note(cfg, notes)
    # ipykernel interrupts arrive as messages; the parent only waits and passes on SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        try:
            confine(cfg)
        except BaseException as exc:  # fail closed: no kernel rather than an unconfined one
            write_note(cfg, notes + [f"sandbox set-up failed: {exc}"])
            os._exit(70)
        init(cfg, argv)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGKILL))
    _, status = os.waitpid(child, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()
