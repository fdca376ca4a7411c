"""Tests of levers.integer: fixed-point multipliers and the integer-only linear layer."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from levers.calibration import choose_qparams_affine
from levers.integer import (
    IntLinear,
    int_mlp,
    lsb_error,
    quantize_multiplier,
    requantize,
    torch_int8_linear,
)
from levers.models import LeNet300100
from levers.qmodel import QuantConfig, quantize_
from levers.quant import QScheme, dequantize_affine, quantize_affine


@settings(max_examples=200, deadline=None)
@given(m=st.floats(1e-6, 1e3))
def test_multiplier_is_normalized_and_accurate(m):
    m0, n = quantize_multiplier(m)
    assert 2**30 <= int(m0) < 2**31
    assert abs(int(m0) * 2.0 ** -(31 + int(n)) - m) <= m * 2.0**-30


@settings(max_examples=200, deadline=None)
@given(below_one=st.integers(1, 2**22), exponent=st.integers(-30, 29))
def test_multiplier_carries_a_mantissa_that_rounds_up_to_one(below_one, exponent):
    # Mantissas within 2^-32 of 1 round to 2^31 at 31 bits: the carry must renormalize to
    # M0 = 2^30 one binade up, or M0 overflows int32. Drawn on purpose, never left to chance.
    mantissa = 1.0 - below_one * 2.0**-54
    m = mantissa * 2.0**exponent
    m0, n = quantize_multiplier(m)
    assert int(m0) == 2**30 and int(n) == -(exponent + 1)
    assert abs(int(m0) * 2.0 ** -(31 + int(n)) - m) <= m * 2.0**-31
    got = int(requantize(torch.tensor([2**20]), m0, n))
    assert abs(got - 2**20 * m) <= 0.5 + 2**20 * m * 2.0**-30


def test_multiplier_just_below_the_carry_keeps_its_binade():
    m0, n = quantize_multiplier(1.0 - 2.0**-31)  # rounds to 2^31 − 1 at 31 bits: no carry
    assert (int(m0), int(n)) == (2**31 - 1, 0)


@settings(max_examples=100, deadline=None)
@given(acc=st.integers(-(2**31), 2**31 - 1), m=st.floats(1e-4, 1.0))
def test_requantize_rounds_to_nearest(acc, m):
    m0, n = quantize_multiplier(m)
    exact = acc * int(m0) / 2 ** (31 + int(n))
    got = int(requantize(torch.tensor([acc]), m0, n))
    assert abs(got - exact) <= 0.5


def test_quantize_multiplier_rejects_bad_input():
    with pytest.raises(ValueError, match="finite and > 0"):
        quantize_multiplier(0.0)
    with pytest.raises(TypeError, match="must be a tensor of an integer dtype"):
        requantize(torch.ones(2), *quantize_multiplier(0.5))


@pytest.mark.parametrize("axis", [None, 0])
@pytest.mark.parametrize("relu", [False, True])
def test_int_linear_within_one_lsb_of_fake_quant(axis, relu):
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(64, 32)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(32, 64, generator=g) * 0.1)
        layer.bias.copy_(torch.randn(32, generator=g) * 0.1)
    x = torch.rand(200, 64, generator=g)
    x_qp = choose_qparams_affine(x, QScheme(8, signed=False, symmetric=False))
    y = layer(x).detach()
    out_qp = choose_qparams_affine(torch.relu(y) if relu else y,
                       QScheme(8, signed=False, symmetric=False))
    w_qp = choose_qparams_affine(layer.weight.detach(), QScheme(8, axis=axis))
    int_layer = IntLinear.from_float(layer, x_qp, out_qp, w_qp, relu=relu)
    q_x = quantize_affine(x, x_qp)
    # Fake-quant reference: dequantized input and weight, the int32 bias, one rounding at the end.
    w_fq = dequantize_affine(quantize_affine(layer.weight.detach(), w_qp), w_qp)
    bias = int_layer.q_b.double() * (x_qp.scale.double() * w_qp.scale.double())
    y_ref = nn.functional.linear(dequantize_affine(q_x, x_qp).double(), w_fq.double(), bias).float()
    q_ref = quantize_affine(torch.relu(y_ref) if relu else y_ref, out_qp)
    q_int = int_layer(q_x)
    assert q_int.dtype == torch.uint8
    assert lsb_error(q_int, q_ref) <= 1
    assert float((q_int != q_ref).float().mean()) < 0.01


def test_int_mlp_agrees_with_fake_quant_model():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    model = quantize_(LeNet300100(), QuantConfig(), x)
    im = int_mlp(model, x)
    agree = (im(x).argmax(1) == model(x).argmax(1)).float().mean()
    assert float(agree) > 0.95
    assert all(q.dtype in (torch.uint8, torch.int8) for q in im.forward_int(x))
    with pytest.raises(ValueError, match="fake-quantized by quantize_"):
        int_mlp(LeNet300100(), x)


def test_int_linear_rejects_bad_params():
    layer = nn.Linear(4, 2)
    qp = choose_qparams_affine(torch.rand(5, 4), QScheme(8, signed=False, symmetric=False))
    with pytest.raises(ValueError, match="w_qp must be signed symmetric"):
        IntLinear.from_float(layer, qp, qp, choose_qparams_affine(layer.weight.detach(),
                                                      QScheme(8, symmetric=False)))
    with pytest.raises(ValueError, match="per-tensor QParams"):
        IntLinear.from_float(layer, choose_qparams_affine(torch.rand(5, 4), QScheme(axis=1)), qp)
    with pytest.raises(TypeError, match="must be a tensor of an integer dtype"):
        IntLinear.from_float(layer, qp, qp)(torch.rand(1, 4))


@pytest.mark.parametrize("engine", [e for e in ("fbgemm", "x86", "onednn", "qnnpack")
                                    if e in torch.backends.quantized.supported_engines])
@pytest.mark.parametrize(("axis", "relu"), [(None, False), (0, True), (0, False)])
def test_int_linear_matches_pytorchs_int8_engine(engine, axis, relu):
    """The outside oracle: torch.ops.quantized.linear on every engine this build has."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(256, 48, generator=g) * 2
    model = quantize_(nn.Sequential(nn.Linear(48, 40)),
                      QuantConfig(weight=QScheme(8, axis=axis)), x)
    fq = model[0]
    y = model(x).detach()
    out_qp = choose_qparams_affine(torch.relu(y) if relu else y,
                                   QScheme(8, signed=not relu, symmetric=False))
    q_x = quantize_affine(x, fq.act_qp)
    ours = IntLinear.from_float(fq.layer, fq.act_qp, out_qp, fq.weight_qparams(), relu=relu)
    before = torch.backends.quantized.engine, torch.are_deterministic_algorithms_enabled()
    torch.backends.quantized.engine = engine
    torch.use_deterministic_algorithms(True)
    try:
        theirs = torch_int8_linear(fq, out_qp, q_x, relu=relu)
        assert torch.are_deterministic_algorithms_enabled()  # switched back on after the call
    finally:
        torch.backends.quantized.engine = before[0]
        torch.use_deterministic_algorithms(before[1])
    assert theirs.dtype == ours(q_x).dtype
    assert lsb_error(ours(q_x), theirs) <= 1
    assert float((ours(q_x) != theirs).float().mean()) < 0.01


def test_torch_int8_linear_rejects_non_int8_layers():
    x = torch.rand(8, 4)
    model = quantize_(nn.Sequential(nn.Linear(4, 2)), QuantConfig(weight=QScheme(4)), x)
    with pytest.raises(ValueError, match="int8 symmetric weights"):
        torch_int8_linear(model[0], model[0].act_qp, quantize_affine(x, model[0].act_qp))
