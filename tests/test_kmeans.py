"""Tests of levers.kmeans: codebook + index weight sharing."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from levers.calibration import choose_qparams_affine
from levers.encode import codebook_bytes
from levers.kmeans import (
    INITS,
    Codebook,
    ConvergenceWarning,
    _start,
    kmeans_dequantize,
    kmeans_quantize,
    lloyd,
)
from levers.quant import QScheme, fake_quantize_affine


def _sklearn_from(x: torch.Tensor, start: torch.Tensor) -> np.ndarray:
    """scikit-learn's Lloyd k-means from the same starting centroids, to strict convergence."""
    km = KMeans(len(start), init=start.numpy().reshape(-1, 1), n_init=1, tol=0.0,
                max_iter=10_000, algorithm="lloyd")
    return np.sort(km.fit(x.double().numpy().reshape(-1, 1)).cluster_centers_.ravel())


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("bits", [2, 4])
def test_converged_centroids_equal_scikit_learns_from_the_same_start(init, bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.cat([torch.randn(3000, generator=g) * 0.05,
                   torch.randn(300, generator=g) * 0.3])  # a bell with heavy tails
    cb = kmeans_quantize(w, bits, init=init, tol=0.0, seed=3)
    assert cb.converged and 1 < cb.iterations < 1000
    start = _start(w.double(), 2**bits, init, 3)
    np.testing.assert_allclose(cb.centroids.double().numpy(), _sklearn_from(w, start),
                               rtol=0, atol=1e-6)


def test_more_iterations_lower_the_error_until_convergence():
    w = torch.randn(20_000, generator=torch.Generator().manual_seed(0)) ** 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        errs = [float((kmeans_dequantize(kmeans_quantize(w, 4, iters=n)) - w).pow(2).mean())
                for n in (1, 5, 30)]
    done = kmeans_quantize(w, 4)
    final = float((kmeans_dequantize(done) - w).pow(2).mean())
    assert errs[0] > errs[1] > errs[2] > final and done.converged and done.iterations > 30


def test_the_cap_is_reported_when_hit():
    w = torch.randn(5000, generator=torch.Generator().manual_seed(1)) ** 3
    with pytest.warns(ConvergenceWarning, match="cap of iters=3"):
        cb = kmeans_quantize(w, 3, iters=3)
    assert not cb.converged and cb.iterations == 3


def test_random_starts_depend_on_the_seed_and_pick_distinct_weights():
    w = torch.randn(500, generator=torch.Generator().manual_seed(2))
    for init in ("random", "k-means++"):
        a, b = _start(w.double(), 8, init, 0), _start(w.double(), 8, init, 1)
        assert not torch.equal(a, b) and len(torch.unique(a)) == 8
        assert torch.isin(a, w.double()).all() and bool((a[1:] > a[:-1]).all())


def test_an_empty_cluster_takes_the_farthest_weight():
    # Linear levels 0, 10/3, 20/3, 10: the middle two attract no weight, so (as in
    # scikit-learn) they move to the weights farthest from their centroids, 0.2 and 0.1.
    w = torch.tensor([0.0, 0.1, 0.2, 10.0])
    cb = kmeans_quantize(w, bits=2)
    assert torch.allclose(cb.centroids, w) and cb.indices.tolist() == [0, 1, 2, 3]
    assert torch.equal(kmeans_dequantize(cb), cb.centroids)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.integers(1, 6))
