"""Uniform (affine) quantization: r = S·(q − Z), its parameters and its primitives.

The primitives carry torchao's names: choose the parameters for a range
(`choose_qparams_affine_with_min_max`; `levers.calibration.choose_qparams_affine` picks the range
from data), then `quantize_affine` (real → integer), `dequantize_affine` (integer → real) and
`fake_quantize_affine` (both at once, in floating point, with a straight-through gradient).

A scheme (`QScheme`) says how: the integer format (`levers.formats.IntFormat`, the one place
integer ranges are defined), symmetric or affine range, and granularity — one scale for the
whole tensor, one per channel (``axis``), or one per group of ``group_size`` consecutive values
inside each channel. Parameters (`QParams`) add the numbers:
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

from levers._checks import check_bool, check_integers, check_tensor, check_weight, fail
from levers.formats import IntFormat

#: Smallest scale we choose: the fallback for a zero-range tensor, block or channel.
SCALE_FLOOR: float = torch.finfo(torch.float32).eps


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
            raise fail("bits", self.bits, "an int in [1, 16]")
        check_bool("signed", self.signed)
        check_bool("symmetric", self.symmetric)
        if self.axis is not None and type(self.axis) is not int:
            raise fail("axis", self.axis, "an int or None")
        if self.group_size is not None:
            if self.axis is None:
                raise fail("group_size", self.group_size, "None when axis is None (groups "
                           "lie inside a channel)")
            if type(self.group_size) is not int or self.group_size < 1:
                raise fail("group_size", self.group_size, "a positive int or None")

    @property
    def int_format(self) -> IntFormat:
        """The integers the values map to: `levers.formats.IntFormat` of `bits`, `signed`."""
        return IntFormat(self.bits, self.signed)

    @property
    def q_min(self) -> int:
        return self.int_format.min

    @property
    def q_max(self) -> int:
        return self.int_format.max

    @property
    def dtype(self) -> torch.dtype:
        """Smallest PyTorch integer type that holds [q_min, q_max]."""
        return self.int_format.torch_dtype


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
        check_tensor("scale", self.scale)
        check_tensor("zero_point", self.zero_point)
        if not isinstance(self.scheme, QScheme):
            raise fail("scheme", self.scheme, "a QScheme")
        if self.scale.shape != self.zero_point.shape:
            raise fail("zero_point", self.zero_point,
                       f"a tensor of the shape of scale, {tuple(self.scale.shape)}")
        if not bool(torch.isfinite(self.scale).all()) or bool((self.scale <= 0).any()):
            raise fail("scale", self.scale, "finite and > 0 everywhere")

    @property
    def q_min(self) -> int:
        return self.scheme.q_min

    @property
    def q_max(self) -> int:
        return self.scheme.q_max

    @property
    def bits(self) -> int:
        return self.scheme.bits


def check_scheme(scheme: object, name: str = "scheme") -> None:
    """Raise unless `scheme` is a `QScheme` (a bit width or a name is not enough).

    Examples
    --------
    >>> check_scheme(QScheme(bits=4))  # passes silently
    >>> try:
    ...     check_scheme("int8")
    ... except ValueError as err:
    ...     print(str(err).split(",")[0])
    scheme must be a levers.quant.QScheme
    """
    if not isinstance(scheme, QScheme):
        raise fail(name, scheme, "a levers.quant.QScheme, e.g. QScheme(bits=8)")


def blocks(x: Tensor, scheme: QScheme) -> Tensor:
    """View `x` as rows that share one scale: [1, n], [C, n/C] or [C·G, group_size].

    Examples
    --------
    >>> blocks(torch.zeros(4, 6), QScheme(axis=0, group_size=3)).shape
    torch.Size([8, 3])
    """
    check_tensor("x", x)
    check_scheme(scheme)
    if scheme.axis is None:
        return x.reshape(1, -1)
    if not -x.dim() <= scheme.axis < x.dim():
        raise fail("scheme.axis", scheme.axis, f"in [{-x.dim()}, {x.dim() - 1}] for a "
                   f"{x.dim()}-D tensor")
    rows = x.movedim(scheme.axis, 0).reshape(x.shape[scheme.axis], -1)
    if scheme.group_size is None:
        return rows
    if rows.shape[1] % scheme.group_size:
        raise fail("scheme.group_size", scheme.group_size,
                   f"a divisor of the {rows.shape[1]} values per channel")
    return rows.reshape(-1, scheme.group_size)


def _unblocks(b: Tensor, like: Tensor, scheme: QScheme) -> Tensor:
    if scheme.axis is None:
        return b.reshape(like.shape)
    moved = like.movedim(scheme.axis, 0).shape
    return b.reshape(moved).movedim(0, scheme.axis)


def choose_qparams_affine_with_min_max(lo: Tensor, hi: Tensor, scheme: QScheme) -> QParams:
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
    >>> qp = choose_qparams_affine_with_min_max(torch.tensor(0.0), torch.tensor(1.0), uint8)
    >>> round(qp.scale.item() * 255, 6), qp.zero_point.item()
    (1.0, 0)
    """
    check_weight(lo, "lo")
    check_weight(hi, "hi")
    check_scheme(scheme)
    lo, hi = lo.to(torch.float32), hi.to(torch.float32)
    if lo.shape != hi.shape:
        raise fail("hi", hi, f"a tensor of the shape of lo, {tuple(lo.shape)}")
    if bool((lo > hi).any()):
        raise fail("lo", lo, "<= hi in every block")
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


