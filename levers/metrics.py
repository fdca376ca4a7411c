"""What a lever changes, measured from its definition: prediction quality, error, sparsity.

Every classification metric here is computed from the confusion matrix ``C[true, predicted]``,
so TP + FP + FN + TN always equals the number of samples, and a metric can be recomputed by hand
from the matrix printed next to it. Labels may have any integer dtype. Sparsity is counted in one
place, `sparsity` (exact zeros over entries); `weight_sparsity` and `activation_sparsity` apply
it to a model's weights and to its hidden activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from levers._checks import check_instance, check_tensor, check_weight, fail
from levers._checks import check_labels as _labels
from levers.models import MLP, LeNet5
from levers.prune import prunable


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
        raise fail("n_classes", n_classes, "None or a non-negative int")
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
    """Fraction of predictions equal to the true labels.

    Examples
    --------
    >>> accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    0.75
    """
    y_true, y_pred = _labels("y_true", y_true), _labels("y_pred", y_pred)
    if len(y_true) != len(y_pred) or len(y_true) == 0:
        raise ValueError(f"y_true and y_pred must be non-empty and of equal length, "
                         f"got {len(y_true)} and {len(y_pred)}")
    return float((y_true == y_pred).double().mean())


def mse(a: Tensor, b: Tensor) -> float:
    """Mean squared error between two tensors of the same shape.

    Examples
    --------
    >>> mse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
    2.0
    """
    check_tensor("a", a)
    check_tensor("b", b)
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"a and b must have the same non-empty shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return float(((a.double() - b.double()) ** 2).mean())


def cross_entropy(logits: Tensor, y: Tensor) -> float:
    """Mean cross-entropy −log softmax(logits)[y], in nats.

    Examples
    --------
    >>> round(cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3])), 4)  # log 4
    1.3863
    """
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
    """Fraction of entries that are not exactly zero (the L0 "norm" divided by the size).

    Examples
    --------
    >>> density(torch.tensor([0.0, 3.0, 0.0, -1.0]))
    0.5
    """
    check_tensor("t", t)
    if t.numel() == 0:
        raise ValueError("density of an empty tensor is undefined")
    return int(torch.count_nonzero(t)) / t.numel()


def sparsity(t: Tensor) -> float:
    """Fraction of entries that are exactly zero: 1 − density. Small non-zeros do not count.

    Examples
    --------
    >>> sparsity(torch.tensor([0.0, 1e-9, 0.0, 2.0]))
    0.5
    """
    return 1.0 - density(t)


def weight_sparsity(model: nn.Module) -> dict[str, float]:
    """`sparsity` of each `levers.prune.prunable` weight, and ``"total"`` over all of them.

    Examples
    --------
    >>> model = MLP((2, 2))
    >>> with torch.no_grad():
    ...     _ = model.fc1.weight.copy_(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    >>> weight_sparsity(model)
    {'fc1.weight': 0.75, 'total': 0.75}
    """
    weights = {k: w.detach() for k, w in prunable(model).items()}
    if not weights:
        raise fail("model", model, "a model with at least one Linear or Conv layer")
    out = {k: sparsity(w) for k, w in weights.items()}
    out["total"] = sparsity(torch.cat([w.flatten() for w in weights.values()]))
    return out


@torch.no_grad()
def activation_sparsity(model: MLP | LeNet5, x: Tensor) -> dict[str, float]:
    """`sparsity` of each hidden ReLU output of an `MLP` or the `LeNet5` CNN on inputs `x`.

    Every Linear and Conv layer but the last (the logits) is followed by a ReLU in these
    models; a conv layer's zeros are counted over all channels and positions of its feature
    map, before pooling (max-pooling a ReLU map keeps a zero only where its whole window is 0).

    Returns
    -------
    dict of str to float
        Keyed by the layer whose output the ReLU follows (``"fc1"``, ``"fc2"``, … for an MLP;
        ``"conv1"``, ``"conv2"``, ``"fc1"``, ``"fc2"`` for LeNet-5).

    Examples
    --------
    >>> model = MLP((2, 2, 1))
    >>> with torch.no_grad():
    ...     _ = model.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    ...     _ = model.fc1.bias.zero_()
    >>> activation_sparsity(model, torch.tensor([[1.0, 5.0]]))
    {'fc1': 0.5}
    >>> list(activation_sparsity(LeNet5(), torch.rand(2, 1, 28, 28)))
    ['conv1', 'conv2', 'fc1', 'fc2']
    """
    check_instance("model", model, MLP | LeNet5)
    check_weight(x, name="x")
    layers = {name: module for name, module in model.named_modules()
              if isinstance(module, nn.Linear | nn.Conv2d)}
    hidden = list(layers)[:-1]  # the last layer gives the logits: no ReLU after it
    out: dict[str, float] = {}
    handles = [layers[name].register_forward_hook(
        lambda _m, _i, y, name=name: out.__setitem__(name, sparsity(torch.relu(y))))
        for name in hidden]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)  # measuring must not switch a model out of training
    return out


def sqnr_db(x: Tensor, x_hat: Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σx² / Σ(x − x̂)²), in dB.

    Examples
    --------
    >>> round(sqnr_db(torch.tensor([1.0, -1.0]), torch.tensor([0.9, -1.1])), 1)
    20.0
    """
    check_weight(x, name="x")
    check_weight(x_hat, name="x_hat")
    if x.shape != x_hat.shape:
        raise fail("x_hat", x_hat, f"a tensor of the shape of x, {tuple(x.shape)}")
    noise = (x.double() - x_hat.double()).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(x.double().pow(2).sum() / noise))
