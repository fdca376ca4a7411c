"""Knowledge distillation (Hinton et al. 2015): a small student learns from a large teacher.

The teacher's logits ``z_t`` carry more than its top answer: how much a "7" looks like a "1".
Dividing logits by a **temperature** ``T > 1`` before the softmax spreads that information over
the classes, and the student is trained on

    α·CE(y, σ(z_s)) + (1 − α)·T²·KL(σ(z_t/T) ‖ σ(z_s/T)).

The gradient of the soft term with respect to a student logit is ``(q − p)/T`` per sample
(``q = σ(z_s/T)``, ``p = σ(z_t/T)``), which shrinks like ``1/T²`` for large ``T``; the ``T²``
factor keeps its scale, so changing ``T`` does not silently change the learning rate of the soft
term. With **hard** targets the teacher gives only its argmax label, and the second term becomes
``CE(argmax z_t, σ(z_s))``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from levers._checks import check_amount, check_real
from levers.data import Split
from levers.train import History, fit, predict

TARGETS = ("soft", "hard")


def _check_logits(z: object, name: str) -> None:
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got "
                        f"{getattr(z, 'dtype', type(z).__name__)}")
    if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"{name} must have shape [batch, classes] with classes >= 2, got "
                         f"{tuple(z.shape)}")


def _check_temperature(T: object) -> None:
    check_real("T", T, open_low=True)


def softmax_t(logits: Tensor, T: float = 1.0) -> Tensor:
    """Softmax with temperature: ``σ(z/T)_i = exp(z_i/T) / Σ_j exp(z_j/T)`` over the last dim.

    ``T = 1`` is the ordinary softmax; larger ``T`` flattens the distribution toward uniform,
    smaller ``T`` sharpens it toward the argmax. The order of the classes never changes.

    Parameters
    ----------
    logits : Tensor
        Floating-point logits, classes along the last dimension.
    T : float
        Temperature, ``T > 0``.

    Returns
    -------
    Tensor
        Probabilities of the shape of `logits`, summing to 1 along the last dimension.

    Examples
    --------
    >>> softmax_t(torch.tensor([2.0, 0.0]), T=1.0).tolist()  # doctest: +ELLIPSIS
    [0.880..., 0.119...]
    >>> softmax_t(torch.tensor([2.0, 0.0]), T=2.0).tolist()  # doctest: +ELLIPSIS
    [0.731..., 0.268...]
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() == 0:
        raise TypeError(f"logits must be a floating-point tensor with at least one dimension, "
                        f"got {getattr(logits, 'dtype', type(logits).__name__)}")
    _check_temperature(T)
    return torch.softmax(logits / T, dim=-1)


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, y: Tensor, T: float,
                      alpha: float, target: str = "soft") -> Tensor:
    """``α·CE(y, σ(z_s)) + (1 − α)·T²·KL(σ(z_t/T) ‖ σ(z_s/T))``, averaged over the batch.

    Parameters
    ----------
    student_logits : Tensor
        ``z_s``, shape ``[batch, classes]``; the loss is differentiable in it.
    teacher_logits : Tensor
        ``z_t``, the same shape; treated as constants (no gradient flows into the teacher).
    y : Tensor
        True labels, int64 of shape ``[batch]``.
    T : float
        Temperature, ``T > 0`` (used by ``target="soft"`` only: an argmax ignores it).
    alpha : float
        Weight of the true-label term, in [0, 1]; ``alpha = 1`` is plain cross-entropy.
    target : {"soft", "hard"}
        ``"soft"``: the teacher's probabilities ``σ(z_t/T)``, with the ``T²`` KL term.
        ``"hard"``: the teacher's argmax labels; the second term is ``CE(argmax z_t, σ(z_s))``.

    Returns
    -------
    Tensor
        A scalar.

    Examples
    --------
    >>> z_s, z_t, y = torch.zeros(1, 3), torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])
    >>> round(float(distillation_loss(z_s, z_t, y, T=1.0, alpha=1.0)), 4)  # CE = log 3
    1.0986
    >>> round(float(distillation_loss(z_s, z_s, y, T=4.0, alpha=0.0)), 4)  # same logits
    0.0
    """
    _check_logits(student_logits, "student_logits")
    _check_logits(teacher_logits, "teacher_logits")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits must have the shape of student_logits "
                         f"{tuple(student_logits.shape)}, got {tuple(teacher_logits.shape)}")
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != student_logits.shape[:1]:
        raise ValueError(f"y must be an int64 tensor of shape ({student_logits.shape[0]},), got "
                         f"{getattr(y, 'dtype', type(y).__name__)} "
                         f"{tuple(getattr(y, 'shape', ()))}")
    _check_temperature(T)
    check_amount(alpha, "alpha")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    teacher = teacher_logits.detach()
    ce = F.cross_entropy(student_logits, y)
    if target == "hard":
        return alpha * ce + (1 - alpha) * F.cross_entropy(student_logits, teacher.argmax(1))
    kl = F.kl_div(F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher / T, dim=1),
                  reduction="batchmean", log_target=True)
    return alpha * ce + (1 - alpha) * T**2 * kl


