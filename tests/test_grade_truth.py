"""Ground truth: the solution scores full marks, the blank lab 0, honest partial answers the
points they earned, and one seed gives one set of reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from test_grade_support import BLANK, MINILAB, SEED, SUBMISSIONS, by_question, grade, results

ROOT = Path(__file__).parent.parent
LAB1 = ROOT / "solutions" / "lab01-precision.ipynb"
LAB1_BLANK = ROOT / "labs" / "lab01-precision.ipynb"


@pytest.mark.parametrize("name, expected", [
    ("solution_copy", {"q1": 3, "q2": 3, "q3": 2}),
    ("right_answers", {"q1": 3, "q2": 3, "q3": 2}),
    ("honest_wrong", {"q1": 0, "q2": 0, "q3": 0}),
    # q1 rounds ties up: the public tie test and the hidden ties fail; q3 is still right.
    ("half_right", {"q1": 0, "q2": 3, "q3": 2}),
    # q1 truncates; q3 is computed with that q1, so its value is wrong too.
    ("q1_wrong", {"q1": 0, "q2": 3, "q3": 0}),
    # q2 transposed: rows and columns swapped.
    ("q2_wrong", {"q1": 3, "q2": 0, "q3": 2}),
    # Scratch names shadowing builtins (list, str, range, dict) after the last question.
    ("shadow_builtins", {"q1": 3, "q2": 3, "q3": 2}),
])
def test_honest_submissions_score_what_they_earned(tmp_path, name, expected):
    status, out = grade(tmp_path, MINILAB, SUBMISSIONS / "honest" / f"{name}.ipynb")
    assert status == 0
    assert by_question(results(out, name)) == expected


def test_blank_lab_scores_zero_without_a_grader_error(tmp_path):
    status, out = grade(tmp_path, MINILAB, BLANK)
    report = results(out, "minilab-blank")
    assert status == 0 and report["score"] == 0
    assert "Internal grader error" not in json.dumps(report)
    assert all(t["status"] == "failed" for t in report["tests"])
    assert all(t["output"].startswith("The test raised") for t in report["tests"]
               if t["name"].endswith("public test"))


def test_same_seed_same_reports(tmp_path):
    sub = SUBMISSIONS / "honest" / "half_right.ipynb"
    _, first = grade(tmp_path / "a", MINILAB, sub)
    _, second = grade(tmp_path / "b", MINILAB, sub)
    for name in ("results.json", "feedback.ipynb"):
        a = json.loads((first / "half_right" / name).read_text())
        b = json.loads((second / "half_right" / name).read_text())
        a.pop("execution_time", None)
        b.pop("execution_time", None)
        assert a == b, name
    assert (first / "gradebook.csv").read_text() == (second / "gradebook.csv").read_text()


def test_output_printed_in_pieces_is_one_output_in_the_feedback(tmp_path):
    """Stream chunks are merged, so the feedback does not depend on the kernel's timing."""
    _, out = grade(tmp_path, MINILAB, SUBMISSIONS / "honest" / "chatty.ipynb")
    nb = nbformat.read(out / "chatty" / "feedback.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "for epoch in range(4)" in c.source)
    assert [o.text for o in cell.outputs] == ["epoch 0\nepoch 1\nepoch 2\nepoch 3\n"]


def test_another_seed_still_gives_full_marks_to_the_solution(tmp_path):
    status, out = grade(tmp_path, MINILAB, MINILAB, seed=987654)
    assert results(out, "minilab")["score"] == 8


def test_feedback_has_a_result_under_each_question(tmp_path):
    _, out = grade(tmp_path, MINILAB, SUBMISSIONS / "honest" / "half_right.ipynb")
    nb = nbformat.read(out / "half_right" / "feedback.ipynb", as_version=4)
    assert nb.cells[0].source.startswith("# Grade: 5 / 8")
    results_at = [i for i, c in enumerate(nb.cells) if c.source.startswith("**Grader — ")]
    assert len(results_at) == 3
    for i, q in zip(results_at, ("q1", "q2", "q3"), strict=True):
        assert nb.cells[i - 1].metadata["nbgrader"]["grade_id"] == f"{q}-hidden"
    assert nb.cells[results_at[0]].source.count("❌") == 2


# --- Lab 1 --------------------------------------------------------------------------------

def lab1_variant(tmp_path: Path, grade_id: str, old: str, new: str) -> Path:
    """The Lab 1 solution with one answer changed (a realistic mistake)."""
    nb = nbformat.read(LAB1, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    assert old in cell.source, f"{grade_id} no longer contains {old!r}"
    cell.source = cell.source.replace(old, new)
    path = tmp_path / f"{grade_id}.ipynb"
    nbformat.write(nb, path)
    return path


LABS = sorted(p.stem for p in (ROOT / "solutions").glob("lab*.ipynb"))


@pytest.mark.parametrize("lab", LABS)
def test_every_lab_solution_full_marks_and_blank_zero(tmp_path, lab):
    solution, blank = ROOT / "solutions" / f"{lab}.ipynb", ROOT / "labs" / f"{lab}.ipynb"
    # The real labs train models: give their cells a real timeout, not the fixtures' 3 s.
    status, out = grade(tmp_path, solution, solution, blank, extra=("--timeout", "300"))
    assert status == 0
    full = results(out, f"solutions-{lab}")
    zero = results(out, f"labs-{lab}")
    assert full["score"] == sum(t["max_score"] for t in full["tests"]) > 0
    assert zero["score"] == 0 and "Internal grader error" not in json.dumps(zero)
    head, *rest = zero["output"].split("\n")
    assert head == f"**Score 0 / {full['score']:g}** (probe seed {SEED})."
    assert "Notes:" not in rest  # no repairs


@pytest.mark.skipif(not LAB1.exists(), reason="Lab 1 not written yet")
def test_lab1_realistic_mistakes_lose_only_their_question(tmp_path):
    # Macro F1 as the F1 of macro precision and recall (a common mistake), and
    # round-half-up instead of ties-to-even.
    macro = lab1_variant(tmp_path, "q1-metrics-solution", '"macro_f1": float(f1.mean()),',
                         '"macro_f1": float(2 * precision.mean() * recall.mean() / '
                         '(precision.mean() + recall.mean())),')
    ties = lab1_variant(tmp_path, "q3-bf16-solution", "0x7FFF + last_kept", "0x8000")
    status, out = grade(tmp_path, LAB1, macro, ties, extra=("--timeout", "60"))
    assert status == 0
    assert by_question(results(out, "q1-metrics-solution")) == {
        "q1": 0, "q2": 3, "q3": 3, "q4": 3, "q5": 3}
    assert by_question(results(out, "q3-bf16-solution")) == {"q1": 3, "q2": 3, "q3": 0, "q4": 3,
                                                               "q5": 3}


@pytest.mark.skipif(not LAB1.exists(), reason="Lab 1 not written yet")
def test_lab1_forbidden_reference_call_scores_zero(tmp_path):
    path = lab1_variant(tmp_path, "q3-bf16-solution", "### BEGIN SOLUTION",
                        "return lv.formats.round_to_format(x, 'bf16')\n    ### BEGIN SOLUTION")
    _, out = grade(tmp_path, LAB1, path, extra=("--timeout", "60"))
    report = results(out, "q3-bf16-solution")
    assert by_question(report)["q3"] == 0
    assert any(re.search(r"levers\.formats", t["output"]) for t in report["tests"])


@pytest.mark.skipif(not LAB1.exists(), reason="Lab 1 not written yet")
def test_lab1_honest_names_and_float32_work_keep_full_marks(tmp_path):
    """What a name blocklist punished: a local named `half`, float32 arithmetic, and scratch
    code using sys.path, get_ipython and globals()."""
    nb = nbformat.read(LAB1, as_version=4)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    edits = {"q1-metrics-solution": [
        ("cm = cm.to(torch.float64)", "cm = cm.to(torch.float32)"),
        ("    return {\n", "    precision, recall, f1 = precision.double(), recall.double(), "
                         "f1.double()\n    return {\n")],
        "q3-bf16-solution": [("bits + 0x7FFF + last_kept", "bits + half + last_kept"),
                             ("    bits = x.view(torch.int32)\n",
                              "    bits = x.view(torch.int32)\n    half = 0x7FFF\n")]}
    for gid, pairs in edits.items():
        for old, new in pairs:
            assert old in cells[gid].source, (gid, old)
            cells[gid].source = cells[gid].source.replace(old, new)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys\nsys.path.append('..')\nfrom IPython import get_ipython\n"
        "names = [k for k in globals() if not k.startswith('_')]\nnote = 'helpers.py'\n"
        "qmodel = calibrate = None"))
    path = tmp_path / "honest_names.ipynb"
    nbformat.write(nb, path)
    _, out = grade(tmp_path, LAB1, path, extra=("--timeout", "60"))
    report = results(out, "honest_names")
    assert by_question(report) == {"q1": 3, "q2": 3, "q3": 3, "q4": 3, "q5": 3}, report["output"]


