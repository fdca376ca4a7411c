"""Tests for levers.accumulate against step-by-step numpy/ml_dtypes arithmetic and math.fsum."""

import math

import numpy as np
import pytest
import torch

from levers import accumulate as acc
from levers import bits
from levers import formats as fm

ml_dtypes = pytest.importorskip("ml_dtypes")
SCALARS = {fm.FP16: np.float16, fm.BF16: ml_dtypes.bfloat16, fm.FP32: np.float32}


def reference(values, dtype, kahan=False):
    """Each operation in the format's own scalar type (numpy/ml_dtypes round every result)."""
    s, c, out = dtype(0), dtype(0), []
    for v in values.astype(dtype):
        if kahan:
            y = dtype(v - c)
            t = dtype(s + y)
            c = dtype(dtype(t - s) - y)
            s = t
        else:
            s = dtype(s + v)
        out.append(np.float32(s))
    return np.array(out)


@pytest.mark.parametrize("fmt", list(SCALARS), ids=lambda f: f.name)
@pytest.mark.parametrize("kahan", [False, True])
def test_nearest_and_kahan_match_scalar_arithmetic(fmt, kahan):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3000, generator=gen) * torch.logspace(-4, 1, 3000)
    ours = acc.running_sum(x, fmt, "kahan" if kahan else "nearest").numpy()
    assert np.array_equal(ours, reference(x.numpy(), SCALARS[fmt], kahan))


def test_emulated_path_matches_native_path():
    fp16_no_dtype = fm.FloatFormat("fp16_emulated", 5, 10)
    x = torch.rand(500, generator=torch.Generator().manual_seed(1))
    for method in ("nearest", "kahan"):
        assert torch.equal(acc.running_sum(x, fp16_no_dtype, method),
                           acc.running_sum(x, fm.FP16, method))


def test_the_stalls_and_the_rescues():
    ones = torch.ones(4000)
    assert acc.running_sum(ones, fm.FP16)[-1] == 2048 and acc.running_sum(ones, fm.BF16)[-1] == 256
    x = torch.cat([torch.ones(1), torch.full((10000,), 1e-4)])
    exact = math.fsum(fm.round_to_format(x, fm.FP16).double().tolist())
    assert acc.running_sum(x, fm.FP16)[-1] == 1.0
    assert abs(acc.running_sum(x, fm.FP16, "kahan")[-1].item() - exact) <= fm.FP16.eps
    g = torch.Generator().manual_seed(0)
    assert abs(acc.running_sum(x, fm.FP16, "stochastic", g)[-1].item() - exact) < 0.1
    assert abs(acc.running_sum(ones, fm.BF16, "kahan")[-1].item() - 4000) <= 16  # bf16 ULP


def test_kahan_fp32_error_is_within_a_few_ulps_of_fsum():
    x = torch.rand(20000, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    exact = math.fsum(x.double().tolist())
    assert abs(acc.running_sum(x, fm.FP32, "kahan")[-1].item() - exact) <= 2 * 2.0**-23 * exact
    assert abs(acc.running_sum(x, fm.FP32)[-1].item() - exact) > 4 * 2.0**-23 * exact


@pytest.mark.parametrize("fmt", [fm.FP16, fm.BF16, fm.FP8_E4M3, fm.FP4_E2M1], ids=lambda f: f.name)
def test_stochastic_rounding_picks_a_neighbour_without_bias(fmt):
    g = torch.Generator().manual_seed(4)
    table = bits.representable_values(fmt)
    x = (torch.rand(200, generator=g) * 2 - 1) * min(fmt.max, 100.0)
    draws = torch.stack([acc.round_stochastic(x, fmt, g) for _ in range(400)])
    i = torch.searchsorted(table, x, right=True)
    lo, hi = table[i - 1], table[i.clamp(max=len(table) - 1)]
    assert ((draws == lo) | (draws == hi)).all()
    p = ((x - lo) / (hi - lo)).double()
    share = (draws == hi).double().mean(0)
    assert ((share - p).abs() <= 5 * (p * (1 - p) / 400).sqrt() + 1e-9).all()
    exact = table[::7]
    assert torch.equal(acc.round_stochastic(exact, fmt, g), exact)
    assert acc.round_stochastic(torch.tensor([math.nan]), fmt).isnan().all()


def test_running_sum_is_side_by_side_over_other_dimensions():
    x = torch.rand(100, 3, generator=torch.Generator().manual_seed(5))
    both = acc.running_sum(x, fm.FP16, "kahan")
    assert both.shape == (100, 3)
    assert torch.equal(both[:, 1], acc.running_sum(x[:, 1].contiguous(), fm.FP16, "kahan"))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [(lambda: acc.running_sum(torch.ones(3), fm.FP16, "pairwise"), ValueError, "method"),
     (lambda: acc.running_sum(torch.tensor(1.0), fm.FP16), TypeError, "at least one dim"),
     (lambda: acc.running_sum([1.0], fm.FP16), TypeError, "torch.Tensor"),
     (lambda: acc.running_sum(torch.ones(2), "fp16"), TypeError, "FloatFormat"),
     (lambda: acc.round_stochastic(torch.ones(2), fm.FP16, generator=3), TypeError,
      "generator"),
     (lambda: acc.round_stochastic(torch.ones(2, dtype=torch.int64), fm.FP16), TypeError,
      "float32 or float64"),
     (lambda: acc.round_stochastic(torch.ones(2), fm.FP32), ValueError, "at most 16 bits")],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
