"""Lottery tickets (Frankle & Carbin 2019; Frankle et al. 2020): snapshots, rewinding, controls.

A lottery ticket is a sparse subnetwork that, trained from its *original* starting values,
matches the dense network. The experiment needs three operations on a model and its masks
(`levers.prune`): keep a copy of the weights at an early optimizer step (`snapshot_hook`),
put the surviving weights back to the initial or early values with the pruned ones at zero
(`rewind`), and the control: the same mask with fresh random values (`reinit`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from levers import prune as P
from levers._checks import check_instance, check_int, fail

Hook = Callable[[nn.Module], None]


def snapshot_hook(at_step: int, store: dict[str, Tensor]) -> Hook:
    """An ``after_step`` that copies the model's ``state_dict`` into `store` after step
    `at_step` (``0`` is not a step: take the initial state with `copy.deepcopy` instead).

    Examples
    --------
    >>> from levers.models import MLP
    >>> store, model = {}, MLP((2, 1))
    >>> hook = snapshot_hook(2, store)
    >>> hook(model); len(store)
    0
    >>> hook(model); sorted(store)
    ['fc1.bias', 'fc1.weight']
    """
    check_int("at_step", at_step, 1)
    step = 0

    def hook(model: nn.Module) -> None:
        nonlocal step
        step += 1
        if step == at_step:
            store.update(copy.deepcopy(model.state_dict()))

    return hook


@torch.no_grad()
def rewind(model: nn.Module, masks: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> None:
    """Lottery-ticket rewinding, in place: load `state` (θ₀ or an early θ_k), then the masks.

    Kept weights take exactly their values in `state`; pruned ones are 0.

    Examples
    --------
    >>> from levers.models import MLP
    >>> init, ticket = MLP((2, 1)).state_dict(), MLP((2, 1))
    >>> rewind(ticket, {"fc1.weight": torch.tensor([[True, False]])}, init)
    >>> w = ticket.fc1.weight.detach()
    >>> bool(w[0, 0] == init["fc1.weight"][0, 0]), float(w[0, 1])
    (True, 0.0)
    """
    check_instance("model", model)
    if not isinstance(state, Mapping) or not state:
        raise fail("state", state, "a non-empty state_dict (e.g. of the initial model)")
    model.load_state_dict(state)
    P.apply_masks(model, masks)


@torch.no_grad()
def reinit(model: nn.Module, masks: Mapping[str, Tensor], seed: int) -> None:
    """The control for a lottery ticket: fresh random initial values, the same mask, in place.

    Every submodule with ``reset_parameters`` is re-initialized (PyTorch's default init) under
    `seed`, then `masks` are applied.

    Examples
    --------
    >>> from levers.models import MLP
    >>> control = MLP((2, 1))
    >>> reinit(control, {"fc1.weight": torch.tensor([[True, False]])}, seed=0)
    >>> float(control.fc1.weight.detach()[0, 1])
    0.0
    """
    check_instance("model", model)
    check_int("seed", seed, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if module is not model and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    P.apply_masks(model, masks)
