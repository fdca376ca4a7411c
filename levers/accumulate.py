"""Accumulating in low precision: why running sums stall, and three ways to keep them moving.

A running sum s ← s + x kept in a format with m mantissa bits stops growing once x is below
half the gap between s and its neighbours: adding 1 to an fp16 sum stalls at 2^11 = 2048,
in bf16 at 2^8 = 256. Hardware avoids this by accumulating in a wider format (fp32 inside
fp16/bf16 matrix products). When the accumulator itself must stay narrow, two tricks remain:

- **Kahan summation** carries the rounding error of each addition in a second variable c and
  feeds it back into the next one, so the lost low-order bits are not lost for good;
- **stochastic rounding** rounds up or down at random, with the probability of rounding up
  equal to how far the exact value lies towards the upper neighbour. Each rounding is then
  unbiased, E[round(x)] = x, so many small additions sum correctly *on average*.

`running_sum` runs all of these on the same terms; `round_stochastic` is the rounding itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from levers.bits import representable_values
from levers.formats import FloatFormat, round_to_format

METHODS = ("nearest", "kahan", "stochastic")
_NATIVE = (torch.float32, torch.float16, torch.bfloat16)  # dtypes PyTorch adds in, rounding once


def _check_float(x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x must be a float32 or float64 tensor, got {x.dtype}")


def _check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")


def _stochastic(x: Tensor, fmt: FloatFormat, u: Tensor, table: Tensor) -> Tensor:
    """Round float64 ``x`` to ``fmt`` (whose values ``table`` lists) down or up at random."""
    inside = x.abs() <= fmt.max
    xc = x.clamp(-fmt.max, fmt.max)
    hi_index = torch.searchsorted(table, xc, right=True).clamp(1, len(table) - 1)
    lo, hi = table[hi_index - 1], table[hi_index]
    up = u < (xc - lo) / (hi - lo)  # up where u < the distance share; x = lo never moves
    rounded = torch.where(up, hi, lo).to(torch.float32)
    return torch.where(inside, rounded, round_to_format(x.to(torch.float32), fmt))


def round_stochastic(x: Tensor, fmt: FloatFormat, generator: torch.Generator | None = None,
                     ) -> Tensor:
    """Round each value to one of its two neighbours in ``fmt``, at random and without bias.

    For lo ≤ x < hi (consecutive numbers of ``fmt``) the result is hi with probability
    (x - lo) / (hi - lo) and lo otherwise, so its expectation is x. Representable values stay
    as they are; values beyond ±max round as `round_to_format` does; NaN stays NaN.

    Parameters
    ----------
    x : Tensor
        float32 or float64 tensor.
    fmt : FloatFormat
        A format of at most 16 bits (its numbers are enumerated).
    generator : torch.Generator, optional
        Source of the random numbers, for reproducible runs.

    Returns
    -------
    Tensor
        float32 tensor shaped like ``x``.

    Examples
    --------
    >>> from levers.formats import FP16
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.full((10000,), 1 + 2**-12)  # a quarter of the way from 1 to 1 + 2^-10
    >>> r = round_stochastic(x, FP16, g)
    >>> sorted(set(r.tolist())), round(float((r > 1).double().mean()), 2)
    ([1.0, 1.0009765625], 0.25)
    """
    _check_float(x)
    _check_generator(generator)
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt must be a levers.formats.FloatFormat, got {fmt!r}")
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64)
    x64, table = x.to(torch.float64), representable_values(fmt).to(torch.float64)
    return torch.where(torch.isnan(x64), torch.nan,
                       _stochastic(x64.nan_to_num(0.0), fmt, u, table))


def running_sum(x: Tensor, fmt: FloatFormat, method: str = "nearest",
                generator: torch.Generator | None = None) -> Tensor:
    """Partial sums of ``x`` along dimension 0, the accumulator kept in ``fmt``.

    The terms are first rounded to ``fmt`` (they are stored there too). Then, one step per
    term: ``"nearest"`` rounds s + x to nearest; ``"kahan"`` rounds every operation of
    Kahan's compensated sum (y = x - c, t = s + y, c = (t - s) - y, s = t) to nearest;
    ``"stochastic"`` rounds s + x with `round_stochastic`. Other dimensions are independent
    sums, computed side by side.

    Parameters
    ----------
    x : Tensor
        float32 tensor with at least one dimension.
    fmt : FloatFormat
        Format of the accumulator (and, for ``"kahan"``, of the compensation c).
    method : {"nearest", "kahan", "stochastic"}
    generator : torch.Generator, optional
        For ``"stochastic"``: source of the random numbers.

    Returns
    -------
    Tensor
        float32 tensor shaped like ``x``: entry i is the accumulator after term i.

    Examples
    --------
    >>> from levers.formats import FP16
    >>> ones = torch.ones(3000)
    >>> running_sum(ones, FP16)[-1].item(), running_sum(ones, FP16, "kahan")[-1].item()
    (2048.0, 3000.0)
    """
    _check_float(x)
    if x.dtype != torch.float32 or x.dim() == 0:
        raise TypeError(f"x must be a float32 tensor with at least one dimension, "
                        f"got {x.dtype} with shape {tuple(x.shape)}")
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt must be a levers.formats.FloatFormat, got {fmt!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check_generator(generator)
    terms = round_to_format(x, fmt)
    if method == "stochastic":
        u = torch.rand(x.shape, generator=generator, dtype=torch.float64)
        table = representable_values(fmt).to(torch.float64)
        s, out = torch.zeros(x.shape[1:], dtype=torch.float64), []
        for term, ui in zip(terms.to(torch.float64), u, strict=True):
            v = s + term  # exact in float64 for every format of at most 16 bits but bf16
            hi = torch.searchsorted(table, v, right=True).clamp(1, len(table) - 1)
            lo, hi = table[hi - 1], table[hi]
            s = torch.where(ui * (hi - lo) < v - lo, hi, lo)  # beyond ±max: saturates
            out.append(s)
        return torch.stack(out).to(torch.float32)
    if fmt.torch_dtype in _NATIVE:  # PyTorch's own arithmetic in the format: one rounding per op
        terms, rnd = terms.to(fmt.torch_dtype), (lambda t: t)
    else:
        rnd = lambda t: round_to_format(t, fmt)  # noqa: E731 (the one rounding step, named)
    s, c, out = torch.zeros_like(terms[0]), torch.zeros_like(terms[0]), []
    for term in terms:
        if method == "nearest":
            s = rnd(s + term)
        else:
            y = rnd(term - c)
            t = rnd(s + y)
            c = rnd(rnd(t - s) - y)
            s = t
        out.append(s)
    return torch.stack(out).to(torch.float32)
