"""Tests of levers.regularize: L1 and group-lasso penalties, subgradient and proximal steps."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers import regularize
from levers.models import MLP

FAST = settings(max_examples=40, deadline=None)


@FAST
@given(w=st.floats(-5, 5), t=st.floats(0, 3))
def test_soft_threshold_minimizes_the_proximal_objective(w, t):
    x = torch.linspace(-8, 8, 160_001, dtype=torch.float64)  # grid step 1e-4
    objective = 0.5 * (x - w) ** 2 + t * x.abs()
    best = float(x[objective.argmin()])
    ours = float(regularize.soft_threshold(torch.tensor([w], dtype=torch.float64), t))
    assert ours == pytest.approx(best, abs=2e-4)
    ours_obj = 0.5 * (ours - w) ** 2 + t * abs(ours)
    assert ours_obj <= float(objective.min()) + 1e-12


def test_soft_threshold_gives_exact_zeros_inside_the_threshold():
    out = regularize.soft_threshold(torch.tensor([-0.2, 0.1, 0.2, 0.5]), 0.2)
    assert out[:3].eq(0).all() and out[3] == pytest.approx(0.3)


def test_steps_match_their_formulas_and_only_proximal_reaches_zero():
    g = torch.Generator().manual_seed(0)
    w, grad = torch.randn(1000, generator=g) * 0.01, torch.randn(1000, generator=g) * 0.01
    lr, lam = 0.1, 0.05
    assert torch.allclose(regularize.subgradient_step(w, grad, lr, lam),
                          w - lr * (grad + lam * w.sign()))
    assert torch.equal(regularize.proximal_step(w, grad, lr, lam),
                       regularize.soft_threshold(w - lr * grad, lr * lam))
    sub, prox = w.clone(), w.clone()
    for _ in range(50):
        sub = regularize.subgradient_step(sub, torch.zeros_like(w), lr, lam)
        prox = regularize.proximal_step(prox, torch.zeros_like(w), lr, lam)
    assert int((sub == 0).sum()) == 0 and sub.abs().max() <= lr * lam
    assert (prox == 0).all()


def test_l1_penalty_value_and_gradient():
    model = MLP((3, 2, 2))
    lam = 0.5
    penalty = regularize.l1_penalty(model, lam)
    expected = lam * sum(w.abs().sum() for w in (model.fc1.weight, model.fc2.weight))
    assert float(penalty.detach()) == pytest.approx(float(expected.detach()))
    penalty.backward()
    assert torch.equal(model.fc1.weight.grad, lam * model.fc1.weight.sign())
    assert model.fc1.bias.grad is None  # biases are not penalized


def test_proximal_hook_soft_thresholds_weights_not_biases():
    model = MLP((6, 5, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    regularize.proximal_hook(lr=0.5, lam=0.2)(model)
    assert torch.equal(model.fc1.weight, regularize.soft_threshold(before["fc1.weight"], 0.1))
    assert torch.equal(model.fc1.bias, before["fc1.bias"])


@pytest.mark.parametrize("call, match", [
    (lambda: regularize.subgradient_step(torch.ones(3), torch.ones(2), 0.1, 0.1),
     "grad must be a tensor of the shape"),
    (lambda: regularize.subgradient_step(torch.ones(3), [1.0, 1.0, 1.0], 0.1, 0.1),
     "grad must be a torch.Tensor"),
    (lambda: regularize.proximal_step(torch.ones(3), torch.ones(3), -0.1, 0.1), "lr must"),
    (lambda: regularize.proximal_step(torch.ones(3), torch.ones(3), 0.1, float("nan")), "lam must"),
    (lambda: regularize.proximal_step(torch.ones(3, dtype=torch.int64), torch.ones(3), 0.1, 0.1),
     "floating-point"),
    (lambda: regularize.soft_threshold(torch.ones(3), -1.0), "t must"),
    (lambda: regularize.soft_threshold(torch.ones(3), float("inf")), "t must"),
    (lambda: regularize.soft_threshold(torch.tensor([float("nan")]), 0.1), "finite"),
    (lambda: regularize.l1_penalty(MLP((4, 2)), -1.0), "lam must"),
    (lambda: regularize.l1_penalty("model", 0.1), "torch.nn.Module"),
    (lambda: regularize.proximal_hook(lr=0.0, lam=0.1), "lr must be a finite number > 0"),
    (lambda: regularize.proximal_hook(lr=0.1, lam=-0.1), "lam must"),
])
def test_bad_input_gets_a_clear_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
