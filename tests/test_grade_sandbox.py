"""The sandbox's pieces without a kernel: bubblewrap's allow-list, the cgroups, the caps on
static reading and the inert feedback cells.

The launcher is run for real on a short Python command instead of ipykernel; it writes what it
sees into the run folder, the one folder it shares with the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from test_grade_support import bubblewrap_or_skip

from levers.grading import report as rep
from levers.grading.cgroups import Cgroup
from levers.grading.sandbox import Limits, Sandbox, exposed, staging_root
from levers.grading.static import MAX_CELL_CHARS, forbidden_uses, tampering

needs_root = pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux",
                                reason="the sandbox needs root on Linux")

LOOK = """
import json, os, sys
run = sys.argv[1]
def ls(p):
    try:
        return sorted(os.listdir(p))
    except OSError as e:
        return e.strerror
status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines()
              if ":\\t" in l)
json.dump({"root": ls("/"), "work": ls("/work"), "repo": ls(sys.argv[2]), "cwd": ls("."),
           "tmp": ls("/tmp"), "shm": open("/proc/sysvipc/shm").read().splitlines()[1:],
           "uid": os.getuid(), "pid": os.getpid(), "nnp": status["NoNewPrivs"].strip(),
           "caps": status["CapEff"].strip(), "hostname": os.uname().nodename},
          open(os.path.join(run, "seen.json"), "w"))
"""


def run_launcher(sandbox: Sandbox, code: str, *args: str) -> subprocess.CompletedProcess:
    (sandbox.run / "connection.json").write_text("{}")
    return subprocess.run([sys.executable, "-m", "levers.grading.launcher",
                           str(sandbox.dir / "config.json"), "--", sys.executable, "-c", code,
                           *args], capture_output=True, text=True, timeout=120)


@needs_root
def test_the_kernel_sees_an_allow_list_and_no_privilege(tmp_path):
    bubblewrap_or_skip()
    repo = Path(__file__).resolve().parent.parent
    lab_file = tmp_path / "data.txt"
    lab_file.write_text("lab data")
    root = staging_root()
    sandbox = Sandbox(root, Limits(), [], {"data.txt": str(lab_file)})
    try:
        run_launcher(sandbox, LOOK, str(sandbox.run), str(repo))
        seen = json.loads((sandbox.run / "seen.json").read_text())
    finally:
        sandbox.cleanup()
        root.rmdir()
    # only what the kernel needs: the system's folders and the top folder of each exposed
    # path (wherever the checkout and its environment live), no /home, /etc's secrets
    system = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp",
              "usr", "var"}
    tops = {Path(p).parts[1] for p in exposed()}
    assert set(seen["root"]) <= system | tops
    assert set(seen["repo"]) <= {"levers", ".venv"} and "levers" in seen["repo"]
    assert seen["cwd"] == ["data.txt"]
    assert seen["uid"] == sandbox.uid and seen["pid"] == 2
    assert seen["nnp"] == "1" and int(seen["caps"], 16) == 0
    assert seen["shm"] == [] and seen["hostname"] == "sandbox"


def cgroup_or_skip(memory: int, pids: int) -> Cgroup:
    if os.geteuid() != 0 or sys.platform != "linux":
        pytest.skip("cgroups need root on Linux")
    group, why = Cgroup.create(memory, pids)
    if group is None:
        pytest.skip(why)
    return group


def test_a_cgroup_counts_the_memory_of_all_processes_and_says_when_it_killed():
    group = cgroup_or_skip(256 << 20, 32)
    code = ("import os, sys, time\n"
            f"[open(p, 'w').write(str(os.getpid())) for p in {group.procs()!r}]\n"
            "kids = [os.fork() for _ in range(3)]\n"  # 8 processes of 64 MB: 512 MB in all
            "block = bytearray(64 << 20)\n"
            "for i in range(0, len(block), 4096):\n"
            "    block[i] = 1\n"
            "time.sleep(2)\n")
    try:
        subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True)
        time.sleep(0.5)
        assert group.events()["memory"] >= 1
        assert group.peak() <= 256 << 20
    finally:
        group.remove()
    assert not any(d.exists() for d in group.dirs.values())


def test_a_cgroup_refuses_processes_beyond_its_limit():
    group = cgroup_or_skip(1 << 30, 8)
    code = ("import os, time\n"
            f"[open(p, 'w').write(str(os.getpid())) for p in {group.procs()!r}]\n"
            "n = 0\n"
            "try:\n"
            "    for _ in range(20):\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(5)\n"
            "            os._exit(0)\n"
            "        n += 1\n"
            "except OSError:\n"
            "    pass\n"
            "print(n)\n"
            "os._exit(0)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True,
                              text=True)
        assert int(done.stdout) == 7  # the parent and seven children fill the 8 tasks
        assert group.events()["pids"] >= 1
        assert group.kill() and group.pids() == []
    finally:
        group.remove()


def test_a_cell_too_large_to_read_is_itself_a_finding():
    huge = "x = [" + "1, " * MAX_CELL_CHARS + "]\n"
    cells = [(0, "def f(x):\n    return x.bfloat16()\n"), (1, huge)]
    start = time.process_time()
    found = forbidden_uses([(0, "def f(x):\n    return x\n"), (1, huge)], 0, ("bfloat16",))
    assert [f.what for f in found] == [f"a cell too large to read ({len(huge)} characters)"]
    assert [f.cell for f in tampering(cells)] == [1]
    assert time.process_time() - start < 1  # not read: no cost in proportion to its size


def test_feedback_cells_are_inert():
    md = nbformat.v4.new_markdown_cell("# Grade: 12 / 12\n<img src='https://x.example/t'>",
                                       metadata={"levers": {"grader": True}})
    raw = nbformat.v4.new_raw_cell("<script>alert(1)</script>",
                                   metadata={"format": "text/html"})
    code = nbformat.v4.new_code_cell("x", metadata={"levers": {"grader": True}})
    code.outputs = [nbformat.v4.new_output("display_data", data={
        "text/html": "<script>alert(1)</script>", "text/plain": "<HTML>",
        "image/svg+xml": "<svg onload='x()'/>", "image/png": "iVBOR"}, metadata={"a": 1})]
    shown = [rep.inert(c) for c in (md, raw, code)]
    assert all(c.metadata == {} for c in shown)
    assert shown[0].source.startswith("```text\n# Grade") and shown[1].cell_type == "markdown"
    assert set(shown[2].outputs[0].data) == {"text/plain", "image/png"}
    assert "not shown in feedback: image/svg+xml, text/html" in shown[2].outputs[0].data[
        "text/plain"]
    assert rep.inert(md, grader=True).source == md.source  # the lab's own markdown
