"""The run-time rules (`levers.grading.guard`), checked in a child interpreter (they patch it)
and against the labs: what the text says is what the metadata declares."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from levers.grading.spec import LabError, read_solution, rules_text, with_rules

ROOT = Path(__file__).parent.parent

# Each line: a name, the question's ops and dtypes, and a body run under `observe`.
CASES = r'''
import json, sys, importlib
import levers.grading.guard as g
g.install(["levers.formats", "levers.metrics.confusion_matrix", "ml_dtypes"])
import levers as lv, torch
x = torch.randn(8)
def run(ops, dtypes, body):
    w = g.observe(ops, dtypes)
    error = ""
    try:
        with w:
            body()
    except Exception as e:
        error = type(e).__name__
    return {"violations": sorted(set(w.violations)), "removed": w.removed, "error": error}
def cast_by_string(): x.type("torch.BF" + "loat16Tensor")
def autocast():
    with torch.autocast("cpu"):
        torch.mm(torch.randn(2, 2), torch.randn(2, 2))
def honest_bits(): (x.view(torch.int32) & ~0xFFFF).view(torch.float32)
def honest_print(): print(repr(x), x.half())
def stub(): lv.formats.round_to_format(x, "bf16")
def stub_by_locate():
    import pydoc
    pydoc.locate("levers.for" + "mats.round_to_format")(x, "bf16")
def reload(): importlib.reload(lv.formats).round_to_format(x, "bf16")
def blocked():  # a package withheld whole: not even its dtypes
    import numpy as np
    np.float32(1.0).astype(importlib.import_module("ml_" + "dtypes").float4_e2m1fn)
def blocked_submodule(): importlib.import_module("ml_dtypes._finfo")
def csr(): torch.eye(3).to_sparse_csr()
def fq(): torch.fake_quantize_per_tensor_affine(x, 0.1, 0, -128, 127)
def kl(): torch.nn.functional.kl_div(x.log_softmax(0), x.softmax(0), reduction="sum")
def backward(): (torch.randn(3, requires_grad=True) ** 2).sum().backward()
def profile_off():
    sys.setprofile(None)
def pop_mode():
    from torch.utils._python_dispatch import _pop_mode_temporarily
    with _pop_mode_temporarily():
        x.bfloat16()
def thread():
    import threading
    t = threading.Thread(target=x.bfloat16)
    t.start()
    t.join()
bf = (["aten.nothing"], ["bfloat16"])
out = {
    "cast_by_string": run(*bf, cast_by_string), "autocast": run(*bf, autocast),
    "honest_bits": run(*bf, honest_bits), "honest_print": run(*bf, honest_print),
    "stub": run([], [], stub), "stub_by_locate": run([], [], stub_by_locate),
    "reload": run([], [], reload), "blocked": run([], [], blocked),
    "blocked_submodule": run([], [], blocked_submodule),
    "csr": run(["aten._to_sparse*"], [], csr), "fq": run(["aten.fake_quantize_per_*"], [], fq),
    "kl": run(["torch.nn.functional.kl_div"], [], kl),
    "backward": run(["torch.Tensor.backward", "torch.autograd.backward"], [], backward),
    "profile_off": run(*bf, profile_off), "pop_mode": run(*bf, pop_mode),
    "thread": run(*bf, thread),
}
with torch._C._DisableTorchDispatch():  # in a "cell": every later probe is void
    pass
out["disabled_before"] = run(*bf, honest_bits)
print("@@" + json.dumps(out))
'''


@pytest.fixture(scope="module")
def observed() -> dict:
    done = subprocess.run([sys.executable, "-c", CASES], capture_output=True, text=True,
                          timeout=300, check=True)
    return json.loads(done.stdout.split("@@", 1)[1])


@pytest.mark.parametrize("case, violation", [
    ("cast_by_string", "aten._to_copy -> bfloat16"),
    ("autocast", "aten.mm -> bfloat16"),
    ("reload", "levers.formats.round_to_format (the library's own code, reached another way)"),
    ("csr", "aten._to_sparse_csr"),
    ("fq", "aten.fake_quantize_per_tensor_affine_cachemask"),
    ("kl", "torch.nn.functional.kl_div"),
    ("backward", "torch.Tensor.backward"),
])
def test_a_forbidden_operation_is_seen_whatever_path_led_there(observed, case, violation):
    assert violation in observed[case]["violations"], observed[case]
    assert observed[case]["removed"] == ""


@pytest.mark.parametrize("case", ["honest_bits", "honest_print"])
def test_honest_operations_break_no_rule(observed, case):
    assert observed[case] == {"violations": [], "removed": "", "error": ""}


@pytest.mark.parametrize("case", ["stub", "stub_by_locate", "blocked", "blocked_submodule"])
def test_a_withheld_function_raises_by_any_name(observed, case):
    assert observed[case]["error"] == "Withheld"


@pytest.mark.parametrize("case, why", [
    ("profile_off", "setprofile"), ("pop_mode", "_pop_mode_temporarily"),
    ("thread", "start"), ("disabled_before", "_DisableTorchDispatch"),
])
def test_an_observer_taken_away_is_noticed(observed, case, why):
    assert why in observed[case]["removed"], observed[case]


@pytest.mark.parametrize("lab", ["lab01-precision", "lab02-sparsity", "lab03-compression",
                                 "lab04-quantization", "lab05-hybrid", "lab06-mathematics"])
def test_lab_text_states_exactly_the_rules_the_grader_enforces(lab):
    nb = nbformat.read(ROOT / "solutions" / f"{lab}.ipynb", as_version=4)
    assert with_rules(nb) == [], "run spec.with_rules on the solution: its text is stale"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for q in read_solution(ROOT / "solutions" / f"{lab}.ipynb").questions:
        assert rules_text(q) in text, q.name


#: Questions whose text gives the student the whole library, with the reason.
LIBRARY_ALLOWED = {("lab05-hybrid", "q5"): "the 40 KB experiment: any tool of Chapter 5"}


def test_every_lab_declares_run_time_rules_and_no_name_list():
    for path in sorted((ROOT / "solutions").glob("lab*.ipynb")):
        lab = read_solution(path)
        assert lab.all_withheld, path.name
        for q in lab.questions:
            if (q.name in ("q1", "q2", "q3", "q4", "q5") and path.stem != "lab01-precision"
                    and (path.stem, q.name) not in LIBRARY_ALLOWED):
                assert q.withheld or q.ops, (path.name, q.name)


def test_malformed_rules_are_a_lab_error(tmp_path):
    nb = nbformat.read(ROOT / "tests" / "fixtures" / "grading" / "minilab.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                == "q1-solution")
    for bad, says in [({"dtypes": ["bfloat17"]}, "dtypes"), ({"ops": ["to_sparse"]}, "aten."),
                      ({"withheld": "levers.formats"}, "list of non-empty str")]:
        cell.metadata["levers"] = bad
        path = tmp_path / "bad.ipynb"
        nbformat.write(nb, path)
        with pytest.raises(LabError, match=says):
            read_solution(path)


def test_a_withheld_function_runs_when_the_library_calls_it():
    """Lab 5's experiment calls policy.apply, which serializes through huffman.code_lengths:
    the stub lets a call from the library's own code through and refuses the student's."""
    import levers
    from levers.grading import guard

    stub = guard._stub("levers.huffman.code_lengths", lambda counts: {"ok": counts})
    with pytest.raises(guard.Withheld, match="not available in this graded lab"):
        stub(1)  # called from here: neither the library nor an instructor cell
    inside = str(Path(levers.__file__).parent / "policy.py")
    grading = str(Path(levers.__file__).parent / "grading" / "policy.py")
    code = compile("def call(f):\n    return f(2)\n", inside, "exec")
    scope: dict = {}
    exec(code, scope)
    assert scope["call"](stub) == {"ok": 2}
    exec(compile("def call(f):\n    return f(3)\n", grading, "exec"), scope)
    with pytest.raises(guard.Withheld):
        scope["call"](stub)  # the grader's own modules are not the course library
