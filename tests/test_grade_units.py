"""Unit tests of the grader's pieces that need no kernel: format, assembly, static reading,
value encoding and comparison, and the report formats."""

from __future__ import annotations

import json
import math

import nbformat
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_grade_support import BLANK, MINILAB, SUBMISSIONS

from levers.grading import report as rep
from levers.grading.assemble import assemble
from levers.grading.sandbox import Limits, masked_paths
from levers.grading.score import CheckResult, Report, renumber
from levers.grading.spec import (
    LabError,
    SubmissionError,
    read_solution,
    read_submission,
)
from levers.grading.static import forbidden_uses, matches, tampering
from levers.grading.values import (
    PROBE_MIME,
    PROBE_RUNNER,
    ProbeDataError,
    compare,
    parse_reply,
    probe_code,
)


def test_solution_parses_into_questions_with_points():
    lab = read_solution(MINILAB)
    assert [q.name for q in lab.questions] == ["q1", "q2", "q3"]
    assert [q.points for q in lab.questions] == [3, 3, 2] and lab.points == 8
    q1 = lab.questions[0]
    assert q1.solution_id == "q1-solution" and "torch.bfloat16" in q1.forbidden
    hidden = [c for c in q1.checks if c.kind == "hidden"][0]
    assert "def probe(seed" in hidden.probe and hidden.rtol == 0.0


def test_student_version_is_refused_unless_public_only():
    with pytest.raises(LabError, match="student version"):
        read_solution(BLANK)
    lab = read_solution(BLANK, public_only=True)
    assert all(c.kind == "public" for q in lab.questions for c in q.checks)


def test_an_answer_named_like_a_builtin_is_a_lab_error(tmp_path):
    """Probes run without the student's builtin-shadowing names, so an answer may not be one."""
    nb = nbformat.read(MINILAB, as_version=4)
    cell = nb.cells[_ids(nb).index("q2-solution")]
    cell.source = cell.source.replace("def confusion(", "def sum(")
    path = tmp_path / "lab.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(LabError, match="'sum'"):
        read_solution(path)


def test_duplicate_grade_id_is_a_lab_error(tmp_path):
    nb = nbformat.read(MINILAB, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(nb.cells[4].source, metadata=nb.cells[4].metadata))
    path = tmp_path / "dup.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(LabError, match="appears twice"):
        read_solution(path)


@pytest.mark.parametrize("data, reason", [
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2", "not JSON"),
    (b"[1, 2]", "not a Jupyter notebook"),
    (b'{"nbformat": 3, "worksheets": []}', "nbformat version 3"),
    (b'{"nbformat": 4, "cells": [{"cell_type": "video"}]}', "cell 0 is not a valid"),
])
def test_unreadable_submissions_say_why(tmp_path, data, reason):
    path = tmp_path / "x.ipynb"
    path.write_bytes(data)
    with pytest.raises(SubmissionError, match=reason):
        read_submission(path)


def _ids(nb):
    return [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]


def test_assembly_restores_edited_and_deleted_test_cells():
    lab = read_solution(MINILAB)
    sub = read_submission(SUBMISSIONS / "attack" / "public_tests_pass.ipynb")
    a = assemble(lab, sub)
    public = a.notebook.cells[_ids(a.notebook).index("q1-public")]
    assert "round_bf16(x)" in public.source
    deleted = assemble(lab, read_submission(SUBMISSIONS / "attack" / "deleted_tests.ipynb"))
    assert {"q1-public", "q1-hidden", "q3-hidden"} <= set(_ids(deleted.notebook))
    assert any("Put back deleted cell 'q2-public'" in n for n in deleted.notes)


def test_assembly_runs_cells_in_the_lab_order_and_keeps_free_cells_in_place():
    lab = read_solution(MINILAB)
    a = assemble(lab, read_submission(SUBMISSIONS / "fault" / "reordered.ipynb"))
    ids = [i for i in _ids(a.notebook) if i]
    assert ids == [i for i in _ids(lab.notebook) if i]
    free = assemble(lab, read_submission(SUBMISSIONS / "fault" / "infinite_loop.ipynb"))
    i = [c.source for c in free.notebook.cells].index("while True:\n    pass\n")
    assert _ids(free.notebook)[i - 1] == "q1-hidden" and free.origin[i] == "free"


