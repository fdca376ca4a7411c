"""Pruning: which weights to remove (criteria and budgets), removing them, shrinking layers.

A pruned weight is ``W̃ = M ⊙ W`` with a mask ``M`` of zeros and ones. Masks here are plain
boolean tensors (``True`` = keep) that you can print, count and save; `apply_masks` writes the
zeros into the weights. Every mask that takes a budget prunes exactly ``round(amount · n)``
entries: ties in magnitude are broken by position, never by keeping or dropping a whole group of
equal values, so the achieved sparsity is the one you asked for. Structured masks remove whole
neurons, and `shrink_mlp` turns them into a smaller dense model. How masks change while a model
trains (kept, grown on a schedule, moved by regrowth) is `levers.schedule`; penalties that make
zeros (L1, proximal steps) are `levers.regularize`; measuring sparsity is `levers.metrics`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from levers._checks import (
    check_amount,
    check_choice,
    check_generator,
    check_instance,
    check_int,
    check_mapping,
    check_real,
    check_weight,
    fail,
)
from levers.models import MLP, LeNet5


def _keep_largest(scores: Tensor, n_prune: int) -> Tensor:
    """Boolean mask that drops the `n_prune` smallest scores; equal scores go in index order."""
    order = torch.argsort(scores.flatten(), stable=True)
    mask = torch.ones(scores.numel(), dtype=torch.bool)
    mask[order[:n_prune]] = False
    return mask.reshape(scores.shape)


def magnitude_mask(w: Tensor, amount: float | None = None, *,
                   threshold: float | None = None) -> Tensor:
    """Keep the largest-magnitude weights: by budget (``amount``) or by ``threshold``.

    Parameters
    ----------
    w : Tensor
        Floating-point weights, any shape.
    amount : float, optional
        Fraction of entries to prune, in [0, 1]. Exactly ``round(amount * w.numel())`` entries
        are pruned (the same count as ``torch.nn.utils.prune.l1_unstructured``); among equal
        magnitudes the earlier positions are pruned first.
    threshold : float, optional
        Prune every entry with ``|w| <= threshold`` instead (the sparsity is whatever follows).

    Returns
    -------
    Tensor
        Boolean mask shaped like `w`, ``True`` where the weight is kept.

    Examples
    --------
    >>> magnitude_mask(torch.tensor([0.5, -0.1, 0.1, 2.0]), amount=0.5).tolist()
    [True, False, False, True]
    >>> magnitude_mask(torch.tensor([0.5, -0.1, 0.1, 2.0]), threshold=0.3).tolist()
    [True, False, False, True]
    """
    check_weight(w)
    if (amount is None) == (threshold is None):
        raise fail("amount", amount, f"given exactly when threshold is not (threshold="
                   f"{threshold!r})")
    if threshold is not None:
        check_real("threshold", threshold)
        return w.abs() > threshold
    check_amount(amount)
    return _keep_largest(w.detach().abs(), round(amount * w.numel()))


def global_magnitude_masks(weights: Mapping[str, Tensor], amount: float) -> dict[str, Tensor]:
    """Magnitude masks with one budget shared by all tensors (one global threshold).

    Layers with many small weights lose more of them than layers with few; layer-wise pruning
    (`magnitude_mask` per tensor) forces every layer to the same sparsity instead.

    Parameters
    ----------
    weights : mapping of str to Tensor
        e.g. ``prunable(model)``.
    amount : float
        Fraction of all entries (summed over tensors) to prune, in [0, 1].

    Returns
    -------
    dict of str to Tensor
        Boolean masks with the same keys and shapes.

    Examples
    --------
    >>> m = global_magnitude_masks({"a": torch.tensor([1., 2.]), "b": torch.tensor([3., 4.])}, 0.5)
    >>> m["a"].tolist(), m["b"].tolist()
    ([False, False], [True, True])
    """
    check_mapping("weights", weights)
    for name, w in weights.items():
        check_weight(w, name=f"weights[{name!r}]")
    check_amount(amount)
    scores = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    keep = _keep_largest(scores, round(amount * scores.numel()))
    return {name: part.reshape(w.shape) for (name, w), part in
            zip(weights.items(), keep.split([w.numel() for w in weights.values()]), strict=True)}


def random_mask(w: Tensor, amount: float, generator: torch.Generator | None = None) -> Tensor:
    """Prune exactly ``round(amount · n)`` entries chosen uniformly at random (the baseline).

    Examples
    --------
    >>> int(random_mask(torch.ones(10), 0.3, torch.Generator().manual_seed(0)).sum())
    7
    """
    check_weight(w)
    check_amount(amount)
    check_generator("generator", generator)
    scores = torch.rand(w.shape, generator=generator)
    return _keep_largest(scores, round(amount * w.numel()))


def structured_mask(w: Tensor, amount: float, dim: int = 0, p: float = 2.0) -> Tensor:
    """Prune whole slices along `dim` (neurons for ``dim=0`` of a Linear weight) by their L_p norm.

    Parameters
    ----------
    w : Tensor
        Weights with at least one dimension, e.g. Linear ``[out, in]``, Conv ``[out, in, k, k]``.
    amount : float
        Fraction of slices to prune, in [0, 1]; exactly ``round(amount · w.shape[dim])``.
    dim : int
        The dimension whose slices are units: 0 = output neurons / output channels.
    p : float
        Norm order of the slice scores (p > 0).

    Returns
    -------
    Tensor
        Boolean mask shaped like `w`, constant along every slice.

    Examples
    --------
    >>> structured_mask(torch.tensor([[1., 1.], [0., 3.]]), 0.5).tolist()
    [[False, False], [True, True]]
    """
    check_weight(w)
    check_amount(amount)
    if w.dim() == 0 or isinstance(dim, bool) or not isinstance(dim, int) \
            or not -w.dim() <= dim < w.dim():
        raise fail("dim", dim, f"an int indexing a dimension of w (shape {tuple(w.shape)})")
    check_real("p", p, open_low=True)
    units = w.detach().movedim(dim, 0).reshape(w.shape[dim], -1)
    keep = _keep_largest(units.norm(p=p, dim=1), round(amount * w.shape[dim]))
    shape = [1] * w.dim()
    shape[dim] = -1
    return keep.reshape(shape).expand(w.shape).clone()


def nm_mask(w: Tensor, n: int = 2, m: int = 4) -> Tensor:
    """N:M sparsity: in every group of `m` consecutive input weights, keep the `n` largest.

    2:4 (``n=2, m=4``) is the pattern sparse tensor cores accelerate: exactly 50 % zeros,
    placed so the hardware can store 2 values and two 2-bit positions per group. Groups run
    along the input dimension, as NVIDIA's ASP forms them: the last dimension of a Linear weight
    ``[out, in]``, and the input channels (dim 1) of a Conv weight ``[out, in, k…]``, taken at
    the same kernel position; that dimension must be a multiple of `m`.

    Examples
    --------
    >>> nm_mask(torch.tensor([[0.1, -3., 2., 0.2]])).tolist()
    [[False, True, True, False]]
    >>> nm_mask(torch.randn(8, 4, 3, 3)).sum(dim=1).unique().tolist()  # 2 of 4 channels
    [2]
    """
    check_weight(w)
    check_int("n", n, 1)
    check_int("m", m, 1)
    if n > m:
        raise fail("n", n, f"<= m={m} (keep n of every m)")
    dim = 1 if w.dim() >= 3 else -1  # conv: the input channels; linear: the inputs
    if w.dim() == 0 or w.shape[dim] % m != 0:
        raise fail("w", w, f"a weight whose input dimension ({'dim 1' if dim == 1 else 'last'}"
                   f") is a multiple of m={m}")
    moved = w.detach().abs().movedim(dim, -1)
    groups = moved.reshape(-1, m)
    order = torch.argsort(groups, dim=1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, order[:, :n], True)
    return keep.reshape(moved.shape).movedim(-1, dim).contiguous()


def std_threshold_masks(weights: Mapping[str, Tensor], quality: float) -> dict[str, Tensor]:
    """Han et al.'s rule: prune ``|w| <= quality · std(w)``, with each layer's own threshold.

    Han et al. (2015) chose the threshold of each layer as a quality parameter times the
    standard deviation of that layer's weights, so the sparsity differs from layer to layer and
    is whatever the rule gives; `global_magnitude_masks` fixes the total budget instead.

    Parameters
    ----------
    weights : mapping of str to Tensor
        e.g. ``prunable(model)``; each needs at least two entries (for its standard deviation).
    quality : float
        The quality parameter, ≥ 0 (larger prunes more).

    Returns
    -------
    dict of str to Tensor
        Boolean masks with the same keys and shapes, ``True`` where ``|w| > quality · std``.

    Examples
    --------
    >>> w = torch.tensor([-2., -1., 0., 1., 2.])  # std (n − 1) = 1.58
    >>> std_threshold_masks({"w": w}, 0.7)["w"].tolist()
    [True, False, False, False, True]
    """
    check_mapping("weights", weights)
    for name, w in weights.items():
        check_weight(w, name=f"weights[{name!r}]")
        if w.numel() < 2:
            raise fail(f"weights[{name!r}]", w, "a tensor of at least two entries")
    check_real("quality", quality)
    return {name: w.detach().abs() > quality * w.detach().std()
            for name, w in weights.items()}


def prunable(model: nn.Module) -> dict[str, Tensor]:
    """The weights pruning acts on: every Linear and Conv weight, by parameter name (no biases).

    Examples
    --------
    >>> from levers.models import LeNet300100
    >>> list(prunable(LeNet300100()))
    ['fc1.weight', 'fc2.weight', 'fc3.weight']
    """
    check_instance("model", model)
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return {f"{name}.weight": mod.weight for name, mod in model.named_modules()
            if isinstance(mod, kinds)}


def compute_masks(model: nn.Module, amount: float, method: str = "magnitude",
                  scope: str = "layer", generator: torch.Generator | None = None
                  ) -> dict[str, Tensor]:
    """Masks for every `prunable` weight of `model` (the model is not changed).

    Parameters
    ----------
    model : nn.Module
    amount : float
        Fraction to prune, in [0, 1]: per tensor (``scope="layer"``) or overall (``"global"``).
    method : {"magnitude", "random"}
    scope : {"layer", "global"}
    generator : torch.Generator, optional
        Randomness of ``method="random"``.

    Returns
    -------
    dict of str to Tensor
        Boolean masks keyed by parameter name, for `apply_masks`.

    Examples
    --------
    >>> from levers.models import LeNet300100
    >>> masks = compute_masks(LeNet300100(), 0.9)
    >>> {k: round(1 - float(m.float().mean()), 3) for k, m in masks.items()}
    {'fc1.weight': 0.9, 'fc2.weight': 0.9, 'fc3.weight': 0.9}
    """
    check_instance("model", model)
    check_amount(amount)
    check_choice("method", method, ("magnitude", "random"))
    check_choice("scope", scope, ("layer", "global"))
    check_generator("generator", generator)
    weights = prunable(model)
    if method == "random":
        weights = {k: torch.rand(w.shape, generator=generator) for k, w in weights.items()}
    if scope == "global":
        return global_magnitude_masks(weights, amount)
    return {k: magnitude_mask(w, amount) for k, w in weights.items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Write ``W ← M ⊙ W`` into `model`'s parameters, in place (masked entries become 0.0).

    Examples
    --------
    >>> from levers.models import MLP, LeNet5
    >>> model = MLP((2, 1))
    >>> apply_masks(model, {"fc1.weight": torch.tensor([[True, False]])})
    >>> float(model.fc1.weight[0, 1].detach())
    0.0
    """
    check_instance("model", model)
    check_mapping("masks", masks)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise fail("masks", name, f"keyed by parameter names of the model: {sorted(params)}")
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool \
                or mask.shape != params[name].shape:
            raise fail(f"masks[{name!r}]", mask,
                       f"a torch.bool tensor of shape {tuple(params[name].shape)}")
        params[name].masked_fill_(~mask, 0.0)


