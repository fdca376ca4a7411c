"""Uniform quantization: r = S·(q − Z), its parameters, calibration and fake quantization.

The primitives follow torchao's split: choose the parameters (`choose_qparams`, or `calibrate`
to pick the range from data), then `quantize` (real → integer), `dequantize` (integer → real) and
`fake_quantize` (both at once, in floating point, with a straight-through gradient).

A scheme (`QScheme`) says how: bits, signed or unsigned integers, symmetric or affine range, and
granularity — one scale for the whole tensor, one per channel (``axis``), or one per group of
``group_size`` consecutive values inside each channel. Parameters (`QParams`) add the numbers:
the scale S (the step Δ) and the zero point Z, one per block.

Both range conventions give Δ = (β − α) / (2ᵇ − 1): affine maps [α, β] (widened to contain 0,
so that 0 is exact) onto [q_min, q_max]; symmetric maps [−a, a] with a = max(−α, β) and puts
Z in the middle of the grid (0 for signed integers).

A zero-range block (an all-zero tensor, or an all-zero pruned row) is valid: its scale falls back
to `SCALE_FLOOR`, the float32 machine epsilon, as PyTorch's observers do, so its values quantize
to Z and come back as exact zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Smallest scale we choose: the fallback for a zero-range tensor, block or channel.
SCALE_FLOOR: float = torch.finfo(torch.float32).eps

METHODS = ("minmax", "percentile", "mse")


@dataclass(frozen=True)
class QScheme:
    """How to quantize: bit width, integer signedness, range convention and granularity.

    Parameters
    ----------
    bits : int
        Bit width b, 1 to 16.
    signed : bool
        Integers in [−2ᵇ⁻¹, 2ᵇ⁻¹ − 1] if True, else [0, 2ᵇ − 1].
    symmetric : bool
        Symmetric range [−a, a] (weights) if True, else affine [α, β] (activations).
    axis : int or None
        None for one scale per tensor; the channel axis for per-channel scales.
    group_size : int or None
        With ``axis``: one scale per group of this many consecutive values of each channel.

    Examples
    --------
    >>> QScheme(bits=4, axis=0).q_min, QScheme(bits=4, axis=0).q_max
    (-8, 7)
    """

    bits: int = 8
    signed: bool = True
    symmetric: bool = True
    axis: int | None = None
    group_size: int | None = None

    def __post_init__(self) -> None:
        if type(self.bits) is not int or not 1 <= self.bits <= 16:
            raise ValueError(f"bits must be an int in [1, 16], got {self.bits!r}")
        for name in ("signed", "symmetric"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.axis is not None and type(self.axis) is not int:
            raise TypeError(f"axis must be an int or None, got {self.axis!r}")
        if self.group_size is not None:
            if self.axis is None:
                raise ValueError("group_size needs a channel axis; got axis=None")
            if type(self.group_size) is not int or self.group_size < 1:
                raise ValueError(f"group_size must be a positive int, got {self.group_size!r}")

    @property
    def q_min(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def q_max(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def dtype(self) -> torch.dtype:
        """Smallest PyTorch integer type that holds [q_min, q_max]."""
        if self.bits <= 8:
            return torch.int8 if self.signed else torch.uint8
        return torch.int16 if self.signed else torch.int32


@dataclass(frozen=True, eq=False)
class QParams:
    """Scale S and zero point Z (one per block of `scheme`): r = S·(q − Z).

    ``scale`` is float32 and ``zero_point`` int32, both of shape () per tensor, (C,) per
    channel, (C, G) per group (G groups per channel).
    """

    scale: Tensor
    zero_point: Tensor
    scheme: QScheme

    def __post_init__(self) -> None:
        if not isinstance(self.scale, Tensor) or not isinstance(self.zero_point, Tensor):
            raise TypeError("scale and zero_point must be tensors")
        if self.scale.shape != self.zero_point.shape:
            raise ValueError(f"scale shape {tuple(self.scale.shape)} != zero_point shape "
                             f"{tuple(self.zero_point.shape)}")
        if not bool(torch.isfinite(self.scale).all()) or bool((self.scale <= 0).any()):
            raise ValueError(f"scale must be finite and > 0, got min {self.scale.min().item()!r}")

    @property
    def q_min(self) -> int:
        return self.scheme.q_min

    @property
    def q_max(self) -> int:
        return self.scheme.q_max

    @property
    def bits(self) -> int:
        return self.scheme.bits


def _check_float(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, Tensor) else ""))
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite; it has {int((~torch.isfinite(x)).sum())} "
                         "NaN/inf values")


def blocks(x: Tensor, scheme: QScheme) -> Tensor:
    """View `x` as rows that share one scale: [1, n], [C, n/C] or [C·G, group_size]."""
    if scheme.axis is None:
        return x.reshape(1, -1)
    if not -x.dim() <= scheme.axis < x.dim():
        raise ValueError(f"axis must be in [{-x.dim()}, {x.dim() - 1}] for a {x.dim()}-D "
                         f"tensor, got {scheme.axis}")
    rows = x.movedim(scheme.axis, 0).reshape(x.shape[scheme.axis], -1)
    if scheme.group_size is None:
        return rows
    if rows.shape[1] % scheme.group_size:
        raise ValueError(f"group_size must divide the {rows.shape[1]} values per channel, "
                         f"got {scheme.group_size}")
    return rows.reshape(-1, scheme.group_size)


def _unblocks(b: Tensor, like: Tensor, scheme: QScheme) -> Tensor:
    if scheme.axis is None:
        return b.reshape(like.shape)
    moved = like.movedim(scheme.axis, 0).shape
    return b.reshape(moved).movedim(0, scheme.axis)


def _param_shape(x: Tensor, scheme: QScheme) -> tuple[int, ...]:
    if scheme.axis is None:
        return ()
    c = x.shape[scheme.axis]
    return (c,) if scheme.group_size is None else (c, x.numel() // c // scheme.group_size)


def choose_qparams(lo: Tensor, hi: Tensor, scheme: QScheme) -> QParams:
    """Scale and zero point that map the range [lo, hi] (per block) onto the integer grid.

    Parameters
    ----------
    lo, hi : Tensor
        Range ends, shape () or one per block; lo ≤ hi.
    scheme : QScheme

    Returns
    -------
    QParams
        Δ = (β − α)/(2ᵇ − 1), floored at `SCALE_FLOOR`. Affine: [α, β] = [min(lo, 0),
        max(hi, 0)] and Z = q_min − round(α/Δ). Symmetric: β = −α = max(−lo, hi) and Z is
        the middle of the grid.

    Examples
    --------
    >>> uint8 = QScheme(signed=False, symmetric=False)
    >>> qp = choose_qparams(torch.tensor(0.0), torch.tensor(1.0), uint8)
    >>> round(qp.scale.item() * 255, 6), qp.zero_point.item()
    (1.0, 0)
    """
    lo, hi = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
    if lo.shape != hi.shape:
        raise ValueError(f"lo and hi must have the same shape, got {tuple(lo.shape)} and "
                         f"{tuple(hi.shape)}")
    if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        raise ValueError("lo and hi must be finite")
    if bool((lo > hi).any()):
        raise ValueError("lo must be <= hi in every block")
    steps = float(scheme.q_max - scheme.q_min)
    if scheme.symmetric:
        a = torch.maximum(lo.abs(), hi.abs())
        scale = (2 * a / steps).clamp_min(SCALE_FLOOR)
        mid = 0 if scheme.signed else (scheme.q_max + 1) // 2
        zero_point = torch.full_like(scale, mid, dtype=torch.int32)
    else:
        lo, hi = lo.clamp_max(0.0), hi.clamp_min(0.0)
        scale = ((hi - lo) / steps).clamp_min(SCALE_FLOOR)
        zero_point = (scheme.q_min - torch.round(lo / scale)).clamp(scheme.q_min, scheme.q_max)
        zero_point = zero_point.to(torch.int32)
    return QParams(scale.to(torch.float32), zero_point, scheme)


def _reduce_ranges(x: Tensor, scheme: QScheme, method: str, percentile: float,
                   grid: int) -> tuple[Tensor, Tensor]:
    rows = blocks(x.detach().float(), scheme)
    if method == "minmax":
        return rows.amin(1), rows.amax(1)
    if method == "percentile":
        # Order statistics (kthvalue) rather than torch.quantile, which caps the input size.
        n = rows.shape[1]
        k = min(n, max(1, round(percentile / 100 * n)))
        return rows.kthvalue(n - k + 1, dim=1).values, rows.kthvalue(k, dim=1).values
    # MSE: shrink the min-max range by c ∈ (0, 1] and keep, per block, the c with least error.
    lo0, hi0 = rows.amin(1), rows.amax(1)
    best_err = torch.full_like(lo0, float("inf"))
    best_lo, best_hi = lo0.clone(), hi0.clone()
    flat = QScheme(scheme.bits, scheme.signed, scheme.symmetric, axis=0)
    for c in torch.linspace(1.0 / grid, 1.0, grid):
        qp = choose_qparams(lo0 * c, hi0 * c, flat)
        err = (_fake(rows, qp) - rows).pow(2).mean(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo, best_hi = torch.where(better, lo0 * c, best_lo), torch.where(better, hi0 * c,
                                                                            best_hi)
    return best_lo, best_hi


def calibrate(x: Tensor, scheme: QScheme, method: str = "minmax", percentile: float = 99.99,
              grid: int = 100) -> QParams:
    """Choose the range from data, then its scale and zero point (torchao's choose_qparams_affine).

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
        In (50, 100], for method="percentile".
    grid : int
        Number of candidate ranges for method="mse".

    Returns
    -------
    QParams

    Examples
    --------
    >>> calibrate(torch.tensor([-1.0, 0.5, 2.0]), QScheme(bits=8)).zero_point.item()
    0
    """
    _check_float(x)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 50 < percentile <= 100:
        raise ValueError(f"percentile must be in (50, 100], got {percentile!r}")
    if not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive int, got {grid!r}")
    if x.numel() == 0:
        raise ValueError("x must not be empty")
    lo, hi = _reduce_ranges(x, scheme, method, percentile, grid)
    shape = _param_shape(x, scheme)
    return choose_qparams(lo.reshape(shape), hi.reshape(shape), scheme)


def _check_params(x: Tensor, qp: QParams) -> None:
    if not isinstance(qp, QParams):
        raise TypeError(f"qp must be QParams, got {type(qp).__name__}")
    n = blocks(x, qp.scheme).shape[0]
    if qp.scale.numel() != n:
        raise ValueError(f"qp has {qp.scale.numel()} scales but x has {n} blocks under "
                         f"{qp.scheme}")


def _round(rows: Tensor, qp: QParams) -> tuple[Tensor, Tensor, Tensor]:
    """Unclamped integers round(x/S) + Z of each block row, with S and Z as columns."""
    # PyTorch's kernels multiply by a float32 reciprocal rather than divide, and round half to
    # even (nearbyint); doing the same makes us agree with them bit for bit.
    s = qp.scale.reshape(-1, 1)
    z = qp.zero_point.reshape(-1, 1).float()
    return torch.round(rows * (1.0 / s)) + z, s, z


def _fake(rows: Tensor, qp: QParams) -> Tensor:
    q, s, z = _round(rows, qp)
    return (q.clamp(qp.q_min, qp.q_max) - z) * s


def quantize(x: Tensor, qp: QParams) -> Tensor:
    """Map real values to integers: q = clamp(round(x / S) + Z, q_min, q_max).

    Values outside the representable range saturate; that is the clipping error.

    Examples
    --------
    >>> qp = choose_qparams(torch.tensor(-1.0), torch.tensor(1.0), QScheme(bits=8))
    >>> quantize(torch.tensor([-2.0, 0.0, 0.5, 3.0]), qp).tolist()
    [-128, 0, 64, 127]
    """
    _check_float(x)
    _check_params(x, qp)
    q, _, _ = _round(blocks(x, qp.scheme), qp)
    return _unblocks(q.clamp(qp.q_min, qp.q_max), x, qp.scheme).to(qp.scheme.dtype)


def dequantize(q: Tensor, qp: QParams) -> Tensor:
    """Map integers back to reals: r = S·(q − Z), as float32.

    Examples
    --------
    >>> qp = choose_qparams(torch.tensor(-1.0), torch.tensor(1.0), QScheme(bits=8))
    >>> r = dequantize(torch.tensor([-2, 0, 2], dtype=torch.int8), qp)
    >>> torch.equal(r, torch.tensor([-2.0, 0.0, 2.0]) * qp.scale)
    True
    """
    if not isinstance(q, Tensor) or q.is_floating_point() or q.is_complex():
        raise TypeError(f"q must be an integer tensor, got {getattr(q, 'dtype', type(q))}")
    _check_params(q, qp)
    rows = blocks(q, qp.scheme).float()
    r = (rows - qp.zero_point.reshape(-1, 1).float()) * qp.scale.reshape(-1, 1)
    return _unblocks(r, q, qp.scheme)


class _FakeQuantizeSTE(torch.autograd.Function):
    """Forward: dequantize(quantize(x)). Backward: the straight-through estimator, i.e. the
    identity where x fell inside the range and 0 where it saturated (as PyTorch does)."""

    @staticmethod
    def forward(ctx, x: Tensor, qp: QParams) -> Tensor:  # type: ignore[override]
        q, s, z = _round(blocks(x, qp.scheme), qp)
        inside = (q >= qp.q_min) & (q <= qp.q_max)
        ctx.save_for_backward(_unblocks(inside, x, qp.scheme))
        return _unblocks((q.clamp(qp.q_min, qp.q_max) - z) * s, x, qp.scheme)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None


def fake_quantize(x: Tensor, qp: QParams) -> Tensor:
    """Quantize and dequantize in floating point, with a straight-through gradient.

    Equals ``torch.fake_quantize_per_tensor_affine`` / ``..._per_channel_affine`` bit for bit.

    Examples
    --------
    >>> qp = QParams(torch.tensor(0.5), torch.tensor(0, dtype=torch.int32), QScheme(bits=4))
    >>> fake_quantize(torch.tensor([0.25, 0.3, 0.75, 9.0]), qp).tolist()  # ties to even
    [0.0, 0.5, 1.0, 3.5]
    """
    _check_float(x)
    _check_params(x, qp)
    return _FakeQuantizeSTE.apply(x, qp)


def sqnr_db(x: Tensor, x_hat: Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σx² / Σ(x − x̂)²), in dB.

    Examples
    --------
    >>> round(sqnr_db(torch.tensor([1.0, -1.0]), torch.tensor([0.9, -1.1])), 1)
    20.0
    """
    _check_float(x)
    _check_float(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(x_hat.shape)}")
    noise = (x.double() - x_hat.double()).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(x.double().pow(2).sum() / noise))
