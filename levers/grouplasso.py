"""Group lasso: a penalty that removes whole neurons, then a physically smaller model.

The compression objective is ``L(θ) + λ·P(θ)``. With ``P = Σ|w|`` (L1, `levers.sparsify`)
the zeros fall anywhere; with the group lasso ``P = Σ_g ‖θ_g‖₂`` they fall a whole group at a
time. A group here is everything one hidden neuron of an `levers.models.MLP` owns on its input
side: its weight row and its bias. A neuron whose group is zero outputs ``ReLU(0) = 0`` for
every input, so it can be deleted with its outgoing column, and `shrink` builds the smaller
dense model that computes exactly the same function.

As for L1, the subgradient of ``‖θ_g‖₂`` only makes groups small; the proximal step, the
block soft-threshold ``θ_g ← θ_g · max(0, 1 − t/‖θ_g‖₂)``, makes them exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from levers._checks import check_real, check_weight
from levers.models import MLP


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


def group_lasso_penalty(model: MLP, lam: float) -> Tensor:
    """``λ · Σ_g ‖θ_g‖₂`` over the hidden neurons' groups (add it to the loss; differentiable).

    Examples
    --------
    >>> model = MLP((2, 1, 1))
    >>> with torch.no_grad():
    ...     _ = model.fc1.weight.copy_(torch.tensor([[3.0, 0.0]]))
    ...     _ = model.fc1.bias.fill_(4.0)
    >>> float(group_lasso_penalty(model, 0.1).detach())  # 0.1 · ‖(3, 0, 4)‖
    0.5
    """
    check_real("lam", lam)
    return lam * sum(g.norm(dim=1).sum() for g in neuron_groups(model))


def group_soft_threshold(g: Tensor, t: float) -> Tensor:
    """The proximal operator of ``t·‖·‖₂`` applied to each row of `g`: block soft-threshold.

    Each row shrinks toward 0 by `t` in length, keeping its direction; a row of norm ``<= t``
    becomes exactly zero. It solves ``argmin_x ½‖x − g‖² + t‖x‖₂`` row by row.

    Examples
    --------
    >>> group_soft_threshold(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0).tolist()
    [[2.4000000953674316, 3.200000047683716], [0.0, 0.0]]
    """
    check_weight(g, name="g")
    if g.dim() != 2:
        raise ValueError(f"g must be 2-D (one group per row), got shape {tuple(g.shape)}")
    check_real("t", t)
    norm = g.norm(dim=1, keepdim=True)
    return g * torch.clamp(1 - t / norm.clamp_min(torch.finfo(g.dtype).tiny), min=0.0)


def group_lasso_hook(lr: float, lam: float) -> Callable[[nn.Module], None]:
    """An ``after_step`` for `levers.train.fit`: the block soft-threshold by ``lr·λ``.

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


def alive(model: MLP) -> list[Tensor]:
    """For each hidden layer, the indices of the neurons whose group is not all zero."""
    return [torch.nonzero(g.detach().abs().sum(dim=1)).flatten() for g in neuron_groups(model)]


@torch.no_grad()
def shrink(model: MLP) -> MLP:
    """The smaller dense MLP without the neurons whose whole group is zero.

    Deleting neuron ``j`` of layer ``i`` removes row ``j`` of ``W_i``, entry ``j`` of ``b_i`` and
    column ``j`` of ``W_{i+1}``; since the neuron always outputs 0, the result computes exactly
    what `model` computes. (`levers.sparse.shrink_mlp` removes the same fraction of every layer
    by norm; group lasso zeroes a different number of neurons per layer.)

    Examples
    --------
    >>> model = MLP((4, 3, 2))
    >>> with torch.no_grad():
    ...     _ = model.fc1.weight[1].zero_()
    ...     _ = model.fc1.bias[1].zero_()
    >>> shrink(model).sizes
    (4, 2, 2)
    """
    _check_mlp(model)
    keep = [torch.arange(model.sizes[0]), *alive(model), torch.arange(model.sizes[-1])]
    small = MLP(tuple(max(len(k), 1) for k in keep))
    for i, (old, new) in enumerate(zip(model.layers(), small.layers(), strict=True)):
        rows, cols = keep[i + 1], keep[i]
        new.weight.zero_()
        new.bias.zero_()
        new.weight[:len(rows), :len(cols)] = old.weight[rows][:, cols]
        new.bias[:len(rows)] = old.bias[rows]
    return small
