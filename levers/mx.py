"""OCP Microscaling (MX): blocks of 32 narrow floats that share one power-of-two scale.

An MX block stores k = 32 elements in a narrow float format (fp8 e4m3/e5m2, fp6 e3m2/e2m3,
fp4 e2m1) and one shared scale X in **e8m0**: an unsigned, exponent-only byte whose code
E in 0…254 means 2^(E - 127); the code 255 is NaN, and there is no zero. The block's values are
X · P_i. The OCP MX specification v1.0 (§6.3) converts a vector V of k floats so::

    shared_exp = floor(log2(max_i abs(V_i))) - emax_elem
    X = 2^shared_exp
    P_i = round_to_format(V_i / X), clamped to ±max of the element format (saturation)

where emax_elem is the exponent of the element format's largest normal number, so the block's
largest magnitude lands in the element format's top binade. Rounding the scale
*down* means some elements can exceed the element format's max after division and saturate;
the spec accepts that clipping in exchange for a scale that is a pure exponent.

Each element costs its format's bits plus 8/k bits for the shared scale: 4.25 bits for MXFP4.
"""

from __future__ import annotations

import torch
from torch import Tensor

from levers._checks import check_int, check_shape
from levers.formats import FloatFormat, round_to_format

E8M0_BIAS = 127
E8M0_NAN = 255
#: The MX block size of the OCP specification.
BLOCK_SIZE = 32


