"""Regularization toward sparsity: L1 and group-lasso penalties, subgradient and proximal steps.

An L1 penalty ``λ·Σ|w|`` pulls weights toward zero, but only the proximal step
(soft-thresholding) lands them exactly on zero; the subgradient step oscillates around it. The
group lasso ``λ·Σ_g ‖w_g‖₂`` does the same for whole rows (neurons): its proximal step,
`group_soft_threshold`, zeros a row at once. `proximal_hook` returns an ``after_step`` for
`levers.train.fit`. Masks and their schedules are `levers.prune` and `levers.schedule`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from levers._checks import check_real, check_weight, fail
from levers.prune import prunable


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
        raise fail("grad", grad, f"a tensor of the shape of w, {tuple(w.shape)}")
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

    Examples
    --------
    >>> from levers.models import MLP
    >>> model = MLP((2, 1))
    >>> with torch.no_grad():
    ...     _ = model.fc1.weight.copy_(torch.tensor([[0.05, -1.0]]))
    >>> proximal_hook(lr=0.5, lam=0.2)(model)  # soft-threshold by 0.1
    >>> model.fc1.weight.detach().tolist()
    [[0.0, -0.8999999761581421]]
    """
    check_real("lam", lam)
    check_real("lr", lr, open_low=True)

    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        for w in prunable(model).values():
            w.copy_(soft_threshold(w, lr * lam))

    return hook


def group_lasso_penalty(model: nn.Module, lam: float) -> Tensor:
    """``λ · Σ_rows ‖w_row‖₂`` over the `prunable` weights (rows = output neurons or channels).

    Examples
    --------
    >>> from levers.models import MLP
    >>> model = MLP((2, 1))
    >>> with torch.no_grad():
    ...     _ = model.fc1.weight.copy_(torch.tensor([[3.0, -4.0]]))
    >>> float(group_lasso_penalty(model, 0.1).detach())
    0.5
    """
    check_real("lam", lam)
    return lam * sum(w.flatten(1).norm(dim=1).sum() for w in prunable(model).values())


def group_soft_threshold(w: Tensor, t: float) -> Tensor:
    """The proximal operator of ``t·Σ_rows ‖row‖₂``: each row scaled by ``max(1 − t/‖row‖, 0)``.

    A row whose norm is at most `t` becomes exactly zero as a whole (the neuron is pruned);
    the others shrink toward zero, keeping their direction. Rows are ``w[i]`` (dimension 0).

    Parameters
    ----------
    w : Tensor
        Floating-point weights with at least one dimension.
    t : float
        Threshold ``lr · λ``, >= 0.

    Returns
    -------
    Tensor
        Shaped like `w`.

    Examples
    --------
    >>> group_soft_threshold(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0).tolist()
    [[2.4000000953674316, 3.200000047683716], [0.0, 0.0]]
    """
    check_weight(w)
    if w.dim() == 0:
        raise fail("w", w, "a tensor with at least one dimension (rows along dimension 0)")
    check_real("t", t)
    norms = w.flatten(1).norm(dim=1) if w.dim() > 1 else w.abs()
    scale = torch.clamp(1 - t / norms.clamp_min(torch.finfo(w.dtype).tiny), min=0.0)
    return w * scale.reshape(-1, *([1] * (w.dim() - 1)))
