"""Tests of levers.sparsify: L1 and proximal steps, the gradual schedule, prune and regrow."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers import sparse, sparsify
from levers.data import Split
from levers.models import MLP
from levers.train import fit

FAST = settings(max_examples=40, deadline=None)


def tiny_split() -> Split:
    """96 random "images" with random labels: enough for a few optimizer steps."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)
    return Split(x, y, x[:32], y[:32])


@FAST
@given(w=st.floats(-5, 5), t=st.floats(0, 3))
def test_soft_threshold_minimizes_the_proximal_objective(w, t):
    x = torch.linspace(-8, 8, 160_001, dtype=torch.float64)  # grid step 1e-4
    objective = 0.5 * (x - w) ** 2 + t * x.abs()
    best = float(x[objective.argmin()])
    ours = float(sparsify.soft_threshold(torch.tensor([w], dtype=torch.float64), t))
    assert ours == pytest.approx(best, abs=2e-4)
    ours_obj = 0.5 * (ours - w) ** 2 + t * abs(ours)
    assert ours_obj <= float(objective.min()) + 1e-12


def test_soft_threshold_gives_exact_zeros_inside_the_threshold():
    out = sparsify.soft_threshold(torch.tensor([-0.2, 0.1, 0.2, 0.5]), 0.2)
    assert out[:3].eq(0).all() and out[3] == pytest.approx(0.3)


def test_steps_match_their_formulas_and_only_proximal_reaches_zero():
    g = torch.Generator().manual_seed(0)
    w, grad = torch.randn(1000, generator=g) * 0.01, torch.randn(1000, generator=g) * 0.01
    lr, lam = 0.1, 0.05
    assert torch.allclose(sparsify.subgradient_step(w, grad, lr, lam),
                          w - lr * (grad + lam * w.sign()))
    assert torch.equal(sparsify.proximal_step(w, grad, lr, lam),
                       sparsify.soft_threshold(w - lr * grad, lr * lam))
    sub, prox = w.clone(), w.clone()
    for _ in range(50):
        sub = sparsify.subgradient_step(sub, torch.zeros_like(w), lr, lam)
        prox = sparsify.proximal_step(prox, torch.zeros_like(w), lr, lam)
    assert int((sub == 0).sum()) == 0 and sub.abs().max() <= lr * lam
    assert (prox == 0).all()


def test_l1_penalty_value_and_gradient():
    model = MLP((3, 2, 2))
    lam = 0.5
    penalty = sparsify.l1_penalty(model, lam)
    expected = lam * sum(w.abs().sum() for w in (model.fc1.weight, model.fc2.weight))
    assert float(penalty.detach()) == pytest.approx(float(expected.detach()))
    penalty.backward()
    assert torch.equal(model.fc1.weight.grad, lam * model.fc1.weight.sign())
    assert model.fc1.bias.grad is None  # biases are not penalized


