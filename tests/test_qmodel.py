"""Tests of levers.qmodel: one-call fake quantization of a model, calibration, QAT."""

import copy

import pytest
import torch
from torch import nn

from levers.calibration import choose_qparams_affine
from levers.models import LeNet5, LeNet300100
from levers.qmodel import FakeQuantLayer, QuantConfig, calibrate_, quantizable, quantize_
from levers.quant import QScheme, fake_quantize_affine


def _images(n=16, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_quantize_wraps_every_layer_and_matches_manual_fake_quant():
    torch.manual_seed(0)
    model = LeNet300100()
    x = _images()
    ref = copy.deepcopy(model)
    quantize_(model, QuantConfig(), x)
    assert all(isinstance(getattr(model, n), FakeQuantLayer) for n in ("fc1", "fc2", "fc3"))
    # The first layer by hand: fake-quantized input times fake-quantized weight.
    a_qp = choose_qparams_affine(x.flatten(1), QScheme(8, signed=False, symmetric=False))
    w_qp = choose_qparams_affine(ref.fc1.weight, QScheme(8, axis=0))
    expected = nn.functional.linear(fake_quantize_affine(x.flatten(1), a_qp),
                                    fake_quantize_affine(ref.fc1.weight, w_qp), ref.fc1.bias)
    assert torch.equal(model.fc1(x.flatten(1)), expected)


def test_eight_bit_close_to_float_and_lower_bits_further():
    torch.manual_seed(0)
    model = LeNet5()
    x = _images(32)
    y = model(x).detach()
    diffs = []
    for bits in (8, 4, 2):
        q = quantize_(copy.deepcopy(model), QuantConfig(weight=QScheme(bits, axis=0)), x)
        diffs.append(float((q(x) - y).detach().abs().mean()))
    assert diffs[0] < diffs[1] < diffs[2]
    assert diffs[0] < 0.01 * float(y.abs().mean())


def test_per_layer_mapping_leaves_others_float():
    model = LeNet5()
    quantize_(model, {"conv2": QuantConfig(weight=QScheme(2, axis=0), act=None)}, _images())
    assert isinstance(model.conv2, FakeQuantLayer)
    assert isinstance(model.conv1, nn.Conv2d) and isinstance(model.fc1, nn.Linear)
    assert quantizable(model) == ["conv1", "conv2.layer", "fc1", "fc2", "fc3"]


def test_qat_gradients_reach_float_weights_and_cache_follows_updates():
    torch.manual_seed(0)
    model = quantize_(LeNet300100(), QuantConfig(weight=QScheme(4, axis=0)), _images())
    x, y = _images(8, seed=1), torch.arange(8)
    before = model.fc1.weight_qparams().scale.clone()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    nn.functional.cross_entropy(model(x), y).backward()
    assert model.fc1.layer.weight.grad is not None
    assert float(model.fc1.layer.weight.grad.abs().sum()) > 0
    opt.step()
    assert not torch.equal(model.fc1.weight_qparams().scale, before)


def test_calibration_methods_and_errors():
    model = LeNet300100()
    quantize_(model, QuantConfig(act_method="percentile", weight_method="mse"), _images())
    assert model.fc2.act_qp is not None
    with pytest.raises(ValueError, match="config must be keyed by the model's layers"):
        quantize_(LeNet300100(), {"fc9": QuantConfig()}, _images())
    with pytest.raises(ValueError, match="weight_method must be one of"):
        QuantConfig(weight_method="best")
    with pytest.raises(TypeError, match="QuantConfig or a mapping"):
        quantize_(LeNet300100(), 8, _images())
    with pytest.raises(ValueError, match="already fake-quantized"):
        quantize_(model, QuantConfig(), _images())
    with pytest.raises(ValueError, match="model must be a model with FakeQuantLayers"):
        calibrate_(LeNet300100(), _images())
    layer = FakeQuantLayer(nn.Linear(3, 2), QuantConfig())
    with pytest.raises(RuntimeError, match="not calibrated"):
        layer(torch.randn(1, 3))
