"""MSE-optimal clipping: the error of a clipped uniform quantizer as a function of the clip α.

A b-bit quantizer that covers [−α, α] makes two errors. Inside the range it rounds (the error
shrinks as α shrinks, since the step Δ does); outside it clips (the error grows as α shrinks).
For weights drawn from a known density the total mean squared error is an integral, and its
minimizer α* is the best clip. This module computes that integral in closed form, cell by cell,
for two densities of unit scale:

- ``"gaussian"``: N(0, 1), so α is in units of the standard deviation σ;
- ``"laplace"``: density ½·e^(−|x|), so α is in units of the Laplace scale b (σ = √2·b).

Three quantizers (``quantizer=``):

- ``"midrise"``: 2ᵇ levels ±(k + ½)Δ, Δ = 2α/2ᵇ (Banner et al.'s grid), computed exactly;
- ``"midtread"``: 2ᵇ − 1 levels kΔ with 0 among them, Δ = α/(2ᵇ⁻¹ − 1) (the symmetric integer
  grid [−(2ᵇ⁻¹ − 1), 2ᵇ⁻¹ − 1]), computed exactly;
- ``"noise"``: Banner et al.'s approximation, the exact clipping error plus a uniform rounding
  noise Δ²/12 = α²/(3·4ᵇ) — the model behind their published α*.

Every density is symmetric and so is every quantizer, so the integrals run over [0, ∞) and
double.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from levers._checks import check_int, check_real

DISTRIBUTIONS = ("gaussian", "laplace")
QUANTIZERS = ("midrise", "midtread", "noise")

#: The MSE-optimal clip α*/scale that Banner et al. (2019, ACIQ) publish, from the "noise" model:
#: σ units for the Gaussian, Laplace-scale (b) units for the Laplace. Two decimals, some of them
#: truncated rather than rounded (4-bit Gaussian: the minimizer is 2.559).
BANNER_2019 = {
    "gaussian": {2: 1.71, 3: 2.15, 4: 2.55, 8: 3.92},
    "laplace": {2: 2.83, 3: 3.89, 4: 5.03, 8: 9.89},
}


def _check(dist: str, quantizer: str, bits: int) -> None:
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"dist must be one of {DISTRIBUTIONS}, got {dist!r}")
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
    check_int("bits", bits, 2 if quantizer == "midtread" else 1)
    if bits > 16:
        raise ValueError(f"bits must be an int in [1, 16], got {bits!r}")


def _tail_terms(dist: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """∫ₓ^∞ xᵏ p(x) dx for k = 0, 1, 2 (x ≥ 0; x = ∞ gives zeros)."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    xf = np.where(finite, x, 0.0)
    if dist == "gaussian":
        pdf = np.exp(-xf**2 / 2) / np.sqrt(2 * np.pi)
        t0 = special.ndtr(-xf)
        t1 = pdf
        t2 = t0 + xf * pdf
    else:
        e = np.exp(-xf) / 2
        t0, t1, t2 = e, (xf + 1) * e, (xf**2 + 2 * xf + 2) * e
    return tuple(np.where(finite, t, 0.0) for t in (t0, t1, t2))


def _cell_error(dist: str, lo: np.ndarray, hi: np.ndarray, level: np.ndarray) -> float:
    """Σ over cells [lo, hi) ⊂ [0, ∞) of ∫ (x − level)² p(x) dx."""
    a0, a1, a2 = _tail_terms(dist, lo)
    b0, b1, b2 = _tail_terms(dist, hi)
    m0, m1, m2 = a0 - b0, a1 - b1, a2 - b2
    return float(np.sum(m2 - 2 * level * m1 + level**2 * m0))


def mse_parts(alpha: float, bits: int, dist: str = "gaussian",
              quantizer: str = "midrise") -> tuple[float, float]:
    """The rounding and the clipping part of E[(Q(x) − x)²] for a clip range [−α, α].

    Parameters
    ----------
    alpha : float
        Clip value, > 0, in units of the density's scale (σ or the Laplace b).
    bits : int
        Bit width b (at least 2 for ``"midtread"``).
    dist : {"gaussian", "laplace"}
    quantizer : {"midrise", "midtread", "noise"}
        See the module docstring.

    Returns
    -------
    tuple of float
        ``(rounding, clipping)``: the error from values inside [−α, α] and from values outside.

    Examples
    --------
    >>> r, c = mse_parts(4.0, 8, "laplace", "noise")  # α²/(3·4⁸) and 2·e^(−4)
    >>> round(r, 9), round(c, 6)
    (8.138e-05, 0.036631)
    """
    _check(dist, quantizer, bits)
    check_real("alpha", alpha, open_low=True)
    alpha = float(alpha)
    if quantizer == "noise":
        rounding = alpha**2 / (3 * 4.0**bits)
        lo, hi = np.array([alpha]), np.array([np.inf])
        return rounding, 2 * _cell_error(dist, lo, hi, np.array([alpha]))
    if quantizer == "midrise":
        delta = 2 * alpha / 2**bits
        k = np.arange(2 ** (bits - 1))
        lo, hi, level = k * delta, (k + 1) * delta, (k + 0.5) * delta
    else:
        delta = alpha / (2 ** (bits - 1) - 1)
        k = np.arange(2 ** (bits - 1))
        lo, hi, level = np.maximum(k - 0.5, 0) * delta, (k + 0.5) * delta, k * delta
    hi[-1] = alpha  # the last cell inside the range ends at α; beyond it everything clips
    rounding = 2 * _cell_error(dist, lo, hi, level)
    clipping = 2 * _cell_error(dist, np.array([alpha]), np.array([np.inf]), level[-1:])
    return rounding, clipping


def clip_mse(alpha: float, bits: int, dist: str = "gaussian", quantizer: str = "midrise") -> float:
    """E[(Q(x) − x)²] for a clip range [−α, α]: rounding plus clipping error (`mse_parts`).

    Examples
    --------
    >>> round(clip_mse(2.55, 4, "gaussian", "noise"), 5)
    0.01049
    """
    return sum(mse_parts(alpha, bits, dist, quantizer))


def optimal_clip(bits: int, dist: str = "gaussian", quantizer: str = "noise") -> float:
    """The clip α* that minimizes `clip_mse`, found numerically.

    A grid of step 0.05 over (0, 30] finds the basin, then a bounded scalar minimization
    refines it to 1e-9.

    Parameters
    ----------
    bits : int
    dist : {"gaussian", "laplace"}
    quantizer : {"midrise", "midtread", "noise"}
        The default, ``"noise"``, is the model behind Banner et al.'s published values
        (`BANNER_2019`).

    Returns
    -------
    float
        α* in units of the density's scale.

    Examples
    --------
    >>> round(optimal_clip(4, "laplace"), 2), BANNER_2019["laplace"][4]
    (5.03, 5.03)
    """
    _check(dist, quantizer, bits)
    grid = np.linspace(0.05, 30.0, 600)
    errors = [clip_mse(a, bits, dist, quantizer) for a in grid]
    i = int(np.argmin(errors))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    result = optimize.minimize_scalar(lambda a: clip_mse(a, bits, dist, quantizer),
                                      bounds=(lo, hi), method="bounded",
                                      options={"xatol": 1e-9})
    return float(result.x)