def _check_params(x: Tensor, qp: QParams) -> None:
    if not isinstance(qp, QParams):
        raise fail("qp", qp, "a levers.quant.QParams")
    n = blocks(x, qp.scheme).shape[0]
    if qp.scale.numel() != n:
        raise fail("qp", qp.scale, f"QParams with one scale per block of x ({n} under "
                   f"{qp.scheme})")


def _round(rows: Tensor, qp: QParams) -> tuple[Tensor, Tensor, Tensor]:
    """Unclamped integers round(x/S) + Z of each block row, with S and Z as columns."""
    # PyTorch's kernels multiply by a float32 reciprocal rather than divide, and round half to
    # even (nearbyint); doing the same makes us agree with them bit for bit.
    s = qp.scale.reshape(-1, 1)
    z = qp.zero_point.reshape(-1, 1).float()
    return torch.round(rows * (1.0 / s)) + z, s, z


def quantize_affine(x: Tensor, qp: QParams) -> Tensor:
    """Map real values to integers: q = clamp(round(x / S) + Z, q_min, q_max).

    Values outside the representable range saturate; that is the clipping error.

    Examples
    --------
    >>> qp = choose_qparams_affine_with_min_max(torch.tensor(-1.0), torch.tensor(1.0), QScheme())
    >>> quantize_affine(torch.tensor([-2.0, 0.0, 0.5, 3.0]), qp).tolist()
    [-128, 0, 64, 127]
    """
    check_weight(x, "x")
    _check_params(x, qp)
    q, _, _ = _round(blocks(x, qp.scheme), qp)
    return _unblocks(q.clamp(qp.q_min, qp.q_max), x, qp.scheme).to(qp.scheme.dtype)


def dequantize_affine(q: Tensor, qp: QParams) -> Tensor:
    """Map integers back to reals: r = S·(q − Z), as float32.

    Examples
    --------
    >>> qp = choose_qparams_affine_with_min_max(torch.tensor(-1.0), torch.tensor(1.0), QScheme())
    >>> r = dequantize_affine(torch.tensor([-2, 0, 2], dtype=torch.int8), qp)
    >>> torch.equal(r, torch.tensor([-2.0, 0.0, 2.0]) * qp.scale)
    True
    """
    check_integers("q", q)
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


def fake_quantize_affine(x: Tensor, qp: QParams) -> Tensor:
    """Quantize and dequantize in floating point, with a straight-through gradient.

    Equals ``torch.fake_quantize_per_tensor_affine`` / ``..._per_channel_affine`` bit for bit.

    Examples
    --------
    >>> qp = QParams(torch.tensor(0.5), torch.tensor(0, dtype=torch.int32), QScheme(bits=4))
    >>> fake_quantize_affine(torch.tensor([0.25, 0.3, 0.75, 9.0]), qp).tolist()  # ties to even
    [0.0, 0.5, 1.0, 3.5]
    """
    check_weight(x, "x")
    _check_params(x, qp)
    return _FakeQuantizeSTE.apply(x, qp)
