"""Tests of levers.saliency against torch.autograd.functional.hessian, finite differences and the
exact quadratic case, where OBD and OBS are not approximations."""

import doctest

import pytest
import torch

from levers import saliency


def test_docstring_examples_run():
    assert doctest.testmod(saliency, raise_on_error=False).failed == 0


def mlp_loss(seed: int = 0):
    """A tiny two-layer network's cross-entropy as a function of its second layer (float64)."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(40, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,),
                                                                                generator=g)
    w1 = torch.randn(5, 6, generator=g, dtype=torch.float64)
    h = torch.tanh(x @ w1.T)
    w2 = torch.randn(3, 5, generator=g, dtype=torch.float64)
    return (lambda w: torch.nn.functional.cross_entropy(h @ w.T, y) + 0.01 * (w**2).sum()), w2


def test_hessian_equals_autograd_functional_hessian():
    loss, w = mlp_loss()
    ref = torch.autograd.functional.hessian(loss, w).reshape(w.numel(), w.numel())
    ours = saliency.hessian(loss, w)
    assert ours.shape == (15, 15) and ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(saliency.hessian_diagonal(loss, w), ref.diagonal().reshape(3, 5))


def test_hessian_diagonal_equals_finite_differences():
    loss, w = mlp_loss(1)
    eps = 1e-4
    fd = torch.empty(w.numel(), dtype=torch.float64)
    for i in range(w.numel()):
        e = torch.zeros(w.numel(), dtype=torch.float64)
        e[i] = eps
        e = e.reshape(w.shape)
        fd[i] = (loss(w + e) - 2 * loss(w) + loss(w - e)) / eps**2
    torch.testing.assert_close(saliency.hessian_diagonal(loss, w).reshape(-1), fd, rtol=1e-5,
                               atol=1e-7)


def quadratic(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    h = a @ a.T + n * torch.eye(n, dtype=torch.float64)
    w_star = torch.randn(n, generator=g, dtype=torch.float64)
    return (lambda w: 0.5 * (w - w_star) @ h @ (w - w_star)), h, w_star


def test_obd_is_exact_at_the_minimum_of_a_quadratic():
    loss, h, w_star = quadratic()
    predicted = saliency.obd_saliency(w_star, saliency.hessian_diagonal(loss, w_star))
    actual = saliency.removal_loss_change(loss, w_star)
    torch.testing.assert_close(predicted, actual, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(predicted, 0.5 * h.diagonal() * w_star**2)


def test_obs_is_the_constrained_minimum_of_a_quadratic():
    loss, h, w_star = quadratic(seed=3)
    h_inv = torch.linalg.inv(h)
    sal = saliency.obs_saliency(w_star, h_inv)
    for q in range(w_star.numel()):
        # Brute-force oracle: minimize over the other coordinates with w_q = 0 (a linear solve).
        keep = [i for i in range(w_star.numel()) if i != q]
        rhs = h[keep][:, keep] @ w_star[keep] + h[keep, q] * w_star[q]
        best = torch.zeros_like(w_star)
        best[keep] = torch.linalg.solve(h[keep][:, keep], rhs)
        updated = saliency.obs_update(w_star, h_inv, q)
        assert updated[q] == 0.0
        torch.testing.assert_close(updated, best, rtol=1e-9, atol=1e-10)
        assert float(loss(updated)) == pytest.approx(float(sal[q]), rel=1e-9)
    # OBS never predicts more damage than OBD (the others may only help).
    obd = saliency.obd_saliency(w_star, h.diagonal())
    assert bool((sal <= obd + 1e-12).all())


def test_removal_loss_change_leaves_w_unchanged_and_matches_a_loop():
    loss, w = mlp_loss(2)
    before = w.clone()
    changes = saliency.removal_loss_change(loss, w)
    assert torch.equal(w, before) and changes.shape == w.shape
    i, j = 1, 3
    w0 = w.clone()
    w0[i, j] = 0
    assert float(changes[i, j]) == pytest.approx(float(loss(w0) - loss(w)), rel=1e-12)


@pytest.mark.parametrize("call,error", [
    (lambda: saliency.hessian("loss", torch.ones(2)), TypeError),
    (lambda: saliency.hessian(lambda w: w * 2, torch.ones(2)), ValueError),
    (lambda: saliency.obd_saliency(torch.ones(2), torch.ones(3)), ValueError),
    (lambda: saliency.obs_saliency(torch.ones(2), torch.eye(3)), ValueError),
    (lambda: saliency.obs_saliency(torch.ones(2), -torch.eye(2)), ValueError),
    (lambda: saliency.obs_update(torch.ones(2), torch.eye(2), 2), ValueError),
    (lambda: saliency.obd_saliency(torch.ones(2, dtype=torch.int64), torch.ones(2)), TypeError),
])
def test_bad_input_raises(call, error):
    with pytest.raises(error):
        call()