def test_codebook_shapes_and_each_weight_takes_its_nearest_centroid(seed, bits):
    w = torch.randn(20, 30, generator=torch.Generator().manual_seed(seed))
    cb = kmeans_quantize(w, bits)
    assert cb.centroids.shape == (2**bits,) and cb.indices.shape == w.shape
    assert bool((cb.centroids[1:] >= cb.centroids[:-1]).all())
    nearest = (w.reshape(-1, 1) - cb.centroids).abs().min(1).values
    chosen = (w - kmeans_dequantize(cb)).abs().reshape(-1)
    assert torch.allclose(chosen, nearest, atol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kmeans_beats_uniform_on_bell_shaped_weights(bits):
    w = torch.randn(300, 100, generator=torch.Generator().manual_seed(0))
    kmeans_err = float((kmeans_dequantize(kmeans_quantize(w, bits)) - w).pow(2).mean())
    uniform = fake_quantize_affine(w, choose_qparams_affine(w, QScheme(bits, symmetric=False)))
    assert kmeans_err < float((uniform - w).pow(2).mean())


def test_exact_when_few_distinct_values_and_zero_tensor():
    w = torch.tensor([0.0, 1.0, 1.0, -2.0, 0.0])
    assert torch.equal(kmeans_dequantize(kmeans_quantize(w, 2)), w)
    assert torch.equal(kmeans_dequantize(kmeans_quantize(torch.zeros(7), 3)), torch.zeros(7))


def test_nbytes():
    cb = kmeans_quantize(torch.randn(1000), 4)
    assert codebook_bytes(cb) == 16 * 4 + 500


def test_bad_input():
    with pytest.raises(ValueError, match="bits must be an int in \\[1, 8\\]"):
        kmeans_quantize(torch.randn(4), 9)
    with pytest.raises(ValueError, match="finite"):
        kmeans_quantize(torch.tensor([0.0, float("nan")]), 2)
    with pytest.raises(TypeError, match="floating-point"):
        kmeans_quantize(torch.arange(4), 2)
    with pytest.raises(ValueError, match="init must be one of"):
        kmeans_quantize(torch.randn(4), 2, init="kmeans++")
    with pytest.raises(ValueError, match="tol must be a finite number"):
        kmeans_quantize(torch.randn(4), 2, tol=-1.0)
    with pytest.raises(TypeError, match="Codebook"):
        kmeans_dequantize(torch.zeros(3))
    assert isinstance(kmeans_quantize(torch.randn(4), 1), Codebook)


# --- the one Lloyd loop, as both callers use it ----------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("empty", ["keep", "farthest"])
def test_lloyd_sorted_and_unsorted_values_give_the_same_clustering(seed, empty):
    # Sorted values take the running-sum path, unsorted ones the per-value sums: the same
    # clustering, centroids equal up to float64 rounding.
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.randn(2000, generator=g) * 0.05, torch.randn(50, generator=g)]).double()
    start = torch.linspace(float(x.min()), float(x.max()), 16, dtype=torch.float64)
    perm = torch.randperm(len(x), generator=g)
    xs = x.sort().values
    c_sorted, i_sorted, n_sorted, ok_sorted = lloyd(xs, start, 1000, 0.0, empty)
    c_perm, i_perm, n_perm, ok_perm = lloyd(xs[perm], start, 1000, 0.0, empty)
    assert ok_sorted and ok_perm and n_sorted == n_perm
    assert torch.allclose(c_sorted, c_perm, rtol=0, atol=1e-12)
    assert torch.equal(i_sorted[perm], i_perm)


def test_lloyd_to_a_fixed_point_equals_scikit_learn_from_the_same_start():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3000, generator=g).double() ** 3
    start = _start(x, 8, "k-means++", 2)
    c, index, steps, converged = lloyd(x, start, 10_000, 0.0, "farthest")
    assert converged and steps > 1
    np.testing.assert_allclose(c.numpy(), _sklearn_from(x, start), rtol=0, atol=1e-9)
    assert torch.equal(index, torch.bucketize(x, (c[1:] + c[:-1]) / 2))


def test_kmeans_quantize_is_lloyd_on_the_sorted_weights():
    w = torch.randn(40, 30, generator=torch.Generator().manual_seed(6))
    cb = kmeans_quantize(w, 3, init="k-means++", seed=4)
    x = w.reshape(-1).double()
    c, _, steps, converged = lloyd(x.sort().values, _start(x, 8, "k-means++", 4), 1000, 1e-8,
                                   "farthest")
    assert torch.equal(cb.centroids, c.float()) and (cb.iterations, cb.converged) == (steps,
                                                                                       converged)


def test_an_empty_cluster_keeps_its_centroid_or_takes_the_farthest_value():
    # Levels 0, 1, 2, 3 over values near 0 and 3: the clusters of 1 and 2 are empty.
    x = torch.tensor([0.0, 0.1, 0.2, 2.9, 3.0])
    start = torch.tensor([0.0, 1.0, 2.0, 3.0])
    kept, index, _, converged = lloyd(x, start, empty="keep")
    assert converged and torch.allclose(kept, torch.tensor([0.1, 1.0, 2.0, 2.95]))
    assert index.tolist() == [0, 0, 0, 3, 3]
    moved, index, _, _ = lloyd(x, start, empty="farthest")
    assert len(torch.unique(index)) == 4  # every level serves at least one value


def test_lloyd_stops_by_the_tolerance_rule_or_at_the_cap():
    x = torch.randn(5000, generator=torch.Generator().manual_seed(7)).double() ** 3
    start = torch.linspace(float(x.min()), float(x.max()), 8, dtype=torch.float64)
    _, _, exact_steps, _ = lloyd(x, start, 10_000)
    _, _, loose_steps, loose = lloyd(x, start, 10_000, tol=1e-2)
    _, _, capped_steps, capped = lloyd(x, start, 2)
    assert loose and 1 <= loose_steps < exact_steps
    assert not capped and capped_steps == 2
    with pytest.raises(ValueError, match="empty must be one of"):
        lloyd(x, start, empty="zero")
    with pytest.raises(ValueError, match="x must be 1-D and non-empty"):
        lloyd(x[:0], start)