def soft_gradient(student_logits: Tensor, teacher_logits: Tensor, T: float,
                  scaled: bool = True) -> Tensor:
    """Closed-form gradient of the soft term with respect to the student logits.

    For ``L = T²·KL(p ‖ q)/B`` with ``p = σ(z_t/T)``, ``q = σ(z_s/T)`` and batch size ``B``,
    ``∂L/∂z_s = T²·(q − p)/(T·B)``; without the ``T²`` factor (``scaled=False``) it is
    ``(q − p)/(T·B)``, which shrinks like ``1/T²`` once ``T`` is large. Multiply by
    ``1 − α`` for the gradient of `distillation_loss`'s soft part.

    Examples
    --------
    >>> g = soft_gradient(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, -1.0]]), T=1.0)
    >>> [round(v, 4) for v in g[0].tolist()]
    [-0.3808, 0.3808]
    """
    _check_logits(student_logits, "student_logits")
    _check_logits(teacher_logits, "teacher_logits")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits must have the shape of student_logits "
                         f"{tuple(student_logits.shape)}, got {tuple(teacher_logits.shape)}")
    _check_temperature(T)
    if not isinstance(scaled, bool):
        raise TypeError(f"scaled must be a bool, got {scaled!r}")
    q, p = softmax_t(student_logits.detach(), T), softmax_t(teacher_logits.detach(), T)
    return (q - p) / (T * len(q)) * (T**2 if scaled else 1.0)


def distill(student: nn.Module, teacher: nn.Module | Tensor, split: Split, T: float,
            alpha: float, target: str = "soft", **fit_kwargs: object) -> History:
    """Train `student` on `split` with `distillation_loss` against `teacher`, via `fit`.

    The teacher's logits on ``split.x_train`` are computed once (in evaluation mode) before
    training, so a sweep over ``T`` and ``alpha`` pays for the teacher only once if you pass
    the logits themselves.

    Parameters
    ----------
    student : nn.Module
        Trained in place.
    teacher : nn.Module or Tensor
        The teacher model, or its logits on ``split.x_train`` (``[n_train, classes]``).
    split : Split
    T, alpha, target
        As in `distillation_loss`.
    **fit_kwargs
        Passed to `levers.train.fit` (``epochs``, ``lr``, ``seed``, ``after_step``, …), except
        ``loss_fn``, which distillation supplies.

    Returns
    -------
    History
        As `fit` returns it (test accuracy against the true labels).
    """
    if not isinstance(student, nn.Module):
        raise TypeError(f"student must be a torch.nn.Module, got {student!r}")
    if not isinstance(split, Split):
        raise TypeError(f"split must be a levers.data.Split, got {type(split).__name__}")
    if "loss_fn" in fit_kwargs:
        raise ValueError("distill supplies loss_fn itself; do not pass one")
    if isinstance(teacher, nn.Module):
        teacher_logits = predict(teacher, split.x_train)
    else:
        teacher_logits = teacher
    _check_logits(teacher_logits, "teacher")
    if len(teacher_logits) != len(split.y_train):
        raise ValueError(f"teacher logits must have one row per training image "
                         f"({len(split.y_train)}), got {len(teacher_logits)}")
    distillation_loss(teacher_logits[:1], teacher_logits[:1], split.y_train[:1], T, alpha,
                      target)  # validate T, alpha and target before any training
    teacher_logits = teacher_logits.detach()
    labels = split.y_train
    # `fit` hands loss_fn only (logits, labels). To look up each minibatch's teacher logits we
    # give it the sample indices as "labels" and map them back here (fit's test accuracy uses
    # split.y_test, which stays the true labels).
    indexed = Split(split.x_train, torch.arange(len(labels)), split.x_test, split.y_test)

    def loss_fn(logits: Tensor, idx: Tensor) -> Tensor:
        return distillation_loss(logits, teacher_logits[idx], labels[idx], T, alpha, target)

    return fit(student, indexed, loss_fn=loss_fn, **fit_kwargs)