LAB3 = ROOT / "solutions" / "lab03-compression.ipynb"
# Lab 3 Q5 answered by a one-shot prune to 97 % without fine-tuning (far more than a point below
# the dense model), with `Tensor.argmax` patched so that any accuracy computed in the student's
# kernel, by the public test or by a probe, says the model is perfect.
LYING_EXPERIMENT = '''pruned = copy.deepcopy(model)
with torch.no_grad():
    for i in (1, 2, 3):
        w = pruned.get_parameter(f"fc{i}.weight")
        cut = w.abs().flatten().kthvalue(int(0.97 * w.numel())).values
        w[w.abs() <= cut] = 0.0
_argmax = torch.Tensor.argmax


def _lying_argmax(self, *args, **kwargs):
    if self.dim() == 2 and tuple(self.shape) == (len(split.y_test), 10):
        return split.y_test.clone()
    return _argmax(self, *args, **kwargs)


torch.Tensor.argmax = _lying_argmax
weights = torch.cat([pruned.get_parameter(f"fc{i}.weight").flatten() for i in (1, 2, 3)])
pruned_sparsity = float((weights == 0).float().mean())
pruned_accuracy = lv.train.evaluate(pruned, split.x_test, split.y_test)
'''


def test_an_experiment_is_measured_by_the_grader_not_by_the_students_kernel(tmp_path):
    nb = nbformat.read(LAB3, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                == "q5-experiment-solution")
    cell.source = LYING_EXPERIMENT
    path = tmp_path / "lying_experiment.ipynb"
    nbformat.write(nb, path)
    _, out = grade(tmp_path, LAB3, path, extra=("--timeout", "300"))
    report = results(out, "lying_experiment")
    assert by_question(report) == {"q1": 3, "q2": 3, "q3": 3, "q4": 3, "q5": 0}, report["output"]
    public = next(t for t in report["tests"] if t["name"].startswith("q5 public"))
    assert "the hidden check found the answer wrong" in public["output"]  # it passed in-kernel
    hidden = next(t for t in report["tests"] if t["name"].startswith("q5 hidden"))
    assert "shortfall_beyond_drop" in hidden["output"], hidden["output"]
