"""Structured pruning: masks that remove whole units, and the smaller dense models they leave.

An unstructured mask (`levers.prune`) zeros single weights anywhere; the masks here zero whole
groups that hardware or a smaller layer can skip: slices along a dimension (`structured_mask`:
rows, neurons, filters), N:M groups along the inputs (`nm_mask`, the 2:4 pattern of sparse
tensor cores), ``bh × bw`` blocks (`block_mask`, for BSR), the hidden neurons of an MLP
(`neuron_masks`) and the filters of a LeNet-5 (`channel_masks`). Every budget is exact, as in
`levers.prune`: units are ranked by their norm with `levers.prune.magnitude_mask`, ties broken
by position. Removing neurons or filters for real gives a physically smaller dense model that
computes what the masked one computes (`shrink_mlp`, `shrink_cnn`). Their storage formats are
`levers.structured_formats`.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from levers._checks import check_amount, check_instance, check_int, check_real, check_weight, fail
from levers.models import MLP, LeNet5
from levers.prune import magnitude_mask


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
    keep = magnitude_mask(units.norm(p=p, dim=1), amount)
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
    keep = magnitude_mask(norms, amount)
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
