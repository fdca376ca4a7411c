"""Tests of levers.gptq: GPTQ against a brute-force reference, bias correction, the model call."""

import pytest
import torch

from levers.calibration import choose_qparams_affine
from levers.gptq import bias_correction, gptq_quantize, hessian, output_error, quantize_weights_
from levers.models import MLP
from levers.quant import QScheme, fake_quantize_affine


def _correlated_inputs(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5 + torch.eye(k)
    return torch.randn(n, k, generator=g) @ mix


def reference_gptq(w, h, qp, damp):
    """Column by column; before rounding column i, every column not yet rounded is moved to its
    least-squares optimum given the rounded ones, solved from scratch (no Cholesky, no rank-1
    updates): V_R = W_R + (W_F − Q_F) H_FR H_RR⁻¹."""
    h = h + damp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=torch.float64)
    w, q = w.double(), torch.zeros_like(w, dtype=torch.float64)
    scheme = qp.scheme
    col = type(qp)(qp.scale.reshape(-1).expand(w.shape[0]).contiguous(),
                   qp.zero_point.reshape(-1).expand(w.shape[0]).contiguous(),
                   QScheme(scheme.bits, scheme.signed, scheme.symmetric, axis=0))
    for i in range(w.shape[1]):
        v = w[:, i:]
        if i:
            e = w[:, :i] - q[:, :i]
            v = v + torch.linalg.solve(h[i:, i:], (e @ h[:i, i:]).T).T
        q[:, i : i + 1] = fake_quantize_affine(v[:, :1].float(), col).double()
    return q.float()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_gptq_equals_the_brute_force_least_squares_reference(seed, bits):
    g = torch.Generator().manual_seed(100 + seed)
    w = torch.randn(5, 12, generator=g)
    h = hessian(_correlated_inputs(64, 12, seed))
    axis = 0 if seed % 2 else None
    qp = choose_qparams_affine(w, QScheme(bits=bits, axis=axis))
    ours, ref = gptq_quantize(w, h, qp), reference_gptq(w, h, qp, 0.01)
    assert torch.equal(ours, ref)


def test_uncorrelated_inputs_give_round_to_nearest():
    # A diagonal Hessian has a diagonal inverse: no error feeds forward.
    w = torch.randn(7, 9, generator=torch.Generator().manual_seed(0))
    h = torch.diag(torch.rand(9, dtype=torch.float64) + 0.5)
    qp = choose_qparams_affine(w, QScheme(bits=3, axis=0))
    assert torch.equal(gptq_quantize(w, h, qp), fake_quantize_affine(w, qp))


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_gptq_lowers_the_output_error_not_the_weight_error(bits):
    x = _correlated_inputs(256, 40, 1)
    w = torch.randn(30, 40, generator=torch.Generator().manual_seed(2))
    h = hessian(x)
    qp = choose_qparams_affine(w, QScheme(bits=bits, axis=0))
    rtn, gptq = fake_quantize_affine(w, qp), gptq_quantize(w, h, qp)
    assert output_error(w, gptq, h) < 0.8 * output_error(w, rtn, h)
    assert float((gptq - w).pow(2).mean()) > float((rtn - w).pow(2).mean())
    # output_error is the mean squared output error on the calibration inputs
    direct = float(((x.double() @ (w - gptq).T.double()) ** 2).sum(1).mean() / w.shape[0])
    assert output_error(w, gptq, h) == pytest.approx(direct, rel=1e-9)
    scale = qp.scale[:, None]
    assert torch.equal(torch.round(gptq / scale) * scale, gptq)  # on the grid


def test_bias_correction_cancels_the_mean_output_error():
    x = _correlated_inputs(200, 10, 3) + 1.0
    w = torch.randn(4, 10, generator=torch.Generator().manual_seed(4))
    w_hat = fake_quantize_affine(w, choose_qparams_affine(w, QScheme(bits=2, axis=0)))
    shift = bias_correction(w, w_hat, x.mean(0))
    float_out, quant_out = x @ w.T, x @ w_hat.T + shift
    assert torch.allclose(float_out.mean(0), quant_out.mean(0), atol=1e-4)
    assert not torch.allclose(float_out.mean(0), (x @ w_hat.T).mean(0), atol=1e-2)


def test_quantize_weights_rtn_is_fake_quant_and_gptq_feeds_layer_by_layer():
    x = torch.rand(128, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = MLP((8, 6, 3))
    scheme = QScheme(bits=2, axis=0)
    rtn = MLP((8, 6, 3))
    rtn.load_state_dict(model.state_dict())
    rtn = quantize_weights_(rtn, scheme, x, method="rtn")
    for layer, ref in zip(rtn.layers(), model.layers(), strict=True):
        w = ref.weight.detach()
        assert torch.equal(layer.weight, fake_quantize_affine(w, choose_qparams_affine(
            w, scheme)))
    gptq = MLP((8, 6, 3))
    gptq.load_state_dict(model.state_dict())
    quantize_weights_(gptq, scheme, x, correct_bias=True)
    first = gptq.fc1.weight.detach()
    expect = gptq_quantize(model.fc1.weight.detach(), hessian(x), choose_qparams_affine(
        model.fc1.weight.detach(), scheme))
    assert torch.equal(first, expect)
    assert not torch.equal(gptq.fc1.bias, model.fc1.bias)  # corrected
    assert gptq.training  # the mode is restored


def test_bad_input():
    w = torch.randn(3, 4)
    qp = choose_qparams_affine(w, QScheme(bits=4, axis=0))
    with pytest.raises(ValueError, match="h must be a \\(4, 4\\) Hessian"):
        gptq_quantize(w, torch.eye(3, dtype=torch.float64), qp)
    with pytest.raises(ValueError, match="w must be a 2-D weight matrix"):
        gptq_quantize(torch.randn(4), torch.eye(4, dtype=torch.float64), qp)
    with pytest.raises(ValueError, match="per output channel"):
        gptq_quantize(w, torch.eye(4, dtype=torch.float64),
                      choose_qparams_affine(w, QScheme(bits=4, axis=0, group_size=2)))
    with pytest.raises(ValueError, match="damp must be a finite number in \\[0.0, 1.0\\]"):
        gptq_quantize(w, torch.eye(4, dtype=torch.float64), qp, damp=2.0)
    with pytest.raises(ValueError, match="x must be a 2-D tensor"):
        hessian(torch.randn(3))
    with pytest.raises(ValueError, match="x_mean must be a vector"):
        bias_correction(w, w, torch.randn(3))
    with pytest.raises(ValueError, match="method must be one of"):
        quantize_weights_(MLP((4, 2)), QScheme(bits=4), torch.rand(2, 4), method="adaround")
    with pytest.raises(ValueError, match="nn.Linear layers"):
        quantize_weights_(torch.nn.ReLU(), QScheme(bits=4), torch.rand(2, 4))
