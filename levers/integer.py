"""Integer-only inference (Jacob et al., 2018): int8 × int8 → int32, then requantize.

With r = S(q − Z) for the input x (S₁, Z₁), the weights W (S₂, Z₂ = 0, symmetric) and the
output y (S₃, Z₃), a linear layer y = W x + b becomes

    q_y = Z₃ + M · (Σ (q_w · (q_x − Z₁)) + q_b),   M = S₁·S₂ / S₃,   q_b = round(b / (S₁·S₂)).

The sum is exact in int32. The one real number left, M, is written as M = 2⁻ⁿ · M₀ with
M₀ ∈ [0.5, 1) held as a 31-bit integer, so requantizing is an integer multiply and a rounding
right shift: no floating point anywhere at inference. `int_mlp` builds such a model from one
fake-quantized by `levers.qmodel.quantize_` (this module sits above `levers.qmodel`), and
`torch_int8_linear` runs the same layer through PyTorch's own int8 engine, the outside check.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from levers._checks import check_bool, check_instance, check_integers, check_weight, fail
from levers.calibration import choose_qparams_affine
from levers.qmodel import FakeQuantLayer
from levers.quant import QParams, QScheme, quantize_affine


def quantize_multiplier(m: Tensor | float) -> tuple[Tensor, Tensor]:
    """Write each real multiplier M > 0 as 2⁻ⁿ·M₀, M₀ ∈ [0.5, 1), as (round(M₀·2³¹), n).

    Examples
    --------
    >>> m0, n = quantize_multiplier(0.1)
    >>> int(n), int(m0), abs(int(m0) * 2.0 ** -(31 + int(n)) - 0.1) < 1e-10
    (3, 1717986918, True)
    """
    if isinstance(m, bool) or not isinstance(m, Tensor | float | int):
        raise fail("m", m, "a positive float or a floating-point tensor of them")
    m = torch.as_tensor(m, dtype=torch.float64)
    if not bool(torch.isfinite(m).all()) or bool((m <= 0).any()):
        raise fail("m", m, "finite and > 0 everywhere")
    mantissa, exponent = torch.frexp(m)  # m = mantissa · 2^exponent, mantissa ∈ [0.5, 1)
    m0 = torch.round(mantissa * 2**31).long()
    carry = m0 == 2**31  # the mantissa rounded up to 1.0: use 0.5 · 2^(exponent + 1)
    m0 = torch.where(carry, m0 // 2, m0)
    n = -(exponent.long() + carry.long())
    return m0, n


def requantize(acc: Tensor, m0: Tensor, n: Tensor) -> Tensor:
    """round(acc · M₀ · 2⁻⁽³¹⁺ⁿ⁾) in integer arithmetic (ties round up), as int64.

    Examples
    --------
    >>> m0, n = quantize_multiplier(0.25)
    >>> requantize(torch.tensor([-6, -2, 2, 6, 100]), m0, n).tolist()
    [-1, 0, 1, 2, 25]
    """
    check_integers("acc", acc)
    check_integers("m0", m0, 0, 2**31 - 1)
    check_integers("n", n)
    shift = 31 + n.long()
    if bool((shift < 1).any()) or bool((shift > 62).any()):
        raise fail("n", n, "in [-30, 31] (a multiplier 2^-31 < M < 2^30)")
    # acc < 2^31 and M0 < 2^31, so the product fits in int64.
    return (acc.long() * m0 + (1 << (shift - 1))) >> shift


class IntLinear(nn.Module):
    """A linear layer that maps integer inputs to integer outputs, integers only inside.

    Build it with `IntLinear.from_float`. ``relu=True`` fuses a ReLU by clamping at Z₃.
    """

    def __init__(self, q_w: Tensor, q_b: Tensor, x_zero_point: int, m0: Tensor, n: Tensor,
                 out_qp: QParams, relu: bool = False):
        super().__init__()
        self.register_buffer("q_w", q_w)
        self.register_buffer("q_b", q_b)
        self.register_buffer("m0", m0)
        self.register_buffer("n", n)
        self.x_zero_point, self.out_qp, self.relu = x_zero_point, out_qp, relu

    @classmethod
    def from_float(cls, linear: nn.Linear, x_qp: QParams, out_qp: QParams,
                   w_qp: QParams | None = None, relu: bool = False) -> IntLinear:
        """Quantize `linear` for inputs with parameters `x_qp` and outputs with `out_qp`.

        Parameters
        ----------
        linear : nn.Linear
        x_qp, out_qp : QParams
            Per-tensor parameters of the input and the output (≤ 8 bits).
        w_qp : QParams, optional
            Parameters of the weights: signed, symmetric, per tensor or per output channel
            (axis=0), ≤ 8 bits; int8 per channel from min-max by default.
        relu : bool
            Clamp the output at its zero point (a fused ReLU).
        """
        check_instance("linear", linear, nn.Linear)
        w = linear.weight.detach()
        w_qp = w_qp or choose_qparams_affine(w, QScheme(bits=8, signed=True, symmetric=True,
                                                        axis=0))
        check_instance("w_qp", w_qp, QParams)
        weight = w_qp.scheme
        if not (weight.symmetric and weight.signed and weight.axis in (None, 0)
                and weight.group_size is None and weight.bits <= 8):
            raise fail("w_qp", weight, "signed symmetric QParams of ≤ 8 bits, per tensor or "
                       "axis=0")
        for name, qp in (("x_qp", x_qp), ("out_qp", out_qp)):
            if not isinstance(qp, QParams) or qp.scheme.axis is not None or qp.bits > 8:
                raise fail(name, qp, "per-tensor QParams of ≤ 8 bits")
        s_acc = (x_qp.scale.double() * w_qp.scale.double()).reshape(-1)  # S₁·S₂ per row
        bias = linear.bias.detach() if linear.bias is not None else torch.zeros(w.shape[0])
        q_b = torch.round(bias.double() / s_acc).to(torch.int32)
        m0, n = quantize_multiplier(s_acc / out_qp.scale.double())
        return cls(quantize_affine(w, w_qp), q_b, int(x_qp.zero_point), m0, n, out_qp, relu)

    def forward(self, q_x: Tensor) -> Tensor:
        check_integers("q_x", q_x)
        acc = (q_x.to(torch.int32) - self.x_zero_point) @ self.q_w.to(torch.int32).T + self.q_b
        q_y = int(self.out_qp.zero_point) + requantize(acc, self.m0, self.n)
        low = int(self.out_qp.zero_point) if self.relu else self.out_qp.q_min
        return q_y.clamp(max(low, self.out_qp.q_min), self.out_qp.q_max).to(
            self.out_qp.scheme.dtype)


class IntMLP(nn.Module):
    """An `levers.models.MLP` run with integers only between its input and output scales.

    Built by `int_mlp`; ``forward`` takes float images, quantizes them once, runs the
    `IntLinear` layers and dequantizes the logits.
    """

    def __init__(self, layers: list[IntLinear], x_qp: QParams):
        super().__init__()
        self.layers, self.x_qp = nn.ModuleList(layers), x_qp

    def forward_int(self, x: Tensor) -> list[Tensor]:
        """Integer outputs of every layer for float input `x`."""
        check_weight(x, "x")
        q = quantize_affine(x.flatten(1), self.x_qp)
        outs = []
        for layer in self.layers:
            q = layer(q)
            outs.append(q)
        return outs

    def forward(self, x: Tensor) -> Tensor:
        q, qp = self.forward_int(x)[-1], self.layers[-1].out_qp
        return (q.float() - qp.zero_point.float()) * qp.scale


def int_mlp(model: nn.Module, calibration: Tensor, bits: int = 8) -> IntMLP:
    """Integer-only version of a ReLU MLP fake-quantized by `levers.qmodel.quantize_`.

    Each layer's input parameters come from its `FakeQuantLayer`; the logits' (signed,
    affine, `bits` bits) are calibrated on `calibration`.

    Examples
    --------
    >>> from levers.models import MLP
    >>> from levers.qmodel import QuantConfig, quantize_
    >>> x = torch.rand(16, 8, generator=torch.Generator().manual_seed(0))
    >>> m = int_mlp(quantize_(MLP((8, 4, 3)), QuantConfig(), x), x)
    >>> [q.dtype for q in m.forward_int(x)]
    [torch.uint8, torch.int8]
    """
    check_instance("model", model)
    check_weight(calibration, "calibration")
    layers = list(model.layers()) if hasattr(model, "layers") else []
    if not layers or not all(isinstance(m, FakeQuantLayer) and m.act_qp is not None
                             and isinstance(m.layer, nn.Linear) for m in layers):
        raise fail("model", model, "an MLP whose layers were fake-quantized by quantize_")
    with torch.no_grad():
        logits = model(calibration)
    out_qps = [m.act_qp for m in layers[1:]] + [
        choose_qparams_affine(logits, QScheme(bits=bits, signed=True, symmetric=False))]
    int_layers = [
        IntLinear.from_float(m.layer, m.act_qp, out_qp,
                             m.weight_qparams() if m.config.weight is not None else None,
                             relu=i < len(layers) - 1)
        for i, (m, out_qp) in enumerate(zip(layers, out_qps, strict=True))]
    return IntMLP(int_layers, layers[0].act_qp)


def lsb_error(q: Tensor, q_ref: Tensor) -> int:
    """Largest difference, in integer steps (LSB), between two integer tensors.

    Examples
    --------
    >>> lsb_error(torch.tensor([3, -1, 7]), torch.tensor([3, 0, 5]))
    2
    """
    check_integers("q", q)
    check_integers("q_ref", q_ref)
    if q.shape != q_ref.shape:
        raise fail("q_ref", q_ref, f"a tensor of the shape of q, {tuple(q.shape)}")
    return int((q.long() - q_ref.long()).abs().max()) if q.numel() else 0



def torch_int8_linear(fq: FakeQuantLayer, out_qp: QParams, q_x: Tensor,
                      relu: bool = False) -> Tensor:
    """The integer outputs of a fake-quantized linear layer, computed by PyTorch's int8 engine.

    ``torch.ops.quantized.linear`` (or ``linear_relu``) on the active engine (fbgemm / x86 /
    onednn on x86, qnnpack on ARM) multiplies uint8 activations by int8 weights, accumulates in
    int32 and requantizes; it keeps the bias in float. With PyTorch's deterministic algorithms
    switched on (as `levers.repro.setup` does) every static quantized operator raises, because
    the resize of its quantized output (``quantized_resize_cpu_``) has no deterministic
    implementation; the switch is turned off for this call only.

    Parameters
    ----------
    fq : FakeQuantLayer
        A calibrated Linear layer: uint8 activations (8-bit, unsigned, per tensor), int8
        symmetric weights per tensor or per channel.
    out_qp : QParams
        The outputs' per-tensor 8-bit parameters (signed outputs are shifted by 128 on the way).
    q_x : Tensor
        The integer input (N, in_features) on `fq`'s activation grid.
    relu : bool
        Fuse a ReLU (``quantized::linear_relu``).

    Returns
    -------
    Tensor
        The integer outputs, in `out_qp`'s dtype; compare with `IntLinear` by `lsb_error`.

    Examples
    --------
    >>> from levers.qmodel import QuantConfig, quantize_
    >>> from levers.models import MLP
    >>> x = torch.rand(32, 6, generator=torch.Generator().manual_seed(0))
    >>> m = quantize_(MLP((6, 3)), QuantConfig(), x)
    >>> out = choose_qparams_affine(m(x), QScheme(signed=True, symmetric=False))
    >>> q_x = quantize_affine(x, m.fc1.act_qp)
    >>> ours = IntLinear.from_float(m.fc1.layer, m.fc1.act_qp, out, m.fc1.weight_qparams())
    >>> lsb_error(ours(q_x), torch_int8_linear(m.fc1, out, q_x)) <= 1
    True
    """
    check_instance("fq", fq, FakeQuantLayer)
    check_bool("relu", relu)
    x_qp, scheme = fq.act_qp, fq.config.weight
    if (not isinstance(fq.layer, nn.Linear) or x_qp is None or x_qp.bits != 8
            or x_qp.scheme.signed or x_qp.scheme.axis is not None or scheme is None
            or scheme.bits != 8 or not scheme.signed or not scheme.symmetric
            or scheme.axis not in (None, 0) or scheme.group_size is not None):
        raise fail("fq", fq, "a calibrated Linear FakeQuantLayer with uint8 activations and "
                   "int8 symmetric weights (per tensor or axis=0)")
    if (not isinstance(out_qp, QParams) or out_qp.bits != 8
            or out_qp.scheme.axis is not None):
        raise fail("out_qp", out_qp, "per-tensor 8-bit QParams")
    check_integers("q_x", q_x, 0, 255)
    w_qp, shift = fq.weight_qparams(), 128 if out_qp.scheme.signed else 0
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch announces its quantized tensors' deprecation
        w_hat = fq.quantized_weight().detach()
        if scheme.axis is None:
            qw = torch.quantize_per_tensor(w_hat, float(w_qp.scale), 0, torch.qint8)
        else:
            qw = torch.quantize_per_channel(w_hat, w_qp.scale.double(),
                                            w_qp.zero_point.long(), 0, torch.qint8)
        x_hat = (q_x.float() - float(x_qp.zero_point)) * x_qp.scale
        qx = torch.quantize_per_tensor(x_hat, float(x_qp.scale), int(x_qp.zero_point),
                                       torch.quint8)
        packed = torch.ops.quantized.linear_prepack(qw, fq.layer.bias)
        op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
        was = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(False)
        try:
            qy = op(qx, packed, float(out_qp.scale), int(out_qp.zero_point) + shift)
        finally:
            torch.use_deterministic_algorithms(was)
    return (qy.int_repr().to(torch.int16) - shift).to(out_qp.scheme.dtype)
