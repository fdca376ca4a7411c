"""No unearned points: every attack earns exactly what the honest wrong answer earns.

Each fixture in tests/fixtures/grading/submissions/attack/ is the honest wrong submission
(every function wrong) plus one attack. The honest wrong submission scores 0 on every question,
so each attack must too; where the grader can name the trick, the report names it.
"""

from __future__ import annotations

import pytest
from test_grade_support import MINILAB, SUBMISSIONS, by_question, grade, results

ATTACKS = SUBMISSIONS / "attack"


@pytest.fixture(scope="module")
def honest_wrong(tmp_path_factory) -> dict[str, float]:
    """What the honest wrong submission (every function wrong, no tricks) scores."""
    tmp = tmp_path_factory.mktemp("honest")
    _, out = grade(tmp, MINILAB, SUBMISSIONS / "honest" / "honest_wrong.ipynb")
    return by_question(results(out, "honest_wrong"))


@pytest.mark.parametrize("name, says", [
    ("patch_asserts", "torch.equal = ..."),
    ("patch_numpy_testing", "np.testing.assert_array_equal = ..."),
    ("patch_allclose", "torch.allclose = ..."),
    ("patch_levers", "levers.repro.setup = ..."),
    ("eq_always_true", "Yes.__eq__"),
    ("fake_pass_markers", None),
    ("public_tests_pass", "Restored the instructor's version of edited cell 'q1-public'"),
    ("deleted_tests", "Put back deleted cell 'q1-hidden'"),
    ("hardcoded_public", "hidden check found the answer wrong"),
    ("reference_import", "levers.formats.round_to_format"),
    ("reference_cast", "x.bfloat16"),
    # A markdown or comment-only copy carrying the solution cell's grade_id is not the answer.
    ("duplicate_solution_markdown", "x.bfloat16"),
    ("duplicate_solution_comment", "x.bfloat16"),
    # Without metadata the answer could be in any cell, so every cell is read as the answer.
    ("reference_cast_no_metadata", "x.bfloat16"),
    # Ways around reading the answer: a cell magic, rebinding its name from a scratch cell,
    # getattr under another name, a module the notebook writes and imports, unpickling.
    ("cellmagic_cast", "x.bfloat16"),
    ("rebind_for", "levers.formats.round_to_format"),
    ("rebind_walrus", "levers.formats.round_to_format"),
    ("getattr_alias", "getattr(<computed name>)"),
    # (the working folder is not on the kernel's sys.path: the import fails)
    ("written_module", "name 'round_bf16' is not defined"),
    ("subscript_rebind", "x.bfloat16"),
    ("attrgetter", "operator.attrgetter"),
    ("getipython_alias", "get_ipython(<alias>)"),
    ("builtins_exec", "__builtins__"),
    ("pickle_loads", "pickle.loads"),
    ("patch_through_alias", "torch.equal = ..."),
])
def test_attack_earns_what_an_honest_wrong_answer_earns(tmp_path, honest_wrong, name, says):
    status, out = grade(tmp_path, MINILAB, ATTACKS / f"{name}.ipynb")
    assert status == 0
    report = results(out, name)
    assert by_question(report) == honest_wrong
    text = report["output"] + "\n".join(t["output"] for t in report["tests"])
    if says:
        assert says.replace("np.", "numpy.") in text or says in text


def test_public_test_that_passes_by_a_trick_is_withheld(tmp_path):
    """Patched helpers make the public asserts pass in the student's kernel; no points follow."""
    status, out = grade(tmp_path, MINILAB, ATTACKS / "patch_asserts.ipynb")
    tests = results(out, "patch_asserts")["tests"]
    public = [t for t in tests if t["name"].endswith("public test")]
    assert all(t["score"] == 0 for t in public)


def test_withheld_function_raises_and_says_so(tmp_path):
    """The library's own answer is a stub in the grading kernel; the error names it."""
    status, out = grade(tmp_path, MINILAB, ATTACKS / "reference_import.ipynb", extra=SLOW)
    q1 = [t for t in results(out, "reference_import")["tests"] if t["name"].startswith("q1")]
    assert all(t["score"] == 0 for t in q1)
    assert all("levers.formats.round_to_format is not available in this graded lab"
               in t["output"] for t in q1)


