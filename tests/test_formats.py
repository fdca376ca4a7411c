"""Tests for levers.formats: format properties, bit fields, and rounding that matches torch."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers import bits
from levers import formats as fm
from levers.formats import BF16, FP8_E4M3, FP8_E5M2, FP16, FP32, FloatFormat, IntFormat

TORCH_FORMATS = [FP16, BF16, FP8_E4M3, FP8_E5M2]
# Formats torch has no dtype for, checked against a brute-force nearest-value oracle.
CUSTOM_FORMATS = [
    FloatFormat("e3m2", 3, 2),
    FloatFormat("e2m1", 2, 1),
    FloatFormat("e4m3fn_nonsat", 4, 3, has_inf=False),  # OCP non-saturating: overflow -> NaN
    FloatFormat("e5m2_sat", 5, 2, saturate=True),
    FloatFormat("e3m4fn_sat", 3, 4, has_inf=False, saturate=True),
    FloatFormat("e4m1fn", 4, 1, has_inf=False),
]
ALL_FORMATS = TORCH_FORMATS + [FP32] + CUSTOM_FORMATS

floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
bit_patterns = st.integers(-(2**31), 2**31 - 1)
fast = settings(max_examples=100, deadline=None)  # for the comparisons with torch
light = settings(max_examples=40, deadline=None)  # for properties run over many formats


def by_name(fmt):
    return fmt.name


def torch_cast(x, fmt):
    return x.to(fmt.torch_dtype).to(torch.float32)


def f32(values):
    return torch.tensor(values, dtype=torch.float32)


def from_bits(patterns):
    return torch.tensor(patterns, dtype=torch.int32).view(torch.float32)


def assert_same_bits(actual, expected, x):
    """Equal float32 bit patterns (so -0.0 != +0.0), any NaN equal to any NaN."""
    same = (actual.view(torch.int32) == expected.view(torch.int32)) | (
        actual.isnan() & expected.isnan()
    )
    bad = (~same).nonzero().flatten()[:5]
    assert same.all(), (
        f"inputs {x[bad].tolist()} gave {actual[bad].tolist()}, expected {expected[bad].tolist()}"
    )


def next_up(x):
    return np.nextafter(np.float32(x), np.float32(np.inf)).item()


def next_down(x):
    return np.nextafter(np.float32(x), np.float32(-np.inf)).item()


def edge_values(fmt):
    """Ties, near-ties, range ends and special values of ``fmt``, both signs."""
    eps, tiny = fmt.eps, fmt.smallest_subnormal
    top_ulp = 2.0 ** (fmt.max_exponent - fmt.mantissa_bits)
    threshold = fmt.max + top_ulp / 2  # halfway between max and the next (missing) value
    ties = [1 + eps / 2, 1 + 3 * eps / 2, tiny / 2, 1.5 * tiny, 2.5 * tiny, threshold,
            fmt.smallest_normal - tiny / 2]
    near = [v for t in ties for v in (next_down(t), next_up(t))]
    ends = [fmt.max, next_up(fmt.max), 2 * fmt.max, fmt.smallest_normal, tiny, 1.0, 0.0, math.inf,
            3e38, 1e-45]
    values = ties + near + ends
    return f32(values + [-v for v in values] + [math.nan, -math.nan])


# --- rounding agrees with torch's casts --------------------------------------------------------


@pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=by_name)
@fast
@given(values=st.lists(floats32, min_size=1, max_size=64))
def test_round_matches_torch_on_random_floats(fmt, values):
    x = f32(values)
    assert_same_bits(fm.round_to_format(x, fmt), torch_cast(x, fmt), x)


@pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=by_name)
@fast
@given(patterns=st.lists(bit_patterns, min_size=1, max_size=64))
def test_round_matches_torch_on_random_bit_patterns(fmt, patterns):
    x = from_bits(patterns)
    assert_same_bits(fm.round_to_format(x, fmt), torch_cast(x, fmt), x)


@pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=by_name)
def test_round_matches_torch_on_every_exponent_and_tie_position(fmt):
    # Every upper half-word (all signs, exponents, leading mantissa bits) with lower half-words
    # that put fp16/bf16 on, just above and just below a tie; fp8 ties lie in the upper half.
    upper = torch.arange(2**16, dtype=torch.int64) << 16
    lower = [0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x5555]
    patterns = torch.cat([upper | low for low in lower])
    patterns = torch.where(patterns >= 2**31, patterns - 2**32, patterns)  # as signed int32
    x = patterns.to(torch.int32).view(torch.float32)
    assert_same_bits(fm.round_to_format(x, fmt), torch_cast(x, fmt), x)


@pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=by_name)
def test_round_matches_torch_on_edge_values(fmt):
    x = edge_values(fmt)
    assert_same_bits(fm.round_to_format(x, fmt), torch_cast(x, fmt), x)


@pytest.mark.parametrize("fmt", TORCH_FORMATS + [FP32], ids=by_name)
def test_ties_round_to_even(fmt):
    eps, tiny = fmt.eps, fmt.smallest_subnormal
    x = f32([1 + eps / 2, 1 + 3 * eps / 2, next_up(1 + eps / 2), tiny / 2, 1.5 * tiny, 2.5 * tiny,
             -tiny / 2, next_up(tiny / 2)])
    expected = f32([1.0, 1 + 2 * eps, 1 + eps, 0.0, 2 * tiny, 2 * tiny, -0.0, tiny])
    if fmt is FP32:  # float32 rounding to itself changes nothing
        expected = x
    assert_same_bits(fm.round_to_format(x, fmt), expected, x)


@pytest.mark.parametrize("fmt", [FP16, BF16, FP8_E5M2], ids=by_name)
def test_ieee_formats_overflow_to_inf_from_the_rounding_threshold(fmt):
    threshold = fmt.max + 2.0 ** (fmt.max_exponent - fmt.mantissa_bits) / 2
    x = f32([fmt.max, next_down(threshold), threshold, -threshold, math.inf])
    expected = f32([fmt.max, fmt.max, math.inf, -math.inf, math.inf])
    assert_same_bits(fm.round_to_format(x, fmt), expected, x)


def test_e4m3fn_saturates_like_torch_even_for_inf():
    # torch 2.13's float8_e4m3fn cast saturates every overflow, ±inf included, to ±448; only NaN
    # stays NaN. The threshold 464 is a tie whose even neighbour is 448, not the NaN code 480.
    x = f32([464.0, 465.0, 479.9, 480.0, 1e30, math.inf, -math.inf, math.nan])
    expected = f32([448.0] * 6 + [-448.0, math.nan])
    assert_same_bits(torch_cast(x, FP8_E4M3), expected, x)
    assert_same_bits(fm.round_to_format(x, FP8_E4M3), expected, x)
    assert FP8_E4M3.overflow == "saturate" and FP8_E5M2.overflow == "inf"


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_name)
def test_signed_zero_inf_and_nan_are_kept(fmt):
    x = f32([0.0, -0.0, math.inf, -math.inf, math.nan])
    r = fm.round_to_format(x, fmt)
    assert r[:2].view(torch.int32).tolist() == x[:2].view(torch.int32).tolist()
    if fmt.overflow == "inf":
        assert r[2:4].tolist() == [math.inf, -math.inf]
    assert r[4].isnan()


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_name)
@light
@given(values=st.lists(floats32, min_size=1, max_size=32))
def test_round_is_idempotent_and_monotone(fmt, values):
    x = f32(sorted(v for v in values if not math.isnan(v)) or [0.0])
    r = fm.round_to_format(x, fmt)
    assert_same_bits(fm.round_to_format(r, fmt), r, x)
    ordered = r[~r.isnan()]  # overflow may give NaN in formats without inf
    assert (ordered[1:] >= ordered[:-1]).all()


def test_round_keeps_shape_and_input():
    x = torch.linspace(-3, 3, 12).reshape(3, 4).t()  # non-contiguous on purpose
    before = x.clone()
    r = fm.round_to_format(x, "bf16")
    assert r.shape == x.shape and r.dtype == torch.float32
    assert torch.equal(x, before)
    assert torch.equal(r, torch_cast(x, BF16))


# --- an independent oracle for formats torch lacks --------------------------------------------


def reference_round(values, fmt):
    """Nearest value by brute force over the textbook value formula; ties to the even code."""
    e, m, bias = fmt.exponent_bits, fmt.mantissa_bits, fmt.bias
    positive = []
    for code in range(2 ** (e + m)):
        big_e, mant = divmod(code, 2**m)
        if code > fmt.max_code:
            break
        positive.append(mant * 2.0 ** (1 - bias - m) if big_e == 0
                        else (1 + mant / 2**m) * 2.0 ** (big_e - bias))
    positive.append(fmt.max + 2.0 ** (fmt.max_exponent - m))  # the missing next value
    positive = np.array(positive)
    overflow = {"inf": math.inf, "saturate": fmt.max, "nan": math.nan}[fmt.overflow]
    out = []
    for v in values:
        a = abs(v)
        if math.isnan(v):
            out.append(math.nan)
            continue
        if math.isinf(a):
            r = math.inf if fmt.overflow == "inf" else overflow
        else:
            hi = min(int(np.searchsorted(positive, a)), len(positive) - 1)
            lo = max(hi - 1, 0)
            d_lo, d_hi = a - positive[lo], positive[hi] - a
            code = lo if d_lo < d_hi or (d_lo == d_hi and lo % 2 == 0) else hi
            if a > positive[-1]:
                code = len(positive) - 1
            r = overflow if code == len(positive) - 1 else positive[code]
        out.append(math.copysign(r, v) if not math.isnan(r) else r)
    return f32(out)


@pytest.mark.parametrize("fmt", CUSTOM_FORMATS + TORCH_FORMATS[2:], ids=by_name)
@light
@given(values=st.lists(floats32, min_size=1, max_size=32))
def test_round_matches_brute_force_nearest(fmt, values):
    x = f32(values)
    assert_same_bits(fm.round_to_format(x, fmt), reference_round(x.tolist(), fmt), x)


@pytest.mark.parametrize("fmt", CUSTOM_FORMATS, ids=by_name)
def test_round_matches_brute_force_on_edge_values(fmt):
    x = edge_values(fmt)
    assert_same_bits(fm.round_to_format(x, fmt), reference_round(x.tolist(), fmt), x)


# --- format properties -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "bits", "bias", "max_", "eps", "smallest_normal", "smallest_subnormal"),
    [
        (FP32, 32, 127, 3.4028234663852886e38, 2**-23, 2**-126, 2**-149),
        (FP16, 16, 15, 65504.0, 2**-10, 2**-14, 2**-24),
        (BF16, 16, 127, 3.3895313892515355e38, 2**-7, 2**-126, 2**-133),
        (FP8_E4M3, 8, 7, 448.0, 2**-3, 2**-6, 2**-9),
        (FP8_E5M2, 8, 15, 57344.0, 2**-2, 2**-14, 2**-16),
    ],
    ids=lambda v: v.name if isinstance(v, FloatFormat) else "",
)
def test_float_format_properties(fmt, bits, bias, max_, eps, smallest_normal, smallest_subnormal):
    assert (fmt.bits, fmt.bias, fmt.max, fmt.eps) == (bits, bias, max_, eps)
    assert (fmt.smallest_normal, fmt.smallest_subnormal) == (smallest_normal, smallest_subnormal)
    info = torch.finfo(fmt.torch_dtype)
    assert (fmt.bits, fmt.max, fmt.eps, fmt.smallest_normal) == (
        info.bits, info.max, info.eps, info.smallest_normal)
    one_ulp = torch.tensor([1], dtype=torch.int32 if bits == 32 else torch.int16 if bits == 16
                           else torch.int8).view(fmt.torch_dtype)
    assert one_ulp.float().item() == fmt.smallest_subnormal  # bit pattern 0...01


def test_custom_format_properties():
    e3m2, e4m1 = CUSTOM_FORMATS[0], CUSTOM_FORMATS[-1]
    assert (e3m2.bias, e3m2.max, e3m2.smallest_subnormal, e3m2.overflow) == (3, 14.0, 0.0625, "inf")
    # e4m1fn: S.1111.1 is the NaN, so the largest is 1.0 * 2^(15 - 7).
    assert (e4m1.max, e4m1.max_exponent, e4m1.eps, e4m1.overflow) == (256.0, 8, 0.5, "nan")


def test_int_formats():
    assert [(f.name, f.min, f.max) for f in (fm.INT8, fm.INT4, fm.UINT8)] == [
        ("int8", -128, 127), ("int4", -8, 7), ("uint8", 0, 255)]
    for f, dtype in ((fm.INT8, torch.int8), (fm.UINT8, torch.uint8)):
        assert (f.min, f.max) == (torch.iinfo(dtype).min, torch.iinfo(dtype).max)
    assert (IntFormat(1).min, IntFormat(1).max) == (-1, 0)
    assert IntFormat(32, signed=False).max == 2**32 - 1


def test_formats_dict_and_frozen():
    assert set(fm.FORMATS) == {"fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "int8", "int4",
                               "uint8", "fp8_e4m3fnuz", "fp8_e5m2fnuz", "fp6_e3m2", "fp6_e2m3",
                               "fp4_e2m1"}
    assert all(name == f.name for name, f in fm.FORMATS.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        FP16.mantissa_bits = 3


# --- representable values and spacing ---------------------------------------------------------


@pytest.mark.parametrize(("fmt", "count"), [(FP16, 63487), (BF16, 65279), (FP8_E4M3, 253),
                                            (FP8_E5M2, 247)], ids=["fp16", "bf16", "e4m3", "e5m2"])
def test_representable_values_are_torch_dtype_values(fmt, count):
    int_dtype = torch.int16 if fmt.bits == 16 else torch.int8
    every_pattern = torch.arange(-(2 ** (fmt.bits - 1)), 2 ** (fmt.bits - 1)).to(int_dtype)
    torch_values = every_pattern.view(fmt.torch_dtype).float()
    expected = torch.unique(torch_values[torch.isfinite(torch_values)])  # sorted, one zero
    values = bits.representable_values(fmt)
    assert len(values) == count
    assert torch.equal(values, expected)
    assert_same_bits(fm.round_to_format(values, fmt), values, values)


@pytest.mark.parametrize("fmt", TORCH_FORMATS + CUSTOM_FORMATS, ids=by_name)
def test_spacing_is_the_gap_between_representable_values(fmt):
    values = bits.representable_values(fmt)
    positive = values[values >= 0]
    gaps = positive[1:] - positive[:-1]
    assert torch.equal(bits.spacing(positive[:-1], fmt), gaps)
    assert torch.equal(bits.spacing(-positive[:-1], fmt), gaps)


def test_spacing_values():
    x = f32([0.0, 1.0, 1000.0, 65504.0, 65535.0, 65536.0, math.inf, math.nan])
    expected = [2**-24, 2**-10, 0.5, 32.0, 32.0, math.inf]
    s = bits.spacing(x, FP16)
    assert s[:6].tolist() == expected and s[6:].isnan().all()
    assert bits.spacing(f32([1.0]), "bf16").item() == BF16.eps
    v = np.float32([1e-45, 1e-40, 1.0, 3e38])  # float32 spacing equals numpy's
    assert bits.spacing(torch.from_numpy(v), FP32).tolist() == np.spacing(v).tolist()


# --- bit fields --------------------------------------------------------------------------------


def test_decompose_known_fields():
    x = f32([1.0, -2.5, 65504.0, 2**-24, -0.0, math.inf, math.nan])
    s, e, m = bits.decompose(x, FP16)
    assert s.dtype == e.dtype == m.dtype == torch.int64
    assert list(zip(s.tolist(), e.tolist(), m.tolist(), strict=True)) == [
        (0, 15, 0), (1, 16, 256), (0, 30, 1023), (0, 0, 1), (1, 0, 0), (0, 31, 0), (0, 31, 1023)]
    s, e, m = bits.decompose(f32([448.0, math.inf, math.nan]), FP8_E4M3)
    assert (e.tolist(), m.tolist()) == ([15, 15, 15], [6, 6, 7])  # inf saturates to 448


@pytest.mark.parametrize("fmt", TORCH_FORMATS, ids=by_name)
@fast
@given(patterns=st.lists(bit_patterns, min_size=1, max_size=64))
def test_decompose_matches_torch_stored_bits(fmt, patterns):
    x = from_bits(patterns)
    x = x[~x.isnan()]  # torch's NaN bit patterns vary (bf16 NaN is 0xFFFF); NaN is tested above
    int_dtype = torch.int16 if fmt.bits == 16 else torch.uint8
    code = x.to(fmt.torch_dtype).view(int_dtype).to(torch.int64) & (2**fmt.bits - 1)
    m = fmt.mantissa_bits
    s, e, mant = bits.decompose(x, fmt)
    assert torch.equal(s, code >> (fmt.bits - 1))
    assert torch.equal(e, (code >> m) & (2**fmt.exponent_bits - 1))
    assert torch.equal(mant, code & (2**m - 1))


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=by_name)
@light
@given(patterns=st.lists(bit_patterns, min_size=1, max_size=64))
def test_compose_inverts_decompose(fmt, patterns):
    x = from_bits(patterns)
    assert_same_bits(bits.compose(*bits.decompose(x, fmt), fmt), fm.round_to_format(x, fmt), x)


def test_bit_string():
    assert bits.bit_string(1.0, "fp16") == "0 01111 0000000000"
    assert bits.bit_string(-2.5, BF16) == "1 10000000 0100000"
    assert bits.bit_string(3.0, FP32) == "0 10000000 10000000000000000000000"
    assert bits.bit_string(1000, FP8_E4M3) == "0 1111 110"  # saturated to 448
    assert bits.bit_string(-0.0, FP8_E5M2) == "1 00000 00"
    assert bits.bit_string(3.0, CUSTOM_FORMATS[-1]) == "0 1000 1"


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: fm.round_to_format(torch.tensor([1, 2]), FP16), TypeError, "float32.*int64"),
        (lambda: fm.round_to_format(torch.tensor([1.0], dtype=torch.float64), FP16), TypeError,
         "float32"),
        (lambda: fm.round_to_format([1.0], FP16), TypeError, r"torch.Tensor, got \[1.0\] \(list\)"),
        (lambda: fm.round_to_format(f32([1.0]), "fp7"), ValueError,
         r"fmt must be a FloatFormat or the name of one in \['fp32', .*got 'fp7'"),
        (lambda: fm.round_to_format(f32([1.0]), "int8"), TypeError, "FloatFormat"),
        (lambda: fm.round_to_format(f32([1.0]), 16), TypeError, "FloatFormat"),
        (lambda: bits.spacing(torch.tensor([1.0], dtype=torch.float16), FP16), TypeError,
         "float32"),
        (lambda: bits.decompose(torch.tensor([1]), FP16), TypeError, "float32"),
        (lambda: bits.representable_values(FP32), ValueError, "at most 16 bits"),
        (lambda: bits.bit_string("1.0", FP16), TypeError, "value must be a float"),
        (lambda: bits.bit_string(True, FP16), TypeError, "value must be a float"),
        (lambda: bits.compose(f32([0]), torch.tensor([1]), torch.tensor([0]), FP16), TypeError,
         "sign must be a tensor of an integer dtype"),
        (lambda: bits.compose(torch.tensor([0]), torch.tensor([32]), torch.tensor([0]), FP16),
         ValueError, r"exponent must hold values in \[0, 31\]"),
        (lambda: bits.compose(torch.tensor([0]), torch.tensor([1]), torch.tensor([-1]), FP16),
         ValueError, r"mantissa must hold values in \[0, 1023\]"),
        (lambda: FloatFormat("x", 0, 3), ValueError, r"exponent_bits must be in \[2, 8\]"),
        (lambda: FloatFormat("x", 9, 3), ValueError, "exponent_bits.*got 9"),
        (lambda: FloatFormat("x", 4, -1), ValueError, r"mantissa_bits must be in \[1, 23\]"),
        (lambda: FloatFormat("x", 4, 0), ValueError, "mantissa_bits.*got 0"),
        (lambda: FloatFormat("x", 8, 24), ValueError, "mantissa_bits.*got 24"),
        (lambda: FloatFormat("x", 4.0, 3), TypeError, "exponent_bits must be an int"),
        (lambda: FloatFormat("x", True, 3), TypeError, "exponent_bits must be an int"),
        (lambda: FloatFormat("x", 8, 3, has_inf=False), ValueError, "exceeds float32"),
        (lambda: FloatFormat("x", 4, 3, has_inf="no"), TypeError, "has_inf must be a bool"),
        (lambda: FloatFormat("", 4, 3), TypeError, "name must be a non-empty str"),
        (lambda: IntFormat(0), ValueError, r"bits must be in \[1, 32\], got 0"),
        (lambda: IntFormat(33), ValueError, "got 33"),
        (lambda: IntFormat(8.0), TypeError, "bits must be an int"),
        (lambda: IntFormat(8, signed=1), TypeError, "signed must be a bool"),
    ],
)
def test_bad_input_raises_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- bit for bit against ml_dtypes, the outside oracle for every format it shares ------------

ml_dtypes = pytest.importorskip("ml_dtypes")

# ml_dtypes casts never saturate: e4m3fn overflow becomes NaN there. The book's FP8_E4M3 follows
# PyTorch (saturating); its non-saturating twin must match ml_dtypes everywhere.
ML_DTYPES = {
    FP16: np.float16,
    BF16: ml_dtypes.bfloat16,
    dataclasses.replace(FP8_E4M3, saturate=False): ml_dtypes.float8_e4m3fn,
    FP8_E5M2: ml_dtypes.float8_e5m2,
    fm.FP8_E4M3FNUZ: ml_dtypes.float8_e4m3fnuz,
    fm.FP8_E5M2FNUZ: ml_dtypes.float8_e5m2fnuz,
    fm.FP6_E3M2: ml_dtypes.float6_e3m2fn,
    fm.FP6_E2M3: ml_dtypes.float6_e2m3fn,
    fm.FP4_E2M1: ml_dtypes.float4_e2m1fn,
}
ML_FORMATS = list(ML_DTYPES)


def ml_cast(x, fmt):
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is what some tests probe
        return torch.from_numpy(x.numpy().astype(ML_DTYPES[fmt]).astype(np.float32))


def every_exponent_and_tie(fmt):
    """All upper half-words of float32 with low half-words at, above and below ties (655,360)."""
    upper = torch.arange(2**16, dtype=torch.int64) << 16
    lower = [0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x5555]
    patterns = torch.cat([upper | low for low in lower])
    patterns = torch.where(patterns >= 2**31, patterns - 2**32, patterns)
    return torch.cat([patterns.to(torch.int32).view(torch.float32), edge_values(fmt)])


def agreement(fmt, x):
    """Bits equal to ml_dtypes; formats without NaN code are compared on non-NaN input only."""
    if not fmt.has_nan:  # ml_dtypes turns NaN into -0 there; the library keeps NaN (tested below)
        x = x[~x.isnan()]
    assert_same_bits(fm.round_to_format(x, fmt), ml_cast(x, fmt), x)
    return len(x)


@pytest.mark.parametrize("fmt", ML_FORMATS, ids=by_name)
def test_round_matches_ml_dtypes_on_every_exponent_and_tie(fmt):
    assert agreement(fmt, every_exponent_and_tie(fmt)) > 650_000


@pytest.mark.parametrize("fmt", ML_FORMATS, ids=by_name)
@fast
@given(patterns=st.lists(bit_patterns, min_size=1, max_size=64))
def test_round_matches_ml_dtypes_on_random_bit_patterns(fmt, patterns):
    agreement(fmt, from_bits(patterns))


@pytest.mark.parametrize("fmt", ML_FORMATS, ids=by_name)
def test_every_code_decodes_as_in_ml_dtypes(fmt):
    codes = np.arange(2**fmt.bits, dtype=np.uint16 if fmt.bits == 16 else np.uint8)
    expected = torch.from_numpy(codes.view(ML_DTYPES[fmt]).astype(np.float32))
    c = torch.from_numpy(codes.astype(np.int64))
    e, m = fmt.exponent_bits, fmt.mantissa_bits
    values = bits.compose(c >> (e + m), (c >> m) & (2**e - 1), c & (2**m - 1), fmt)
    assert_same_bits(values, expected, c.float())


@pytest.mark.parametrize("fmt", ML_FORMATS, ids=by_name)
def test_decompose_gives_ml_dtypes_codes(fmt):
    x = every_exponent_and_tie(fmt)
    x = x[~x.isnan()]  # NaN payloads differ between packages; the NaN code is tested below
    with np.errstate(over="ignore", invalid="ignore"):
        code = x.numpy().astype(ML_DTYPES[fmt]).view(np.uint16 if fmt.bits == 16 else np.uint8)
    s, e, m = bits.decompose(x, fmt)
    ours = s << (fmt.bits - 1) | e << fmt.mantissa_bits | m
    nan = torch.from_numpy(np.isnan(code.view(ML_DTYPES[fmt]).astype(np.float32)))
    assert torch.equal(ours[~nan], torch.from_numpy(code.astype(np.int64))[~nan])


def test_predefined_e4m3_saturates_where_ml_dtypes_gives_nan():
    x = f32([448.0, 463.9, 464.0, 1e6, math.inf, -math.inf])
    assert ml_cast(x, ML_FORMATS[2])[3:].isnan().all()  # 464 is a tie that goes down to 448
    assert fm.round_to_format(x, FP8_E4M3).tolist() == [448.0, 448.0, 448.0, 448.0, 448.0, -448.0]
    inside = every_exponent_and_tie(FP8_E4M3)
    inside = inside[inside.abs() < 464]  # below the rounding threshold both casts agree
    assert_same_bits(fm.round_to_format(inside, FP8_E4M3), ml_cast(inside, ML_FORMATS[2]), inside)


@pytest.mark.parametrize("fmt", [fm.FP8_E4M3FNUZ, fm.FP8_E5M2FNUZ], ids=by_name)
def test_fnuz_has_one_nan_no_negative_zero_and_matches_torch(fmt):
    x = f32([0.0, -0.0, -1e-30, math.inf, -math.inf, math.nan, 1e30, fmt.max])
    r = fm.round_to_format(x, fmt)
    assert r[:3].view(torch.int32).tolist() == [0, 0, 0]  # no -0: negative underflow gives +0
    assert r[3:7].isnan().all() and r[7] == fmt.max  # torch's fnuz casts do not saturate
    assert_same_bits(r, torch_cast(x, fmt), x)
    assert fmt.overflow == "nan" and fmt.bias == 2 ** (fmt.exponent_bits - 1)
    assert bits.decompose(f32([math.nan]), fmt) == (torch.tensor([1]), torch.tensor([0]),
                                                  torch.tensor([0]))
    y = every_exponent_and_tie(fmt)
    assert_same_bits(fm.round_to_format(y, fmt), torch_cast(y, fmt), y)
    assert torch.equal(bits.representable_values(fmt),
                       torch.unique(torch.arange(256, dtype=torch.uint8).view(fmt.torch_dtype)
                                    .float().nan_to_num(0.0)))


@pytest.mark.parametrize(("fmt", "max_", "smallest_subnormal", "count"),
                         [(fm.FP6_E3M2, 28.0, 0.0625, 63), (fm.FP6_E2M3, 7.5, 0.125, 63),
                          (fm.FP4_E2M1, 6.0, 0.5, 15)], ids=["e3m2", "e2m3", "e2m1"])
def test_mx_element_formats_have_no_special_codes(fmt, max_, smallest_subnormal, count):
    assert (fmt.max, fmt.smallest_subnormal, fmt.overflow) == (max_, smallest_subnormal,
                                                              "saturate")
    assert len(bits.representable_values(fmt)) == count  # every code but -0 is a distinct number
    x = f32([1e9, math.inf, -math.inf, math.nan])
    assert fm.round_to_format(x, fmt)[:3].tolist() == [max_, max_, -max_]
    assert fm.round_to_format(x, fmt)[3].isnan()  # passed through, not invented as -0
    assert ml_cast(x, fmt)[3].item() == 0.0  # ml_dtypes: NaN becomes -0, a silent wrong value


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"has_inf": True, "fnuz": True}, "has_inf=True needs"),
     ({"has_inf": False, "has_nan": False}, "has_nan=False needs"),
     ({"has_inf": False, "fnuz": 1}, "fnuz must be a bool")],
)
def test_bad_special_value_flags(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        FloatFormat("x", 4, 3, **kwargs)
