"""Calibration: choosing the quantization range from data (torchao's choose_qparams_affine).

`choose_qparams_affine` looks at a tensor (weights, or a batch of activations), picks a range per
block of the `levers.quant.QScheme`, and turns it into a scale and zero point with
`levers.quant.choose_qparams_affine_with_min_max`. Three ways to pick the range (`METHODS`):
the extremes (min-max: nothing clipped), percentiles (clip the outliers), or the shrunken
min-max range whose fake quantization has the least squared error (MSE).
"""

from __future__ import annotations

import torch
from torch import Tensor

from levers._checks import check_choice, check_int, check_real, check_weight, fail
from levers.quant import (
    QParams,
    QScheme,
    blocks,
    check_scheme,
    choose_qparams_affine_with_min_max,
    fake_quantize_affine,
)

#: The ways `choose_qparams_affine` can pick a range.
METHODS = ("minmax", "percentile", "mse")


def _reduce_ranges(x: Tensor, scheme: QScheme, method: str, percentile: float,
                   grid: int) -> tuple[Tensor, Tensor]:
    rows = blocks(x.detach().float(), scheme)
    if method == "minmax":
        return rows.amin(1), rows.amax(1)
    if method == "percentile":
        # Order statistics (kthvalue) rather than torch.quantile, which caps the input size.
        n = rows.shape[1]
        # k >= the median's rank, so that the k-th largest never lies above the k-th smallest
        k = min(n, max((n + 2) // 2, round(percentile / 100 * n)))
        return rows.kthvalue(n - k + 1, dim=1).values, rows.kthvalue(k, dim=1).values
    # MSE: shrink the min-max range by c ∈ (0, 1] and keep, per block, the c with least error.
    lo0, hi0 = rows.amin(1), rows.amax(1)
    best_err = torch.full_like(lo0, float("inf"))
    best_lo, best_hi = lo0.clone(), hi0.clone()
    flat = QScheme(scheme.bits, scheme.signed, scheme.symmetric, axis=0)
    for c in torch.linspace(1.0 / grid, 1.0, grid):
        qp = choose_qparams_affine_with_min_max(lo0 * c, hi0 * c, flat)
        err = (fake_quantize_affine(rows, qp) - rows).pow(2).mean(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo, best_hi = torch.where(better, lo0 * c, best_lo), torch.where(better, hi0 * c,
                                                                            best_hi)
    return best_lo, best_hi


def _param_shape(x: Tensor, scheme: QScheme) -> tuple[int, ...]:
    if scheme.axis is None:
        return ()
    c = x.shape[scheme.axis]
    return (c,) if scheme.group_size is None else (c, x.numel() // c // scheme.group_size)


def choose_qparams_affine(x: Tensor, scheme: QScheme, method: str = "minmax",
                          percentile: float = 99.99, grid: int = 100) -> QParams:
    """Choose the range from data, then its scale and zero point, per block of `scheme`.

    Parameters
    ----------
    x : Tensor
        Calibration data (weights, or a batch of activations).
    scheme : QScheme
    method : {"minmax", "percentile", "mse"}
        minmax: the extremes (no clipping). percentile: the ``percentile``-th and
        (100 − ``percentile``)-th percentiles (clips outliers). mse: the shrunken min-max range,
        out of ``grid`` candidates, whose fake quantization has the least squared error.
    percentile : float
        In (50, 100], for method="percentile": the range is the k-th smallest and k-th largest
        value of each block, ``k = round(percentile / 100 · n)`` (n values per block; at least the
        median's rank, so the range is never empty).
    grid : int
        Number of candidate ranges for method="mse".

    Returns
    -------
    QParams

    Examples
    --------
    >>> choose_qparams_affine(torch.tensor([-1.0, 0.5, 2.0]), QScheme(bits=8)).zero_point.item()
    0
    """
    check_weight(x, "x")
    check_scheme(scheme)
    check_choice("method", method, METHODS)
    check_real("percentile", percentile, 50.0, 100.0, open_low=True)
    check_int("grid", grid, 1)
    if x.numel() == 0:
        raise fail("x", x, "a non-empty tensor")
    lo, hi = _reduce_ranges(x, scheme, method, percentile, grid)
    shape = _param_shape(x, scheme)
    return choose_qparams_affine_with_min_max(lo.reshape(shape), hi.reshape(shape), scheme)


