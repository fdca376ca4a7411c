"""Beyond round-to-nearest: quantize a layer so that its *output*, not its weights, stays close.

Round-to-nearest (RTN) minimizes each weight's own error. What a layer's user sees is the error
of its output on real inputs, ‖(W − Ŵ)X‖², and for that the errors of different weights can
cancel. With the layer's inputs x (rows of X) from a calibration set, the output error of one
output row w is (w − ŵ) H (w − ŵ)ᵀ with the Hessian H = XᵀX / n.

**GPTQ** (Frantar et al., 2023) quantizes the columns of W one at a time. After column i is
rounded, its error is fed back into the columns not yet quantized, moving them to the values
that best compensate for it: the optimal continuous update of Optimal Brain Surgeon,
W[:, j] −= e_i · (H⁻¹)ᵢⱼ / (H⁻¹)ᵢᵢ, read off the upper Cholesky factor of H⁻¹ so that each
step is one rank-1 update. Per-channel scales are fixed from the full rows before the loop, as
in GPTQ, so the result sits on an ordinary integer grid.

**Bias correction** (Nagel et al., 2019) repairs the mean of the output error instead: E[(W −
Ŵ)x] = (W − Ŵ)·E[x], a constant shift that the bias can absorb.

`quantize_weights_` applies either to every linear layer of a model, layer after layer, each
layer calibrated on the inputs that the already-quantized layers before it produce.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from levers._checks import check_bool, check_choice, check_instance, check_real, check_weight, fail
from levers.calibration import choose_qparams_affine
from levers.quant import QParams, QScheme, check_scheme, fake_quantize_affine

#: How `quantize_weights_` rounds: round-to-nearest or GPTQ.
METHODS = ("rtn", "gptq")


def hessian(x: Tensor) -> Tensor:
    """H = XᵀX / n (float64) of a layer's inputs `x`, one input per row.

    The output error of a weight row w quantized to ŵ is (w − ŵ) H (w − ŵ)ᵀ, averaged over
    the n inputs.

    Examples
    --------
    >>> hessian(torch.tensor([[1.0, 0.0], [1.0, 2.0]])).tolist()
    [[1.0, 1.0], [1.0, 2.0]]
    """
    check_weight(x, "x")
    if x.dim() != 2 or x.shape[0] == 0:
        raise fail("x", x, "a 2-D tensor (n inputs, k features) with n >= 1")
    x = x.detach().to(torch.float64)
    return x.T @ x / x.shape[0]


def _damped(h: Tensor, damp: float) -> Tensor:
    # GPTQ adds λ·mean(diag H) to the diagonal: a well-posed inverse even for inputs that the
    # calibration set never activates (all-zero pixels), at a small cost in fidelity.
    mean_diag = float(h.diagonal().mean())
    return h + (damp * mean_diag if mean_diag > 0 else 1.0) * torch.eye(
        h.shape[0], dtype=torch.float64)


def _check_pair(w: Tensor, h: Tensor, qp: QParams) -> None:
    check_weight(w)
    if w.dim() != 2:
        raise fail("w", w, "a 2-D weight matrix (out_features, in_features)")
    check_weight(h, "h")
    if h.shape != (w.shape[1], w.shape[1]):
        raise fail("h", h, f"a ({w.shape[1]}, {w.shape[1]}) Hessian (in_features squared)")
    check_instance("qp", qp, QParams)
    scheme = qp.scheme
    if scheme.axis not in (None, 0) or scheme.group_size is not None:
        raise fail("qp", scheme, "QParams per tensor or per output channel (axis=0)")


def _column_params(qp: QParams, rows: int) -> QParams:
    """The parameters of one column: the row's scale for each entry (a (rows, 1) matrix)."""
    scheme = qp.scheme
    column = QScheme(scheme.bits, scheme.signed, scheme.symmetric, axis=0)
    return QParams(qp.scale.reshape(-1).expand(rows).contiguous(),
                   qp.zero_point.reshape(-1).expand(rows).contiguous(), column)


def gptq_quantize(w: Tensor, h: Tensor, qp: QParams, damp: float = 0.01) -> Tensor:
    """Quantize `w` column by column with error feedback through the inverse Hessian (GPTQ).

    Parameters
    ----------
    w : Tensor
        The weight matrix (out_features, in_features).
    h : Tensor
        The Hessian of the layer's inputs, `hessian` (in_features, in_features).
    qp : QParams
        The grid: per tensor or per output channel (axis=0), e.g. from
        `levers.calibration.choose_qparams_affine` on `w`.
    damp : float
        λ in [0, 1]: λ·mean(diag H) is added to H's diagonal before inverting it.

    Returns
    -------
    Tensor
        Ŵ (float32, shape of `w`): every entry on `qp`'s grid, chosen so that the output error
        ‖(W − Ŵ)X‖² is small, not each weight's own error.

    Examples
    --------
    >>> w = torch.tensor([[0.3, 0.3]])
    >>> qp = QParams(torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32),
    ...              QScheme(bits=4, axis=0))
    >>> h = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)  # x₁ ≈ x₂
    >>> gptq_quantize(w, h, qp, damp=0.0).tolist()  # RTN would give [[0.0, 0.0]]
    [[0.0, 1.0]]
    """
    _check_pair(w, h, qp)
    check_real("damp", damp, 0.0, 1.0)
    rows, cols = w.shape
    col_qp = _column_params(qp, rows)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(
        _damped(h.to(torch.float64), damp))), upper=True)  # H⁻¹ = UᵀU
    work = w.detach().to(torch.float64).clone()
    out = torch.empty_like(work)
    for i in range(cols):
        column = work[:, i : i + 1]
        out[:, i : i + 1] = fake_quantize_affine(column.float(), col_qp).double()
        err = (column - out[:, i : i + 1]) / u[i, i]
        work[:, i + 1 :] -= err @ u[i : i + 1, i + 1 :]
    return out.to(torch.float32)


