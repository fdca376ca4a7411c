"""Tests for levers.kernels: the chapters' timing experiments run and check their inputs."""

import pytest
import torch

from levers.kernels import csr_vs_dense, csr_vs_dense_runs, matmul_formats


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
