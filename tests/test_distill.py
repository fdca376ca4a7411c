"""Tests of levers.distill: temperature softmax, the distillation loss, its gradient, training."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from levers import distill
from levers.data import Split
from levers.models import MLP

FAST = settings(max_examples=30, deadline=None)


def logits(seed: int, batch: int = 8, classes: int = 10, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, classes, generator=g, dtype=torch.float64) * scale


def labels(seed: int, batch: int = 8, classes: int = 10) -> torch.Tensor:
    return torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed))


def tiny_split() -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)
    return Split(x, y, x[:32], y[:32])


@FAST
@given(seed=st.integers(0, 10_000), T=st.floats(0.1, 50))
def test_softmax_t_is_softmax_of_scaled_logits(seed, T):
    z = logits(seed)
    p = distill.softmax_t(z, T)
    assert torch.allclose(p, torch.softmax(z / T, dim=1))
    assert torch.allclose(p.sum(1), torch.ones(len(z), dtype=z.dtype))
    assert torch.equal(p.argmax(1), z.argmax(1))  # temperature never reorders classes


def test_softmax_t_flattens_as_T_grows():
    z = logits(0)
    entropy = [float(-(p * p.log()).sum(1).mean()) for p in
               (distill.softmax_t(z, T) for T in (0.5, 1, 2, 5, 20))]
    assert entropy == sorted(entropy) and entropy[-1] < math.log(10)
    assert entropy[-1] > 0.95 * math.log(10)


@FAST
@given(seed=st.integers(0, 10_000), T=st.floats(0.5, 20), alpha=st.floats(0, 1))
def test_soft_loss_equals_the_formula_with_torch_oracles(seed, T, alpha):
    z_s, z_t, y = logits(seed), logits(seed + 1), labels(seed)
    ours = distill.distillation_loss(z_s, z_t, y, T, alpha)
    kl = F.kl_div(F.log_softmax(z_s / T, 1), F.softmax(z_t / T, 1), reduction="batchmean")
    p, q = F.softmax(z_t / T, 1), F.softmax(z_s / T, 1)
    by_hand = (p * (p.log() - q.log())).sum(1).mean()  # KL(p ‖ q), averaged over the batch
    assert float(kl) == pytest.approx(float(by_hand), rel=1e-9, abs=1e-12)
    expected = alpha * F.cross_entropy(z_s, y) + (1 - alpha) * T**2 * kl
    assert float(ours) == pytest.approx(float(expected), rel=1e-9, abs=1e-12)


@FAST
@given(seed=st.integers(0, 10_000), T=st.floats(0.5, 20))
def test_alpha_one_is_cross_entropy_for_both_targets(seed, T):
    z_s, z_t, y = logits(seed), logits(seed + 1), labels(seed)
    ce = F.cross_entropy(z_s, y)
    for target in ("soft", "hard"):
        assert torch.allclose(distill.distillation_loss(z_s, z_t, y, T, 1.0, target), ce)


def test_hard_target_uses_the_teacher_argmax_labels():
    z_s, z_t, y = logits(3), logits(4), labels(3)
    hard = distill.distillation_loss(z_s, z_t, y, 4.0, 0.25, "hard")
    expected = 0.25 * F.cross_entropy(z_s, y) + 0.75 * F.cross_entropy(z_s, z_t.argmax(1))
    assert torch.allclose(hard, expected)
    # the temperature cannot change an argmax, so it does not change the hard loss
    assert torch.equal(hard, distill.distillation_loss(z_s, z_t, y, 1.0, 0.25, "hard"))


@FAST
@given(seed=st.integers(0, 10_000), T=st.floats(0.5, 20), alpha=st.floats(0, 1))
def test_gradient_matches_autograd(seed, T, alpha):
    z_s = logits(seed).requires_grad_()
    z_t, y = logits(seed + 1), labels(seed)
    distill.distillation_loss(z_s, z_t, y, T, alpha).backward()
    ce_grad = (F.softmax(z_s.detach(), 1) - F.one_hot(y, 10)) / len(y)
    expected = alpha * ce_grad + (1 - alpha) * distill.soft_gradient(z_s, z_t, T)
    assert torch.allclose(z_s.grad, expected, rtol=1e-9, atol=1e-12)
    # the closed form of the soft part: (q − p)/T · T²·(1 − α)/batch
    q, p = F.softmax(z_s.detach() / T, 1), F.softmax(z_t / T, 1)
    assert torch.allclose(distill.soft_gradient(z_s, z_t, T), (q - p) / T * T**2 / len(y))
    assert torch.allclose(distill.soft_gradient(z_s, z_t, T, scaled=False),
                          (q - p) / T / len(y))


def test_no_gradient_flows_into_the_teacher():
    z_s, z_t = logits(0).requires_grad_(), logits(1).requires_grad_()
    distill.distillation_loss(z_s, z_t, labels(0), 2.0, 0.5).backward()
    assert z_t.grad is None and z_s.grad is not None


def test_T_squared_keeps_the_soft_gradient_scale_across_T():
    z_s, z_t = logits(0, batch=256, scale=1.0), logits(1, batch=256, scale=1.0)
    temps = (2.0, 4.0, 8.0, 16.0, 32.0)
    scaled = [float(distill.soft_gradient(z_s, z_t, T).norm()) for T in temps]
    raw = [float(distill.soft_gradient(z_s, z_t, T, scaled=False).norm()) for T in temps]
    assert max(scaled) / min(scaled) < 1.3  # about constant
    assert raw[0] / raw[-1] > 0.5 * (temps[-1] / temps[0]) ** 2  # falls like 1/T²
    # at large T, T²·(q − p)/T → (z_s − z_t − mean)/(N·T)·T, i.e. a T-independent limit
    limit = ((z_s - z_s.mean(1, keepdim=True)) - (z_t - z_t.mean(1, keepdim=True))) / 10
    assert torch.allclose(distill.soft_gradient(z_s, z_t, 1e4) * len(z_s), limit, atol=1e-4)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"T": 0.0}, "T must be"),
    ({"T": -1.0}, "T must be"),
    ({"T": math.nan}, "T must be"),
    ({"alpha": -0.1}, "alpha must be"),
    ({"alpha": 1.5}, "alpha must be"),
    ({"target": "soft-ish"}, "target must be"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = {"T": 2.0, "alpha": 0.5, "target": "soft"} | kwargs
    with pytest.raises(ValueError, match=match):
        distill.distillation_loss(logits(0), logits(1), labels(0), **args)


def test_mismatched_shapes_and_labels_are_named():
    with pytest.raises(ValueError, match="teacher_logits must have the shape"):
        distill.distillation_loss(logits(0), logits(1, classes=5), labels(0), 2.0, 0.5)
    with pytest.raises(ValueError, match="teacher_logits must have the shape"):
        distill.soft_gradient(logits(0), logits(1, batch=4), 2.0)
    with pytest.raises(ValueError, match="y must be"):
        distill.distillation_loss(logits(0), logits(1), labels(0, batch=3), 2.0, 0.5)
    with pytest.raises(ValueError, match="student_logits must have shape"):
        distill.distillation_loss(logits(0)[0], logits(1)[0], labels(0)[:1], 2.0, 0.5)
    with pytest.raises(TypeError, match="student_logits"):
        distill.distillation_loss(labels(0)[:, None].expand(8, 2), logits(1, classes=2),
                                  labels(0), 2.0, 0.5)
    with pytest.raises(ValueError, match="T must be"):
        distill.softmax_t(logits(0), 0.0)


def test_distill_trains_through_fit_and_matches_a_hand_loop():
    split = tiny_split()
    teacher = MLP((784, 32, 10))
    torch.manual_seed(1)
    a, b = MLP((784, 8, 10)), MLP((784, 8, 10))
    b.load_state_dict(a.state_dict())
    history = distill.distill(a, teacher, split, T=3.0, alpha=0.3, epochs=2, lr=0.05,
                              batch_size=32)
    assert len(history.loss) == 2 and 0 <= history.test_accuracy[-1] <= 1
    # the same steps by hand, with plain SGD + momentum as fit uses
    with torch.no_grad():
        z_t = teacher(split.x_train)
    opt = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        order = torch.randperm(96, generator=gen)
        for i in range(0, 96, 32):
            idx = order[i:i + 32]
            loss = distill.distillation_loss(b(split.x_train[idx]), z_t[idx],
                                             split.y_train[idx], 3.0, 0.3)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_distill_accepts_precomputed_logits_and_rejects_bad_ones():
    split = tiny_split()
    teacher = MLP((784, 16, 10))
    z_t = teacher(split.x_train).detach()
    torch.manual_seed(2)
    a = MLP((784, 8, 10))
    b = MLP((784, 8, 10))
    b.load_state_dict(a.state_dict())
    distill.distill(a, teacher, split, T=2.0, alpha=0.5, epochs=1)
    distill.distill(b, z_t, split, T=2.0, alpha=0.5, epochs=1)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="one row per training image"):
        distill.distill(b, z_t[:10], split, T=2.0, alpha=0.5, epochs=1)
    with pytest.raises(ValueError, match="alpha must be"):
        distill.distill(b, z_t, split, T=2.0, alpha=2.0, epochs=1)
    with pytest.raises(ValueError, match="loss_fn"):
        distill.distill(b, z_t, split, T=2.0, alpha=0.5, loss_fn=F.cross_entropy)
    with pytest.raises(TypeError, match="split"):
        distill.distill(b, z_t, "data", T=2.0, alpha=0.5)
