"""Tests of levers.compress (criteria, schedules, masks through training), levers.lottery
(snapshots, rewinding, re-initialization; they share this file's small model and data) and
levers.regularize's neuron group lasso (penalty, block soft-threshold, shrinking)."""

import copy

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from torch.nn import functional as F

from levers import compress as C
from levers import lottery as L
from levers import metrics, schedule, structured
from levers import prune as P
from levers import regularize as R
from levers.data import Split
from levers.models import MLP
from levers.train import fit

FAST = settings(max_examples=25, deadline=None)


def tiny_split(n: int = 96) -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Split(x, y, x[:32], y[:32])


def net(seed: int = 0, sizes=(784, 24, 12, 10)) -> MLP:
    torch.manual_seed(seed)
    return MLP(sizes)


def kept_subset(inner: dict, outer: dict) -> bool:
    """Every weight `inner` keeps, `outer` keeps too (inner prunes a superset)."""
    return all(bool((inner[k] <= outer[k]).all()) for k in inner)


# --- importance criteria -------------------------------------------------------------------

def test_taylor_scores_equal_w_times_autograd_gradient():
    split, model = tiny_split(), net()
    scores = P.taylor_scores(model, split.x_train, split.y_train, batch_size=40)
    F.cross_entropy(model(split.x_train), split.y_train).backward()
    for name, w in P.prunable(model).items():
        assert torch.allclose(scores[name], (w.detach() * w.grad).abs(), rtol=1e-5, atol=1e-9)
    model.zero_grad(set_to_none=True)
    P.taylor_scores(model, split.x_train, split.y_train)
    assert all(p.grad is None for p in model.parameters())  # .grad left untouched


def test_importance_criteria_and_their_errors():
    split, model = tiny_split(), net()
    mag = C.importance(model, "magnitude")
    assert all(torch.equal(mag[k], w.detach().abs()) for k, w in P.prunable(model).items())
    rnd = C.importance(model, "random", generator=torch.Generator().manual_seed(0))
    assert all(bool(((s >= 1) & (s < 2)).all()) for s in rnd.values())
    with pytest.raises(ValueError, match="criterion must be one of"):
        C.importance(model, "hessian")
    with pytest.raises(ValueError, match="needs the data"):
        C.importance(model, "taylor")
    with pytest.raises(ValueError, match=r"y must be one label per input of x \("):
        P.taylor_scores(model, split.x_train, split.y_train[:5])
    with pytest.raises(ValueError, match="scope must be"):
        C.masks_from_scores(mag, 0.5, scope="network")


def test_global_magnitude_masks_agree_with_torch_prune():
    model = net()
    ours = C.prune(copy.deepcopy(model), 0.8, "magnitude", "global")
    ref = copy.deepcopy(model)
    torch_prune.global_unstructured([(m, "weight") for m in ref.layers()],
                                    pruning_method=torch_prune.L1Unstructured, amount=0.8)
    for i, layer in enumerate(ref.layers(), start=1):
        assert torch.equal(ours[f"fc{i}.weight"], layer.weight_mask.bool())


@pytest.mark.parametrize("criterion", C.CRITERIA)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_masks_nest_as_the_budget_grows(criterion, scope):
    split, model = tiny_split(), net()
    data = {"x": split.x_train, "y": split.y_train, "generator": torch.Generator().manual_seed(1)}
    first = C.prune(model, 0.5, criterion, scope, **data)
    second = C.prune(model, 0.8, criterion, scope, **data)
    assert kept_subset(second, first)
    assert metrics.weight_sparsity(model)["total"] == pytest.approx(0.8, abs=1e-3)


# --- masks through training ------------------------------------------------------------------

def test_masks_survive_optimizer_steps_with_momentum_and_weight_decay():
    split = tiny_split()
    model = net()
    masks = C.prune(model, 0.9)
    C.finetune(model, masks, split, epochs=3, lr=0.1, momentum=0.9, weight_decay=1e-2,
               batch_size=16)
    for name, mask in masks.items():
        assert bool((model.get_parameter(name)[~mask] == 0).all()), name
    # the control: the same fine-tuning without re-applying the mask brings the weights back
    control = net()
    masks = C.prune(control, 0.9)
    fit(control, split, epochs=1, lr=0.1, momentum=0.9, weight_decay=1e-2, batch_size=16)
    assert metrics.weight_sparsity(control)["total"] < 0.01


