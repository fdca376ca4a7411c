"""Mixed-precision training, emulated: fp16 activations and gradients, loss scaling, master weights.

`fit_mixed` trains like `levers.train.fit` (minibatch SGD with momentum, same batch order) but
stores every value the way a 16-bit training run does: each layer's input and output, each
weight as the forward pass uses it, and every gradient flowing backwards are rounded to ``fmt``
(PyTorch's own cast where it has the dtype, else `levers.formats.round_to_format`). The
arithmetic itself stays fp32, as in hardware that accumulates 16-bit products in fp32.

Three pieces of the recipe of Micikevicius et al. (2018) can be switched on and off:

- **loss scaling**: multiply the loss by S before the backward pass and divide the gradients
  by S before the step, so small gradients stay above fp16's underflow threshold. ``S`` is
  fixed (static) or a `DynamicScale`, which follows ``torch.amp.GradScaler``: grow S by
  ``growth_factor`` after ``growth_interval`` steps without overflow, multiply it by
  ``backoff_factor`` and skip the step when a gradient overflows;
- **fp32 master weights**: the optimizer updates an fp32 copy; without it the weights
  themselves are fp16 and every update below half a weight's ULP is lost;
- the third piece, accumulating in fp32, is always on here (see `levers.accumulate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from levers._checks import check_int, check_real
from levers.data import Split
from levers.formats import FP16, FloatFormat, round_to_format


@dataclass
class DynamicScale:
    """The loss scale of ``torch.amp.GradScaler``: grow while finite, back off on overflow.

    Examples
    --------
    >>> s = DynamicScale(scale=8.0, growth_interval=2)
    >>> for found_inf in (False, False, True, False):
    ...     s.update(found_inf)
    >>> s.scale
    8.0
    """

    scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    good_steps: int = 0

    def __post_init__(self) -> None:
        check_real("scale", self.scale, 0.0, open_low=True)
        check_real("growth_factor", self.growth_factor, 1.0, open_low=True)
        check_real("backoff_factor", self.backoff_factor, 0.0, 1.0, open_low=True)
        check_int("growth_interval", self.growth_interval, 1)
        check_int("good_steps", self.good_steps, 0)

    def update(self, found_inf: bool) -> None:
        """One step: back off and restart the count on overflow, else count towards growth."""
        if found_inf:
            self.scale *= self.backoff_factor
            self.good_steps = 0
            return
        self.good_steps += 1
        if self.good_steps == self.growth_interval:
            self.scale *= self.growth_factor
            self.good_steps = 0


@dataclass
class MixedHistory:
    """What `fit_mixed` saw: accuracy per epoch and the fate of gradients and updates."""

    test_accuracy: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)  #: loss scale used at each step
    skipped_steps: int = 0  #: steps skipped because a gradient overflowed
    gradient_entries: int = 0  #: non-zero gradient entries rounded to fmt
    underflowed: int = 0  #: of those, how many became 0
    updates: int = 0  #: non-zero weight updates the optimizer computed
    lost_updates: int = 0  #: of those, how many left the stored weight unchanged

    @property
    def underflow_share(self) -> float:
        """Share of non-zero gradient entries that rounding to fmt turned into 0."""
        return self.underflowed / max(self.gradient_entries, 1)

    @property
    def lost_update_share(self) -> float:
        """Share of non-zero updates that did not change the stored weight."""
        return self.lost_updates / max(self.updates, 1)


class _Store(torch.autograd.Function):
    """Identity that rounds its value forwards and its gradient backwards, counting underflow."""

    @staticmethod
    def forward(ctx, x: Tensor, fmt: FloatFormat, history: MixedHistory) -> Tensor:
        ctx.fmt, ctx.history = fmt, history
        return _round(x, fmt)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        rounded = _round(grad, ctx.fmt)
        nonzero = grad != 0
        ctx.history.gradient_entries += int(nonzero.sum())
        ctx.history.underflowed += int((nonzero & (rounded == 0)).sum())
        return rounded, None, None


def _round(x: Tensor, fmt: FloatFormat) -> Tensor:
    if fmt.torch_dtype is not None:  # PyTorch's cast: same bits (tests/test_formats.py), faster
        return x.to(fmt.torch_dtype).to(x.dtype)
    return round_to_format(x, fmt)


def _forward(model: nn.Module, x: Tensor, fmt: FloatFormat, history: MixedHistory) -> Tensor:
    params = {name: _Store.apply(p, fmt, history) for name, p in model.named_parameters()}
    return _Store.apply(torch.func.functional_call(model, params, (x,)), fmt, history)


def fit_mixed(model: nn.Module, split: Split, epochs: int = 3, lr: float = 0.05,
              batch_size: int = 64, momentum: float = 0.9, fmt: FloatFormat = FP16,
              loss_scale: float | DynamicScale = 1.0, master_weights: bool = True,
              seed: int = 0) -> MixedHistory:
    """Train ``model`` in place as a ``fmt`` mixed-precision run would, and record what is lost.

    Parameters
    ----------
    model : nn.Module
        A model whose layers are ``nn.Linear`` (the inputs of these are rounded to ``fmt``).
    split : Split
        Training and test data.
    epochs, lr, batch_size, momentum, seed
        As in `levers.train.fit` (the minibatch order is the same).
    fmt : FloatFormat
        The storage format of activations, gradients and (without master weights) weights.
    loss_scale : float or DynamicScale
        A fixed S (1.0: no scaling) or a `DynamicScale`, which this call updates.
    master_weights : bool
        Keep fp32 weights for the optimizer (True) or store the weights in ``fmt`` (False).

    Returns
    -------
    MixedHistory
        Test accuracy after each epoch (forward pass in ``fmt``), loss scale per step, skipped
        steps, and the shares of underflowed gradient entries and lost updates.

    Examples
    --------
    >>> from levers.data import Split
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(64, 1, 28, 28, generator=g), torch.arange(64) % 10
    >>> scale = DynamicScale(scale=2.0**20)
    >>> h = fit_mixed(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), Split(x, y, x, y),
    ...               epochs=1, loss_scale=scale)
    >>> h.skipped_steps, scale.scale  # S = 2^20 overflowed fp16: step skipped, S halved
    (1, 524288.0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(split, Split):
        raise TypeError(f"split must be a levers.data.Split, got {type(split).__name__}")
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt must be a levers.formats.FloatFormat, got {fmt!r}")
    if not isinstance(loss_scale, DynamicScale):
        check_real("loss_scale", loss_scale, 0.0, open_low=True)
    if not isinstance(master_weights, bool):
        raise TypeError(f"master_weights must be a bool, got {master_weights!r}")
    check_int("epochs", epochs, 0)
    check_int("batch_size", batch_size, 1)
    check_real("lr", lr, 0.0, open_low=True)
    check_real("momentum", momentum, 0.0, 1.0)
    check_int("seed", seed, 0)
    history = MixedHistory()
    hooks = [m.register_forward_pre_hook(lambda _, inp: (_Store.apply(inp[0], fmt, history),))
             for m in model.modules() if isinstance(m, nn.Linear)]
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    params = list(model.parameters())
    generator = torch.Generator().manual_seed(seed)
    n = len(split.y_train)
    try:
        with torch.no_grad():
            for p in params if not master_weights else ():
                p.copy_(_round(p, fmt))
        for _ in range(epochs):
            model.train()
            order = torch.randperm(n, generator=generator)
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                s = loss_scale.scale if isinstance(loss_scale, DynamicScale) else loss_scale
                history.scale.append(s)
                logits = _forward(model, split.x_train[idx], fmt, history)
                loss = nn.functional.cross_entropy(logits, split.y_train[idx])
                opt.zero_grad()
                (loss * s).backward()
                found_inf = not all(bool(torch.isfinite(p.grad).all()) for p in params)
                if isinstance(loss_scale, DynamicScale):
                    loss_scale.update(found_inf)
                if found_inf:
                    history.skipped_steps += 1
                    continue
                _step(opt, params, s, lr, fmt, master_weights, history)
            with torch.no_grad():
                model.eval()
                correct = sum(int((_forward(model, split.x_test[j:j + 1000], fmt, history)
                                   .argmax(1) == split.y_test[j:j + 1000]).sum())
                              for j in range(0, len(split.y_test), 1000))
                history.test_accuracy.append(correct / len(split.y_test))
    finally:
        for h in hooks:
            h.remove()
    return history


def _step(opt: torch.optim.Optimizer, params: list[Tensor], scale: float, lr: float,
          fmt: FloatFormat, master_weights: bool, history: MixedHistory) -> None:
    """Unscale the gradients in fp32, step, and store the weights (in fmt without masters)."""
    with torch.no_grad():
        before = [p.detach().clone() for p in params]
        for p in params:
            p.grad.div_(scale)
        opt.step()
        for p, old in zip(params, before, strict=True):
            # SGD: p ← p - lr · buffer (without momentum the buffer is the gradient itself)
            buffer = opt.state[p].get("momentum_buffer")
            intended = lr * (p.grad if buffer is None else buffer)
            if not master_weights:
                p.copy_(_round(p, fmt))
            history.updates += int((intended != 0).sum())
            history.lost_updates += int(((intended != 0) & (p == old)).sum())