def neuron_masks(model: MLP, amount: float, p: float = 2.0) -> dict[str, Tensor]:
    """Structured masks removing the hidden neurons of an MLP with the smallest weight-row norm.

    Each hidden layer loses ``round(amount · width)`` neurons: its weight row and bias entry.
    The output layer is kept whole. `shrink_mlp` builds the equivalent smaller dense model.

    Examples
    --------
    >>> from levers.models import MLP, LeNet5
    >>> masks = neuron_masks(MLP((4, 6, 2)), 0.5)
    >>> sorted(masks), int(masks["fc1.bias"].sum())
    (['fc1.bias', 'fc1.weight'], 3)
    """
    check_instance("model", model, MLP)
    masks = {}
    for layer_name in (f"fc{i}" for i in range(1, len(model.sizes) - 1)):
        layer = getattr(model, layer_name)
        rows = structured_mask(layer.weight, amount, dim=0, p=p)
        masks[f"{layer_name}.weight"] = rows
        masks[f"{layer_name}.bias"] = rows[:, 0].clone()
    return masks


@torch.no_grad()
def shrink_mlp(model: MLP, amount: float, p: float = 2.0) -> MLP:
    """A physically smaller MLP without the neurons `neuron_masks` would prune.

    Removing neuron ``j`` of layer ``i`` deletes row ``j`` of ``W_i``, entry ``j`` of ``b_i``
    and column ``j`` of ``W_{i+1}``: the result computes exactly what the masked model computes,
    with fewer multiply-adds.

    Examples
    --------
    >>> from levers.models import LeNet300100
    >>> shrink_mlp(LeNet300100(), 0.5).sizes
    (784, 150, 50, 10)
    """
    masks = neuron_masks(model, amount, p)
    keep = [torch.arange(model.sizes[0])]
    keep += [torch.nonzero(masks[f"fc{i}.bias"]).flatten() for i in range(1, len(model.sizes) - 1)]
    keep += [torch.arange(model.sizes[-1])]
    small = MLP(tuple(len(k) for k in keep))
    for i, (old, new) in enumerate(zip(model.layers(), small.layers(), strict=True)):
        new.weight.copy_(old.weight[keep[i + 1]][:, keep[i]])
        new.bias.copy_(old.bias[keep[i + 1]])
    return small


