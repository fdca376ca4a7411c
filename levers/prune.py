"""Pruning: which weights to remove (criteria and budgets) and removing them.

A pruned weight is ``W̃ = M ⊙ W`` with a mask ``M`` of zeros and ones. Masks here are plain
boolean tensors (``True`` = keep) that you can print, count and save; `apply_masks` writes the
zeros into the weights. Every mask that takes a budget prunes exactly ``round(amount · n)``
entries: ties in magnitude are broken by position, never by keeping or dropping a whole group of
equal values, so the achieved sparsity is the one you asked for. The criteria are magnitude,
random and first-order Taylor importance (`taylor_scores`). Masks of whole units (neurons, N:M
groups, blocks, filters) and the smaller models they leave are `levers.structured`; how masks
change while a model trains (kept, grown on a schedule, moved by regrowth) is `levers.schedule`;
penalties that make zeros (L1, proximal steps) are `levers.regularize`; measuring sparsity is
`levers.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from levers._checks import (
    check_amount,
    check_choice,
    check_generator,
    check_instance,
    check_int,
    check_labels,
    check_mapping,
    check_real,
    check_tensor,
    check_weight,
    fail,
)


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


def taylor_scores(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000
                  ) -> dict[str, Tensor]:
    """First-order Taylor importance ``|w ⊙ ∂L/∂w|`` of every `prunable` weight.

    Removing weight ``w`` changes the loss by about ``−w · ∂L/∂w`` (Molchanov et al. 2017,
    2019); the score is its magnitude, with ``∂L/∂w`` the gradient of the mean cross-entropy
    over ``(x, y)``. The model's ``.grad`` fields are left untouched.

    Parameters
    ----------
    model : nn.Module
    x, y : Tensor
        Inputs and int64 labels the gradient is taken over (e.g. the training set).
    batch_size : int
        Inputs per forward pass (memory only; the result is the full-set gradient).

    Returns
    -------
    dict of str to Tensor
        Non-negative scores shaped like the weights.

    Examples
    --------
    >>> from levers.models import MLP
    >>> s = taylor_scores(MLP((4, 3)), torch.ones(2, 4), torch.tensor([0, 1]))
    >>> list(s), s["fc1.weight"].shape
    (['fc1.weight'], torch.Size([3, 4]))
    """
    weights = prunable(model)
    check_tensor("x", x)
    y = check_labels("y", y)
    if len(y) != len(x):
        raise fail("y", y, f"one label per input of x ({len(x)})")
    check_int("batch_size", batch_size, 1)
    grads = [torch.zeros_like(w) for w in weights.values()]
    for i in range(0, len(x), batch_size):
        loss = F.cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size],
                               reduction="sum") / len(x)
        for total, g in zip(grads, torch.autograd.grad(loss, list(weights.values())),
                            strict=True):
            total += g
    return {k: (w.detach() * g).abs() for (k, w), g in zip(weights.items(), grads, strict=True)}


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