def test_chain_runs_hooks_in_order_and_finetune_keeps_a_users_hook():
    calls = []
    C.chain(lambda m: calls.append(1), None, lambda m: calls.append(2))(net())
    assert calls == [1, 2]
    split, model = tiny_split(), net()
    masks = C.prune(model, 0.5)
    steps = []
    C.finetune(model, masks, split, epochs=1, batch_size=32, after_step=steps.append)
    assert len(steps) == 3


def test_iterative_amounts_end_at_the_target_and_prune_a_constant_share():
    amounts = C.iterative_amounts(0.9, 4)
    assert amounts[-1] == 0.9 and amounts == sorted(amounts)
    alive = [1.0] + [1 - a for a in amounts]
    ratios = [b / a for a, b in zip(alive, alive[1:], strict=False)]
    assert max(ratios) - min(ratios) < 1e-12
    assert C.iterative_amounts(0.5, 1) == [0.5]
    with pytest.raises(ValueError, match="rounds"):
        C.iterative_amounts(0.9, 0)


def test_iterative_pruning_reaches_the_exact_sparsity():
    split, model = tiny_split(), net()
    masks, accs = C.iterative(model, split, 0.9, rounds=3, epochs_per_round=1, lr=0.05,
                              batch_size=32)
    assert len(accs) == 3
    assert metrics.weight_sparsity(model)["total"] == pytest.approx(0.9, abs=1e-3)
    assert all(bool((model.get_parameter(k)[~m] == 0).all()) for k, m in masks.items())


def test_gradual_hook_follows_the_schedule_and_keeps_masks_nested():
    split, model = tiny_split(), net()
    masks: dict = {}
    hook = C.gradual_hook(masks, s_f=0.9, t0=2, n=4, dt=2)
    seen, history = [], []

    def record(m):
        hook(m)
        seen.append(metrics.weight_sparsity(m)["total"])
        history.append({k: v.clone() for k, v in masks.items()})

    fit(model, split, epochs=4, lr=0.05, batch_size=32, after_step=record)  # 12 steps
    expected = [schedule.gradual_sparsity(t, 0.0, 0.9, 2, 4, 2) for t in range(1, 13)]
    assert seen[0] == 0.0 and seen == pytest.approx(expected, abs=2e-3)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(0.9, abs=1e-3)
    later = [h for h in history if h]
    assert all(kept_subset(b, a) for a, b in zip(later, later[1:], strict=False))


def test_gradual_schedule_must_fit_into_training():
    split = tiny_split()
    masks, _ = C.gradual(net(), split, 0.8, epochs=4, t0=1, n=5, dt=2, batch_size=32)
    assert sum(int((~m).sum()) for m in masks.values()) == round(
        0.8 * sum(m.numel() for m in masks.values()))
    with pytest.raises(ValueError, match=r"t0 \+ n\*dt = 13 \(t0=3"):
        C.gradual(net(), split, 0.8, epochs=2, t0=3, n=5, dt=2, batch_size=32)
    with pytest.raises(ValueError, match="t0 must be"):
        C.gradual_hook({}, 0.8, t0=0, n=5, dt=2)
    with pytest.raises(ValueError, match="s_f must be"):
        C.gradual_hook({}, 1.5, t0=1, n=5, dt=2)


# --- lottery tickets -----------------------------------------------------------------------

def test_rewinding_restores_the_exact_initial_values_on_kept_weights():
    split, model = tiny_split(), net()
    init = copy.deepcopy(model.state_dict())
    early: dict = {}
    fit(model, split, epochs=2, lr=0.05, batch_size=32, after_step=L.snapshot_hook(3, early))
    masks = C.prune(model, 0.8)
    ticket = net(seed=5)
    L.rewind(ticket, masks, init)
    for name, p in ticket.named_parameters():
        mask = masks.get(name, torch.ones_like(p, dtype=torch.bool))
        assert torch.equal(p[mask], init[name][mask]) and bool((p[~mask] == 0).all())
    # the early snapshot is the state after exactly 3 steps (= one epoch of 96 / 32)
    one_epoch = net()
    fit(one_epoch, split, epochs=1, lr=0.05, batch_size=32)
    assert all(torch.equal(early[k], v) for k, v in one_epoch.state_dict().items())
    with pytest.raises(ValueError, match="state must be"):
        L.rewind(ticket, masks, {})


