"""Sparsifying during training: L1 and proximal steps, a gradual schedule, prune and regrow.

`levers.sparse` chooses a mask once and keeps it; the steps here make zeros *while* a model
trains. An L1 penalty ``λ·Σ|w|`` pulls weights toward zero, but only the proximal step
(soft-thresholding) lands them exactly on zero; the subgradient step oscillates around it. A
gradual schedule raises the pruned fraction step by step, and prune-and-regrow moves a mask of
fixed size to where the gradient says weights are needed. The ``*_hook`` functions return an
``after_step`` for `levers.train.fit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from levers._checks import check_amount, check_int, check_real, check_weight
from levers.sparse import apply_masks, prunable


def l1_penalty(model: nn.Module, lam: float) -> Tensor:
    """``λ · Σ|w|`` over the `prunable` weights (add it to the loss; differentiable).

    Examples
    --------
    >>> from levers.models import MLP
    >>> model = MLP((2, 1))
    >>> with torch.no_grad():
    ...     _ = model.fc1.weight.copy_(torch.tensor([[0.5, -2.0]]))
    >>> float(l1_penalty(model, 0.1).detach())
    0.25
    """
    check_real("lam", lam)
    return lam * sum(w.abs().sum() for w in prunable(model).values())


def _check_step(w: Tensor, grad: Tensor, lr: float, lam: float) -> None:
    check_weight(w)
    check_weight(grad, name="grad")
    if grad.shape != w.shape:
        raise ValueError(f"grad must have the shape of w {tuple(w.shape)}, got {tuple(grad.shape)}")
    check_real("lr", lr)
    check_real("lam", lam)


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
    check_weight(w)
    check_real("t", t)
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
    the proximal-gradient step for ``L + λ·Σ|w|``. Biases are left alone.
    """
    check_real("lam", lam)
    check_real("lr", lr, open_low=True)

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
    check_amount(s_i, "s_i")
    check_amount(s_f, "s_f")
    for name, v, low in (("t", t, 0), ("t0", t0, 0), ("n", n, 1), ("dt", dt, 1)):
        check_int(name, v, low)
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

    Examples
    --------
    >>> mask = torch.tensor([True, True, False, False])
    >>> w, grad = torch.tensor([0.9, 0.1, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.2, 0.7])
    >>> regrow(mask, w, grad, 0.5).tolist()
    [True, False, False, True]
    """
    check_weight(w)
    check_weight(grad, name="grad")
    check_amount(fraction, "fraction")
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
    check_int("every", every, 1)
    check_amount(fraction, "fraction")
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
