"""Regularization toward sparsity: L1 and group-lasso penalties, subgradient and proximal steps.

An L1 penalty ``λ·Σ|w|`` pulls weights toward zero, but only the proximal step
(soft-thresholding) lands them exactly on zero; the subgradient step oscillates around it. The
group lasso ``λ·Σ_g ‖w_g‖₂`` does the same for whole groups: its proximal step,
`group_soft_threshold`, zeros a row at once. `proximal_hook` returns an ``after_step`` for
`levers.train.fit`. Masks and their schedules are `levers.prune` and `levers.schedule`.

Two groupings are used in the book. `group_lasso_penalty` takes the rows of every prunable
weight (Chapter 2: structured sparsity in any layer). The neuron grouping of Chapter 3 takes
everything one hidden neuron of an `levers.models.MLP` owns on its input side, its weight row
and its bias (`neuron_groups`, `neuron_lasso_penalty`, `neuron_lasso_hook`): a neuron whose
group is zero outputs ``ReLU(0) = 0`` for every input, so it can be deleted with its outgoing
column, and `shrink_to_alive` builds the smaller dense model that computes the same function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from levers._checks import check_real, check_weight, fail
from levers.models import MLP
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


def _check_mlp(model: object) -> None:
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a levers.models.MLP, got {type(model).__name__}")


def neuron_groups(model: MLP) -> list[Tensor]:
    """One row per hidden neuron, per hidden layer: ``[W_i | b_i]`` (a view-free copy).

    Examples
    --------
    >>> [g.shape for g in neuron_groups(MLP((4, 3, 2)))]
    [torch.Size([3, 5])]
    """
    _check_mlp(model)
    return [torch.cat([layer.weight, layer.bias[:, None]], dim=1)
            for layer in model.layers()[:-1]]


def neuron_lasso_penalty(model: MLP, lam: float) -> Tensor:
    """``λ · Σ_g ‖θ_g‖₂`` over the hidden neurons' groups (add it to the loss; differentiable).

    Examples
    --------
    >>> model = MLP((2, 1, 1))
    >>> with torch.no_grad():
    ...     _ = model.fc1.weight.copy_(torch.tensor([[3.0, 0.0]]))
    ...     _ = model.fc1.bias.fill_(4.0)
    >>> float(neuron_lasso_penalty(model, 0.1).detach())  # 0.1 · ‖(3, 0, 4)‖
    0.5
    """
    check_real("lam", lam)
    return lam * sum(g.norm(dim=1).sum() for g in neuron_groups(model))


def neuron_lasso_hook(lr: float, lam: float) -> Callable[[nn.Module], None]:
    """An ``after_step`` for `levers.train.fit`: the block soft-threshold of each neuron's
    group (`group_soft_threshold` on ``[W_i | b_i]``) by ``lr·λ``.

    With plain SGD (``momentum=0``) at learning rate `lr`, gradient step + this hook is the
    proximal-gradient step for ``L + λ·Σ_g ‖θ_g‖₂``.
    """
    check_real("lam", lam)
    check_real("lr", lr, open_low=True)

    @torch.no_grad()
    def hook(model: nn.Module) -> None:
        for layer, g in zip(model.layers()[:-1], neuron_groups(model), strict=True):
            new = group_soft_threshold(g, lr * lam)
            layer.weight.copy_(new[:, :-1])
            layer.bias.copy_(new[:, -1])

    return hook


def alive_neurons(model: MLP) -> list[Tensor]:
    """For each hidden layer, the indices of the neurons whose group is not all zero."""
    return [torch.nonzero(g.detach().abs().sum(dim=1)).flatten() for g in neuron_groups(model)]


@torch.no_grad()
def shrink_to_alive(model: MLP) -> MLP:
    """The smaller dense MLP without the neurons whose whole group is zero.

    Deleting neuron ``j`` of layer ``i`` removes row ``j`` of ``W_i``, entry ``j`` of ``b_i`` and
    column ``j`` of ``W_{i+1}``; since the neuron always outputs 0, the result computes exactly
    what `model` computes. (`levers.structured.shrink_mlp` removes the same fraction of every
    layer by norm; group lasso zeroes a different number of neurons per layer.)

    Examples
    --------
    >>> model = MLP((4, 3, 2))
    >>> with torch.no_grad():
    ...     _ = model.fc1.weight[1].zero_()
    ...     _ = model.fc1.bias[1].zero_()
    >>> shrink_to_alive(model).sizes
    (4, 2, 2)
    """
    _check_mlp(model)
    keep = [torch.arange(model.sizes[0]), *alive_neurons(model), torch.arange(model.sizes[-1])]
    small = MLP(tuple(max(len(k), 1) for k in keep))
    for i, (old, new) in enumerate(zip(model.layers(), small.layers(), strict=True)):
        rows, cols = keep[i + 1], keep[i]
        new.weight.zero_()
        new.bias.zero_()
        new.weight[:len(rows), :len(cols)] = old.weight[rows][:, cols]
        new.bias[:len(rows)] = old.bias[rows]
    return small
