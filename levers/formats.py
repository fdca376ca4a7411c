"""Number formats: what a float or integer format can represent, and rounding into it.

A binary float format stores a sign bit, ``exponent_bits`` of biased exponent E and
``mantissa_bits`` of mantissa M. A normal number (0 < E) is (-1)^s · 1.M · 2^(E - bias); a
subnormal number (E = 0) is (-1)^s · 0.M · 2^(1 - bias). Between two powers of two the
representable numbers are evenly spaced; the gap, one ULP, doubles at every power of two.

An integer format (`IntFormat`) of b bits holds [−2ᵇ⁻¹, 2ᵇ⁻¹ − 1] (signed) or [0, 2ᵇ − 1]; it
is the one definition of integer ranges in the library (`levers.quant.QScheme` uses it).

`round_to_format` emulates a narrower format with float32 tensors: it rounds each float32 to the
nearest number of the format (ties to the even mantissa) and returns it as a float32. It works on
the float32 bit pattern with integer arithmetic, the way a hardware converter does, and agrees bit
for bit with PyTorch's own casts to float16, bfloat16, float8_e4m3fn and float8_e5m2.

float32 is the carrier, so a format must fit inside it: 2 to 8 exponent bits, 1 to 23 mantissa
bits, and a largest finite value no larger than float32's.

Four encodings of the special values are in use. IEEE style (fp16, bf16, fp8 e5m2) reserves the
all-ones exponent for ±inf and NaN. "fn" (finite, fp8 e4m3fn) keeps only the all-ones code as
NaN, so the top binade holds numbers. "fnuz" (finite, no negative zero: fp8 e4m3fnuz, e5m2fnuz)
makes the would-be −0 code the only NaN and raises the exponent bias by one. The OCP MX element
formats (fp6 e3m2, fp6 e2m3, fp4 e2m1) have no special codes at all.

Casts either **saturate** (overflow becomes ±max) or not (overflow becomes ±inf, or NaN where
there is no inf). The predefined formats follow PyTorch's casts: fp8 e4m3fn saturates (even
±inf becomes ±448); fp16, bf16 and e5m2 overflow to ±inf; the fnuz formats to NaN. The MX
element formats saturate, as the OCP MX specification requires. The `ml_dtypes` package never
saturates fp8: ``dataclasses.replace(FP8_E4M3, saturate=False)`` is its e4m3fn, bit for bit
(tests/test_formats.py). For NaN input, formats without a NaN code keep NaN in the float32
result (ml_dtypes writes −0 there, a silently wrong value).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from levers import float32
from levers._checks import check_float32, fail


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: sign bit, ``exponent_bits``, ``mantissa_bits``.

    Parameters
    ----------
    name : str
        Short name, e.g. ``"fp16"``.
    exponent_bits, mantissa_bits : int
        Field widths; the sign bit is implied. Must fit in float32: 2-8 and 1-23 (with no
        mantissa bit, "ties to the even mantissa" would mean nothing).
    has_inf : bool
        IEEE-style: the all-ones exponent holds only ±inf (mantissa 0) and NaN. If False ("fn",
        finite, as OCP fp8 e4m3), the all-ones exponent holds numbers and only the all-ones
        mantissa there is NaN.
    saturate : bool
        If True, finite overflow and ±inf become ±max. If False, they become ±inf, or NaN when
        the format has no infinity.
    torch_dtype : torch.dtype or None
        The PyTorch dtype with this layout, if there is one.
    fnuz : bool
        "Finite, unsigned zero": no infinity, no −0; the code 1 000…0 is the only NaN and the
        exponent bias is 2^(e-1), one more than IEEE's. Requires ``has_inf=False``.
    has_nan : bool
        If False (the OCP MX element formats), every code is a number. Requires
        ``has_inf=False``, ``fnuz=False`` and ``saturate=True``.

    Examples
    --------
    >>> FP16.max, FP16.eps, FP16.smallest_subnormal
    (65504.0, 0.0009765625, 5.960464477539063e-08)
    >>> FP8_E4M3.max, FP8_E4M3.overflow
    (448.0, 'saturate')
    >>> FP8_E4M3FNUZ.max, FP8_E4M3FNUZ.bias, FP4_E2M1.max
    (240.0, 8, 6.0)
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    has_inf: bool = True
    saturate: bool = False
    torch_dtype: torch.dtype | None = None
    fnuz: bool = False
    has_nan: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty str, got {self.name!r}")
        for field, low, high in (("exponent_bits", 2, 8), ("mantissa_bits", 1, 23)):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{field} must be an int, got {value!r}")
            if not low <= value <= high:
                raise ValueError(
                    f"{field} must be in [{low}, {high}] (formats are emulated inside float32), "
                    f"got {value!r}"
                )
        for field in ("has_inf", "saturate", "fnuz", "has_nan"):
            if not isinstance(value := getattr(self, field), bool):
                raise TypeError(f"{field} must be a bool, got {value!r}")
        if self.has_inf and (self.fnuz or not self.has_nan):
            raise ValueError(f"{self.name}: has_inf=True needs fnuz=False and has_nan=True "
                             "(infinities exist only in IEEE-style formats)")
        if not self.has_nan and (self.fnuz or not self.saturate):
            raise ValueError(f"{self.name}: has_nan=False needs fnuz=False and saturate=True "
                             "(with no NaN code, overflow can only saturate)")
        if self.max > torch.finfo(torch.float32).max:
            raise ValueError(f"{self.name}: largest finite value {self.max!r} exceeds float32's")

    @property
    def bits(self) -> int:
        """Total width: sign + exponent + mantissa."""
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        """Exponent bias: stored E means 2^(E - bias)."""
        return 2 ** (self.exponent_bits - 1) - 1 + self.fnuz

    @property
    def min_exponent(self) -> int:
        """Exponent of the smallest normal number (and of every subnormal's ULP binade)."""
        return 1 - self.bias

    def ulp_exponent(self, exp: Tensor) -> Tensor:
        """The exponent of one ULP at ``2^exp``: ``exp − m``, but never below the subnormals'
        (under the smallest normal the ULP stops shrinking; the evenly spaced numbers there are
        the subnormals)."""
        return exp.clamp(min=self.min_exponent) - self.mantissa_bits

    def dropped_bits(self, exp: Tensor) -> Tensor:
        """How many low bits of a float32 significand at ``2^exp`` lie below this format's ULP
        (capped at 30: from 25 on every bit of the 24-bit significand is dropped)."""
        return (self.ulp_exponent(exp) - (exp - float32.MANTISSA_BITS)).clamp(max=30)

    @property
    def max_code(self) -> int:
        """Exponent and mantissa fields of the largest finite value, read as one integer."""
        # Magnitude codes grow with the value; the largest finite one sits just below the first
        # special code: inf (IEEE style) or the all-ones NaN (fn style).
        if self.has_inf:
            return ((2**self.exponent_bits - 1) << self.mantissa_bits) - 1
        if self.fnuz or not self.has_nan:  # the NaN, if any, is the −0 code: all codes count
            return 2 ** (self.exponent_bits + self.mantissa_bits) - 1
        return 2 ** (self.exponent_bits + self.mantissa_bits) - 2

    @property
    def max_exponent(self) -> int:
        """Exponent of the largest finite value."""
        return (self.max_code >> self.mantissa_bits) - self.bias

    @property
    def max(self) -> float:
        """Largest finite value."""
        fraction = self.max_code & (2**self.mantissa_bits - 1)
        return (1 + fraction / 2**self.mantissa_bits) * 2.0**self.max_exponent

    @property
    def smallest_normal(self) -> float:
        """Smallest positive normal value, 2^min_exponent."""
        return 2.0**self.min_exponent

    @property
    def smallest_subnormal(self) -> float:
        """Smallest positive value, 2^(min_exponent - mantissa_bits)."""
        return 2.0 ** (self.min_exponent - self.mantissa_bits)

    @property
    def eps(self) -> float:
        """Machine epsilon: the gap between 1 and the next number, 2^-mantissa_bits."""
        return 2.0**-self.mantissa_bits

    @property
    def overflow(self) -> str:
        """What a too-large finite value becomes: ``"inf"``, ``"saturate"`` (±max) or ``"nan"``."""
        if self.saturate:
            return "saturate"
        return "inf" if self.has_inf else "nan"


@dataclass(frozen=True)
class IntFormat:
    """A two's-complement (``signed``) or unsigned integer format of ``bits`` bits.

    Examples
    --------
    >>> INT8.min, INT8.max, INT4.min, UINT8.max
    (-128, 127, -8, 255)
    """

    bits: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool):
            raise TypeError(f"bits must be an int, got {self.bits!r}")
        if not 1 <= self.bits <= 32:
            raise ValueError(f"bits must be in [1, 32], got {self.bits!r}")
        if not isinstance(self.signed, bool):
            raise TypeError(f"signed must be a bool, got {self.signed!r}")

    @property
    def name(self) -> str:
        """``"int8"``, ``"uint8"``, ... as in `FORMATS`."""
        return f"{'' if self.signed else 'u'}int{self.bits}"

    @property
    def min(self) -> int:
        """Smallest value: -2^(bits-1) if signed, else 0."""
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        """Largest value: 2^(bits-1) - 1 if signed, else 2^bits - 1."""
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def torch_dtype(self) -> torch.dtype:
        """Smallest PyTorch integer dtype that holds [min, max] (int64 above 32 signed bits)."""
        if self.bits <= 8:
            return torch.int8 if self.signed else torch.uint8
        if self.bits <= 16:
            return torch.int16 if self.signed else torch.int32
        return torch.int32 if self.signed and self.bits <= 32 else torch.int64