def test_reinit_keeps_the_mask_and_draws_new_values_reproducibly():
    model = net()
    init = copy.deepcopy(model.state_dict())
    masks = C.prune(model, 0.7)
    a, b = net(seed=9), net(seed=9)
    L.reinit(a, masks, seed=3)
    L.reinit(b, masks, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    for name, mask in masks.items():
        w = a.get_parameter(name)
        assert bool((w[~mask] == 0).all()) and not torch.equal(w[mask], init[name][mask])
    state = torch.random.get_rng_state()
    L.reinit(a, masks, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


# --- group lasso ---------------------------------------------------------------------------

def test_group_lasso_penalty_is_the_sum_of_neuron_norms():
    model = net()
    by_hand = sum(torch.cat([layer.weight, layer.bias[:, None]], 1).norm(dim=1).sum()
                  for layer in (model.fc1, model.fc2))
    assert torch.allclose(R.neuron_lasso_penalty(model, 0.3), 0.3 * by_hand)


@FAST
@given(seed=st.integers(0, 10_000), t=st.floats(0.0, 2.0))
def test_block_soft_threshold_minimizes_the_proximal_objective(seed, t):
    g = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ours = R.group_soft_threshold(g, t)
    for row, out in zip(g.numpy(), ours.numpy(), strict=True):
        def objective(x, row=row):
            return 0.5 * ((x - row) ** 2).sum() + t * (x ** 2).sum() ** 0.5
        best = minimize(objective, row, method="Nelder-Mead",
                        options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20_000})
        assert objective(out) <= best.fun + 1e-9
    zero = g.norm(dim=1) <= t
    assert bool((ours[zero] == 0).all())


def test_group_lasso_hook_is_the_proximal_step_and_zeroes_whole_neurons():
    split, model = tiny_split(), net()
    before = copy.deepcopy(model)
    lr, lam = 0.1, 0.05
    fit(model, split, epochs=1, lr=lr, momentum=0.0, batch_size=96,
        after_step=R.neuron_lasso_hook(lr, lam))  # exactly one step
    F.cross_entropy(before(split.x_train), split.y_train).backward()
    for layer, old in zip(model.layers()[:-1], before.layers()[:-1], strict=True):
        step = torch.cat([old.weight - lr * old.weight.grad,
                          (old.bias - lr * old.bias.grad)[:, None]], 1)
        expected = R.group_soft_threshold(step.detach(), lr * lam)
        assert torch.allclose(torch.cat([layer.weight, layer.bias[:, None]], 1), expected,
                              atol=1e-6)
    strong = net()
    fit(strong, split, epochs=5, lr=0.1, momentum=0.0, batch_size=32,
        after_step=R.neuron_lasso_hook(0.1, 0.5))
    dead = [len(g) - len(a) for g, a in zip(R.neuron_groups(strong), R.alive_neurons(strong),
                                            strict=True)]
    assert dead[0] > 0


def test_shrink_computes_the_same_function_and_matches_shrink_mlp():
    model = net()
    with torch.no_grad():
        for layer, rows in ((model.fc1, [0, 3, 4, 10]), (model.fc2, [1, 2, 7])):
            layer.weight[rows] = 0.0
            layer.bias[rows] = 0.0
    small = R.shrink_to_alive(model)
    assert small.sizes == (784, 20, 9, 10)
    x = tiny_split().x_test
    assert torch.allclose(small(x), model(x), atol=1e-6)
    # Oracle: with the same fraction of zero neurons in every layer, structured.shrink_mlp
    # removes the same neurons.
    even = net(sizes=(784, 8, 4, 10))
    with torch.no_grad():
        for layer, rows in ((even.fc1, [1, 5]), (even.fc2, [2])):
            layer.weight[rows] = 0.0
            layer.bias[rows] = 0.0
    ref = structured.shrink_mlp(even, 0.25)
    ours = R.shrink_to_alive(even)
    assert ours.sizes == ref.sizes
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), ref.parameters(),
                                                 strict=True))
    with pytest.raises(TypeError, match="levers.models.MLP"):
        R.shrink_to_alive(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="t must be"):
        R.group_soft_threshold(torch.ones(2, 2), -1.0)
