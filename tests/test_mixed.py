"""Tests for levers.mixed: the loss scale against torch.amp.GradScaler, training against fit."""

import pytest
import torch
from torch import nn

from levers import formats as fm
from levers import mixed
from levers.data import Split
from levers.train import fit


def tiny_split(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Split(x[:64], y[:64], x[64:], y[64:])


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))


def test_dynamic_scale_follows_grad_scaler():
    pattern = [False] * 5 + [True] + [False] * 7 + [True, True] + [False] * 9
    p = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_factor=2.0,
                                  backoff_factor=0.5, growth_interval=3)
    ours = mixed.DynamicScale(scale=1024.0, growth_interval=3)
    for found_inf in pattern:
        (scaler.scale(p.sum())).backward()
        if found_inf:
            p.grad[0] = torch.inf
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        ours.update(found_inf)
        assert ours.scale == scaler.get_scale()


def test_fp32_run_without_scaling_is_plain_fit():
    split = tiny_split()
    a, b = tiny_model(), tiny_model()
    h = mixed.fit_mixed(a, split, epochs=2, lr=0.05, batch_size=16, fmt=fm.FP32)
    fit(b, split, epochs=2, lr=0.05, batch_size=16)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)
    assert h.underflow_share == 0 and h.skipped_steps == 0 and len(h.test_accuracy) == 2


def test_gradients_are_stored_in_fp16_and_underflow_is_counted():
    split = tiny_split()
    h1 = mixed.fit_mixed(tiny_model(), split, epochs=1, loss_scale=2.0**-20)  # tiny gradients
    h2 = mixed.fit_mixed(tiny_model(), split, epochs=1, loss_scale=2.0**10)
    assert h1.underflow_share > 0.5 > h2.underflow_share
    assert h1.gradient_entries > 0


def test_scaled_gradients_equal_fp16_autograd():
    # One linear layer, input and weight in fp16: the weight gradient is the fp16 product.
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    w = nn.Parameter(torch.randn(3, 5, generator=torch.Generator().manual_seed(1)))
    history = mixed.MixedHistory()
    out = mixed._Store.apply(nn.functional.linear(mixed._Store.apply(x, fm.FP16, history),
                                                  mixed._Store.apply(w, fm.FP16, history)),
                             fm.FP16, history)
    g = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    out.backward(g)
    expected = (g.half().float().T @ x.half().float()).half().float()
    assert torch.equal(w.grad, expected)


def test_fp16_weights_lose_updates_that_master_weights_keep():
    split = tiny_split()
    lost16 = mixed.fit_mixed(tiny_model(), split, epochs=1, lr=1e-3, master_weights=False)
    lost32 = mixed.fit_mixed(tiny_model(), split, epochs=1, lr=1e-3, master_weights=True)
    assert lost16.lost_update_share > 0.3 > lost32.lost_update_share
    m = tiny_model()
    mixed.fit_mixed(m, split, epochs=1, master_weights=False)
    assert all(torch.equal(p, p.half().float()) for p in m.parameters())


def test_overflow_skips_the_step_and_backs_off():
    split = tiny_split()
    scale = mixed.DynamicScale(scale=2.0**40, growth_interval=1000)
    h = mixed.fit_mixed(tiny_model(), split, epochs=1, batch_size=16, loss_scale=scale)
    assert h.skipped_steps >= 1 and h.scale[0] == 2.0**40 and scale.scale < 2.0**40


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [({"loss_scale": 0.0}, ValueError, "loss_scale"),
     ({"fmt": "fp16"}, TypeError, "fmt"),
     ({"master_weights": 1}, TypeError, "master_weights"),
     ({"epochs": -1}, ValueError, "epochs")],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        mixed.fit_mixed(tiny_model(), tiny_split(), **kwargs)


def test_bad_scale():
    with pytest.raises(ValueError, match="backoff_factor"):
        mixed.DynamicScale(backoff_factor=2.0)