def test_proximal_hook_soft_thresholds_weights_not_biases():
    model = MLP((6, 5, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sparsify.proximal_hook(lr=0.5, lam=0.2)(model)
    assert torch.equal(model.fc1.weight, sparsify.soft_threshold(before["fc1.weight"], 0.1))
    assert torch.equal(model.fc1.bias, before["fc1.bias"])


def test_gradual_schedule_shape():
    s = [sparsify.gradual_sparsity(t, 0.1, 0.9, t0=5, n=10, dt=3) for t in range(50)]
    assert s[0] == s[5] == pytest.approx(0.1) and s[35] == s[49] == pytest.approx(0.9)
    assert all(a <= b for a, b in zip(s, s[1:], strict=False))
    assert s[5] == s[6] == s[7] < s[8]  # changes every dt steps
    steps = [b - a for a, b in zip(s[5:36:3], s[8:36:3], strict=False)]
    assert all(a >= b for a, b in zip(steps, steps[1:], strict=False))  # fast first, then slow


@FAST
@given(n=st.integers(2, 60), amount=st.floats(0.1, 0.9), fraction=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**16))
def test_regrow_keeps_sparsity_and_moves_the_right_entries(n, amount, fraction, seed):
    g = torch.Generator().manual_seed(seed)
    w, grad = torch.randn(n, generator=g), torch.randn(n, generator=g)
    mask = sparse.magnitude_mask(w, amount)
    new = sparsify.regrow(mask, w * mask, grad, fraction)
    assert int(new.sum()) == int(mask.sum())
    dropped, grown = mask & ~new, ~mask & new
    if dropped.any() and (mask & new).any():
        assert w.abs()[dropped].max() <= w.abs()[mask & new].min()
    if grown.any() and (~mask & ~new).any():
        assert grad.abs()[grown].min() >= grad.abs()[~mask & ~new].max()


def test_regrow_hook_moves_masks_during_training_at_constant_sparsity():
    torch.manual_seed(0)
    model = MLP((784, 16, 10))
    masks = sparse.compute_masks(model, 0.9, method="random",
                                 generator=torch.Generator().manual_seed(0))
    start = {k: m.clone() for k, m in masks.items()}
    sparse.apply_masks(model, masks)
    fit(model, tiny_split(), epochs=2, lr=0.01, batch_size=16,
        after_step=sparsify.regrow_hook(masks, every=4, fraction=0.2))
    for name, w in sparse.prunable(model).items():
        assert int(masks[name].sum()) == int(start[name].sum())
        assert not torch.equal(masks[name], start[name])
        assert (w[~masks[name]] == 0).all()


def test_regrow_moves_nothing_with_fraction_zero_and_at_most_the_pruned_count():
    mask = torch.tensor([True, True, True, False])
    w, grad = torch.tensor([3.0, 2.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 5.0])
    assert torch.equal(sparsify.regrow(mask, w, grad, 0.0), mask)
    # 1.0 of the 3 active weights would be 3 moves, but only 1 position is pruned
    assert sparsify.regrow(mask, w, grad, 1.0).tolist() == [True, True, False, True]


def test_regrow_hook_only_moves_masks_every_few_steps():
    torch.manual_seed(0)
    model = MLP((784, 16, 10))
    masks = sparse.compute_masks(model, 0.9)
    start = {k: m.clone() for k, m in masks.items()}
    sparse.apply_masks(model, masks)
    hook = sparsify.regrow_hook(masks, every=3, fraction=0.5)
    data = tiny_split()
    torch.nn.functional.cross_entropy(model(data.x_train), data.y_train).backward()
    hook(model)
    hook(model)  # steps 1 and 2: masks re-applied, not moved
    assert all(torch.equal(masks[k], start[k]) for k in masks)
    hook(model)  # step 3: moved
    assert not torch.equal(masks["fc1.weight"], start["fc1.weight"])


@pytest.mark.parametrize("call, match", [
    (lambda: sparsify.subgradient_step(torch.ones(3), torch.ones(2), 0.1, 0.1), "grad must have"),
    (lambda: sparsify.subgradient_step(torch.ones(3), [1.0, 1.0, 1.0], 0.1, 0.1),
     "grad must be a torch.Tensor"),
    (lambda: sparsify.proximal_step(torch.ones(3), torch.ones(3), -0.1, 0.1), "lr must"),
    (lambda: sparsify.proximal_step(torch.ones(3), torch.ones(3), 0.1, float("nan")), "lam must"),
    (lambda: sparsify.proximal_step(torch.ones(3, dtype=torch.int64), torch.ones(3), 0.1, 0.1),
     "floating-point"),
    (lambda: sparsify.soft_threshold(torch.ones(3), -1.0), "t must"),
    (lambda: sparsify.soft_threshold(torch.ones(3), float("inf")), "t must"),
    (lambda: sparsify.soft_threshold(torch.tensor([float("nan")]), 0.1), "finite"),
    (lambda: sparsify.l1_penalty(MLP((4, 2)), -1.0), "lam must"),
    (lambda: sparsify.l1_penalty("model", 0.1), "torch.nn.Module"),
    (lambda: sparsify.proximal_hook(lr=0.0, lam=0.1), "lr must be a finite number > 0"),
    (lambda: sparsify.proximal_hook(lr=0.1, lam=-0.1), "lam must"),
    (lambda: sparsify.gradual_sparsity(0, 0.0, 1.2, t0=0, n=3, dt=1), "s_f"),
    (lambda: sparsify.gradual_sparsity(0, -0.1, 0.9, t0=0, n=3, dt=1), "s_i"),
    (lambda: sparsify.gradual_sparsity(0, 0.0, 0.9, t0=0, n=0, dt=1), "n must"),
    (lambda: sparsify.gradual_sparsity(1.5, 0.0, 0.9, t0=0, n=3, dt=1), "t must"),
    (lambda: sparsify.gradual_sparsity(0, 0.0, 0.9, t0=0, n=3, dt=0), "dt must"),
    (lambda: sparsify.regrow(torch.ones(3, dtype=torch.bool), torch.ones(4), torch.ones(4), 0.5),
     "shape"),
    (lambda: sparsify.regrow(torch.ones(4), torch.ones(4), torch.ones(4), 0.5), "bool"),
    (lambda: sparsify.regrow(torch.ones(4, dtype=torch.bool), torch.ones(4), torch.ones(4), 2.0),
     "fraction"),
    (lambda: sparsify.regrow_hook({}, every=0, fraction=0.1), "every"),
    (lambda: sparsify.regrow_hook({}, every=1, fraction=-0.1), "fraction"),
])
def test_bad_input_gets_a_clear_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
