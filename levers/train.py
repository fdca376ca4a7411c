"""Training and evaluation: `fit` and `evaluate`, small enough to read in one sitting.

`fit` is plain minibatch SGD (or Adam) on tensors already in memory. Two hooks let the later
chapters change training without copying the loop: ``transform`` wraps the forward pass (e.g.
fake quantization) and ``after_step`` runs after every optimizer step (e.g. re-applying pruning
masks so pruned weights stay exactly zero). A tqdm bar shows progress in an interactive session
and stays silent under nbval, CI and the book build, where it would only add noise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from levers._checks import check_instance, check_int, check_labels, check_real, check_tensor, fail
from levers.data import Split


@dataclass
class History:
    """Per-epoch mean training loss and test accuracy recorded by `fit`."""

    loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


def show_progress() -> bool:
    """True in an interactive session; False under CI, nbval, or with LEVERS_PROGRESS=0."""
    setting = os.environ.get("LEVERS_PROGRESS")
    if setting is not None:
        return setting.strip().lower() not in ("0", "false", "")
    if os.environ.get("CI") or "nbval" in sys.modules or os.environ.get("LEVERS_EXECUTING"):
        return False
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _check_xy(x: Tensor, y: Tensor, x_name: str = "x", y_name: str = "y") -> Tensor:
    """Check inputs and labels (any integer dtype, as `levers.metrics`); return y as int64."""
    check_tensor(x_name, x)
    if not x.is_floating_point():
        raise fail(x_name, x, "a floating-point tensor")
    y = check_labels(y_name, y)
    if len(x) != len(y):
        raise fail(y_name, y, f"as long as {x_name} ({len(x)} samples)")
    return y


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Logits of `model` on `x`, computed in evaluation mode in batches.

    Examples
    --------
    >>> from levers.models import MLP
    >>> predict(MLP((4, 3)), torch.zeros(5, 4), batch_size=2).shape
    torch.Size([5, 3])
    """
    check_instance("model", model)
    check_tensor("x", x)
    if x.dim() == 0 or len(x) == 0:
        raise fail("x", x, "a tensor holding at least one sample")
    check_int("batch_size", batch_size, 1)
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Accuracy of `model` on ``(x, y)``, a float in [0, 1].

    Examples
    --------
    >>> from levers.models import LeNet300100
    >>> x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    >>> 0.0 <= evaluate(LeNet300100(), x, y) <= 1
    True
    """
    y = _check_xy(x, y)
    return float((predict(model, x).argmax(1) == y).float().mean())


def fit(model: nn.Module, split: Split, epochs: int = 10, lr: float = 0.1,
        batch_size: int = 64, optimizer: str = "sgd", momentum: float = 0.9,
        weight_decay: float = 0.0, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        transform: Callable[[nn.Module, Tensor], Tensor] | None = None,
        after_step: Callable[[nn.Module], None] | None = None, seed: int = 0,
        desc: str = "training") -> History:
    """Train `model` on ``split.x_train`` and record loss and test accuracy per epoch.

    Parameters
    ----------
    model : nn.Module
        Trained in place.
    split : Split
        Data from `levers.data.load_mnist5k` (or any `Split`).
    epochs, lr, batch_size, momentum, weight_decay
        The usual; ``weight_decay`` is the L2 coefficient.
    optimizer : {"sgd", "adam"}
    loss_fn : callable, optional
        ``loss_fn(logits, y)``; cross-entropy by default.
    transform : callable, optional
        ``transform(model, x) -> logits`` replaces ``model(x)`` (e.g. fake-quantized forward).
    after_step : callable, optional
        ``after_step(model)`` runs after every optimizer step (e.g. re-apply pruning masks).
    seed : int
        Seed of the minibatch order, so two calls with the same arguments train identically.

    Returns
    -------
    History
    """
    check_instance("model", model)
    check_instance("split", split, Split)
    y_train = _check_xy(split.x_train, split.y_train, "split.x_train", "split.y_train")
    _check_xy(split.x_test, split.y_test, "split.x_test", "split.y_test")
    check_int("epochs", epochs, 0)
    check_real("lr", lr, open_low=True)
    check_int("batch_size", batch_size, 1)
    check_real("momentum", momentum)
    check_real("weight_decay", weight_decay)
    for name, fn in (("loss_fn", loss_fn), ("transform", transform), ("after_step", after_step)):
        if fn is not None and not callable(fn):
            raise fail(name, fn, "a callable or None")
    check_int("seed", seed, 0)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                              weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        raise fail("optimizer", optimizer, "one of ('sgd', 'adam')")
    loss_fn = loss_fn or nn.functional.cross_entropy
    forward = transform or (lambda m, x: m(x))
    generator = torch.Generator().manual_seed(seed)
    history = History()
    n = len(y_train)
    for _ in tqdm(range(epochs), desc=desc, disable=not show_progress(), leave=False):
        model.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            loss = loss_fn(forward(model, split.x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
            total += float(loss.detach()) * len(idx)
        history.loss.append(total / n)
        history.test_accuracy.append(evaluate(model, split.x_test, split.y_test))
    return history