def _check_tensor(name: str, x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def e8m0_decode(code: Tensor) -> Tensor:
    """The values 2^(code - 127) that e8m0 codes stand for; code 255 is NaN.

    Parameters
    ----------
    code : Tensor
        Integer tensor of codes in [0, 255].

    Returns
    -------
    Tensor
        float32 tensor shaped like ``code`` (2^-127 is a float32 subnormal, exactly).

    Examples
    --------
    >>> e8m0_decode(torch.tensor([127, 128, 0, 255]))
    tensor([1.0000e+00, 2.0000e+00, 5.8775e-39,        nan])
    """
    _check_tensor("code", code)
    if code.is_floating_point() or code.is_complex():
        raise TypeError(f"code must be an integer tensor, got {code.dtype}")
    if code.numel() and not 0 <= code.min() <= code.max() <= 255:
        raise ValueError(f"code must be in [0, 255], got values in "
                         f"[{code.min().item()}, {code.max().item()}]")
    value = torch.ldexp(torch.ones(code.shape, dtype=torch.float64),
                        code.to(torch.int64) - E8M0_BIAS).to(torch.float32)
    return torch.where(code == E8M0_NAN, torch.nan, value)


def e8m0_encode(x: Tensor) -> Tensor:
    """The e8m0 code nearest to each positive float32: a power of two, halfway cases upward.

    2^k · (1 + f) becomes 2^k if f < 1/2 and 2^(k+1) otherwise; values below 2^-127 become
    2^-127 (the smallest code, 0), and values between 2^-127 and 2^-126 (float32 subnormals)
    become 2^-126. Zero, negative values, NaN, ±inf and values from
    1.5 · 2^127 on have no code and give 255 (NaN). This is the cast of the ``ml_dtypes``
    package (``float8_e8m0fnu``), bit for bit.

    Parameters
    ----------
    x : Tensor
        float32 tensor.

    Returns
    -------
    Tensor
        uint8 codes shaped like ``x``.

    Examples
    --------
    >>> e8m0_encode(torch.tensor([1.0, 1.49, 1.5, 0.0, 2.0**-130]))
    tensor([127, 127, 128, 255,   0], dtype=torch.uint8)
    """
    _check_tensor("x", x)
    if x.dtype != torch.float32:
        raise TypeError(f"x must be a float32 tensor, got {x.dtype}")
    fraction, exponent = torch.frexp(x.to(torch.float64))  # x = fraction · 2^exponent, exact
    # fraction in [0.5, 1): x = 2^(exponent - 1) · 2·fraction; round up from 2·fraction = 1.5
    code = exponent.to(torch.int64) - 1 + E8M0_BIAS + (fraction >= 0.75).long()
    # float32 subnormals in (2^-127, 2^-126) go up to 2^-126 in ml_dtypes, halfway or not
    code = torch.where((x > 2.0**-127) & (x < 2.0**-126), 1, code.clamp(min=0))
    valid = (x > 0) & torch.isfinite(x) & (code < E8M0_NAN)
    return torch.where(valid, code, E8M0_NAN).to(torch.uint8)


def _blocks(x: Tensor, block_size: int) -> Tensor:
    """``x`` as rows of ``block_size`` values along its last dimension, zero-padded."""
    pad = -x.shape[-1] % block_size
    padded = torch.nn.functional.pad(x, (0, pad))
    return padded.reshape(-1, block_size)


def mx_quantize(x: Tensor, fmt: FloatFormat, block_size: int = BLOCK_SIZE,
                ) -> tuple[Tensor, Tensor]:
    """Split ``x`` into MX blocks: one e8m0 scale code and ``block_size`` elements per block.

    Blocks run along the last dimension; a last block that is short is padded with zeros
    (which change no block's maximum). An all-zero block gets the smallest scale, 2^-127.

    Parameters
    ----------
    x : Tensor
        float32 tensor of finite values, at least one dimension.
    fmt : FloatFormat
        The element format, e.g. ``levers.formats.FP4_E2M1``.
    block_size : int
        Elements per shared scale: 32 in the OCP MX specification.

    Returns
    -------
    (scale_code, elements) : tuple of Tensor
        uint8 e8m0 codes of shape (n_blocks,) and float32 elements of shape
        (n_blocks, block_size), each exactly representable in ``fmt``; blocks are in the
        row-major order of ``x`` with each row padded to a whole number of blocks.

    Examples
    --------
    >>> from levers.formats import FP4_E2M1
    >>> code, p = mx_quantize(torch.tensor([0.3, -1.1, 5.0, 0.01]), FP4_E2M1, block_size=4)
    >>> code.tolist(), e8m0_decode(code).tolist(), p.tolist()
    ([127], [1.0], [[0.5, -1.0, 4.0, 0.0]])
    """
    _check_tensor("x", x)
    if x.dtype != torch.float32 or x.dim() == 0:
        raise TypeError(f"x must be a float32 tensor with at least one dimension, "
                        f"got {x.dtype} with shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must contain only finite values (an MX block with NaN or inf "
                         "has a NaN scale)")
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt must be a levers.formats.FloatFormat, got {fmt!r}")
    check_int("block_size", block_size, 1)
    blocks = _blocks(x, block_size)
    amax = blocks.abs().amax(dim=1)
    _, exponent = torch.frexp(amax)  # amax = f · 2^exponent, f in [0.5, 1): floor(log2) = e - 1
    shared_exp = torch.where(amax > 0, exponent.to(torch.int64) - 1 - fmt.max_exponent,
                             -E8M0_BIAS).clamp(-E8M0_BIAS, E8M0_NAN - 1 - E8M0_BIAS)
    scaled = torch.ldexp(blocks, -shared_exp[:, None].to(torch.float32))
    elements = round_to_format(scaled, fmt).clamp(-fmt.max, fmt.max)  # saturate, as §6.3 says
    return (shared_exp + E8M0_BIAS).to(torch.uint8), elements


def mx_dequantize(scale_code: Tensor, elements: Tensor, shape: torch.Size | tuple[int, ...],
                  ) -> Tensor:
    """The float32 values X · P_i of MX blocks, cut back to ``shape`` (undoes the padding).

    Parameters
    ----------
    scale_code, elements : Tensor
        What `mx_quantize` returned.
    shape : tuple of int
        The shape of the tensor that was quantized.

    Returns
    -------
    Tensor
        float32 tensor of ``shape``.

    Examples
    --------
    >>> from levers.formats import FP4_E2M1
    >>> x = torch.tensor([[0.3, -1.1, 5.0]])
    >>> mx_dequantize(*mx_quantize(x, FP4_E2M1, block_size=2), x.shape)
    tensor([[ 0.2500, -1.0000,  4.0000]])
    """
    _check_tensor("scale_code", scale_code)
    _check_tensor("elements", elements)
    if elements.dim() != 2 or scale_code.shape != elements.shape[:1]:
        raise ValueError(f"elements must be (n_blocks, block_size) with one scale code per "
                         f"block, got {tuple(elements.shape)} and {tuple(scale_code.shape)}")
    shape = torch.Size(check_shape("shape", shape))
    if not shape:
        raise ValueError("shape must have at least one dimension, got ()")
    row = shape[-1] + -shape[-1] % elements.shape[1]
    if elements.numel() != shape.numel() // shape[-1] * row:
        raise ValueError(f"shape {tuple(shape)} does not match {elements.shape[0]} blocks "
                         f"of {elements.shape[1]}")
    values = elements * e8m0_decode(scale_code)[:, None]
    return values.reshape(*shape[:-1], row)[..., :shape[-1]]


def mx_round(x: Tensor, fmt: FloatFormat, block_size: int = BLOCK_SIZE) -> Tensor:
    """``x`` after a round trip through MX blocks: what a model computing in MX sees.

    Parameters
    ----------
    x, fmt, block_size
        As in `mx_quantize`.

    Returns
    -------
    Tensor
        float32 tensor shaped like ``x``.

    Examples
    --------
    >>> from levers.formats import FP8_E4M3
    >>> mx_round(torch.tensor([1000.0, 3.0, 0.001]), FP8_E4M3)  # X = 2: 1000/2 saturates at 448
    tensor([896.,   3.,   0.])
    """
    code, elements = mx_quantize(x, fmt, block_size)
    return mx_dequantize(code, elements, x.shape)


def mx_bits_per_element(fmt: FloatFormat, block_size: int = BLOCK_SIZE) -> float:
    """Storage per element, the shared 8-bit scale included: ``fmt.bits + 8 / block_size``.

    Parameters
    ----------
    fmt : FloatFormat
        The element format.
    block_size : int
        Elements per shared scale.

    Returns
    -------
    float
        Bits per element.

    Examples
    --------
    >>> from levers.formats import FP4_E2M1
    >>> mx_bits_per_element(FP4_E2M1)
    4.25
    """
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt must be a levers.formats.FloatFormat, got {fmt!r}")
    check_int("block_size", block_size, 1)
    return fmt.bits + 8 / block_size
