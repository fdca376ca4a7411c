"""The sandbox launcher: confine this process with bubblewrap, then exec the kernel.

Run as ``python -m levers.grading.launcher CONFIG.json -- python -m ipykernel_launcher ...``.
The grader writes the kernel spec that calls it. As root on Linux it:

1. joins the sandbox's control group (`levers.grading.cgroups`): memory, process count and CPU
   share then hold for everything the kernel starts, together;
2. execs bubblewrap (``bwrap``), which builds the kernel's world as an **allow-list**: an empty
   root holding only ``/usr`` (and its ``/bin``, ``/lib`` links), a few files of ``/etc`` the
   dynamic linker reads, the Python environment and the ``levers`` package (read-only), a
   ``/proc`` of the sandbox's own processes, a minimal ``/dev``, fresh size-limited tmpfs
   mounts for ``/tmp``, ``/var/tmp``, ``/dev/shm`` and the working directory (holding the lab's
   declared files), and the run folder with the kernel's sockets. Nothing else of the host
   exists in there: not the solution, not the submissions, not another checkout of the course.
   It also gives the kernel new PID (the whole sandbox dies with the kernel), network (no
   network), IPC (no shared memory with the host or other kernels) and UTS namespaces, a new
   session (no terminal), ``NoNewPrivs`` (a setuid binary gains nothing) and no capabilities
   but the three the next step needs;
3. inside (``--inside``), as the last step before the kernel: hands the working directory to
   an unprivileged uid unique to this kernel, becomes that uid (losing every capability), sets
   the resource limits, a clean environment, and execs the kernel.

Without root it applies only the resource limits and says so in a note file the grader puts in
the reports. It never runs a kernel as root without bubblewrap: it fails closed instead.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from pathlib import Path

KEEP_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
# Read by the dynamic linker, the C library and Python's startup; nothing secret.
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "passwd",
       "group", "hosts", "mime.types")
TOP = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN")  # dropped with the uid, before the kernel
PR_SET_PDEATHSIG = 1


def _pdeathsig() -> None:
    if sys.platform == "linux":  # if the grader dies (Ctrl-C, crash), so does every kernel
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def bwrap_args(cfg: dict, files: dict[str, int]) -> list[str]:
    """bubblewrap's arguments for the sandbox ``cfg`` describes (see the module's docstring).

    ``files`` maps a name in the working directory to an open file descriptor to copy there.
    Mounts apply in order: the scratch folders first, so that what the kernel needs from under
    them (a checkout in ``/tmp``, the run folder) is bound over them afterwards.
    """
    tmp, work = str(cfg["tmp_size"]), cfg["work_dir"]
    args = ["--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid",
            "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox",
            "--cap-drop", "ALL"]
    for cap in CAPS:
        args += ["--cap-add", cap]
    for scratch in ("/tmp", "/var/tmp"):
        args += ["--perms", "1777", "--size", tmp, "--tmpfs", scratch]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in TOP:
        path = f"/{top}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += _parents([*cfg["expose"], work, cfg["run_dir"]])
    for path in cfg["expose"]:
        args += ["--ro-bind", path, path]
    for path in cfg["mask"]:  # inside an exposed folder (e.g. submissions next to the venv)
        args += (["--tmpfs", path, "--remount-ro", path] if os.path.isdir(path)
                 else ["--ro-bind", "/dev/null", path])
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", tmp, "--tmpfs", "/dev/shm",
             "--bind", cfg["run_dir"], cfg["run_dir"],
             "--perms", "0700", "--size", str(cfg["work_size"]), "--tmpfs", work]
    for name, fd in files.items():
        args += ["--perms", "0600", "--file", str(fd), os.path.join(work, name)]
    return args + ["--remount-ro", "/", "--chdir", work, "--clearenv"]


def _parents(paths: list[str]) -> list[str]:
    """Empty folders above what is bound, that the kernel's uid may pass through (bubblewrap
    would make them root's alone); none inside a bound or scratch folder."""
    parents = sorted({str(q) for p in paths for q in Path(p).parents}
                     - {"/", "/tmp", "/var/tmp", "/usr", *paths}, key=lambda q: (q.count("/"), q))
    args: list[str] = []
    for q in parents:
        if not any(q.startswith(p + "/") for p in [*paths, "/usr"]):
            args += ["--perms", "0755", "--dir", q]
    return args


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
        # Deepest first: without CAP_DAC_OVERRIDE, root cannot enter a 0700 folder it gave away.
        for folder, _, names in os.walk(work, topdown=False):
            for path in [*(os.path.join(folder, n) for n in names), folder]:
                os.chown(path, uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # from 0 to a uid of its own: every capability is gone
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["limits"]["processes"],) * 2)
    limit(cfg)
    env = dict(cfg["host_env"])
    env.update(cfg["env"], HOME=work, IPYTHONDIR=os.path.join(work, ".ipython"),
               MPLCONFIGDIR=os.path.join(work, ".matplotlib"), TMPDIR="/tmp" if root else work)
    os.chdir(work)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # so Python installs KeyboardInterrupt again
    # Writes to the raw file descriptors must not reach the grader's terminal.
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.execve(argv[0], argv, env)


def write_note(cfg: dict, notes: list[str]) -> None:
    """Tell the grader which protections are in force (read back into the report).

    The note goes to a root-owned folder the kernel cannot write to, so it cannot be forged.
    """
    with open(cfg["note_file"], "w") as f:
        json.dump({"notes": notes}, f)


def join(cfg: dict) -> list[str]:
    """Enter the sandbox's control group; what could not be done, as notes."""
    for procs in cfg.get("cgroup_procs", []):
        try:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        except OSError as exc:
            return [f"could not join the sandbox's cgroup ({exc}): memory and processes "
                    "are limited per process only"]
    return []


def main() -> None:
    """Entry point: ``launcher CONFIG.json -- KERNEL ARGV`` (or ``--inside``, from bwrap)."""
    argv = sys.argv[sys.argv.index("--") + 1 :]
    if sys.argv[1] == "--inside":
        run_kernel(json.loads(sys.argv[2]), argv, root=True)
    _pdeathsig()
    cfg = json.load(open(sys.argv[1]))
    cfg["host_env"] = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
    notes = list(cfg.get("notes", [])) + join(cfg)
    if not (os.geteuid() == 0 and sys.platform == "linux"):
        notes.append("not root: resource limits only (no network, filesystem or uid isolation)")
        write_note(cfg, notes)
        run_kernel(cfg, argv, root=False)
    bwrap = cfg.get("bwrap")
    if not bwrap or not os.access(bwrap, os.X_OK):  # fail closed: never the student's code as root
        write_note(cfg, notes + ["the sandbox cannot start: bubblewrap (bwrap) is not installed"])
        os._exit(70)
    write_note(cfg, notes)
    os.chown(cfg["connection_file"], cfg["uid"], cfg["uid"])
    files = {}
    for name, path in cfg["files"].items():
        files[name] = os.open(path, os.O_RDONLY)
        os.set_inheritable(files[name], True)
    # bubblewrap's own errors (a mount it could not make) go to a file the grader reads.
    log = os.open(cfg["log_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 2)
    inside = {k: cfg[k] for k in ("uid", "work_dir", "limits", "env", "host_env")}
    os.execv(bwrap, [bwrap, *bwrap_args(cfg, files), "--", sys.executable, "-I", "-S",
                     os.path.abspath(__file__), "--inside", json.dumps(inside), "--", *argv])


if __name__ == "__main__":
    main()
