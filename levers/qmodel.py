"""Fake-quantize a whole model in one call, for post-training quantization and QAT.

`quantize_(model, config, calibration)` (torchao's ``quantize_(model, Config())`` in spirit)
replaces each ``nn.Linear`` / ``nn.Conv2d`` by a `FakeQuantLayer` that fake-quantizes the
layer's input activations and its weights, then calibrates the activation ranges on a batch.
The result is still a float model — every value it computes is one an integer engine could
represent — so `levers.train.evaluate` measures PTQ accuracy, and `levers.train.fit` trains it
(QAT): the straight-through estimator lets gradients reach the float "shadow" weights.

Biases stay float: an integer engine stores them as int32 at scale S_x·S_w, fine enough that the
difference does not show. `export` turns the quantized layers into packed integers for storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from levers.quant import METHODS, QParams, QScheme, calibrate, fake_quantize, quantize


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
            if getattr(self, name) not in METHODS:
                raise ValueError(f"{name} must be one of {METHODS}, got {getattr(self, name)!r}")
        for name in ("weight", "act"):
            if not isinstance(getattr(self, name), QScheme | None):
                raise TypeError(f"{name} must be a QScheme or None, got "
                                f"{type(getattr(self, name)).__name__}")


class FakeQuantLayer(nn.Module):
    """A Linear or Conv2d whose input and weight pass through `fake_quantize`.

    ``act_qp`` is set by calibration (the first forward pass after `calibrate_` asks for it)
    and then stays fixed. The weight's parameters follow the weight as it trains.
    """

    def __init__(self, layer: nn.Linear | nn.Conv2d, config: QuantConfig):
        super().__init__()
        if not isinstance(layer, nn.Linear | nn.Conv2d):
            raise TypeError(f"layer must be nn.Linear or nn.Conv2d, got {type(layer).__name__}")
        self.layer, self.config = layer, config
        self.act_qp: QParams | None = None
        self.observing = False
        self._weight_cache: tuple[int, QParams] | None = None

    def weight_qparams(self) -> QParams:
        """Scale and zero point of the current weight (recomputed only when it has changed)."""
        w, scheme = self.layer.weight, self.config.weight
        assert scheme is not None
        # The optimizer updates weights in place, which bumps the tensor's version counter;
        # the cache keeps calibration (costly for method="mse") out of every forward pass.
        if self._weight_cache is None or self._weight_cache[0] != w._version:
            self._weight_cache = (w._version, calibrate(w, scheme, self.config.weight_method))
        return self._weight_cache[1]

    def quantized_weight(self) -> Tensor:
        w = self.layer.weight
        return w if self.config.weight is None else fake_quantize(w, self.weight_qparams())

    def forward(self, x: Tensor) -> Tensor:
        if self.config.act is not None:
            if self.observing:
                self.act_qp = calibrate(x, self.config.act, self.config.act_method)
            if self.act_qp is None:
                raise RuntimeError("activation ranges are not calibrated; call calibrate_ first")
            x = fake_quantize(x, self.act_qp)
        w = self.quantized_weight()
        if isinstance(self.layer, nn.Linear):
            return nn.functional.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)


def quantizable(model: nn.Module) -> list[str]:
    """Names of the Linear and Conv2d layers of `model`, in order.

    Examples
    --------
    >>> from levers.models import LeNet5
    >>> quantizable(LeNet5())
    ['conv1', 'conv2', 'fc1', 'fc2', 'fc3']
    """
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]


@torch.no_grad()
def calibrate_(model: nn.Module, x: Tensor) -> nn.Module:
    """Set every `FakeQuantLayer`'s activation range from one forward pass over `x`.

    Each layer sees the already-quantized outputs of the layers before it, as at inference.
    """
    layers = [m for m in model.modules() if isinstance(m, FakeQuantLayer)]
    if not layers:
        raise ValueError("model has no FakeQuantLayer; call quantize_ first")
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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if any(isinstance(m, FakeQuantLayer) for m in model.modules()):
        raise ValueError("model is already fake-quantized; start again from a float copy")
    names = quantizable(model)
    if isinstance(config, QuantConfig):
        plan = dict.fromkeys(names, config)
    elif isinstance(config, Mapping):
        unknown = sorted(set(config) - set(names))
        if unknown:
            raise ValueError(f"config names unknown layers {unknown}; layers are {names}")
        plan = dict(config)
    else:
        raise TypeError(f"config must be a QuantConfig or a mapping, got {type(config).__name__}")
    if not isinstance(calibration, Tensor) or not calibration.is_floating_point():
        raise TypeError("calibration must be a floating-point tensor of model inputs")
    for name, cfg in plan.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FakeQuantLayer(getattr(parent, child), cfg))
    return calibrate_(model, calibration)


def pack_bits(q: Tensor, bits: int) -> Tensor:
    """Pack integers of `bits` bits (offset to unsigned) densely into a flat uint8 tensor.

    Examples
    --------
    >>> pack_bits(torch.tensor([1, 2, 3, 0]), 2).tolist()  # 0b00111001
    [57]
    """
    if type(bits) is not int or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an int in [1, 16], got {bits!r}")
    u = q.reshape(-1).long()
    if u.numel() and (u.min() < 0 or u.max() >= 2**bits):
        raise ValueError(f"q must hold unsigned {bits}-bit values in [0, {2**bits - 1}]")
    positions = torch.arange(bits)
    bit_stream = ((u[:, None] >> positions) & 1).reshape(-1)  # little-endian within a value
    bit_stream = torch.cat([bit_stream, bit_stream.new_zeros(-len(bit_stream) % 8)])
    return (bit_stream.reshape(-1, 8) << torch.arange(8)).sum(1).to(torch.uint8)


def unpack_bits(packed: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of `pack_bits`: the first `n` unsigned values, as int64."""
    stream = ((packed.long()[:, None] >> torch.arange(8)) & 1).reshape(-1)[: n * bits]
    return (stream.reshape(n, bits) << torch.arange(bits)).sum(1)


def export(model: nn.Module) -> dict[str, Tensor]:
    """The model as it would be stored: packed integer weights, scales and zero points.

    Quantized weights become ``<layer>.weight_packed`` (uint8, b bits per weight) with their
    ``scale``/``zero_point``; activation parameters, biases and unquantized tensors stay float.
    Measure the bytes with `levers.encode.saved_bytes`.
    """
    state: dict[str, Tensor] = {}
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, FakeQuantLayer)}
    for name, m in quantized.items():
        if m.config.weight is not None:
            qp = m.weight_qparams()
            q = quantize(m.layer.weight.detach(), qp).long() - qp.q_min
            state[f"{name}.weight_packed"] = pack_bits(q, qp.bits)
            state[f"{name}.weight_scale"], state[f"{name}.weight_zero_point"] = (
                qp.scale, qp.zero_point)
        else:
            state[f"{name}.weight"] = m.layer.weight.detach()
        if m.act_qp is not None:
            state[f"{name}.act_scale"], state[f"{name}.act_zero_point"] = (
                m.act_qp.scale, m.act_qp.zero_point)
        if m.layer.bias is not None:
            state[f"{name}.bias"] = m.layer.bias.detach()
    for key, value in model.state_dict().items():
        if not any(key.startswith(f"{n}.") for n in quantized):
            state[key] = value
    # Fresh contiguous copies: torch.save writes a view's whole underlying storage.
    return {k: v.detach().clone().contiguous() for k, v in state.items()}

