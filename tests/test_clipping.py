"""Tests of levers.clipping against scipy's integrals, Monte Carlo and Banner et al.'s values."""

import doctest

import numpy as np
import pytest
from scipy import integrate, stats

from levers import clipping

DENSITY = {"gaussian": stats.norm(), "laplace": stats.laplace()}


def quantizer(x: np.ndarray, alpha: float, bits: int, kind: str) -> np.ndarray:
    """The clipped uniform quantizer itself, written directly."""
    if kind == "midrise":
        delta = 2 * alpha / 2**bits
        k = np.clip(np.floor(x / delta), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        return (k + 0.5) * delta
    delta = alpha / (2 ** (bits - 1) - 1)
    return np.clip(np.round(x / delta), -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) * delta


def test_docstring_examples_run():
    assert doctest.testmod(clipping, raise_on_error=False).failed == 0


@pytest.mark.parametrize("dist", clipping.DISTRIBUTIONS)
@pytest.mark.parametrize("kind", ["midrise", "midtread"])
@pytest.mark.parametrize("bits,alpha", [(2, 1.3), (3, 2.0), (4, 3.1), (5, 6.0)])
def test_exact_mse_equals_scipy_quadrature(dist, kind, bits, alpha):
    p = DENSITY[dist]
    delta = 2 * alpha / 2**bits if kind == "midrise" else alpha / (2 ** (bits - 1) - 1)
    cuts = np.arange(-alpha - delta, alpha + 2 * delta, delta / 2)
    points = np.concatenate([cuts, [-40.0, 40.0]])
    points = np.sort(points[(points >= -40) & (points <= 40)])
    total = 0.0
    for lo, hi in zip(points[:-1], points[1:], strict=True):
        f = lambda x: (quantizer(np.array([x]), alpha, bits, kind)[0] - x) ** 2 * p.pdf(x)  # noqa: E731
        total += integrate.quad(f, lo, hi, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
    assert clipping.clip_mse(alpha, bits, dist, kind) == pytest.approx(total, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("dist", clipping.DISTRIBUTIONS)
def test_parts_split_at_alpha_match_monte_carlo(dist):
    x = DENSITY[dist].rvs(size=2_000_000, random_state=np.random.default_rng(0))
    alpha, bits = 2.2, 3
    err = (quantizer(x, alpha, bits, "midrise") - x) ** 2
    inside = np.abs(x) <= alpha
    rounding, clipped = clipping.mse_parts(alpha, bits, dist, "midrise")
    assert rounding == pytest.approx(err[inside].sum() / x.size, rel=0.01)
    assert clipped == pytest.approx(err[~inside].sum() / x.size, rel=0.03)


@pytest.mark.parametrize("dist", clipping.DISTRIBUTIONS)
def test_noise_model_is_clipping_integral_plus_uniform_noise(dist):
    alpha, bits = 3.0, 4
    tail = integrate.quad(lambda x: (x - alpha) ** 2 * DENSITY[dist].pdf(x), alpha, np.inf)[0]
    rounding, clipped = clipping.mse_parts(alpha, bits, dist, "noise")
    assert rounding == pytest.approx((2 * alpha / 2**bits) ** 2 / 12, rel=1e-12)
    assert clipped == pytest.approx(2 * tail, rel=1e-8)
    if dist == "laplace":
        assert clipped == pytest.approx(2 * np.exp(-alpha), rel=1e-12)  # 2·b²·e^(−α/b), b = 1


@pytest.mark.parametrize("dist", clipping.DISTRIBUTIONS)
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_optimal_clip_reproduces_banner_2019(dist, bits):
    # The published values have two decimals, some truncated rather than rounded.
    assert clipping.optimal_clip(bits, dist) == pytest.approx(clipping.BANNER_2019[dist][bits],
                                                              abs=0.01)


@pytest.mark.parametrize("kind", clipping.QUANTIZERS)
def test_optimal_clip_is_a_minimum_and_grows_with_bits(kind):
    previous = 0.0
    for bits in (2, 3, 4, 6):
        a = clipping.optimal_clip(bits, "gaussian", kind)
        best = clipping.clip_mse(a, bits, "gaussian", kind)
        for nearby in (a * 0.98, a * 1.02):
            assert clipping.clip_mse(nearby, bits, "gaussian", kind) > best
        assert a > previous
        previous = a


@pytest.mark.parametrize("call,match", [
    (lambda: clipping.clip_mse(0.0, 4), "alpha"),
    (lambda: clipping.clip_mse(1.0, 0), "bits"),
    (lambda: clipping.clip_mse(1.0, 1, quantizer="midtread"), "bits"),
    (lambda: clipping.clip_mse(1.0, 4, dist="cauchy"), "dist"),
    (lambda: clipping.optimal_clip(4, quantizer="floor"), "quantizer"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
