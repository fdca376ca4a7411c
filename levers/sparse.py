"""Sparsity: masks, keeping them applied, and removing whole neurons.

A pruned weight is ``W̃ = M ⊙ W`` with a mask ``M`` of zeros and ones. Masks here are plain
boolean tensors (``True`` = keep) that you can print, count and save; `apply_masks` writes the
zeros into the weights, and `mask_hook` re-applies them after every optimizer step so pruned
weights stay exactly zero during fine-tuning. Every mask that takes a budget prunes exactly
``round(amount · n)`` entries: ties in magnitude are broken by position, never by keeping or
dropping a whole group of equal values, so the achieved sparsity is the one you asked for.
Structured masks remove whole neurons, and `shrink_mlp` turns them into a smaller dense model.
The steps that make zeros during training (L1, proximal, prune and regrow) are in
`levers.sparsify`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from levers._checks import check_amount, check_int, check_real, check_weight
from levers.metrics import sparsity
from levers.models import MLP


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
        raise ValueError(f"give exactly one of amount and threshold, got amount={amount!r} "
                         f"and threshold={threshold!r}")
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
    if not isinstance(weights, Mapping) or len(weights) == 0:
        raise ValueError(f"weights must be a non-empty mapping of name to tensor, got {weights!r}")
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
    if w.dim() == 0 or not -w.dim() <= dim < w.dim():
        raise ValueError(f"dim must index a dimension of w (shape {tuple(w.shape)}), got {dim!r}")
    check_real("p", p, open_low=True)
    units = w.detach().movedim(dim, 0).reshape(w.shape[dim], -1)
    keep = _keep_largest(units.norm(p=p, dim=1), round(amount * w.shape[dim]))
    shape = [1] * w.dim()
    shape[dim] = -1
    return keep.reshape(shape).expand(w.shape).clone()


def nm_mask(w: Tensor, n: int = 2, m: int = 4) -> Tensor:
    """N:M sparsity: in every group of `m` consecutive weights along the last dim, keep `n`.

    2:4 (``n=2, m=4``) is the pattern sparse tensor cores accelerate: exactly 50 % zeros,
    placed so the hardware can store 2 values and two 2-bit positions per group.

    Examples
    --------
    >>> nm_mask(torch.tensor([[0.1, -3., 2., 0.2]])).tolist()
    [[False, True, True, False]]
    """
    check_weight(w)
    check_int("n", n, 1)
    check_int("m", m, 1)
    if n > m:
        raise ValueError(f"n must be <= m (keep n of every m), got n={n} and m={m}")
    if w.dim() == 0 or w.shape[-1] % m != 0:
        raise ValueError(f"the last dimension of w must be a multiple of m={m}, "
                         f"got shape {tuple(w.shape)}")
    groups = w.detach().abs().reshape(-1, m)
    order = torch.argsort(groups, dim=1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, order[:, :n], True)
    return keep.reshape(w.shape)


def prunable(model: nn.Module) -> dict[str, Tensor]:
    """The weights pruning acts on: every Linear and Conv weight, by parameter name (no biases).

    Examples
    --------
    >>> from levers.models import LeNet300100
    >>> list(prunable(LeNet300100()))
    ['fc1.weight', 'fc2.weight', 'fc3.weight']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
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
    """
    if method not in ("magnitude", "random"):
        raise ValueError(f"method must be 'magnitude' or 'random', got {method!r}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    weights = prunable(model)
    if method == "random":
        weights = {k: torch.rand(w.shape, generator=generator) for k, w in weights.items()}
    if scope == "global":
        return global_magnitude_masks(weights, amount)
    return {k: magnitude_mask(w, amount) for k, w in weights.items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Write ``W ← M ⊙ W`` into `model`'s parameters, in place (masked entries become 0.0)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"masks has key {name!r}, which is not a parameter of the model; "
                             f"allowed: {sorted(params)}")
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool \
                or mask.shape != params[name].shape:
            raise ValueError(f"masks[{name!r}] must be a bool tensor of shape "
                             f"{tuple(params[name].shape)}, got {getattr(mask, 'dtype', mask)!r} "
                             f"{tuple(getattr(mask, 'shape', ()))}")
        params[name].masked_fill_(~mask, 0.0)


def mask_hook(masks: Mapping[str, Tensor]) -> Callable[[nn.Module], None]:
    """An ``after_step`` for `levers.train.fit` that re-applies `masks` after every step.

    Without it, the gradient of a pruned weight is not zero, so one optimizer step would bring
    every pruned weight back.
    """
    frozen = dict(masks)
    return lambda model: apply_masks(model, frozen)


def sparsity_of(model: nn.Module) -> dict[str, float]:
    """Fraction of exact zeros of each `prunable` weight, and ``"total"`` over all of them."""
    weights = {k: w.detach() for k, w in prunable(model).items()}
    out = {k: sparsity(w) for k, w in weights.items()}
    out["total"] = sparsity(torch.cat([w.flatten() for w in weights.values()]))
    return out


@torch.no_grad()
def activation_sparsity(model: MLP, x: Tensor) -> dict[str, float]:
    """Fraction of exact zeros in each hidden ReLU output of an `levers.models.MLP` on inputs `x`.

    Returns
    -------
    dict of str to float
        Keyed by the layer whose output the ReLU follows (``"fc1"``, ``"fc2"``, …).
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a levers.models.MLP, got {type(model).__name__}")
    check_weight(x, name="x")
    names = [f"fc{i}" for i in range(1, len(model.sizes) - 1)]
    out: dict[str, float] = {}
    handles = [getattr(model, name).register_forward_hook(
        lambda _m, _i, y, name=name: out.__setitem__(name, float((torch.relu(y) == 0)
                                                                 .float().mean())))
        for name in names]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)  # measuring must not switch a model out of training
    return out


def neuron_masks(model: MLP, amount: float, p: float = 2.0) -> dict[str, Tensor]:
    """Structured masks removing the hidden neurons of an MLP with the smallest weight-row norm.

    Each hidden layer loses ``round(amount · width)`` neurons: its weight row and bias entry.
    The output layer is kept whole. `shrink_mlp` builds the equivalent smaller dense model.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a levers.models.MLP, got {type(model).__name__}")
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
