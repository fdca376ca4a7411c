"""Sparsity: masks, keeping them applied, L1 and proximal steps, schedules, shrinking layers.

A pruned weight is ``W̃ = M ⊙ W`` with a mask ``M`` of zeros and ones. Masks here are plain
boolean tensors (``True`` = keep) that you can print, count and save; `apply_masks` writes the
zeros into the weights, and `mask_hook` re-applies them after every optimizer step so pruned
weights stay exactly zero during fine-tuning. Every mask that takes a budget prunes exactly
``round(amount · n)`` entries: ties in magnitude are broken by position, never by keeping or
dropping a whole group of equal values, so the achieved sparsity is the one you asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Real

import torch
from torch import Tensor, nn

from levers.metrics import sparsity
from levers.models import MLP


def _check_real(name: str, value: object, low: float = 0.0, high: float = math.inf,
                open_low: bool = False) -> None:
    is_number = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or not (low < value if open_low else low <= value) or value > high:
        allowed = (f"in [{low}, {high}]" if high < math.inf
                   else f"{'>' if open_low else '>='} {low}")
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_amount(amount: float, name: str = "amount") -> None:
    _check_real(name, amount, 0.0, 1.0)


def _check_weight(w: Tensor, name: str = "w") -> None:
    if not isinstance(w, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {w.dtype}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} must contain only finite values (no NaN or inf)")


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
    _check_weight(w)
    if (amount is None) == (threshold is None):
        raise ValueError(f"give exactly one of amount and threshold, got amount={amount!r} "
                         f"and threshold={threshold!r}")
    if threshold is not None:
        _check_real("threshold", threshold)
        return w.abs() > threshold
    _check_amount(amount)
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
        _check_weight(w, name=f"weights[{name!r}]")
    _check_amount(amount)
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
    _check_weight(w)
    _check_amount(amount)
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
    _check_weight(w)
    _check_amount(amount)
    if w.dim() == 0 or not -w.dim() <= dim < w.dim():
        raise ValueError(f"dim must index a dimension of w (shape {tuple(w.shape)}), got {dim!r}")
    _check_real("p", p, open_low=True)
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
    _check_weight(w)
    _check_int("n", n, 1)
    _check_int("m", m, 1)
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


def l1_penalty(model: nn.Module, lam: float) -> Tensor:
    """``λ · Σ|w|`` over the `prunable` weights (add it to the loss; differentiable)."""
    _check_real("lam", lam)
    return lam * sum(w.abs().sum() for w in prunable(model).values())


def _check_step(w: Tensor, grad: Tensor, lr: float, lam: float) -> None:
    _check_weight(w)
    _check_weight(grad, name="grad")
    if grad.shape != w.shape:
        raise ValueError(f"grad must have the shape of w {tuple(w.shape)}, got {tuple(grad.shape)}")
    _check_real("lr", lr)
    _check_real("lam", lam)


def subgradient_step(w: Tensor, grad: Tensor, lr: float, lam: float) -> Tensor:
    """One subgradient step on ``L + λ|w|``: ``w − lr·(∇L + λ·sign w)``.

    The step overshoots zero by up to ``lr·λ`` and oscillates around it, so weights become
    small but almost never exactly zero.

    Examples
    --------
    >>> subgradient_step(torch.tensor([0.125, -1.0]), torch.zeros(2), lr=0.5, lam=0.5).tolist()
    [-0.125, -0.75]
    """
    _check_step(w, grad, lr, lam)
    return w - lr * (grad + lam * torch.sign(w))


def soft_threshold(w: Tensor, t: float) -> Tensor:
    """The proximal operator of ``t·|x|``: ``sign(w) · max(|w| − t, 0)``.

    It returns ``argmin_x ½(x − w)² + t|x|`` entrywise; every ``|w| <= t`` becomes exactly 0.

    Examples
    --------
    >>> soft_threshold(torch.tensor([0.125, -1.0, 0.75]), 0.25).tolist()
    [0.0, -0.75, 0.5]
    """
    _check_weight(w)
    _check_real("t", t)
    return torch.sign(w) * torch.clamp(w.abs() - t, min=0.0)


def proximal_step(w: Tensor, grad: Tensor, lr: float, lam: float) -> Tensor:
    """One proximal-gradient (ISTA) step on ``L + λ|w|``: soft-threshold ``w − lr·∇L`` by ``lr·λ``.

    Examples
    --------
    >>> proximal_step(torch.tensor([0.125, -1.0]), torch.zeros(2), lr=0.5, lam=0.5).tolist()
    [0.0, -0.75]
    """
    _check_step(w, grad, lr, lam)
    return soft_threshold(w - lr * grad, lr * lam)


def proximal_hook(lr: float, lam: float) -> Callable[[nn.Module], None]:
    """An ``after_step`` for `levers.train.fit` that soft-thresholds every `prunable` weight.

    With plain SGD (``momentum=0``) at learning rate `lr`, gradient step + this hook is exactly
    the proximal-gradient step for ``L + λ·Σ|w|``.
    """
    _check_real("lam", lam)
    _check_real("lr", lr, open_low=True)

    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        for w in prunable(model).values():
            w.copy_(soft_threshold(w, lr * lam))

    return hook


def gradual_sparsity(t: int, s_i: float, s_f: float, t0: int, n: int, dt: int) -> float:
    """Zhu & Gupta's schedule: ``s_t = s_f + (s_i − s_f)(1 − (t − t0)/(n·Δt))³``.

    Sparsity rises from `s_i` at step `t0` to `s_f` at ``t0 + n·dt``, changing every `dt` steps
    (fast at first, when many redundant weights remain, then slowly). Before `t0` it is `s_i`,
    after the end `s_f`.

    Examples
    --------
    >>> [round(gradual_sparsity(t, 0.0, 0.9, t0=0, n=4, dt=10), 4) for t in (0, 10, 25, 40, 99)]
    [0.0, 0.5203, 0.7875, 0.9, 0.9]
    """
    _check_amount(s_i, "s_i")
    _check_amount(s_f, "s_f")
    for name, v, low in (("t", t, 0), ("t0", t0, 0), ("n", n, 1), ("dt", dt, 1)):
        _check_int(name, v, low)
    k = min(max((t - t0) // dt, 0), n)
    return s_f + (s_i - s_f) * (1 - k / n) ** 3


def regrow(mask: Tensor, w: Tensor, grad: Tensor, fraction: float) -> Tensor:
    """One prune-and-regrow update of dynamic sparsity (RigL, Evci et al. 2020).

    Drops ``round(fraction · active)`` kept weights of smallest ``|w|`` and revives as many
    pruned positions with the largest ``|grad|``: the sparsity stays the same, the mask moves.

    Returns
    -------
    Tensor
        The new boolean mask; regrown weights should start at 0 (apply it to `w`).
    """
    _check_weight(w)
    _check_weight(grad, name="grad")
    _check_amount(fraction, "fraction")
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != w.shape \
            or grad.shape != w.shape:
        raise ValueError(f"mask (bool) and grad must have the shape of w {tuple(w.shape)}, got "
                         f"{tuple(getattr(mask, 'shape', ()))} and {tuple(grad.shape)}")
    k = min(round(fraction * int(mask.sum())), int((~mask).sum()))
    inf = torch.tensor(math.inf)
    drop_score = torch.where(mask, w.detach().abs(), inf)
    grow_score = torch.where(mask, inf, -grad.detach().abs())
    new = mask.clone()
    new.view(-1)[torch.argsort(drop_score.flatten(), stable=True)[:k]] = False
    new.view(-1)[torch.argsort(grow_score.flatten(), stable=True)[:k]] = True
    return new


def regrow_hook(masks: dict[str, Tensor], every: int, fraction: float
                ) -> Callable[[nn.Module], None]:
    """An ``after_step`` for dynamic sparsity (prune and regrow during `levers.train.fit`).

    After every step it re-applies `masks`; every `every` steps it first moves a `fraction` of
    each mask with `regrow`, using that step's gradients. `masks` is updated in place, so after
    training it holds the final masks.
    """
    _check_int("every", every, 1)
    _check_amount(fraction, "fraction")
    step = 0

    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        nonlocal step
        step += 1
        apply_masks(model, masks)  # pruned weights first go back to 0, so regrown ones start at 0
        if step % every == 0:
            params = dict(model.named_parameters())
            for name, mask in masks.items():
                w = params[name]
                if w.grad is not None:
                    masks[name] = regrow(mask, w, w.grad, fraction)
        apply_masks(model, masks)

    return hook


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
    _check_weight(x, name="x")
    names = [f"fc{i}" for i in range(1, len(model.sizes) - 1)]
    out: dict[str, float] = {}
    handles = [getattr(model, name).register_forward_hook(
        lambda _m, _i, y, name=name: out.__setitem__(name, float((torch.relu(y) == 0)
                                                                 .float().mean())))
        for name in names]
    try:
        model.eval()
        model(x)
    finally:
        for h in handles:
            h.remove()
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
