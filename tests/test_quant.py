"""Tests of levers.quant: parameters, calibration, quantize/dequantize, fake quant with STE."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers.calibration import choose_qparams_affine
from levers.quant import (
    SCALE_FLOOR,
    QParams,
    QScheme,
    blocks,
    choose_qparams_affine_with_min_max,
    dequantize_affine,
    fake_quantize_affine,
    quantize_affine,
)

FAST = settings(max_examples=60, deadline=None)


@st.composite
def tensors(draw, min_dim=1, max_dim=3):
    """A random float32 tensor with a random shape and magnitude (seeded from hypothesis)."""
    dims = draw(st.integers(min_dim, max_dim))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=dims, max_size=dims)))
    seed = draw(st.integers(0, 2**31 - 1))
    magnitude = draw(st.sampled_from([1e-3, 1.0, 37.0, 1e4]))
    offset = draw(st.sampled_from([0.0, 0.5, -3.0]))
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) + offset) * magnitude


schemes = st.builds(QScheme, bits=st.integers(1, 16), signed=st.booleans(),
                    symmetric=st.booleans())


# --- bit-exact agreement with PyTorch's fake-quant kernels -------------------------------------

@FAST
@given(x=tensors(), scheme=schemes)
def test_fake_quantize_matches_torch_per_tensor(x, scheme):
    qp = choose_qparams_affine(x, scheme)
    ours = fake_quantize_affine(x, qp)
    ref = torch.fake_quantize_per_tensor_affine(x, float(qp.scale), int(qp.zero_point),
                                                scheme.q_min, scheme.q_max)
    assert torch.equal(ours, ref)


@FAST
@given(x=tensors(min_dim=2), bits=st.integers(2, 8), signed=st.booleans(),
       symmetric=st.booleans(), data=st.data())
def test_fake_quantize_matches_torch_per_channel(x, bits, signed, symmetric, data):
    axis = data.draw(st.integers(0, x.dim() - 1))
    qp = choose_qparams_affine(x, QScheme(bits, signed, symmetric, axis=axis))
    ref = torch.fake_quantize_per_channel_affine(x, qp.scale, qp.zero_point, axis,
                                                 qp.q_min, qp.q_max)
    assert torch.equal(fake_quantize_affine(x, qp), ref)


def test_ties_round_half_to_even_like_torch():
    x = torch.arange(-10, 11) * 0.5  # every value a tie at scale 1
    qp = QParams(torch.tensor(1.0), torch.tensor(0, dtype=torch.int32), QScheme(bits=8))
    assert fake_quantize_affine(x, qp)[:4].tolist() == [-5.0, -4.0, -4.0, -4.0]
    assert torch.equal(fake_quantize_affine(x, qp), torch.fake_quantize_per_tensor_affine(
        x, 1.0, 0, -128, 127))


def test_multiplies_by_reciprocal_like_torch():
    # For scale 0.1 these x round differently via x / S and via x · (1/S); PyTorch's kernels
    # take the reciprocal path, and so must we.
    x = torch.tensor([-58.250003814697266, -58.94999694824219, 40.349998474121094,
                      39.349998474121094, -78.94999694824219])
    s = torch.tensor(0.1)
    assert not torch.equal(torch.round(x / s), torch.round(x * (1.0 / s)))
    qp = QParams(s, torch.tensor(3, dtype=torch.int32), QScheme(bits=16))
    ref = torch.fake_quantize_per_tensor_affine(x, 0.1, 3, qp.q_min, qp.q_max)
    assert torch.equal(fake_quantize_affine(x, qp), ref)


# --- error properties ------------------------------------------------------------------------

@FAST
@given(x=tensors(), scheme=schemes)
def test_round_trip_error_at_most_half_step_inside_range(x, scheme):
    qp = choose_qparams_affine(x, scheme)
    err = (dequantize_affine(quantize_affine(x, qp), qp) - x).abs()
    # Half a step, plus float32 rounding of the arithmetic itself.
    assert bool((err <= qp.scale / 2 * (1 + 1e-4) + 1e-6 * x.abs()).all())


@FAST
@given(x=tensors(), scheme=schemes)
def test_saturation_outside_range(x, scheme):
    qp = choose_qparams_affine(x, scheme)
    far = torch.cat([x.reshape(-1) + 1e6 * qp.scale, x.reshape(-1) - 1e6 * qp.scale])
    q = quantize_affine(far, qp).long()
    n = x.numel()
    assert bool((q[:n] == qp.q_max).all()) and bool((q[n:] == qp.q_min).all())


@FAST
@given(x=tensors(min_dim=2), bits=st.integers(2, 8), symmetric=st.booleans(), data=st.data())
def test_per_channel_steps_finer_and_errors_within_own_half_step(x, bits, symmetric, data):
    axis = data.draw(st.integers(0, x.dim() - 1))
    per_tensor = choose_qparams_affine(x, QScheme(bits, symmetric=symmetric))
    per_channel = choose_qparams_affine(x, QScheme(bits, symmetric=symmetric, axis=axis))
    assert bool((per_channel.scale <= per_tensor.scale * (1 + 1e-6)).all())
    err = (fake_quantize_affine(x, per_channel) - x).abs()
    shape = [1] * x.dim()
    shape[axis] = -1
    step = per_channel.scale.reshape(shape)
    assert bool((err <= step / 2 * (1 + 1e-4) + 1e-6 * x.abs()).all())


def test_per_group_scales_shape_and_error():
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(0))
    qp = choose_qparams_affine(x, QScheme(bits=4, axis=0, group_size=3))
    assert qp.scale.shape == (4, 4)
    err = (fake_quantize_affine(x, qp) - x).abs()
    assert bool((err <= qp.scale.repeat_interleave(3, dim=1) / 2 * (1 + 1e-5)).all())
    assert torch.equal(blocks(x, qp.scheme), x.reshape(16, 3))


def test_noise_variance_is_step_squared_over_twelve():
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(1)) * 2 - 1
    qp = choose_qparams_affine(x, QScheme(bits=6))
    variance = float((fake_quantize_affine(x, qp) - x).var())
    assert variance == pytest.approx(float(qp.scale) ** 2 / 12, rel=0.02)


# --- parameters and calibration ---------------------------------------------------------------

def test_affine_zero_is_exact_and_range_maps_to_grid():
    x = torch.tensor([0.2, 0.5, 1.0])  # range widened to contain 0
    qp = choose_qparams_affine(x, QScheme(bits=8, signed=False, symmetric=False))
    assert float(dequantize_affine(quantize_affine(torch.tensor([0.0]), qp), qp)) == 0.0
    assert quantize_affine(torch.tensor([0.0, 1.0]), qp).tolist() == [0, 255]


def test_symmetric_unsigned_zero_point_mid_grid():
    qp = choose_qparams_affine(torch.tensor([-1.0, 2.0]), QScheme(bits=8, signed=False))
    assert int(qp.zero_point) == 128


def test_clipping_example_loses_negative_weight():
    w = torch.tensor([1.0, 0.5, -1.5, 0.0])
    qp = choose_qparams_affine_with_min_max(torch.tensor(0.0), torch.tensor(1.0),
                        QScheme(bits=8, signed=False, symmetric=False))
    assert fake_quantize_affine(w, qp)[2] == 0.0  # −1.5 is clipped to 0: an error of 1.5
    symmetric = choose_qparams_affine(w, QScheme(bits=8))
    worst = float((fake_quantize_affine(w, symmetric) - w).abs().max())
    assert worst <= float(symmetric.scale) / 2 * 1.0001


@pytest.mark.parametrize("axis", [None, 0])
def test_zero_range_uses_scale_floor_and_returns_zeros(axis):
    w = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    w[1] = 0.0  # a pruned row
    for x in (torch.zeros(3, 5), w):
        for symmetric in (True, False):
            qp = choose_qparams_affine(x, QScheme(bits=4, symmetric=symmetric, axis=axis))
            assert bool((qp.scale >= SCALE_FLOOR).all())
            out = fake_quantize_affine(x, qp)
            assert bool((out[x == 0] == 0).all())
    assert float(choose_qparams_affine(w, QScheme(bits=4, axis=0)).scale[1]) == SCALE_FLOOR


def test_percentile_clips_outlier_and_mse_beats_minmax():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10_000, generator=g)
    x[0] = 100.0
    scheme = QScheme(bits=4)
    minmax = choose_qparams_affine(x, scheme)
    pct = choose_qparams_affine(x, scheme, "percentile", percentile=99.9)
    mse = choose_qparams_affine(x, scheme, "mse")
    assert float(pct.scale) < float(minmax.scale) / 10

    def err(qp):
        return float((fake_quantize_affine(x, qp) - x).pow(2).mean())

    assert err(mse) < err(minmax)
    assert err(mse) <= err(pct) * 1.05


def test_mse_per_channel_shapes():
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    qp = choose_qparams_affine(x, QScheme(bits=3, axis=1), "mse", grid=20)
    assert qp.scale.shape == (7,) and qp.zero_point.dtype == torch.int32


def test_integer_dtypes():
    x = torch.randn(10)
    for scheme, dtype in ((QScheme(bits=8), torch.int8), (QScheme(4, False), torch.uint8),
                          (QScheme(bits=12), torch.int16), (QScheme(16, False), torch.int32)):
        assert quantize_affine(x, choose_qparams_affine(x, scheme)).dtype == dtype


def test_dequantize_per_channel_round_trip_of_integers():
    q = torch.randint(-8, 8, (3, 4), dtype=torch.int8)
    qp = choose_qparams_affine(torch.randn(3, 4), QScheme(bits=4, axis=0))
    assert torch.equal(quantize_affine(dequantize_affine(q, qp), qp), q)


# --- straight-through estimator ----------------------------------------------------------------

def test_ste_gradient_is_identity_inside_and_zero_outside():
    qp = QParams(torch.tensor(0.1), torch.tensor(0, dtype=torch.int32), QScheme(bits=4))
    x = torch.tensor([-2.0, -0.33, 0.0, 0.41, 0.7, 5.0], requires_grad=True)
    (fake_quantize_affine(x, qp) * torch.arange(1.0, 7.0)).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 0.0]


def test_ste_gradient_matches_torch():
    x = torch.randn(50, generator=torch.Generator().manual_seed(3)) * 2
    qp = choose_qparams_affine(x[:10], QScheme(bits=4))
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    fake_quantize_affine(a, qp).pow(2).sum().backward()
    torch.fake_quantize_per_tensor_affine(b, float(qp.scale), 0, -8, 7).pow(2).sum().backward()
    assert torch.equal(a.grad, b.grad)


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [0, 17, -1, 2.0, True])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="bits must be an int in \\[1, 16\\]"):
        QScheme(bits=bits)


@pytest.mark.parametrize("scale", [0.0, -0.5, math.nan, math.inf])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        QParams(torch.tensor(scale), torch.tensor(0, dtype=torch.int32), QScheme())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input(bad):
    x = torch.tensor([0.0, bad])
    qp = QParams(torch.tensor(0.1), torch.tensor(0, dtype=torch.int32), QScheme())
    for fn in (lambda: choose_qparams_affine(x, QScheme()), lambda: quantize_affine(x, qp),
               lambda: fake_quantize_affine(x, qp)):
        with pytest.raises(ValueError, match="must be finite"):
            fn()


def test_wrong_axis_and_types():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="axis must be in \\[-2, 1\\]"):
        choose_qparams_affine(x, QScheme(axis=2))
    with pytest.raises(TypeError, match="axis must be an int"):
        QScheme(axis=0.5)
    qp = choose_qparams_affine(x, QScheme(axis=0))
    with pytest.raises(ValueError, match="one scale per block of x \\(4 under"):
        quantize_affine(x.T.contiguous(), qp)
    with pytest.raises(TypeError, match="floating-point tensor"):
        quantize_affine(torch.ones(3, dtype=torch.int64),
                        choose_qparams_affine(torch.ones(3), QScheme()))
    with pytest.raises(TypeError, match="must be a tensor of an integer dtype"):
        dequantize_affine(torch.ones(3), choose_qparams_affine(torch.ones(3), QScheme()))
    with pytest.raises(TypeError, match="qp must be a levers.quant.QParams"):
        quantize_affine(x, (1.0, 0))


def test_bad_calibration_arguments():
    x = torch.randn(8)
    with pytest.raises(ValueError, match="method must be one of"):
        choose_qparams_affine(x, QScheme(), method="max")
    with pytest.raises(ValueError, match="percentile must be a finite number in"):
        choose_qparams_affine(x, QScheme(), method="percentile", percentile=30)
    with pytest.raises(ValueError, match="group_size must be None when axis is None"):
        QScheme(group_size=4)
    with pytest.raises(ValueError, match="scheme.group_size must be a divisor of the 6 values"):
        choose_qparams_affine(torch.randn(2, 6), QScheme(axis=0, group_size=4))
    with pytest.raises(ValueError, match="lo must be <= hi"):
        choose_qparams_affine_with_min_max(torch.tensor(1.0), torch.tensor(0.0), QScheme())
    with pytest.raises(ValueError, match="x must be a non-empty tensor"):
        choose_qparams_affine(torch.zeros(0), QScheme())