def block_mask(w: Tensor, amount: float, block: tuple[int, int] = (4, 4)) -> Tensor:
    """Prune whole ``bh × bw`` blocks of a matrix by their L2 norm (for the BSR format).

    Exactly ``round(amount · number of blocks)`` blocks are pruned, the smallest first (ties in
    row-major block order).

    Examples
    --------
    >>> w = torch.tensor([[1., 1., 0., 0.1], [1., 1., 0.1, 0.]])
    >>> block_mask(w, 0.5, (2, 2)).int().tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0]]
    """
    check_weight(w)
    check_amount(amount)
    if (not isinstance(block, tuple) or len(block) != 2
            or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in block)):
        raise fail("block", block, "a tuple of two positive ints (bh, bw)")
    (bh, bw), shape = block, tuple(w.shape)
    if w.dim() != 2 or shape[0] % bh or shape[1] % bw:
        raise fail("w", w, f"a 2-D tensor whose shape is a multiple of block={block}")
    blocks = w.detach().reshape(shape[0] // bh, bh, shape[1] // bw, bw)
    norms = blocks.pow(2).sum(dim=(1, 3))
    keep = _keep_largest(norms, round(amount * norms.numel()))
    return keep[:, None, :, None].expand(blocks.shape).reshape(shape).clone()


def _filters_kept(model: LeNet5, amount: float, p: float) -> dict[str, Tensor]:
    """Sorted indices of the output channels of conv1 and conv2 that channel pruning keeps."""
    check_instance("model", model, LeNet5)
    check_amount(amount)
    return {name: torch.nonzero(structured_mask(getattr(model, name).weight, amount, 0, p)
                                .flatten(1)[:, 0]).flatten()
            for name in ("conv1", "conv2")}


def channel_masks(model: LeNet5, amount: float, p: float = 1.0) -> dict[str, Tensor]:
    """Masks removing the conv filters (output channels) of smallest L_p norm from a LeNet-5.

    Each conv layer loses ``round(amount · channels)`` filters: their weights and bias entry.
    The L1 norm (``p=1``) is the criterion of Li et al. (2017); `shrink_cnn` builds the
    equivalent smaller dense model.

    Examples
    --------
    >>> masks = channel_masks(LeNet5(), 0.5)
    >>> int(masks["conv1.bias"].sum()), int(masks["conv2.bias"].sum())
    (3, 8)
    """
    kept = _filters_kept(model, amount, p)
    masks = {}
    for name, idx in kept.items():
        weight = getattr(model, name).weight
        rows = torch.zeros(weight.shape[0], dtype=torch.bool)
        rows[idx] = True
        masks[f"{name}.weight"] = rows[:, None, None, None].expand(weight.shape).clone()
        masks[f"{name}.bias"] = rows
    return masks


@torch.no_grad()
def shrink_cnn(model: LeNet5, amount: float, p: float = 1.0) -> LeNet5:
    """A physically smaller LeNet-5 without the filters `channel_masks` would prune.

    Removing filter ``j`` of ``conv1`` deletes its weights and bias and input channel ``j`` of
    ``conv2``; removing filter ``j`` of ``conv2`` deletes the 5·5 inputs of ``fc1`` that its
    pooled map fed. The result computes what the masked model computes, with fewer MACs.

    Examples
    --------
    >>> small = shrink_cnn(LeNet5(), 0.5)
    >>> tuple(small.conv1.weight.shape), tuple(small.conv2.weight.shape), small.fc1.in_features
    ((3, 1, 5, 5), (8, 3, 5, 5), 200)
    """
    kept = _filters_kept(model, amount, p)
    c1, c2 = kept["conv1"], kept["conv2"]
    area = model.fc1.in_features // model.conv2.out_channels  # 5·5 pooled positions
    fc1_cols = (c2[:, None] * area + torch.arange(area)).flatten()
    small = copy.deepcopy(model)
    small.conv1 = nn.Conv2d(1, len(c1), 5, padding=2)
    small.conv2 = nn.Conv2d(len(c1), len(c2), 5)
    small.fc1 = nn.Linear(len(fc1_cols), model.fc1.out_features)
    small.conv1.weight.copy_(model.conv1.weight[c1])
    small.conv1.bias.copy_(model.conv1.bias[c1])
    small.conv2.weight.copy_(model.conv2.weight[c2][:, c1])
    small.conv2.bias.copy_(model.conv2.bias[c2])
    small.fc1.weight.copy_(model.fc1.weight[:, fc1_cols])
    small.fc1.bias.copy_(model.fc1.bias)
    return small
