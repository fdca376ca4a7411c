"""Fake-quantize a whole model in one call, for post-training quantization and QAT.

`quantize_(model, config, calibration)` (torchao's ``quantize_(model, Config())`` in spirit)
replaces each ``nn.Linear`` / ``nn.Conv2d`` by a `FakeQuantLayer` that fake-quantizes the
layer's input activations and its weights, then calibrates the activation ranges on a batch.
The result is still a float model — every value it computes is one an integer engine could
represent — so `levers.train.evaluate` measures PTQ accuracy, and `levers.train.fit` trains it
(QAT): the straight-through estimator lets gradients reach the float "shadow" weights.

Biases stay float: an integer engine stores them as int32 at scale S_x·S_w, fine enough that the
difference does not show. `levers.encode.export` turns the quantized layers into packed integers
for storage, and `levers.integer.int_mlp` into an integer-only MLP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from levers._checks import check_choice, check_instance, check_weight, fail
from levers.calibration import METHODS, choose_qparams_affine
from levers.quant import QParams, QScheme, fake_quantize_affine


def _weights_default() -> QScheme:
    return QScheme(bits=8, signed=True, symmetric=True, axis=0)


def _acts_default() -> QScheme:
    return QScheme(bits=8, signed=False, symmetric=False)


@dataclass(frozen=True)
class QuantConfig:
    """What to quantize in a layer and how; None leaves that tensor in float.

    Examples
    --------
    >>> QuantConfig(weight=QScheme(bits=4, axis=0)).act.bits
    8
    """

    weight: QScheme | None = field(default_factory=_weights_default)
    act: QScheme | None = field(default_factory=_acts_default)
    weight_method: str = "minmax"
    act_method: str = "minmax"

    def __post_init__(self) -> None:
        for name in ("weight_method", "act_method"):
            check_choice(name, getattr(self, name), METHODS)
        for name in ("weight", "act"):
            if not isinstance(getattr(self, name), QScheme | None):
                raise fail(name, getattr(self, name), "a QScheme or None")


class FakeQuantLayer(nn.Module):
    """A Linear or Conv2d whose input and weight pass through `fake_quantize_affine`.

    ``act_qp`` is set by calibration (the first forward pass after `calibrate_` asks for it)
    and then stays fixed. The weight's parameters follow the weight as it trains.
    """

    def __init__(self, layer: nn.Linear | nn.Conv2d, config: QuantConfig):
        super().__init__()
        check_instance("layer", layer, nn.Linear | nn.Conv2d)
        check_instance("config", config, QuantConfig)
        if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
            raise fail("layer", layer, "a Conv2d with padding_mode='zeros'")
        self.layer, self.config = layer, config
        self.act_qp: QParams | None = None
        self.observing = False
        self._weight_cache: tuple[Tensor, QParams] | None = None

    def weight_qparams(self) -> QParams:
        """Scale and zero point of the current weight (recomputed only when it has changed)."""
        w, scheme = self.layer.weight.detach(), self.config.weight
        assert scheme is not None
        # The cache keeps calibration (costly for method="mse") out of every forward pass; it
        # holds a copy of the weight it was computed for, so any change to it is noticed.
        if self._weight_cache is None or not torch.equal(self._weight_cache[0], w):
            self._weight_cache = (w.clone(), choose_qparams_affine(
                w, scheme, self.config.weight_method))
        return self._weight_cache[1]

    def quantized_weight(self) -> Tensor:
        """The weight as the forward pass uses it: fake-quantized, or float if not quantized."""
        w = self.layer.weight
        return w if self.config.weight is None else fake_quantize_affine(w, self.weight_qparams())

    def forward(self, x: Tensor) -> Tensor:
        if self.config.act is not None:
            if self.observing:
                self.act_qp = choose_qparams_affine(x, self.config.act, self.config.act_method)
            if self.act_qp is None:
                raise RuntimeError("activation ranges are not calibrated; call calibrate_ first")
            x = fake_quantize_affine(x, self.act_qp)
        w, layer = self.quantized_weight(), self.layer
        if isinstance(layer, nn.Linear):
            return nn.functional.linear(x, w, layer.bias)
        return nn.functional.conv2d(x, w, layer.bias, layer.stride, layer.padding,
                                    layer.dilation, layer.groups)


def quantizable(model: nn.Module) -> list[str]:
    """Names of the Linear and Conv2d layers of `model`, in order.

    Examples
    --------
    >>> from levers.models import LeNet5
    >>> quantizable(LeNet5())
    ['conv1', 'conv2', 'fc1', 'fc2', 'fc3']
    """
    check_instance("model", model)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]


@torch.no_grad()
def calibrate_(model: nn.Module, x: Tensor) -> nn.Module:
    """Set every `FakeQuantLayer`'s activation range from one forward pass over `x`.

    Each layer sees the already-quantized outputs of the layers before it, as at inference.

    Examples
    --------
    >>> from levers.models import MLP
    >>> m = quantize_(MLP((4, 2)), QuantConfig(), torch.rand(8, 4))
    >>> _ = calibrate_(m, torch.full((8, 4), 2.0))  # every input 2.0: the range [0, 2]
    >>> round(float(m.fc1.act_qp.scale) * 255, 4)
    2.0
    """
    check_instance("model", model)
    check_weight(x, "x")
    layers = [m for m in model.modules() if isinstance(m, FakeQuantLayer)]
    if not layers:
        raise fail("model", model, "a model with FakeQuantLayers (call quantize_ first)")
    was_training = model.training
    model.eval()
    for m in layers:
        m.observing = True
    try:
        model(x)
    finally:
        for m in layers:
            m.observing = False
        model.train(was_training)
    return model


def quantize_(model: nn.Module, config: QuantConfig | Mapping[str, QuantConfig],
              calibration: Tensor) -> nn.Module:
    """Fake-quantize `model` in place and calibrate its activation ranges.

    Parameters
    ----------
    model : nn.Module
    config : QuantConfig or mapping of layer name to QuantConfig
        One config for every Linear/Conv2d layer, or per layer (mixed precision, sensitivity);
        layers missing from the mapping stay float.
    calibration : Tensor
        A batch of inputs for the activation ranges (a few hundred images suffice).

    Returns
    -------
    nn.Module
        `model` itself, its layers wrapped in `FakeQuantLayer`.

    Examples
    --------
    >>> from levers.models import LeNet300100
    >>> m = quantize_(LeNet300100(), QuantConfig(), torch.rand(8, 1, 28, 28))
    >>> type(m.fc1).__name__, m.fc1.act_qp.bits
    ('FakeQuantLayer', 8)
    """
    check_instance("model", model)
    if any(isinstance(m, FakeQuantLayer) for m in model.modules()):
        raise fail("model", model, "a float model, not one already fake-quantized")
    names = quantizable(model)
    if isinstance(config, QuantConfig):
        plan = dict.fromkeys(names, config)
    elif isinstance(config, Mapping):
        unknown = sorted(set(config) - set(names))
        if unknown:
            raise fail("config", unknown, f"keyed by the model's layers {names}")
        plan = dict(config)
    else:
        raise fail("config", config, "a QuantConfig or a mapping of layer name to QuantConfig")
    if not isinstance(calibration, Tensor) or not calibration.is_floating_point():
        raise fail("calibration", calibration, "a floating-point tensor of model inputs")
    for name, cfg in plan.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FakeQuantLayer(getattr(parent, child), cfg))
    return calibrate_(model, calibration)
