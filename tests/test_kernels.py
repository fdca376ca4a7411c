"""Tests for levers.kernels: the chapters' timing experiments run and check their inputs."""

import pytest
import torch

from levers.kernels import (
    batch_sweep,
    csr_vs_dense,
    csr_vs_dense_runs,
    kernel_report,
    matmul_formats,
)


@pytest.mark.usefixtures("one_thread")
def test_matmul_formats_times_the_four_formats():
    t = matmul_formats(8, 16, 4, rounds=1, repeats=2)
    assert list(t) == ["fp32", "fp16", "bf16", "int8"]
    assert all(v.repeats == 2 and v.minimum > 0 for v in t.values())


@pytest.mark.parametrize("shape", [(0, 4, 4), (4, -1, 4), (4, 4, 2.0)])
def test_matmul_formats_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        matmul_formats(*shape)


@pytest.mark.usefixtures("one_thread")
def test_csr_vs_dense_times_dense_and_each_sparsity():
    w = torch.randn(6, 5)
    t = csr_vs_dense(w, torch.randn(5, 3), [0.0, 0.5, 0.9], rounds=1, repeats=2)
    assert list(t) == ["dense", 0.0, 0.5, 0.9]
    assert all(v.minimum > 0 for v in t.values())


@pytest.mark.parametrize(("w", "x", "match"), [
    (torch.randn(6), torch.randn(6, 1), "weight must be a 2-D tensor"),
    (torch.randn(6, 5), torch.randn(4, 3), "x must be a 2-D tensor with 5 rows"),
    (torch.randn(6, 5), [1.0], "x must be a torch.Tensor"),
])
def test_csr_vs_dense_rejects_bad_shapes(w, x, match):
    with pytest.raises(ValueError, match=match):
        csr_vs_dense(w, x, [0.5])


def test_csr_vs_dense_rejects_bad_sparsities():
    with pytest.raises(ValueError, match="amount"):
        csr_vs_dense(torch.randn(6, 5), torch.randn(5, 3), [1.5])


def test_csr_vs_dense_runs_gives_one_independent_result_per_run():
    w = torch.randn(4, 5)
    out = csr_vs_dense_runs(w, torch.randn(5, 3), [0.0, 0.9], runs=3, repeats=2)
    assert len(out) == 3
    for run in out:
        assert list(run) == ["dense", 0.0, 0.9]
        assert all(t.repeats == 2 for t in run.values())
    assert len({id(run) for run in out}) == 3
    with pytest.raises(ValueError, match="runs"):
        csr_vs_dense_runs(w, torch.randn(5, 3), [0.5], runs=0)


@pytest.mark.usefixtures("one_thread")
def test_batch_sweep_times_every_model_at_every_batch():
    models = {"a": torch.nn.Linear(5, 3), "b": torch.nn.Identity()}
    t = batch_sweep(models, torch.randn(8, 5), [1, 8], rounds=1, repeats=2)
    assert list(t) == [("a", 1), ("b", 1), ("a", 8), ("b", 8)]
    assert all(v.repeats == 2 and v.minimum > 0 for v in t.values())


@pytest.mark.parametrize(("models", "batches", "match"), [
    ({}, [1], "models must be a non-empty mapping"),
    ({"a": 3}, [1], "models\\['a'\\] must be a torch.nn.Module"),
    ({"a": torch.nn.Identity()}, [9], "batches\\[i\\] must be an int in \\[1, 8\\]"),
    ({"a": torch.nn.Identity()}, "1", "batches must be a non-empty sequence"),
])
def test_batch_sweep_rejects_bad_input(models, batches, match):
    with pytest.raises(ValueError, match=match):
        batch_sweep(models, torch.randn(8, 5), batches)


def test_kernel_report_names_the_int8_and_fp32_operators():
    import warnings

    linear = torch.nn.Sequential(torch.nn.Linear(16, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = torch.ao.quantization.quantize_dynamic(linear, {torch.nn.Linear},
                                                      dtype=torch.qint8)
    report = kernel_report({"fp32": linear, "int8": int8}, torch.randn(4, 16))
    assert "aten::addmm" in report["ops"]["fp32"]
    assert "quantized::linear_dynamic" in report["ops"]["int8"]
    assert report["quantized_engine"] == torch.backends.quantized.engine
    assert isinstance(report["cpu_capability"], str)
    assert report["blas"] != "unknown" and "=" not in report["blas"]
