"""Prediction-quality metrics and sparsity measures, each from its definition.

Every classification metric here is computed from the confusion matrix ``C[true, predicted]``,
so TP + FP + FN + TN always equals the number of samples, and a metric can be recomputed by hand
from the matrix printed next to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _labels(name: str, t: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1 or t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{name} must be a 1-D integer tensor of class labels, "
                         f"got {t.dtype} {tuple(t.shape)}")
    if len(t) and int(t.min()) < 0:
        raise ValueError(f"{name} must hold non-negative class labels, found {int(t.min())}")
    return t.long()


def confusion_matrix(y_true: Tensor, y_pred: Tensor, n_classes: int | None = None) -> Tensor:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as class ``j``.

    Examples
    --------
    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])).tolist()
    [[1, 0], [1, 1]]
    """
    y_true, y_pred = _labels("y_true", y_true), _labels("y_pred", y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred must have the same length, "
                         f"got {len(y_true)} and {len(y_pred)}")
    if n_classes is not None and (not isinstance(n_classes, int) or isinstance(n_classes, bool)
                                  or n_classes < 0):
        raise ValueError(f"n_classes must be None or a non-negative int, got {n_classes!r}")
    seen = int(max(y_true.max(), y_pred.max())) + 1 if len(y_true) else 0
    n = seen if n_classes is None else n_classes
    if n < seen:
        raise ValueError(f"n_classes={n_classes} but labels go up to {seen - 1}")
    return torch.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


@dataclass(frozen=True)
class ClassReport:
    """Accuracy and per-class precision, recall and F1, plus their macro averages."""

    accuracy: float
    precision: Tensor
    recall: Tensor
    f1: Tensor

    @property
    def macro_precision(self) -> float:
        return float(self.precision.mean())

    @property
    def macro_recall(self) -> float:
        return float(self.recall.mean())

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean())


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    # 0/0 (a class never predicted, or absent) is defined as 0, as scikit-learn's zero_division=0.
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.zeros_like(num))


def classification_report(cm: Tensor) -> ClassReport:
    """Accuracy, per-class precision/recall/F1 from a square confusion matrix.

    precision_c = TP / (TP + FP), recall_c = TP / (TP + FN), F1 = their harmonic mean;
    0/0 counts as 0.

    Examples
    --------
    >>> r = classification_report(torch.tensor([[8, 2], [1, 9]]))
    >>> round(r.accuracy, 3), [round(p, 3) for p in r.precision.tolist()]
    (0.85, [0.889, 0.818])
    """
    if not isinstance(cm, Tensor):
        raise TypeError(f"cm must be a torch.Tensor, got {type(cm).__name__}")
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"cm must be a non-empty square matrix, got shape {tuple(cm.shape)}")
    if cm.is_floating_point() or bool((cm < 0).any()):
        raise ValueError("cm must hold non-negative integer counts")
    cm = cm.double()
    tp = cm.diagonal()
    precision = _ratio(tp, cm.sum(0))
    recall = _ratio(tp, cm.sum(1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = float(cm.sum())
    accuracy = float(tp.sum()) / total if total else 0.0
    return ClassReport(accuracy, precision.float(), recall.float(), f1.float())


def accuracy(y_true: Tensor, y_pred: Tensor) -> float:
    """Fraction of predictions equal to the true labels."""
    y_true, y_pred = _labels("y_true", y_true), _labels("y_pred", y_pred)
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(f"y_true and y_pred must be non-empty and of equal length, "
                         f"got {len(y_true)} and {len(y_pred)}")
    return float((y_true == y_pred).double().mean())


def mse(a: Tensor, b: Tensor) -> float:
    """Mean squared error between two tensors of the same shape."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError("a and b must be torch.Tensors")
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"a and b must have the same non-empty shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return float(((a.double() - b.double()) ** 2).mean())


def cross_entropy(logits: Tensor, y: Tensor) -> float:
    """Mean cross-entropy −log softmax(logits)[y], in nats."""
    y = _labels("y", y)
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point torch.Tensor, got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if logits.dim() != 2 or len(logits) != len(y) or len(y) == 0:
        raise ValueError(f"logits must be [N, C] with N = len(y) = {len(y)} > 0, "
                         f"got {tuple(logits.shape)}")
    if int(y.max()) >= logits.shape[1]:
        raise ValueError(f"y holds class {int(y.max())} but logits have {logits.shape[1]} columns")
    return float(torch.nn.functional.cross_entropy(logits.double(), y))


def density(t: Tensor) -> float:
    """Fraction of entries that are not exactly zero (the L0 "norm" divided by the size)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError("density of an empty tensor is undefined")
    return int(torch.count_nonzero(t)) / t.numel()


def sparsity(t: Tensor) -> float:
    """Fraction of entries that are exactly zero: 1 − density. Small non-zeros do not count."""
    return 1.0 - density(t)
