"""float32 as the carrier: its bit fields read, and powers of two written, exactly.

Every narrower format is emulated inside float32 (`levers.formats`), so rounding and taking a
format apart (`levers.bits`) both need the same two exact operations on float32's bit pattern:
the magnitude as ``sig · 2^(exp − 23)`` with the implied leading 1 made explicit, and ``2^k``
built from bits (multiplying by it is exact, where ``2.0 ** k`` may not be for subnormals).
"""

from __future__ import annotations

import torch
from torch import Tensor

from levers._checks import check_float32, check_integers

MANTISSA_BITS = 23  # float32 stores 23 mantissa bits; the leading 1 is implied
BIAS = 127


def fields(x: Tensor) -> tuple[Tensor, Tensor]:
    """``|x| = sig · 2^(exp − 23)`` read from the float32 bits; ``sig`` includes the implied 1.

    Subnormals share the exponent of the smallest normal binade (``exp = −126``) and have no
    implied 1, so ``sig · 2^(exp − 23)`` is exact for every finite float32.

    Parameters
    ----------
    x : Tensor
        float32 tensor.

    Returns
    -------
    (exp, sig) : tuple of Tensor
        int64 tensors shaped like ``x``.

    Examples
    --------
    >>> fields(torch.tensor([1.5, -2.0]))
    (tensor([0, 1]), tensor([12582912,  8388608]))
    """
    check_float32("x", x)
    bits = x.view(torch.int32).to(torch.int64) & 0x7FFFFFFF
    field, fraction = bits >> MANTISSA_BITS, bits & (2**MANTISSA_BITS - 1)
    exp = field.clamp(min=1) - BIAS
    sig = torch.where(field > 0, fraction | 2**MANTISSA_BITS, fraction)
    return exp, sig


def pow2(k: Tensor) -> Tensor:
    """``2^k`` as float32, built from bits so it is exact (subnormal below 2^−126, 0 below
    2^−149, inf from 2^128 on).

    Examples
    --------
    >>> pow2(torch.tensor([-149, 0, 3, 128]))
    tensor([1.4013e-45, 1.0000e+00, 8.0000e+00,        inf])
    """
    check_integers("k", k)
    k = k.to(torch.int64).clamp(-150, 128)
    bits = torch.where(k >= -126, (k + BIAS) << MANTISSA_BITS, 1 << (k + 149).clamp(min=0))
    return torch.where(k < -149, 0, bits).to(torch.int32).view(torch.float32)
