"""Tests of levers.kmeans: codebook + index weight sharing."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers.calibration import choose_qparams_affine
from levers.encode import codebook_bytes
from levers.kmeans import Codebook, kmeans_dequantize, kmeans_quantize
from levers.quant import QScheme, fake_quantize_affine


def test_an_empty_cluster_keeps_its_centroid():
    # Initial levels 0, 10/3, 20/3, 10: the middle two attract no weight and must stay put
    # (setting them to 0 would break the sorted order and the midpoint assignment).
    cb = kmeans_quantize(torch.tensor([0.0, 0.0, 0.0, 10.0]), bits=2)
    assert cb.centroids.tolist() == torch.linspace(0.0, 10.0, 4).tolist()
    assert cb.indices.tolist() == [0, 0, 0, 3]
    assert torch.equal(kmeans_dequantize(cb), torch.tensor([0.0, 0.0, 0.0, 10.0]))


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
    with pytest.raises(TypeError, match="Codebook"):
        kmeans_dequantize(torch.zeros(3))
    assert isinstance(kmeans_quantize(torch.randn(4), 1), Codebook)
