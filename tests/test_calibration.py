"""Tests of levers.calibration: the range each method picks, against brute-force oracles."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers.calibration import METHODS, choose_qparams_affine
from levers.quant import QScheme, choose_qparams_affine_with_min_max, fake_quantize_affine

UINT8 = QScheme(bits=8, signed=False, symmetric=False)


def _same(a, b) -> bool:
    return torch.equal(a.scale, b.scale) and torch.equal(a.zero_point, b.zero_point)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 400), percentile=st.floats(50.5, 100.0), seed=st.integers(0, 2**16))
def test_percentile_range_is_the_kth_order_statistic(n, percentile, seed):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    ordered = sorted(x.tolist())
    k = max(round(percentile / 100 * n), (n + 2) // 2)  # k-th smallest / largest, past the median
    expected = choose_qparams_affine_with_min_max(torch.tensor(ordered[n - k]),
                                                  torch.tensor(ordered[k - 1]), UINT8)
    got = choose_qparams_affine(x, UINT8, "percentile", percentile=percentile)
    assert _same(got, expected)


def test_percentile_range_by_hand():
    # −500 … 499 shuffled; the 99th percentile of 1000 values is the 990th smallest, 489, and
    # the 1st is the 990th largest, −490 (one order statistic off would give 488/490 or −489/−491).
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    x = (torch.arange(1000.0) - 500)[order]
    got = choose_qparams_affine(x, UINT8, "percentile", percentile=99.0)
    assert _same(got, choose_qparams_affine_with_min_max(torch.tensor(-490.0),
                                                         torch.tensor(489.0), UINT8))


def test_minmax_and_per_channel_ranges():
    x = torch.tensor([[-1.0, 2.0, 0.5], [0.25, 0.5, 4.0]])
    per_channel = QScheme(bits=4, axis=0)
    expected = choose_qparams_affine_with_min_max(torch.tensor([-1.0, 0.25]),
                                                  torch.tensor([2.0, 4.0]), per_channel)
    assert _same(choose_qparams_affine(x, per_channel), expected)


def test_mse_picks_the_candidate_with_least_error_by_brute_force():
    x = torch.randn(500, generator=torch.Generator().manual_seed(1))
    x[0] = 8.0  # an outlier: the best range is much narrower than min-max
    scheme, grid = QScheme(bits=3), 40
    lo, hi = x.min(), x.max()
    errors = []
    for c in torch.linspace(1.0 / grid, 1.0, grid):
        qp = choose_qparams_affine_with_min_max(lo * c, hi * c, scheme)
        errors.append(float((fake_quantize_affine(x, qp) - x).pow(2).mean()))
    best = min(range(grid), key=errors.__getitem__)
    got = choose_qparams_affine(x, scheme, "mse", grid=grid)
    c = torch.linspace(1.0 / grid, 1.0, grid)[best]
    assert _same(got, choose_qparams_affine_with_min_max(lo * c, hi * c, scheme))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"scheme": "int8"},
     r"scheme must be a levers.quant.QScheme, e.g. QScheme\(bits=8\), got 'int8'"),
    ({"method": "max"}, r"method must be one of \('minmax', 'percentile', 'mse'\), got 'max'"),
    ({"percentile": "99"}, r"percentile must be a finite number in \[50.0, 100.0\], got '99'"),
    ({"percentile": 50}, r"percentile must be a finite number in"),
    ({"grid": 0}, r"grid must be an int >= 1, got 0"),
    ({"x": [1.0, 2.0]}, r"x must be a torch.Tensor, got \[1.0, 2.0\] \(list\)"),
])
def test_bad_arguments_name_themselves(kwargs, match):
    args = {"x": torch.ones(4), "scheme": QScheme(), "method": "percentile", **kwargs}
    with pytest.raises((TypeError, ValueError), match=match):
        choose_qparams_affine(**args)


def test_methods_are_the_three_documented():
    assert METHODS == ("minmax", "percentile", "mse")