FP32 = FloatFormat("fp32", 8, 23, torch_dtype=torch.float32)
FP16 = FloatFormat("fp16", 5, 10, torch_dtype=torch.float16)
BF16 = FloatFormat("bf16", 8, 7, torch_dtype=torch.bfloat16)
# PyTorch's float8_e4m3fn saturates: overflow and even ±inf become ±448 (checked in the tests).
FP8_E4M3 = FloatFormat("fp8_e4m3", 4, 3, has_inf=False, saturate=True,
                       torch_dtype=torch.float8_e4m3fn)
FP8_E5M2 = FloatFormat("fp8_e5m2", 5, 2, torch_dtype=torch.float8_e5m2)
INT8, INT4, UINT8 = IntFormat(8), IntFormat(4), IntFormat(8, signed=False)

#: Every predefined format by name.
FORMATS: dict[str, FloatFormat | IntFormat] = {
    f.name: f for f in (FP32, FP16, BF16, FP8_E4M3, FP8_E5M2, INT8, INT4, UINT8)
}
# The fnuz fp8 formats (Graphcore, AMD): overflow and ±inf become the NaN, as PyTorch casts.
FP8_E4M3FNUZ = FloatFormat("fp8_e4m3fnuz", 4, 3, has_inf=False, fnuz=True,
                           torch_dtype=torch.float8_e4m3fnuz)
