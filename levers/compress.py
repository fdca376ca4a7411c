"""Compression pipelines: train → prune → fine-tune → repeat, with the masks kept applied.

Masks come from `levers.prune` (boolean tensors, ``True`` = keep) and stay applied through
every optimizer step with `levers.schedule.mask_hook`; this module only decides *which*
weights to prune and *when*:

- importance criteria: magnitude ``|w|``, first-order Taylor ``|w · ∂L/∂w|``
  (`levers.prune.taylor_scores`, the loss change a weight's removal predicts) and random;
- schedules: one-shot (prune once, fine-tune), iterative (prune a fraction of what is left,
  fine-tune, repeat) and gradual (Zhu & Gupta 2017: `levers.schedule.gradual_sparsity`,
  masks recomputed every ``dt`` optimizer steps during training).

Scores are zero for weights that are already exactly zero, so a larger budget always prunes
a superset of what a smaller one pruned: masks nest, round after round. Lottery-ticket
rewinding is `levers.lottery`, the structured penalty (group lasso) `levers.regularize`,
distillation `levers.distill`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from levers import prune as P
from levers import schedule
from levers._checks import (
    check_amount,
    check_choice,
    check_generator,
    check_instance,
    check_int,
    check_mapping,
    check_tensor,
    fail,
)
from levers.data import Split
from levers.train import History, fit

CRITERIA = ("magnitude", "taylor", "random")
Hook = Callable[[nn.Module], None]


def importance(model: nn.Module, criterion: str = "magnitude", x: Tensor | None = None,
               y: Tensor | None = None, generator: torch.Generator | None = None
               ) -> dict[str, Tensor]:
    """Scores for every prunable weight (higher = keep), zero where a weight already is zero.

    Parameters
    ----------
    criterion : {"magnitude", "taylor", "random"}
        ``|w|``; ``|w · ∂L/∂w|`` over ``(x, y)`` (`levers.prune.taylor_scores`);
        or uniform random among the weights still alive.
    x, y : Tensor, optional
        Data for ``"taylor"``.
    generator : torch.Generator, optional
        Randomness of ``"random"``.

    Examples
    --------
    >>> from levers.models import MLP
    >>> importance(MLP((3, 2)))["fc1.weight"].shape
    torch.Size([2, 3])
    """
    check_choice("criterion", criterion, CRITERIA)
    check_generator("generator", generator)
    for name, value in (("x", x), ("y", y)):
        if value is not None:
            check_tensor(name, value)
    weights = {k: w.detach() for k, w in P.prunable(model).items()}
    if criterion == "magnitude":
        return {k: w.abs() for k, w in weights.items()}
    if criterion == "random":  # 1 + U[0, 1): every live weight outranks every pruned one
        return {k: (w != 0) * (1 + torch.rand(w.shape, generator=generator))
                for k, w in weights.items()}
    if x is None or y is None:
        raise ValueError("criterion='taylor' needs the data x and y to take the gradient over")
    return P.taylor_scores(model, x, y)


def masks_from_scores(scores: Mapping[str, Tensor], amount: float, scope: str = "global"
                      ) -> dict[str, Tensor]:
    """Prune the lowest-scoring fraction `amount`, per tensor or over all of them at once.

    The budget is exact (`levers.prune.magnitude_mask` / `global_magnitude_masks` on the
    non-negative scores): ``round(amount · n)`` entries.
    """
    check_mapping("scores", scores)
    check_choice("scope", scope, ("layer", "global"))
    if scope == "global":
        return P.global_magnitude_masks(scores, amount)
    return {k: P.magnitude_mask(s, amount) for k, s in scores.items()}


def prune(model: nn.Module, amount: float, criterion: str = "magnitude", scope: str = "global",
          x: Tensor | None = None, y: Tensor | None = None,
          generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Prune `model` in place to sparsity `amount` of its prunable weights; return the masks.

    Examples
    --------
    >>> from levers import metrics
    >>> from levers.models import LeNet300100
    >>> m = LeNet300100()
    >>> _ = prune(m, 0.9)
    >>> round(metrics.weight_sparsity(m)["total"], 3)
    0.9
    """
    masks = masks_from_scores(importance(model, criterion, x, y, generator), amount, scope)
    P.apply_masks(model, masks)
    return masks


def chain(*hooks: Hook | None) -> Hook:
    """One ``after_step`` that runs `hooks` in order (``None`` entries are skipped)."""
    live = [h for h in hooks if h is not None]

    def hook(model: nn.Module) -> None:
        for h in live:
            h(model)

    return hook


def finetune(model: nn.Module, masks: Mapping[str, Tensor], split: Split,
             **fit_kwargs: object) -> History:
    """`levers.train.fit` with `masks` re-applied after every optimizer step (and before).

    Momentum and weight decay would otherwise move pruned weights off zero at the very next
    step; re-applying the mask after the step keeps them exactly 0.
    """
    P.apply_masks(model, masks)
    after = fit_kwargs.pop("after_step", None)
    return fit(model, split, after_step=chain(after, schedule.mask_hook(masks)), **fit_kwargs)