# A probe under the observers does more than the fixtures' 3 s allow on a loaded machine.
SLOW = ("--timeout", "30")
# Shortcuts no name check can see: each is caught where it happens (a stub, the dispatcher,
# the profile hook), and the report says which rule or what removed the observer.
RUNTIME = {
    "rt_split_string_type": "aten._to_copy -> bfloat16",
    "rt_autocast_dtype": "aten._to_copy -> bfloat16",
    "rt_view_dtype": "aten._to_copy -> bfloat16",
    "rt_copy_into": "bfloat16",
    "rt_pydoc_locate": "not available in this graded lab",
    "rt_lv_getattr": "not available in this graded lab",
    "rt_reload_formats": "reached another way",
    "rt_setprofile_off": "observer was removed",
    "rt_pop_mode": "observer was removed",
    "rt_disable_dispatch": "observer was removed",
    "rt_thread_cast": "observer was removed",
    "rt_tensor_method": "aten._to_copy -> bfloat16",
    "rt_code_swap": "aten._to_copy -> bfloat16",
    "rt_registry_if": "aten._to_copy -> bfloat16",
    "rt_module_alias_patch": "aten._to_copy -> bfloat16",
    "rt_compile_patch": None,
    "rt_hasattr_spy": None,
}


@pytest.mark.parametrize("name", sorted(RUNTIME))
def test_runtime_shortcut_earns_what_an_honest_wrong_answer_earns(tmp_path, honest_wrong, name):
    status, out = grade(tmp_path, MINILAB, ATTACKS / f"{name}.ipynb", extra=SLOW)
    assert status == 0
    report = results(out, name)
    assert by_question(report) == honest_wrong, report["output"]
    q1 = "\n".join(t["output"] for t in report["tests"] if t["name"].startswith("q1"))
    if RUNTIME[name]:
        assert RUNTIME[name] in q1, q1


def test_hidden_check_failure_shows_no_grader_code(tmp_path):
    """A function that raises back what it finds on the stack: only the kind of error shows."""
    _, out = grade(tmp_path, MINILAB, ATTACKS / "rt_hasattr_spy.ipynb", extra=SLOW)
    text = (out / "rt_hasattr_spy" / "results.json").read_text()
    assert "def probe" not in text and "__levers_guard" not in text and "Generator" not in text
    hidden = next(t for t in results(out, "rt_hasattr_spy")["tests"]
                  if t["name"] == "q1 hidden check")
    # (the public test shows the student's own message: it ran the student's own cell)
    assert "LEAK" not in hidden["output"]
    assert "ValueError raised in your function round_bf16" in hidden["output"]


def test_a_correct_answer_that_also_patches_keeps_its_earned_points(tmp_path):
    """Tampering is reported, not punished twice: the values decide."""
    import nbformat
    from test_grade_faults import FULL

    nb = nbformat.read(SUBMISSIONS / "honest" / "right_answers.ipynb", as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell("torch.allclose = lambda *a, **k: True"))
    path = tmp_path / "right_but_patching.ipynb"
    nbformat.write(nb, path)
    _, out = grade(tmp_path, MINILAB, path)
    report = results(out, "right_but_patching")
    assert by_question(report) == FULL
    assert "torch.allclose = ..." in report["output"]


def test_a_copy_of_a_public_test_does_not_stand_in_for_it(tmp_path):
    """A markdown cell carrying q1-public's metadata: the real test, which fails, decides."""
    _, out = grade(tmp_path, MINILAB, ATTACKS / "duplicate_public_markdown.ipynb")
    report = results(out, "duplicate_public_markdown")
    assert by_question(report) == {"q1": 2.0, "q2": 3.0, "q3": 2.0}
    q1_public = next(t for t in report["tests"] if t["name"] == "q1 public test")
    assert "ValueError: five values" in q1_public["output"]


@pytest.mark.parametrize("name", ["forloop_selfcheck", "local_alias", "colab_import",
                                  "names_half", "numpy_loops", "scratch_names",
                                  "library_selfcheck", "scratch_after_experiment"])
def test_honest_scratch_code_near_a_forbidden_name_keeps_full_marks(tmp_path, name):
    """A loop variable or a local named like the answer's parameter, or a failed import, is
    not the answer reaching a forbidden name."""
    status, out = grade(tmp_path, MINILAB, SUBMISSIONS / "honest" / f"{name}.ipynb", extra=SLOW)
    report = results(out, name)
    assert status == 0 and report["score"] == 8, report["output"]
