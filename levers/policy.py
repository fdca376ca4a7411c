"""Compression policies: per layer, how much to prune, how many bits, what granularity, what coding.

A policy is a plain mapping from layer name (``"fc1"``) to a `LayerPolicy`; `apply` turns a
trained model and a policy into a compressed model and its real bytes, in one call, so that
policies can be compared in a loop on the three things a user pays for. Its steps are Deep
Compression's (Han et al. 2016):

1. prune every layer to its ``sparsity`` by magnitude — single weights (``"element"``) or
   whole output neurons / channels (``"row"``) — and retrain with the masks applied
   (`levers.compress.finetune`);
2. share each layer's non-zero weights among ``2^bits − 1`` centroids and fine-tune the
   centroids (`levers.share`); ``bits=None`` keeps float32 values;
3. store every coded layer with relative indices and fixed-width or Huffman codes
   (`levers.deepcompress.serialize`). Layers that are neither pruned nor shared, and biases,
   are stored raw.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from levers import compress, share, structured
from levers import prune as P
from levers._checks import (
    check_amount,
    check_choice,
    check_instance,
    check_int,
    check_real,
    check_shape,
    fail,
)
from levers.data import Split
from levers.deepcompress import CODINGS, LayerFormat, serialize
from levers.train import evaluate

GRANULARITIES = ("element", "row")


@dataclass(frozen=True)
class LayerPolicy:
    """What one layer gets: sparsity in [0, 1), codebook bits (None = float32), granularity,
    coding of the symbol streams, and the width of the relative indices."""

    sparsity: float = 0.0
    bits: int | None = None
    granularity: str = "element"
    coding: str = "huffman"
    index_bits: int = 5

    def __post_init__(self) -> None:
        check_amount(self.sparsity, "sparsity")
        if self.sparsity == 1:
            raise fail("sparsity", self.sparsity, "below 1 (a layer needs a weight)")
        if self.bits is not None:
            check_int("bits", self.bits, 1, 16)
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_choice("coding", self.coding, CODINGS)
        check_int("index_bits", self.index_bits, 1, 16)

    def format(self) -> LayerFormat | None:
        """The storage format, or None when the layer is stored raw (dense float32)."""
        if self.sparsity == 0 and self.bits is None:
            return None
        return LayerFormat(self.bits, self.index_bits, self.coding)


@dataclass(frozen=True, eq=False)
class Compressed:
    """What `apply` returns: the compressed model, its serialized bytes and its test accuracy."""

    model: nn.Module
    data: bytes
    accuracy: float


def check_policy(model: nn.Module, policy: Mapping[str, LayerPolicy]) -> None:
    """Raise ValueError unless every key of `policy` is a prunable layer of `model`."""
    check_instance("model", model)
    layers = [name.removesuffix(".weight") for name in P.prunable(model)]
    if not isinstance(policy, Mapping) or not policy:
        raise fail("policy", policy, "a non-empty mapping of layer name to LayerPolicy")
    for name, rule in policy.items():
        if name not in layers:
            raise ValueError(f"policy names layer {name!r}, which the model does not have; "
                             f"its layers are {layers}")
        check_instance(f"policy[{name!r}]", rule, LayerPolicy)


def apply(model: nn.Module, policy: Mapping[str, LayerPolicy], split: Split,
          prune_epochs: int = 2, share_epochs: int = 1, lr: float = 0.05,
          share_lr: float = 1e-3, seed: int = 0) -> Compressed:
    """Prune, retrain, share, fine-tune and serialize a copy of `model` as `policy` says.

    Parameters
    ----------
    model : nn.Module
        Trained; not changed.
    policy : mapping of str to LayerPolicy
        Layers not named are left dense float32.
    split : Split
        Training data for the retraining steps; test data for the accuracy.
    prune_epochs, share_epochs : int
        Epochs of retraining after pruning and of centroid fine-tuning (0 skips either).
    lr, share_lr : float
        Their learning rates (a centroid's gradient sums over its whole cluster, so its
        step must be much smaller).
    seed : int
        Minibatch order of both.

    Returns
    -------
    Compressed

    Examples
    --------
    >>> from levers.data import load_mnist5k
    >>> from levers.models import LeNet300100
    >>> out = apply(LeNet300100(), {"fc1": LayerPolicy(0.9, bits=4)}, load_mnist5k(),
    ...             prune_epochs=0, share_epochs=0)
    >>> len(out.data) < 4 * 266_610 // 5
    True
    """
    check_policy(model, policy)
    check_int("prune_epochs", prune_epochs, 0)
    check_int("share_epochs", share_epochs, 0)
    check_real("lr", lr, open_low=True)
    check_real("share_lr", share_lr, open_low=True)
    m = copy.deepcopy(model)
    masks = {}
    for name, rule in policy.items():
        w = m.get_parameter(f"{name}.weight").detach()
        if rule.sparsity > 0:
            masks[f"{name}.weight"] = (P.magnitude_mask(w, rule.sparsity)
                                       if rule.granularity == "element"
                                       else structured.structured_mask(w, rule.sparsity, dim=0))
    if masks:
        P.apply_masks(m, masks)
        if prune_epochs:
            compress.finetune(m, masks, split, epochs=prune_epochs, lr=lr, seed=seed)
    shared = {f"{name}.weight": share.share(m.get_parameter(f"{name}.weight"), rule.bits)
              for name, rule in policy.items() if rule.bits is not None}
    if shared:
        m, _, _ = share.finetune(m, shared, split, epochs=share_epochs, lr=share_lr, seed=seed)
    formats = {f"{name}.weight": rule.format() for name, rule in policy.items()
               if rule.format() is not None}
    return Compressed(m, serialize(m, formats), evaluate(m, split.x_test, split.y_test))


def peak_activation_bytes(model: nn.Module, input_shape: tuple[int, ...],
                          act_bits: int = 32) -> int:
    """Activation memory one inference needs at its peak: the largest input + output of a layer.

    A layer-by-layer engine holds a layer's input and output buffers at once and can free the
    input afterwards, so the RAM it needs for activations is the largest such pair over the
    Linear/Conv2d layers (batch 1, `act_bits` per value).

    Examples
    --------
    >>> from levers.models import LeNet300100
    >>> peak_activation_bytes(LeNet300100(), (1, 28, 28))  # (784 + 300) float32
    4336
    """
    check_instance("model", model)
    input_shape = check_shape("input_shape", input_shape)
    check_int("act_bits", act_bits, 1, 32)
    sizes: list[int] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        sizes.append(inputs[0][0].numel() + output[0].numel())

    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return (max(sizes) * act_bits + 7) // 8