FP8_E5M2FNUZ = FloatFormat("fp8_e5m2fnuz", 5, 2, has_inf=False, fnuz=True,
                           torch_dtype=torch.float8_e5m2fnuz)
# The OCP MX element formats: no inf, no NaN; casts saturate, as the MX specification requires.
FP6_E3M2 = FloatFormat("fp6_e3m2", 3, 2, has_inf=False, saturate=True, has_nan=False)
FP6_E2M3 = FloatFormat("fp6_e2m3", 2, 3, has_inf=False, saturate=True, has_nan=False)
FP4_E2M1 = FloatFormat("fp4_e2m1", 2, 1, has_inf=False, saturate=True, has_nan=False)
FORMATS.update((f.name, f) for f in (FP8_E4M3FNUZ, FP8_E5M2FNUZ, FP6_E3M2, FP6_E2M3, FP4_E2M1))


def float_format(fmt: FloatFormat | str) -> FloatFormat:
    """`fmt` itself, or the `FloatFormat` named `fmt` in `FORMATS`.

    Examples
    --------
    >>> float_format("bf16") is BF16
    True
    """
    names = [name for name, f in FORMATS.items() if isinstance(f, FloatFormat)]
    if isinstance(fmt, str) and fmt in names:
        fmt = FORMATS[fmt]
    if not isinstance(fmt, FloatFormat):
        raise fail("fmt", fmt, f"a FloatFormat or the name of one in {names}")
    return fmt


def round_to_format(x: Tensor, fmt: FloatFormat | str) -> Tensor:
    """Round float32 values to the nearest value of ``fmt``, ties to even.

    Subnormals, ±0, overflow (as ``fmt.overflow`` says) and ±inf come out as PyTorch's casts
    give them; NaN passes through unchanged.

    Parameters
    ----------
    x : Tensor
        float32 tensor of any shape; other dtypes raise TypeError (no silent double rounding).
    fmt : FloatFormat or str
        The target format, or its name in `FORMATS`.

    Returns
    -------
    Tensor
        float32 tensor shaped like ``x``, every value exactly representable in ``fmt``.

    Examples
    --------
    >>> round_to_format(torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, 70000.0]), "fp16")
    tensor([1.0000, 1.0020,    inf])
    >>> round_to_format(torch.tensor([470.0, float("inf")]), "fp8_e4m3")
    tensor([448., 448.])
    """
    check_float32("x", x)
    fmt = float_format(fmt)
    exp, sig = float32.fields(x)
    drop = fmt.dropped_bits(exp)
    # n = sig / 2^drop rounded to an integer: up when the dropped remainder is more than half a
    # ULP, or exactly half and the kept part is odd (ties go to the even mantissa).
    n = sig >> drop
    twice_remainder, ulp = 2 * (sig - (n << drop)), 1 << drop
    n = n + ((twice_remainder > ulp) | ((twice_remainder == ulp) & (n % 2 == 1))).long()
    # n · 2^ulp_exponent is exact in float32 (n has at most 24 bits). A carry out of the mantissa
    # (1.11..1 -> 10.00..0) needs no special case: it is the next power of two.
    magnitude = n.to(torch.float32) * float32.pow2(fmt.ulp_exponent(exp))
    too_big = {"inf": torch.inf, "saturate": fmt.max, "nan": torch.nan}[fmt.overflow]
    magnitude = torch.where(magnitude > fmt.max, too_big, magnitude)
    inf_becomes = torch.inf if fmt.overflow == "inf" else too_big
    magnitude = torch.where(torch.isinf(x), inf_becomes, magnitude)
    rounded = torch.where(torch.isnan(x), x, torch.copysign(magnitude, x))
    return torch.where(rounded == 0, 0.0, rounded) if fmt.fnuz else rounded  # fnuz has no −0
