"""Second-order saliency: what removing one weight costs, predicted from the Hessian.

Near a minimum w of the loss L (gradient ≈ 0), a Taylor expansion to second order gives the loss
change of a small step δw as ΔL ≈ ½·δwᵀ H δw, with H the Hessian of L. Removing weight i is the
step δw = −wᵢ·eᵢ:

- **Optimal Brain Damage** (LeCun et al., 1990) keeps only the diagonal of H and leaves the other
  weights as they are: ΔLᵢ ≈ ½·hᵢᵢ·wᵢ² (`obd_saliency`).
- **Optimal Brain Surgeon** (Hassibi & Stork, 1993) lets the other weights move to absorb the
  removal. Minimizing ½·δwᵀ H δw subject to wq + δwq = 0 gives
  δw = −(wq / [H⁻¹]qq)·H⁻¹ e_q and ΔLq = wq² / (2·[H⁻¹]qq) (`obs_saliency`, `obs_update`).

`removal_loss_change` measures the true ΔL of each removal, against which both predictions are
judged. The Hessian is formed exactly by double back-propagation, one row per weight, so this
is for small layers (a few thousand weights at most).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from levers._checks import check_weight

LossFn = Callable[[Tensor], Tensor]


def _check_loss_fn(loss_fn: object) -> None:
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (a weight tensor -> a scalar loss), "
                        f"got {type(loss_fn).__name__}")


def _scalar(loss: object) -> Tensor:
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar tensor, got "
                         f"{getattr(loss, 'shape', type(loss).__name__)}")
    return loss.reshape(())


def hessian(loss_fn: LossFn, w: Tensor) -> Tensor:
    """The exact Hessian ∂²L/∂wᵢ∂wⱼ of ``loss_fn`` at `w`, as an (n, n) matrix, n = w.numel().

    Parameters
    ----------
    loss_fn : callable
        Maps a tensor shaped like `w` to a scalar loss; it must be twice differentiable.
    w : Tensor
        The point (not modified; any shape, entries in row-major order).

    Returns
    -------
    Tensor
        (n, n), in the dtype of `w`.

    Examples
    --------
    >>> hessian(lambda w: (w[0] * w[1]) ** 2 + w[0] ** 3, torch.tensor([1.0, 2.0])).tolist()
    [[14.0, 8.0], [8.0, 2.0]]
    """
    _check_loss_fn(loss_fn)
    check_weight(w)
    point = w.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_scalar(loss_fn(point)), point, create_graph=True)
    n = point.numel()
    basis = torch.eye(n, dtype=point.dtype).reshape(n, *point.shape)
    (rows,) = torch.autograd.grad(grad, point, grad_outputs=basis, is_grads_batched=True)
    return rows.reshape(n, n).detach()


def hessian_diagonal(loss_fn: LossFn, w: Tensor) -> Tensor:
    """The diagonal hᵢᵢ = ∂²L/∂wᵢ² of the Hessian, shaped like `w`.

    Examples
    --------
    >>> hessian_diagonal(lambda w: (w**4).sum(), torch.tensor([1.0, -2.0])).tolist()
    [12.0, 48.0]
    """
    return hessian(loss_fn, w).diagonal().reshape(w.shape)


def obd_saliency(w: Tensor, h_diag: Tensor) -> Tensor:
    """Optimal Brain Damage: the predicted loss increase ½·hᵢᵢ·wᵢ² of zeroing each weight alone.

    Examples
    --------
    >>> obd_saliency(torch.tensor([0.5, -2.0]), torch.tensor([4.0, 0.25])).tolist()
    [0.5, 0.5]
    """
    check_weight(w)
    check_weight(h_diag, "h_diag")
    if h_diag.shape != w.shape:
        raise ValueError(f"h_diag must have the shape of w {tuple(w.shape)}, "
                         f"got {tuple(h_diag.shape)}")
    return 0.5 * h_diag * w.detach() ** 2


def _check_inverse(w: Tensor, h_inv: Tensor) -> None:
    check_weight(w)
    check_weight(h_inv, "h_inv")
    n = w.numel()
    if h_inv.shape != (n, n):
        raise ValueError(f"h_inv must be ({n}, {n}) for w with {n} entries, "
                         f"got {tuple(h_inv.shape)}")
    if bool((h_inv.diagonal() <= 0).any()):
        raise ValueError("h_inv must have a positive diagonal (the inverse of a positive "
                         "definite Hessian)")


def obs_saliency(w: Tensor, h_inv: Tensor) -> Tensor:
    """Optimal Brain Surgeon: wq² / (2·[H⁻¹]qq), the least loss increase of zeroing weight q
    when all the others may move, shaped like `w`.

    Examples
    --------
    >>> h_inv = torch.linalg.inv(torch.tensor([[2.0, 1.0], [1.0, 2.0]]))
    >>> [round(v, 4) for v in obs_saliency(torch.tensor([1.0, 1.0]), h_inv).tolist()]
    [0.75, 0.75]
    """
    _check_inverse(w, h_inv)
    return (w.detach().reshape(-1) ** 2 / (2 * h_inv.diagonal())).reshape(w.shape)


def obs_update(w: Tensor, h_inv: Tensor, q: int) -> Tensor:
    """The weights after Optimal Brain Surgeon removes weight `q` (flat index):
    w − (wq / [H⁻¹]qq)·H⁻¹ e_q, whose entry q is exactly 0.

    Examples
    --------
    >>> h_inv = torch.linalg.inv(torch.tensor([[2.0, 1.0], [1.0, 2.0]]))
    >>> obs_update(torch.tensor([1.0, 1.0]), h_inv, 0).tolist()
    [0.0, 1.5]
    """
    _check_inverse(w, h_inv)
    n = w.numel()
    if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q < n:
        raise ValueError(f"q must be an int in [0, {n - 1}], got {q!r}")
    flat = w.detach().reshape(-1)
    new = flat - flat[q] / h_inv[q, q] * h_inv[:, q]
    new[q] = 0.0  # exact, whatever the rounding of the line above
    return new.reshape(w.shape)


def removal_loss_change(loss_fn: LossFn, w: Tensor) -> Tensor:
    """The actual ΔLᵢ = L(w with wᵢ = 0) − L(w) of removing each weight alone, shaped like `w`.

    Examples
    --------
    >>> removal_loss_change(lambda w: ((w - 1) ** 2).sum(), torch.tensor([1.0, 3.0])).tolist()
    [1.0, -3.0]
    """
    _check_loss_fn(loss_fn)
    check_weight(w)
    point = w.detach().clone()
    with torch.no_grad():
        base = _scalar(loss_fn(point))
        changes = torch.empty(point.numel(), dtype=base.dtype)
        flat = point.reshape(-1)
        for i in range(flat.numel()):
            kept = flat[i].clone()
            flat[i] = 0.0
            changes[i] = _scalar(loss_fn(point)) - base
            flat[i] = kept
    return changes.reshape(w.shape)