def output_error(w: Tensor, w_hat: Tensor, h: Tensor) -> float:
    """Mean squared output error per output, tr((W − Ŵ) H (W − Ŵ)ᵀ) / out_features.

    Examples
    --------
    >>> h = torch.eye(2, dtype=torch.float64)
    >>> output_error(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 1.0]]), h)
    1.0
    """
    check_weight(w)
    check_weight(w_hat, "w_hat")
    if w_hat.shape != w.shape or w.dim() != 2:
        raise fail("w_hat", w_hat, f"a 2-D tensor of the shape of w, {tuple(w.shape)}")
    check_weight(h, "h")
    if h.shape != (w.shape[1], w.shape[1]):
        raise fail("h", h, f"a ({w.shape[1]}, {w.shape[1]}) Hessian (in_features squared)")
    d = (w.detach() - w_hat.detach()).to(torch.float64)
    return float(((d @ h.to(torch.float64)) * d).sum() / w.shape[0])


def bias_correction(w: Tensor, w_hat: Tensor, x_mean: Tensor) -> Tensor:
    """The bias shift (W − Ŵ)·E[x] that cancels the mean of the output error.

    Add it to the layer's bias: the quantized layer then has, on average over the calibration
    inputs, the output of the float one.

    Examples
    --------
    >>> bias_correction(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 1.0]]),
    ...                 torch.tensor([0.5, 0.5])).tolist()
    [0.5]
    """
    check_weight(w)
    check_weight(w_hat, "w_hat")
    if w_hat.shape != w.shape or w.dim() != 2:
        raise fail("w_hat", w_hat, f"a 2-D tensor of the shape of w, {tuple(w.shape)}")
    check_weight(x_mean, "x_mean")
    if x_mean.shape != (w.shape[1],):
        raise fail("x_mean", x_mean, f"a vector of the {w.shape[1]} input features' means")
    return ((w.detach() - w_hat.detach()).double() @ x_mean.detach().double()).float()


def _layer_inputs(model: nn.Module, layer: nn.Linear, x: Tensor) -> Tensor:
    seen: list[Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return seen[0].reshape(-1, layer.in_features)


@torch.no_grad()
def quantize_weights_(model: nn.Module, scheme: QScheme, calibration: Tensor,
                      method: str = "gptq", correct_bias: bool = False,
                      damp: float = 0.01) -> nn.Module:
    """Replace every linear layer's weights by quantized ones (weights only), layer by layer.

    Each layer's grid is `scheme` from its min-max range; its inputs come from running
    `calibration` through the model whose earlier layers are already quantized (GPTQ's order).

    Parameters
    ----------
    model : nn.Module
        A float model whose Linear layers are quantized in place (other layers stay float).
    scheme : QScheme
        The weights' scheme: per tensor or per output channel (axis=0).
    calibration : Tensor
        A batch of model inputs.
    method : {"gptq", "rtn"}
        GPTQ's error feedback, or plain round-to-nearest.
    correct_bias : bool
        Also add `bias_correction` to each layer's bias (Linear layers with a bias).
    damp : float
        GPTQ's dampening, as in `gptq_quantize`.

    Returns
    -------
    nn.Module
        `model`, with weights on each layer's grid (still float tensors).

    Examples
    --------
    >>> from levers.models import MLP
    >>> x = torch.rand(64, 8, generator=torch.Generator().manual_seed(0))
    >>> m = quantize_weights_(MLP((8, 4, 3)), QScheme(bits=2, axis=0), x)
    >>> [len(torch.unique(row)) <= 4 for row in m.fc1.weight]
    [True, True, True, True]
    """
    check_instance("model", model)
    check_scheme(scheme)
    check_choice("method", method, METHODS)
    check_bool("correct_bias", correct_bias)
    check_real("damp", damp, 0.0, 1.0)
    if not isinstance(calibration, Tensor) or not calibration.is_floating_point():
        raise fail("calibration", calibration, "a floating-point tensor of model inputs")
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise fail("model", model, "a model with nn.Linear layers")
    was_training = model.training
    model.eval()
    try:
        for layer in layers:
            x = _layer_inputs(model, layer, calibration)
            w = layer.weight.detach().clone()
            qp = choose_qparams_affine(w, scheme)
            w_hat = (gptq_quantize(w, hessian(x), qp, damp) if method == "gptq"
                     else fake_quantize_affine(w, qp))
            layer.weight.copy_(w_hat)
            if correct_bias and layer.bias is not None:
                layer.bias.add_(bias_correction(w, w_hat, x.mean(0)))
    finally:
        model.train(was_training)
    return model
