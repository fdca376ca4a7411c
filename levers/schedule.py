"""Masks over training time: kept fixed, raised on a schedule, or moved by prune and regrow.

`levers.prune` chooses a mask once; the functions here decide what happens to it while a model
trains. `mask_hook` keeps pruned weights at zero after every optimizer step; Zhu & Gupta's
`gradual_sparsity` raises the pruned fraction step by step; prune-and-regrow (`regrow`,
`regrow_hook`) moves a mask of fixed size to where the gradient says weights are needed. The
``*_hook`` functions return an ``after_step`` for `levers.train.fit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from levers._checks import check_amount, check_int, check_mapping, check_weight, fail
from levers.prune import apply_masks


def mask_hook(masks: Mapping[str, Tensor]) -> Callable[[nn.Module], None]:
    """An ``after_step`` for `levers.train.fit` that re-applies `masks` after every step.

    Without it, the gradient of a pruned weight is not zero, so one optimizer step would bring
    every pruned weight back.

    Parameters
    ----------
    masks : mapping of str to Tensor
        Boolean masks by parameter name, as `levers.prune.compute_masks` returns them.

    Returns
    -------
    callable
        ``hook(model)``, which writes the zeros into `model` (see `levers.prune.apply_masks`).

    Examples
    --------
    >>> from levers.models import MLP
    >>> model = MLP((2, 1))
    >>> mask_hook({"fc1.weight": torch.tensor([[False, True]])})(model)
    >>> float(model.fc1.weight[0, 0].detach())
    0.0
    """
    check_mapping("masks", masks)
    frozen = dict(masks)
    return lambda model: apply_masks(model, frozen)


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
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise fail("mask", mask, "a torch.bool tensor (True = kept)")
    for name, t in (("mask", mask), ("grad", grad)):
        if t.shape != w.shape:
            raise fail(name, t, f"a tensor of the shape of w, {tuple(w.shape)}")
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

    Examples
    --------
    >>> from levers.models import MLP
    >>> model = MLP((4, 2))
    >>> masks = {"fc1.weight": torch.tensor([[True, False, False, False]] * 2)}
    >>> hook = regrow_hook(masks, every=1, fraction=1.0)
    >>> model(torch.ones(1, 4)).sum().backward()
    >>> hook(model)  # one step: the kept weights move, their number stays
    >>> int(masks["fc1.weight"].sum()), masks["fc1.weight"][:, 0].tolist()
    (2, [False, False])
    """
    check_mapping("masks", masks)
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
