"""Tests for levers.mx: e8m0 against ml_dtypes, MX blocks against a brute-force reading of §6.3."""

import math

import numpy as np
import pytest
import torch

from levers import bits, mx
from levers import formats as fm

ml_dtypes = pytest.importorskip("ml_dtypes")
ELEMENTS = [fm.FP8_E4M3, fm.FP8_E5M2, fm.FP6_E3M2, fm.FP6_E2M3, fm.FP4_E2M1]


def test_e8m0_decodes_every_code_as_ml_dtypes():
    codes = np.arange(256, dtype=np.uint8)
    expected = codes.view(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    ours = mx.e8m0_decode(torch.from_numpy(codes.astype(np.int64))).numpy()
    assert np.array_equal(ours, expected, equal_nan=True)


def test_e8m0_encodes_as_ml_dtypes():
    gen = torch.Generator().manual_seed(0)
    bits = torch.randint(-(2**31), 2**31 - 1, (200_000,), generator=gen, dtype=torch.int64)
    powers = torch.ldexp(torch.ones(300, dtype=torch.float64), torch.arange(-150, 150))
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1.5, 1.4999999, 2.0**-127,
                            2.0**-140, 1.5 * 2.0**127, 1.4999 * 2.0**127])
    x = torch.cat([bits.to(torch.int32).view(torch.float32), powers.float(),
                   (powers * 1.5).float(), torch.nextafter(powers * 1.5, powers).float(), special])
    with np.errstate(over="ignore", invalid="ignore"):
        expected = x.numpy().astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    assert np.array_equal(mx.e8m0_encode(x).numpy(), expected)


def brute_force_block(values, fmt):
    """OCP MX v1.0 §6.3 with Python floats: floor(log2 amax) - emax, nearest element, clamp."""
    amax = max(abs(v) for v in values)
    shared = -127 if amax == 0 else math.floor(math.log2(amax)) - fmt.max_exponent
    shared = min(max(shared, -127), 127)
    table = bits.representable_values(fmt).double().numpy()  # ascending; index parity = code parity
    out = []
    for v in values:
        t = min(max(v / 2.0**shared, -fmt.max), fmt.max)
        i = int(np.argmin(np.abs(table - t)))
        ties = np.flatnonzero(np.abs(table - t) == abs(table[i] - t))
        positive_code = [abs(int(j) - (len(table) - 1) // 2) for j in ties]
        out.append(float(table[ties[[c % 2 for c in positive_code].index(0)]]
                         if len(ties) > 1 else table[i]))
    return shared, out


@pytest.mark.parametrize("fmt", ELEMENTS, ids=lambda f: f.name)
def test_mx_quantize_matches_brute_force(fmt):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 40, generator=gen) * torch.logspace(-6, 6, 7)[:, None]
    x[0, :32] = 0.0  # an all-zero block
    x[1, 5] = 2.0**-130  # subnormal float32 in a block
    code, elements = mx.mx_quantize(x, fmt)
    assert code.dtype == torch.uint8 and elements.shape == (14, 32)
    blocks = torch.nn.functional.pad(x, (0, 24)).reshape(14, 32)
    for b in range(14):
        shared, expected = brute_force_block(blocks[b].tolist(), fmt)
        assert int(code[b]) == shared + 127
        assert elements[b].tolist() == expected, (fmt.name, b)


def test_mx_round_trip_shape_scale_rule_and_saturation():
    x = torch.tensor([[6.0, 0.5, -3.0, 0.1], [7.0, 1.0, 0.0, 0.0]])
    code, p = mx.mx_quantize(x, fm.FP4_E2M1, block_size=4)
    assert mx.e8m0_decode(code).tolist() == [1.0, 1.0]  # floor(log2 6) = floor(log2 7) = 2 = emax
    assert p[1].tolist() == [6.0, 1.0, 0.0, 0.0]  # 7 saturates at the element max 6
    y = mx.mx_round(torch.randn(3, 50), fm.FP8_E4M3)
    assert y.shape == (3, 50)
    assert mx.mx_dequantize(code, p, x.shape).tolist() == [[6.0, 0.5, -3.0, 0.0],
                                                           [6.0, 1.0, 0.0, 0.0]]


def test_mx_error_is_relative_to_the_block_maximum():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 32, generator=gen) * torch.logspace(-20, 20, 64)[:, None]
    err = (mx.mx_round(x, fm.FP8_E4M3) - x).abs().amax(1) / x.abs().amax(1)
    # amax / X lies in [256, 512) and e4m3 stops at 448: the floor rule clips up to 1/8 of amax,
    # more than the half ULP (1/16 of 2^8) that rounding alone would cost.
    assert float(err.max()) <= 0.125 and float(err.max()) > 2.0**-4


def test_bits_per_element():
    assert mx.mx_bits_per_element(fm.FP4_E2M1) == 4.25
    assert mx.mx_bits_per_element(fm.FP6_E3M2) == 6.25
    assert mx.mx_bits_per_element(fm.FP8_E4M3, block_size=16) == 8.5


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [(lambda: mx.mx_quantize(torch.tensor([1.0, math.nan]), fm.FP4_E2M1), ValueError, "finite"),
     (lambda: mx.mx_quantize(torch.tensor([1, 2]), fm.FP4_E2M1), TypeError, "float32"),
     (lambda: mx.mx_quantize(torch.ones(4), "fp4"), TypeError, "FloatFormat"),
     (lambda: mx.mx_quantize(torch.ones(4), fm.FP4_E2M1, block_size=0), ValueError,
      "block_size"),
     (lambda: mx.e8m0_decode(torch.tensor([256])), ValueError, r"\[0, 255\]"),
     (lambda: mx.e8m0_decode(torch.tensor([1.0])), TypeError, "integer"),
     (lambda: mx.e8m0_encode(torch.tensor([1.0], dtype=torch.float64)), TypeError, "float32"),
     (lambda: mx.mx_dequantize(torch.zeros(2, dtype=torch.uint8), torch.zeros(3, 4), (12,)),
      ValueError, "one scale code per block"),
     (lambda: mx.mx_bits_per_element(fm.INT8), TypeError, "FloatFormat")],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
