"""The anatomy of a float format: its bit fields, bit strings, spacing and every value.

`levers.formats` says what a format is and rounds into it; this module takes a format apart.
`decompose` gives the three stored fields (sign, biased exponent, mantissa) of each value after
rounding and `compose` is its inverse; `bit_string` prints the fields as a reader would write
them; `spacing` is the gap to the next representable number (one ULP, NumPy's ``np.spacing``
for float32); `representable_values` enumerates every finite value of a format of at most 16
bits, which is how Chapter 1 draws the number lines of fp8 and fp4.
"""

from __future__ import annotations

import torch
from torch import Tensor

from levers import float32
from levers._checks import check_float32, check_integers, fail
from levers.formats import FloatFormat, float_format, round_to_format


def compose(sign: Tensor, exponent: Tensor, mantissa: Tensor, fmt: FloatFormat | str) -> Tensor:
    """The value that the bit fields (sign, stored exponent, mantissa) of ``fmt`` encode.

    Parameters
    ----------
    sign, exponent, mantissa : Tensor
        Integer tensors of one shape: sign in {0, 1}, exponent in [0, 2^e), mantissa in [0, 2^m).
    fmt : FloatFormat or str
        The format, or its name in `FORMATS`.

    Returns
    -------
    Tensor
        float32 values; the special codes give ±inf and NaN.

    Examples
    --------
    >>> compose(torch.tensor([0, 1]), torch.tensor([15, 0]), torch.tensor([512, 1]), "fp16")
    tensor([ 1.5000e+00, -5.9605e-08])
    """
    fmt = float_format(fmt)
    e, m = fmt.exponent_bits, fmt.mantissa_bits
    for name, t, top in (("sign", sign, 1), ("exponent", exponent, 2**e - 1),
                         ("mantissa", mantissa, 2**m - 1)):
        check_integers(name, t, 0, top)
    sign, exponent, mantissa = (t.to(torch.int64) for t in (sign, exponent, mantissa))
    n = torch.where(exponent > 0, mantissa + 2**m, mantissa)  # normal numbers: implied leading 1
    value = n.to(torch.float32) * float32.pow2(exponent.clamp(min=1) - fmt.bias - m)
    all_ones = exponent == 2**e - 1
    if fmt.has_inf:
        value = torch.where(all_ones, torch.where(mantissa == 0, torch.inf, torch.nan), value)
    elif fmt.fnuz:  # the code of −0 is the NaN
        value = torch.where((sign == 1) & (exponent == 0) & (mantissa == 0), torch.nan, value)
    elif fmt.has_nan:
        value = torch.where(all_ones & (mantissa == 2**m - 1), torch.nan, value)
    return torch.where(sign == 1, -value, value)


def decompose(x: Tensor, fmt: FloatFormat | str) -> tuple[Tensor, Tensor, Tensor]:
    """The bit fields (sign, stored exponent, mantissa) that ``fmt`` stores for ``x``.

    ``x`` is first rounded with `round_to_format`; NaN gets all exponent and mantissa bits set.
    `compose` is the inverse.

    Parameters
    ----------
    x : Tensor
        float32 tensor.
    fmt : FloatFormat or str
        The format, or its name in `FORMATS`.

    Returns
    -------
    (sign, exponent, mantissa) : tuple of Tensor
        int64 tensors shaped like ``x``.

    Examples
    --------
    >>> decompose(torch.tensor([1.5, -2**-24]), "fp16")
    (tensor([0, 1]), tensor([15,  0]), tensor([512,   1]))
    """
    fmt = float_format(fmt)
    r = round_to_format(x, fmt)
    exp, sig = float32.fields(r)
    n = sig >> fmt.dropped_bits(exp)  # exact: r has no bits below fmt's ULP
    normal = r.abs() >= fmt.smallest_normal
    exponent = torch.where(normal, exp + fmt.bias, 0)
    mantissa = torch.where(normal, n - 2**fmt.mantissa_bits, n)
    special = ~torch.isfinite(r)
    exponent = torch.where(special, 2**fmt.exponent_bits - 1, exponent)
    mantissa = torch.where(special, 0, mantissa)
    nan = torch.isnan(r)
    if fmt.fnuz:  # NaN is the code 1 000…0
        return nan.long() | torch.signbit(r).long(), torch.where(nan, 0, exponent), \
            torch.where(nan, 0, mantissa)
    mantissa = torch.where(nan, 2**fmt.mantissa_bits - 1, mantissa)
    return torch.signbit(r).long(), exponent, mantissa


def bit_string(value: float, fmt: FloatFormat | str) -> str:
    """The bits ``fmt`` stores for ``value``, as ``"sign exponent mantissa"``.

    Parameters
    ----------
    value : float
        A Python number; it is converted to float32 first, then rounded to ``fmt``.
    fmt : FloatFormat or str
        The format, or its name in `FORMATS`.

    Returns
    -------
    str
        The three fields in binary, separated by spaces.

    Examples
    --------
    >>> bit_string(-2.5, "fp16")
    '1 10000 0100000000'
    """
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise fail("value", value, "a float")
    fmt = float_format(fmt)
    s, e, m = (t.item() for t in decompose(torch.tensor([float(value)]), fmt))
    return f"{s} {e:0{fmt.exponent_bits}b} {m:0{fmt.mantissa_bits}b}"


def spacing(x: Tensor, fmt: FloatFormat | str) -> Tensor:
    """One ULP of ``fmt`` at ``x``: the gap between the representable numbers around ``x``.

    Parameters
    ----------
    x : Tensor
        float32 tensor.
    fmt : FloatFormat or str
        The format, or its name in `FORMATS`.

    Returns
    -------
    Tensor
        float32 ``2^(max(floor(log2 |x|), min_exponent) - mantissa_bits)``; inf where ``|x|``
        lies past the format's top binade, NaN where x is ±inf or NaN.

    Examples
    --------
    >>> spacing(torch.tensor([0.0, 1.0, 1000.0, 65504.0]), "fp16")
    tensor([5.9605e-08, 9.7656e-04, 5.0000e-01, 3.2000e+01])
    """
    check_float32("x", x)
    fmt = float_format(fmt)
    exp, _ = float32.fields(x)
    ulp = torch.where(exp > fmt.max_exponent, torch.inf, float32.pow2(fmt.ulp_exponent(exp)))
    return torch.where(torch.isfinite(x), ulp, torch.nan)


def representable_values(fmt: FloatFormat | str) -> Tensor:
    """Every finite value of ``fmt``, ascending, with a single zero.

    Parameters
    ----------
    fmt : FloatFormat or str
        A format of at most 16 bits, or its name in `FORMATS`.

    Returns
    -------
    Tensor
        float32 values from -max to max.

    Examples
    --------
    >>> v = representable_values("fp8_e4m3")
    >>> len(v), v[-3:].tolist()
    (253, [384.0, 416.0, 448.0])
    """
    fmt = float_format(fmt)
    if fmt.bits > 16:
        raise fail("fmt", fmt.name, "a format of at most 16 bits (to enumerate)")
    code = torch.arange(fmt.max_code + 1)  # magnitude codes, in increasing order of value
    positive = compose(torch.zeros_like(code), code >> fmt.mantissa_bits,
                       code & (2**fmt.mantissa_bits - 1), fmt)
    return torch.cat([-positive[1:].flip(0), positive])