def iterative_amounts(sparsity: float, rounds: int) -> list[float]:
    """Per-round targets ``1 − (1 − s)^{k/rounds}``: each round prunes the same fraction of
    the weights still alive, ending exactly at `sparsity`.

    Examples
    --------
    >>> [round(a, 3) for a in iterative_amounts(0.9, 2)]
    [0.684, 0.9]
    """
    check_amount(sparsity, "sparsity")
    check_int("rounds", rounds, 1)
    return [1 - (1 - sparsity) ** (k / rounds) if k < rounds else sparsity
            for k in range(1, rounds + 1)]


def iterative(model: nn.Module, split: Split, sparsity: float, rounds: int,
              epochs_per_round: int, criterion: str = "magnitude", scope: str = "global",
              **fit_kwargs: object) -> tuple[dict[str, Tensor], list[float]]:
    """Prune a fraction, fine-tune with the mask, repeat `rounds` times (one-shot: ``1``).

    Returns
    -------
    (masks, accuracies)
        The final masks and the test accuracy after each round's fine-tuning.
    """
    check_instance("model", model)
    check_instance("split", split, Split)
    check_int("epochs_per_round", epochs_per_round, 0)
    accuracies, masks = [], {}
    for k, amount in enumerate(iterative_amounts(sparsity, rounds)):
        masks = prune(model, amount, criterion, scope, split.x_train, split.y_train,
                      torch.Generator().manual_seed(k))
        history = finetune(model, masks, split, epochs=epochs_per_round, **fit_kwargs)
        accuracies += history.test_accuracy[-1:]
    return masks, accuracies


def gradual_hook(masks: dict[str, Tensor], s_f: float, t0: int, n: int, dt: int,
                 s_i: float = 0.0, scope: str = "global") -> Hook:
    """An ``after_step`` for gradual magnitude pruning (Zhu & Gupta 2017) inside `fit`.

    At optimizer steps ``t = t0, t0 + dt, …, t0 + n·dt`` it recomputes magnitude masks at
    sparsity ``gradual_sparsity(t, s_i, s_f, t0, n, dt)``; after every step it re-applies the
    current masks. `masks` is updated in place, so after training it holds the final masks.
    Steps are counted from 1 (the first call is step 1).
    """
    if not isinstance(masks, dict):
        raise fail("masks", masks, "a dict (updated in place with the current masks)")
    check_amount(s_f, "s_f")
    check_amount(s_i, "s_i")
    check_int("t0", t0, 1)
    check_int("n", n, 1)
    check_int("dt", dt, 1)
    check_choice("scope", scope, ("layer", "global"))
    step = 0

    def hook(model: nn.Module) -> None:
        nonlocal step
        step += 1
        if t0 <= step <= t0 + n * dt and (step - t0) % dt == 0:
            amount = schedule.gradual_sparsity(step, s_i, s_f, t0, n, dt)
            masks.update(masks_from_scores(importance(model), amount, scope))
        if masks:
            P.apply_masks(model, masks)

    return hook


def gradual(model: nn.Module, split: Split, sparsity: float, epochs: int, t0: int, n: int,
            dt: int, scope: str = "global", **fit_kwargs: object
            ) -> tuple[dict[str, Tensor], History]:
    """Train `epochs` epochs with gradual pruning to `sparsity` (`gradual_hook` from 0).

    The schedule must end within training: ``t0 + n·dt`` at most the number of optimizer
    steps (``epochs · ⌈n_train / batch_size⌉``); the steps after it fine-tune at `sparsity`.

    Returns
    -------
    (masks, history)
    """
    check_instance("model", model)
    check_instance("split", split, Split)
    check_amount(sparsity, "sparsity")
    check_int("epochs", epochs, 1)
    check_int("t0", t0, 1)
    check_int("n", n, 1)
    check_int("dt", dt, 1)
    check_choice("scope", scope, ("layer", "global"))
    steps = epochs * -(-len(split.y_train) // int(fit_kwargs.get("batch_size", 64)))
    if t0 + n * dt > steps:
        raise ValueError(f"the schedule must end within training: t0 + n*dt = {t0 + n * dt} "
                         f"(t0={t0}, n={n}, dt={dt}) exceeds the {steps} optimizer steps of "
                         f"epochs={epochs}")
    masks: dict[str, Tensor] = {}
    hook = gradual_hook(masks, sparsity, t0, n, dt, scope=scope)
    after = fit_kwargs.pop("after_step", None)
    history = fit(model, split, epochs=epochs, after_step=chain(after, hook), **fit_kwargs)
    return masks, history
