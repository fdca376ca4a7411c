"""Tests of levers.schedule: masks kept, the gradual schedule, prune and regrow."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers import prune, schedule
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


def test_gradual_schedule_shape():
    s = [schedule.gradual_sparsity(t, 0.1, 0.9, t0=5, n=10, dt=3) for t in range(50)]
    assert s[0] == s[5] == pytest.approx(0.1) and s[35] == s[49] == pytest.approx(0.9)
    assert all(a <= b for a, b in zip(s, s[1:], strict=False))
    assert s[5] == s[6] == s[7] < s[8]  # changes every dt steps
    steps = [b - a for a, b in zip(s[5:36:3], s[8:36:3], strict=False)]
    assert all(a >= b for a, b in zip(steps, steps[1:], strict=False))  # fast first, then slow


@pytest.mark.parametrize(("t", "expected"), [
    # s_t = s_f + (s_i − s_f)(1 − k/n)³ with k = ⌊(t − t0)/Δt⌋: by hand, exact in binary
    (0, 0.0), (9, 0.0), (10, 0.75 * (1 - 0.75**3)), (20, 0.75 * (1 - 0.5**3)),
    (35, 0.75 * (1 - 0.25**3)), (40, 0.75), (1000, 0.75),
])
def test_gradual_schedule_exact_values_are_cubic(t, expected):
    assert schedule.gradual_sparsity(t, 0.0, 0.75, t0=0, n=4, dt=10) == pytest.approx(expected,
                                                                                    abs=1e-15)


@FAST
@given(t=st.integers(0, 200), s_i=st.floats(0, 1), s_f=st.floats(0, 1), t0=st.integers(0, 50),
       n=st.integers(1, 20), dt=st.integers(1, 10))
def test_gradual_schedule_matches_zhu_and_gupta(t, s_i, s_f, t0, n, dt):
    k = min(max((t - t0) // dt, 0), n)  # the formula of Zhu & Gupta (2017), written out again
    expected = s_f + (s_i - s_f) * (1 - k / n) ** 3
    assert schedule.gradual_sparsity(t, s_i, s_f, t0=t0, n=n, dt=dt) == pytest.approx(expected)


@FAST
@given(n=st.integers(2, 60), amount=st.floats(0.1, 0.9), fraction=st.floats(0.0, 1.0),
       seed=st.integers(0, 2**16))
def test_regrow_keeps_sparsity_and_moves_the_right_entries(n, amount, fraction, seed):
    g = torch.Generator().manual_seed(seed)
    w, grad = torch.randn(n, generator=g), torch.randn(n, generator=g)
    mask = prune.magnitude_mask(w, amount)
    new = schedule.regrow(mask, w * mask, grad, fraction)
    assert int(new.sum()) == int(mask.sum())
    dropped, grown = mask & ~new, ~mask & new
    if dropped.any() and (mask & new).any():
        assert w.abs()[dropped].max() <= w.abs()[mask & new].min()
    if grown.any() and (~mask & ~new).any():
        assert grad.abs()[grown].min() >= grad.abs()[~mask & ~new].max()


def test_regrow_hook_moves_masks_during_training_at_constant_sparsity():
    torch.manual_seed(0)
    model = MLP((784, 16, 10))
    masks = prune.compute_masks(model, 0.9, method="random",
                                 generator=torch.Generator().manual_seed(0))
    start = {k: m.clone() for k, m in masks.items()}
    prune.apply_masks(model, masks)
    fit(model, tiny_split(), epochs=2, lr=0.01, batch_size=16,
        after_step=schedule.regrow_hook(masks, every=4, fraction=0.2))
    for name, w in prune.prunable(model).items():
        assert int(masks[name].sum()) == int(start[name].sum())
        assert not torch.equal(masks[name], start[name])
        assert (w[~masks[name]] == 0).all()


def test_regrow_moves_nothing_with_fraction_zero_and_at_most_the_pruned_count():
    mask = torch.tensor([True, True, True, False])
    w, grad = torch.tensor([3.0, 2.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 5.0])
    assert torch.equal(schedule.regrow(mask, w, grad, 0.0), mask)
    # 1.0 of the 3 active weights would be 3 moves, but only 1 position is pruned
    assert schedule.regrow(mask, w, grad, 1.0).tolist() == [True, True, False, True]


def test_regrow_hook_only_moves_masks_every_few_steps():
    torch.manual_seed(0)
    model = MLP((784, 16, 10))
    masks = prune.compute_masks(model, 0.9)
    start = {k: m.clone() for k, m in masks.items()}
    prune.apply_masks(model, masks)
    hook = schedule.regrow_hook(masks, every=3, fraction=0.5)
    data = tiny_split()
    torch.nn.functional.cross_entropy(model(data.x_train), data.y_train).backward()
    hook(model)
    hook(model)  # steps 1 and 2: masks re-applied, not moved
    assert all(torch.equal(masks[k], start[k]) for k in masks)
    hook(model)  # step 3: moved
    assert not torch.equal(masks["fc1.weight"], start["fc1.weight"])


MASKS = {"fc1.weight": torch.ones(2, 4, dtype=torch.bool)}


@pytest.mark.parametrize("call, match", [
    (lambda: schedule.gradual_sparsity(0, 0.0, 1.2, t0=0, n=3, dt=1), "s_f"),
    (lambda: schedule.gradual_sparsity(0, -0.1, 0.9, t0=0, n=3, dt=1), "s_i"),
    (lambda: schedule.gradual_sparsity(0, 0.0, 0.9, t0=0, n=0, dt=1), "n must"),
    (lambda: schedule.gradual_sparsity(1.5, 0.0, 0.9, t0=0, n=3, dt=1), "t must"),
    (lambda: schedule.gradual_sparsity(0, 0.0, 0.9, t0=0, n=3, dt=0), "dt must"),
    (lambda: schedule.regrow(torch.ones(3, dtype=torch.bool), torch.ones(4), torch.ones(4), 0.5),
     "shape"),
    (lambda: schedule.regrow(torch.ones(4), torch.ones(4), torch.ones(4), 0.5), "bool"),
    (lambda: schedule.regrow(torch.ones(4, dtype=torch.bool), torch.ones(4), torch.ones(4), 2.0),
     "fraction"),
    (lambda: schedule.regrow_hook(MASKS, every=0, fraction=0.1), "every"),
    (lambda: schedule.regrow_hook(MASKS, every=1, fraction=-0.1), "fraction"),

])
def test_bad_input_gets_a_clear_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
