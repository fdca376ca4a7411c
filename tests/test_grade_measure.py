"""The grader's own measurement of experiments (`levers.grading.measure`).

Oracles: `levers.train.evaluate` and a direct count of zeros on the same weights, the library's
serializer for the bytes, and `levers.quant`'s fake quantizer; the measured values must not
depend on anything the kernel could have computed, only on the plain data moved out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import levers as lv
from levers.grading import measure as M
from levers.grading.spec import LabError, read_solution
from levers.grading.values import PROBE_RUNNER, Array, decode

ROOT = Path(__file__).resolve().parents[1]


def _decoded(value: object) -> object:
    """`value` as the grader receives it: encoded by the kernel-side runner, then decoded."""
    ns: dict = {}
    exec(PROBE_RUNNER, ns)  # the runner's `enc`, as the kernel runs it
    return decode(json.loads(json.dumps(ns["enc"](value))))


def _state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def models() -> dict:
    torch.manual_seed(0)
    dense = lv.models.LeNet300100()
    pruned = lv.models.LeNet300100()
    pruned.load_state_dict(dense.state_dict())
    with torch.no_grad():
        for layer in pruned.layers():
            w = layer.weight
            w[w.abs() < w.abs().flatten().kthvalue(int(0.9 * w.numel())).values] = 0.0
    return {"dense": dense, "pruned": pruned}


def test_accuracy_and_sparsity_equal_the_library_on_the_same_weights(models):
    split = lv.data.load_mnist5k()
    for model in models.values():
        loaded = M.model_from_state(_decoded(_state(model)), "model")
        assert M.accuracy(loaded) == lv.train.evaluate(model, split.x_test, split.y_test)
        zeros = torch.cat([p.flatten() for n, p in model.named_parameters() if "weight" in n])
        assert M.weight_sparsity(loaded) == float((zeros == 0).double().mean())


def test_sparse_model_clips_at_the_thresholds(models):
    value = _decoded({"model": _state(models["dense"]), "pruned": _state(models["pruned"])})
    out = M.sparse_model(value, sparsity=0.5, drop=1.0)
    assert out["sparsity_at_least"] == 0.5  # 90 % sparse, clipped at the threshold
    assert out["shortfall_beyond_drop"] == 0.0  # within a drop of 100 points
    strict = M.sparse_model(value, sparsity=0.95, drop=-1.0)
    assert 0.89 < strict["sparsity_at_least"] < 0.95
    assert strict["shortfall_beyond_drop"] < 0.0


def test_pruning_report_pairs_each_reported_number_with_its_measurement(models):
    value = _decoded({"reported": {"acc": 0.5, "zeros": 0.25},
                      "states": {"p": _state(models["pruned"])}})
    out = M.pruning_report(value, accuracy_of={"acc": "p"}, sparsity_of={"zeros": "p"})
    assert out["acc"][0] == 0.5 and out["zeros"][0] == 0.25
    loaded = M.model_from_state(value["states"]["p"], "p")
    assert out["acc"][1] == M.accuracy(loaded) and out["zeros"][1] == M.weight_sparsity(loaded)
    with pytest.raises(M.MeasureError, match="acc must be a Python float"):
        M.pruning_report(_decoded({"reported": {"acc": 1, "zeros": 0.25},
                                   "states": {"p": _state(models["pruned"])}}),
                         accuracy_of={"acc": "p"}, sparsity_of={"zeros": "p"})


def test_compressed_model_loads_the_bytes_with_the_librarys_loader(models):
    blob = lv.deepcompress.serialize(models["pruned"], {})
    value = _decoded({"blob": np.frombuffer(blob, dtype=np.uint8),
                      "model": _state(models["dense"])})
    out = M.compressed_model(value, max_bytes=len(blob) - 10, drop=1.0)
    assert out["bytes_over"] == 10 and out["shortfall_beyond_drop"] == 0.0
    loaded = lv.deepcompress.load(lv.models.LeNet300100(), blob)
    assert out["dense_accuracy"] == M.accuracy(models["dense"].eval())
    damaged = _decoded({"blob": np.frombuffer(blob[:-7], dtype=np.uint8),
                        "model": _state(models["dense"])})
    with pytest.raises(M.MeasureError, match="could not be loaded"):
        M.compressed_model(damaged, max_bytes=10**6, drop=0.01)
    with pytest.raises(M.MeasureError, match="must be bytes"):
        M.compressed_model(_decoded({"blob": "not bytes", "model": _state(loaded)}),
                           max_bytes=10**6, drop=0.01)


def test_quantized_accuracy_uses_the_librarys_fake_quantizer(models):
    from levers.quant import QScheme, choose_qparams_affine_with_min_max, fake_quantize_affine

    model, split = models["dense"], lv.data.load_mnist5k()
    fake = lv.models.LeNet300100()
    fake.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer in fake.layers():
            w = layer.weight
            qp = choose_qparams_affine_with_min_max(w.amin(1), w.amax(1),
                                                    QScheme(bits=3, axis=0))
            w.copy_(fake_quantize_affine(w, qp))
    assert M.quantized_accuracy(model, 3) == lv.train.evaluate(fake, split.x_test, split.y_test)


def test_a_state_that_is_not_the_reference_model_is_refused_by_name(models):
    state = _state(models["dense"])
    with pytest.raises(M.MeasureError, match="`pruned` is not a LeNet-300-100"):
        M.model_from_state(_decoded({k: v for k, v in state.items() if k != "fc2.bias"}),
                           "pruned")
    state["fc1.weight"] = state["fc1.weight"].double()
    with pytest.raises(M.MeasureError, match="fc1.weight must be a float32 tensor"):
        M.model_from_state(_decoded(state), "pruned")
    state["fc1.weight"] = torch.zeros(3, 3)
    with pytest.raises(M.MeasureError, match=r"shape \[300, 784\]"):
        M.model_from_state(_decoded(state), "pruned")
    assert isinstance(_decoded(torch.zeros(2)), Array)


def test_a_lab_naming_an_unknown_measurement_is_a_lab_error(tmp_path):
    import nbformat

    from levers.grading.spec import grade_id

    lab = nbformat.read(ROOT / "solutions" / "lab03-compression.ipynb", as_version=4)
    hidden = next(c for c in lab.cells if grade_id(c) == "q5-hidden")
    assert hidden.metadata.levers["measure"]["name"] == "sparse_model"
    hidden.metadata.levers["measure"] = {"name": "accuracy_in_the_kernel"}
    path = tmp_path / "lab.ipynb"
    nbformat.write(lab, path)
    with pytest.raises(LabError, match="measure must be a dict whose 'name' is one of"):
        read_solution(path)
    hidden.metadata.levers["measure"] = {"name": "sparse_model", "sparsity": 0.9, "dorp": 0.01}
    nbformat.write(lab, path)
    with pytest.raises(LabError, match="measure 'sparse_model': .*drop"):
        read_solution(path)


def test_every_experiment_question_is_measured_by_the_grader():
    """Each lab's experiment (a hidden check run in place) names a grader-side measurement."""
    for path in sorted((ROOT / "solutions").glob("lab0[2-5]*.ipynb")):
        checks = [c for q in read_solution(path).questions for c in q.checks
                  if c.kind == "hidden" and c.in_place]
        assert checks, f"{path.name}: no experiment question"
        assert all(c.measure for c in checks), f"{path.name}: measured in the kernel"


def test_the_leaderboard_shows_what_the_grader_measured_never_what_it_compared(models):
    from levers.grading import report as rep
    from levers.grading.score import CheckResult, Report

    value = _decoded({"model": _state(models["dense"]), "pruned": _state(models["pruned"])})
    compared, board = M.measure({"name": "sparse_model", "sparsity": 0.5, "drop": 1.0}, value)
    assert M.BOARD not in compared and compared["sparsity_at_least"] == 0.5
    assert board["sparsity"] == (M.weight_sparsity(M.model_from_state(value["pruned"], "p")),
                                 "desc")
    check = CheckResult("q5-hidden", "hidden", "q5", 2, 2, "passed", "", measured=board)
    from types import SimpleNamespace

    import nbformat

    lab = SimpleNamespace(notebook=nbformat.v4.new_notebook())
    entries = rep.leaderboard(Report("ada", 1, [check], execution=SimpleNamespace(probes={})),
                              lab)
    assert [e["name"] for e in entries] == ["q5 accuracy", "q5 sparsity"]
    assert entries[1]["value"] == round(board["sparsity"][0], 4) > 0.5  # unclipped