def test_a_second_cell_with_a_known_grade_id_is_free_and_loses_its_metadata():
    nb = read_submission(SUBMISSIONS / "attack" / "duplicate_solution_comment.ipynb")
    out = assemble(read_solution(MINILAB), nb)
    tagged = [c.metadata["nbgrader"]["grade_id"] for c in out.notebook.cells
              if "nbgrader" in c.metadata]
    assert tagged.count("q1-solution") == 1
    copy = next(i for i, c in enumerate(out.notebook.cells) if c.source == "# answer above\n")
    assert out.origin[copy] == "free" and out.notebook.cells[copy].metadata == {}


def test_the_labs_untagged_set_up_runs_first_whatever_the_order():
    """Lab 1's import cell is untagged: moved to the end, it still runs first, and only once."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    lab = read_solution(root / "solutions" / "lab01-precision.ipynb")
    nb = read_submission(root / "labs" / "lab01-precision.ipynb")
    setup = nb.cells[1].source
    nb.cells = nb.cells[:1] + nb.cells[2:] + [nb.cells[1]]
    out = assemble(lab, nb)
    code = [(o, c.source) for o, c in zip(out.origin, out.notebook.cells, strict=True)
            if c.cell_type == "code"]
    assert code[0] == ("instructor", setup)
    assert [src for _, src in code].count(setup) == 1


def test_notes_number_cells_as_in_the_students_notebook():
    nb = read_submission(SUBMISSIONS / "attack" / "reference_cast.ipynb")
    del nb.cells[0]  # the title: every later cell moves up by one in the student's notebook
    nb.cells.insert(2, nbformat.v4.new_code_cell("import torch\ny = torch.ones(2).bfloat16()"))
    out = assemble(read_solution(MINILAB), nb)
    answer = next(i for i, c in enumerate(out.notebook.cells) if c.source.startswith("def round"))
    assert out.label(answer) == "Cell 4 of your notebook"
    public = _ids(out.notebook).index("q1-public")
    assert out.label(public) == "The lab's cell 'q1-public'"
    code = [(i, s) for i, _, s in out.student_sources()]
    found = renumber(forbidden_uses(code, answer, ("*.bfloat16",)), out)
    assert "(cell 4, line 2)" in str(found[0])


def test_metadata_lost_everywhere_is_one_note_not_a_list_of_deletions():
    out = assemble(read_solution(MINILAB),
                   read_submission(SUBMISSIONS / "fault" / "no_metadata.ipynb"))
    assert len(out.notes) == 1 and "lost the lab's cell metadata" in out.notes[0]
    assert out.missing == {"q1-solution", "q2-solution", "q3-solution"}


def test_hidden_probe_code_is_not_in_the_assembled_notebook():
    lab = read_solution(MINILAB)
    a = assemble(lab, lab.notebook)
    assert not any("def probe" in c.source for c in a.notebook.cells)


def test_missing_solution_cell_gets_a_stub_that_fails():
    lab = read_solution(MINILAB)
    nb = read_submission(SUBMISSIONS / "honest" / "right_answers.ipynb")
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                != "q2-solution"]
    a = assemble(lab, nb)
    stub = a.notebook.cells[_ids(a.notebook).index("q2-solution")]
    assert "raise NotImplementedError" in stub.source
    assert any("q2-solution" in n for n in a.notes)


@pytest.mark.parametrize("ref, entry, hit", [
    ("levers.formats.round_to_format", "levers.formats", True),
    ("levers.formats.round_to_format", "round_to_format", True),
    ("x.bfloat16", "bfloat16", True),
    ("x.half", ".half(", True),
    ("torch.bfloat16", "*.bfloat16", True),
    ("levers.formatsx", "levers.formats", False),
    ("torch.float16", "bfloat16", False),
])
def test_forbidden_entry_matching(ref, entry, hit):
    assert matches(ref, entry) is hit


def test_forbidden_names_are_found_through_aliases_helpers_and_rebinding():
    cells = [
        (1, "import levers.formats as F\ndef helper(x):\n    return F.round_to_format(x)"),
        (2, "def round_bf16(x):\n    return helper(x)"),
        (3, "def unrelated(x):\n    return x.to(torch.bfloat16)"),
        (4, "round_bf16 = lambda x: x.bfloat16().float()"),
    ]
    found = forbidden_uses(cells, 2, ("levers.formats", "*.bfloat16"), ["import torch"])
    assert (1, "levers.formats.round_to_format") in {(f.cell, f.what) for f in found}
    assert any(f.cell == 4 and f.what.endswith(".bfloat16") for f in found)
    assert not any(f.cell == 3 for f in found)  # a name the answer never reaches


@pytest.mark.parametrize("code", [
    "import importlib\nm = importlib.import_module('levers.formats')",
    "f = getattr(torch, 'bfl' + 'oat16')",
    "g = eval('torch.bfloat16')",
    "h = __import__('levers').formats",
])
def test_dynamic_escapes_count_as_forbidden(code):
    found = forbidden_uses([(1, "def f(x):\n    return x"), (2, code)], 1, ("bfloat16",),
                           ["import torch"])
    assert found


def test_without_a_solution_cell_every_cell_but_copied_tests_is_the_answer():
    test = "assert torch.equal(round_bf16(x), x.to(torch.bfloat16).float())"
    cells = [(1, "def round_bf16(x):\n    return x.half().float()"), (2, test)]
    found = forbidden_uses(cells, None, (".half(", "bfloat16"), ["import torch", test])
    assert {f.cell for f in found} == {1} and "x.half" in {f.what for f in found}


def test_harmless_dynamic_code_in_scratch_cells_is_not_forbidden():
    cells = [(1, "def f(x):\n    return x"),
             (2, "class A:\n    def get(self, name):\n        return getattr(self, name)")]
    assert forbidden_uses(cells, 1, ("bfloat16",)) == []
    rebind = cells + [(3, "globals()['f'] = lambda x: x.bfloat16()")]
    assert forbidden_uses(rebind, 1, ("bfloat16",))


ANSWER = "def round_bf16(x):\n    return TOOLS['r'](x)"


@pytest.mark.parametrize("cells", [
    # Rebinding the answer from a distance.
    [(2, "get_ipython().user_ns['round_bf16'] = lambda x: F.round_to_format(x)")],
    [(2, "import sys\nsys._getframe(0).f_globals['round_bf16'] = lambda x: x")],
    [(2, "import inspect\ninspect.currentframe().f_globals['g'] = 1")],
    [(2, "torch.__dict__['round_bf16'] = 1")],
    # A container filled elsewhere, with what the answer may not use.
    [(2, "TOOLS = {}\nTOOLS.update(r=F.round_to_format)")],
    [(2, "TOOLS = []\nTOOLS.append(F.round_to_format)")],
    # Forbidden names spelled as strings.
    [(1, "def round_bf16(x):\n    return x.type('torch.BFloat16Tensor').float()")],
    [(1, "def round_bf16(x):\n    return x.to(torch.__dict__['BFLOAT16'])")],
    # A module written to disk, then imported where the syntax tree cannot follow.
    [(2, "open('helper_mod.py', 'w').write(SRC)"),
     (1, "from helper_mod import r as round_bf16")],
])
def test_cheap_bypasses_count_as_forbidden(cells):
    code = dict([(1, ANSWER), *cells])
    found = forbidden_uses(sorted(code.items()), 1, ("levers.formats", "bfloat16"),
                           ["import torch\nimport levers.formats as F"])
    assert found


def test_strings_that_only_mention_a_forbidden_name_in_prose_are_fine():
    answer = ('def round_bf16(x):\n    """Round like bfloat16 does."""\n'
              '    if x.dtype != torch.float32:\n'
              '        raise TypeError("expects float32, not bfloat16")\n    return x')
    scratch = "d = {'half': 1, 'metrics': 2}\nd.update(a=3)"
    assert forbidden_uses([(1, answer), (2, scratch)], 1,
                          ("bfloat16", ".half(", "levers.metrics")) == []


def test_no_forbidden_list_means_no_static_findings():
    assert forbidden_uses([(1, "import levers.formats")], 1, ()) == []


def test_tampering_is_detected_and_ordinary_code_is_not():
    bad = tampering([(1, "torch.allclose = lambda *a, **k: True"),
                     (2, "class Yes:\n    def __eq__(self, other):\n        return True"),
                     (3, "import builtins\nsetattr(np, 'x', 1)"),
                     (4, "get_ipython().set_custom_exc((AssertionError,), None)")],
                    ["import torch\nimport numpy as np"])
    assert {f.what for f in bad} >= {"torch.allclose = ...", "Yes.__eq__", "builtins",
                                     "setattr(...)", "get_ipython()"}
    good = tampering([(1, "model.fc.weight = torch.nn.Parameter(w)\n%timeit f(1)\n"
                          "x = [1, 2]\nx[0] = 3\nclass M(torch.nn.Module):\n"
                          "    def __init__(self):\n        super().__init__()")],
                     ["import torch"])
    assert good == []


def run_probe(source: str, seed: int = 5, user: dict | None = None) -> dict:
    """Run the kernel-side probe runner in this process and parse its result."""
    from levers.grading import guard

    runner = guard.setup_runner()
    assert "result" in runner and PROBE_RUNNER
    text = runner["result"](compile(source, "<hidden check>", "exec"), seed,
                            {"torch": torch, "np": np, **(user or {})}, [], [])
    return parse_reply("@@m@@" + text, "@@m@@")


def test_probe_runner_ignores_names_that_shadow_builtins():
    """An honest `list = [3, 1, 2]` or `range = (0.0, 1.0)` breaks neither runner nor probe."""
    shadows = {"list": [3, 1, 2], "str": "notes", "range": (0.0, 1.0), "type": None,
               "dict": {}, "len": 3, "print": None}
    reply = run_probe("def probe(seed):\n    return {'r': list(range(3)), 's': str(seed),"
                      " 'n': len([1])}", user=shadows)
    assert reply == {"ok": True, "value": {"r": [0, 1, 2], "s": "5", "n": 1}}


def test_probe_code_binds_no_name_a_student_could_have_shadowed():
    from levers.grading import guard

    guard.setup_runner()
    user: dict = {"list": [3, 1, 2], "exec": None, "globals": None, "__builtins__": __builtins__}
    sent = []
    code = probe_code("def probe(seed):\n    return {'v': [seed]}", 7, "@@m@@")
    fake = type("M", (), {"publish_display_data": staticmethod(sent.append)})
    import sys

    saved = sys.modules.get("IPython.display")
    sys.modules["IPython.display"] = fake
    try:
        exec(code, user)
    finally:
        sys.modules["IPython.display"] = saved
    (data,) = sent
    assert parse_reply(data[PROBE_MIME], "@@m@@") == {"ok": True, "value": {"v": [7]}}


def test_probe_values_round_trip_exactly():
    reply = run_probe(
        "def probe(seed):\n"
        "    return {'f': 0.1, 'i': 2**70, 'b': True, 's': 'é', 'n': None, 't': (1, [2.5]),\n"
        "            'x': torch.arange(6, dtype=torch.float32).reshape(2, 3) / 3,\n"
        "            'h': torch.tensor([1.5, -2.0], dtype=torch.bfloat16),\n"
        "            'a': np.arange(4, dtype=np.int16), 'nan': float('nan'),\n"
        "            'inf': -float('inf'),\n"
        "            'sc': np.float32(1.25)}")
    assert reply["ok"]
    v = reply["value"]
    assert v["f"] == 0.1 and v["i"] == 2**70 and v["b"] is True and v["s"] == "é"
    assert v["n"] is None and v["t"] == (1, [2.5]) and math.isnan(v["nan"])
    assert v["inf"] == -math.inf
    assert v["x"].dtype == "float32" and v["x"].data.shape == (2, 3)
    assert np.array_equal(v["x"].data, (torch.arange(6.0).reshape(2, 3) / 3).numpy())
    assert v["h"].dtype == "bfloat16" and v["h"].data.tolist() == [1.5, -2.0]
    assert v["a"].kind == "ndarray" and v["a"].data.dtype == np.int16
    assert v["sc"].kind == "npscalar"


def test_objects_that_lie_are_not_encoded():
    reply = run_probe("class Yes:\n    def __eq__(self, o):\n        return True\n"
                      "def probe(seed):\n    return {'v': Yes()}")
    assert not reply["ok"] and "unsupported type" in reply["error"]
    sub = run_probe("class T(torch.Tensor):\n    pass\n"
                    "def probe(seed):\n    return {'v': torch.zeros(2).as_subclass(T)}")
    assert not sub["ok"]


def test_probe_errors_are_reported_not_raised():
    """Only the kind of failure: a message (or a class name) may carry what the code read."""
    reply = run_probe("def probe(seed):\n    raise ValueError('boom')")
    assert reply == {"ok": False, "error": "ValueError raised"}
    reply = run_probe("def probe(seed):\n    raise type('Secret', (Exception,), {})('x')")
    assert reply == {"ok": False, "error": "an exception raised"}


@pytest.mark.parametrize("text", ["", "@@m@@{not json", "@@m@@[]", "@@m@@{\"ok\": 1}",
                                  "@@m@@{\"ok\": true, \"value\": {\"t\": \"tensor\", "
                                  "\"dtype\": \"object\", \"shape\": [1], \"v\": \"AA==\"}}",
                                  "@@m@@{}\n@@m@@{}"])
def test_malformed_probe_output_is_rejected(text):
    with pytest.raises(ProbeDataError):
        parse_reply(text, "@@m@@")


def test_comparison_is_type_strict():
    assert compare(1, 1.0, 1e-6, 0) == ["value: expected float, got int"]
    assert compare([1], (1,), 0, 0)
    assert compare(True, 1, 0, 0)
    assert compare({"a": 1}, {"a": 1, "b": 2}, 0, 0)
    assert compare(1.0 + 1e-9, 1.0, 1e-6, 0) == []
    assert compare(1.1, 1.0, 1e-6, 0)


def _arr(x):
    reply = run_probe(f"def probe(seed):\n    return {x}")
    return reply["value"]


def test_array_comparison_checks_dtype_shape_and_tolerance():
    f32 = _arr("torch.tensor([1.0, 2.0])")
    assert compare(f32, _arr("torch.tensor([1.0, 2.0])"), 0, 0) == []
    assert "float64" in compare(_arr("torch.tensor([1.0, 2.0], dtype=torch.float64)"), f32,
                                0, 0)[0]
    assert "shape" in compare(_arr("torch.tensor([1.0])"), f32, 0, 0)[0]
    assert "1 of 2 entries differ" in compare(_arr("torch.tensor([1.0, 2.5])"), f32, 0, 0)[0]
    assert compare(_arr("torch.tensor([1.0, 2.0000001])"), f32, 1e-6, 0) == []
    assert "ndarray" in compare(_arr("np.array([1.0, 2.0], dtype=np.float32)"), f32, 0, 0)[0]


@settings(max_examples=30, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5)
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=10))
def test_plain_values_survive_the_trip(value):
    reply = run_probe(f"def probe(seed):\n    return {value!r}")
    assert reply["ok"] and compare(reply["value"], value, 0, 0) == []


def test_limits_validate():
    with pytest.raises(ValueError, match="cell_timeout"):
        Limits(cell_timeout=0)


def test_masking_hides_folders_but_never_what_the_kernel_needs(tmp_path):
    env, secret = tmp_path / "env", tmp_path / "class" / "solution.ipynb"
    env.mkdir()
    secret.parent.mkdir()
    secret.write_text("{}")
    inside = env / "lab.ipynb"
    inside.write_text("{}")
    masked = masked_paths([secret, inside], keep=[env])
    assert str(secret.parent) in masked
    assert str(inside) in masked and str(env) not in masked


def _report() -> Report:
    checks = [CheckResult("q1-public", "public", "q1", 1.0, 1.0, "passed", "ok"),
              CheckResult("q1-hidden", "hidden", "q1", 0.0, 2.0, "failed", "differs")]
    return Report("ada", 3, checks, ["a note"], seconds=2.4)


def test_gradescope_results_follow_the_documented_schema():
    r = rep.gradescope(_report())
    assert r["score"] == 1.0 and r["execution_time"] == 2
    assert r["output"] == ("**Score 1 / 3** (probe seed 3).\n\n" + rep.PUBLISHED
                           + "\n\nNotes:\n\n```text\na note\n```")
    assert (r["output_format"], r["test_output_format"]) == ("md", "text")
    assert [t["visibility"] for t in r["tests"]] == ["visible", "after_published"]
    assert set(r["tests"][0]) >= {"name", "score", "max_score", "status", "output",
                                  "visibility"}
    assert [t["status"] for t in r["tests"]] == ["passed", "failed"]
    json.dumps(r)


def test_partial_credit_is_rounded_once_to_hundredths():
    from levers.grading.score import _hidden
    from levers.grading.spec import Check

    check = Check("q1-hidden", "hidden", 5.0, "", probe="...", rtol=0.0, atol=0.0, partial=True)
    pts = _hidden(check, {"ok": True, "value": {"a": 1, "b": 2, "c": 0}}, {"a": 1, "b": 2, "c": 3})
    assert pts[0] == 3.33
    r = Report("ada", 3, [CheckResult("q1-hidden", "hidden", "q1", pts[0], 5.0, "failed", ""),
                          CheckResult("q2-hidden", "hidden", "q2", 3.33, 5.0, "failed", "")])
    assert r.score == 6.66 and rep.gradescope(r)["score"] == 6.66


def test_summary_and_gradebook(tmp_path):
    lab = read_solution(MINILAB)
    r = _report()
    table = rep.summary([r], lab)
    assert table.splitlines()[0].split() == ["student", "q1/3", "q2/3", "q3/2", "total/8"]
    assert table.splitlines()[2].split() == ["ada", "1", "0", "0", "1"]
    rep.gradebook([r], lab, tmp_path / "g.csv")
    assert (tmp_path / "g.csv").read_text().splitlines()[1] == "ada,1,0,0,1,3,a note"


def test_partial_hidden_check_scores_the_share_of_matching_keys():
    from levers.grading.score import _hidden
    from levers.grading.spec import Check

    check = Check("q1-hidden", "hidden", 2.0, "", probe="...", rtol=0.0, atol=0.0, partial=True)
    pts, status, msg = _hidden(check, {"ok": True, "value": {"a": 1, "b": 3}}, {"a": 1, "b": 2})
    assert (pts, status) == (1.0, "failed") and "value['b']" in msg
    whole = Check("q1-hidden", "hidden", 2.0, "", probe="...")
    assert _hidden(whole, {"ok": True, "value": {"a": 1, "b": 3}}, {"a": 1, "b": 2})[0] == 0.0
    assert _hidden(whole, {"ok": False, "error": "boom"}, {})[1] == "error"


def test_student_names_are_safe_and_unique(tmp_path):
    from levers.grading.grader import student_names

    paths = [tmp_path / "a" / "lab.ipynb", tmp_path / "b" / "lab.ipynb", tmp_path / "...ipynb",
             tmp_path / "gradebook.csv.ipynb", tmp_path / "a" / "lab.ipynb",
             tmp_path / "Zhāng Wěi.ipynb"]
    names = student_names(paths)
    assert names == ["a-lab", "b-lab", "submission", "gradebook.csv_", "a-lab-2", "Zhāng_Wěi"]


def test_text_a_student_typed_into_a_test_cell_still_runs_as_their_own_cell():
    lab = read_solution(MINILAB)
    nb = read_submission(SUBMISSIONS / "honest" / "right_answers.ipynb")
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid == "q2-solution":
            cell.source = "# moved"
        elif gid == "q2-public":
            answer = read_submission(SUBMISSIONS / "honest" / "right_answers.ipynb")
            cell.source = next(c.source for c in answer.cells if c.metadata.get(
                "nbgrader", {}).get("grade_id") == "q2-solution")
    a = assemble(lab, nb)
    i = _ids(a.notebook).index("q2-public")
    assert "def confusion" in a.notebook.cells[i - 1].source and a.origin[i - 1] == "free"
    assert "confusion(torch.tensor" in a.notebook.cells[i].source


def test_forbidden_names_held_by_the_labs_own_globals_are_found():
    """A public test's table holding torch.bfloat16, read by the answer, is the cast."""
    lab = ["import torch", "TABLE = {'bf16': (8, 7, torch.bfloat16)}\nassert TABLE"]
    cells = [(2, "def round_bf16(x):\n    return x.to(TABLE['bf16'][2]).float()")]
    found = forbidden_uses(cells, 2, ("bfloat16",), lab)
    assert [(f.cell, f.line) for f in found] == [(2, 2)]
    assert "TABLE (set by the lab's code: torch.bfloat16)" in found[0].what
    honest = [(2, "def round_bf16(x):\n    return x + 0")]
    assert forbidden_uses(honest, 2, ("bfloat16",), lab) == []


def test_a_scratch_loop_variable_is_not_the_answers_parameter():
    cells = [(1, "def round_bf16(x):\n    return x * 1"),
             (2, "for x in [torch.ones(2)]:\n    assert torch.equal(round_bf16(x), x.bfloat16())"),
             (3, "def show(v):\n    x = torch.bfloat16\n    return v.to(x)")]
    assert forbidden_uses(cells, 1, ("bfloat16",), ["import torch"]) == []


def test_filling_a_container_or_class_attribute_the_answer_reads_defines_it():
    cells = [(1, "TOOLS = {}\nclass Impl:\n    pass\ndef round_bf16(x):\n"
                 "    return TOOLS['r'](x) + Impl.run(x)"),
             (2, "def cheat(x):\n    return x.bfloat16()\nTOOLS['r'] = cheat"),
             (3, "def cheat2(x):\n    return x.half()\nImpl.run = cheat2")]
    found = {f.cell for f in forbidden_uses(cells, 1, ("bfloat16", ".half("), ["import torch"])}
    assert found == {2, 3}
