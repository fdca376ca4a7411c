"""Bytes on disk: real serializations of a tensor and the formulas their sizes must match.

A pruned tensor stored densely costs exactly what the unpruned one cost: zeros are 4-byte
float32 values like any other. Sparsity saves bytes only in a format that skips the zeros and
pays, instead, for saying where the non-zeros are. For ``n`` entries of ``b`` bytes, ``a`` of
them non-zero, and ``i``-byte indices:

=========  =====================================  ==========================================
format     layout (in this order, little-endian)  bytes
=========  =====================================  ==========================================
dense      every value, row-major                 ``n·b``
bitmask    one bit per entry, then the non-zeros   ``⌈n/8⌉ + a·b``
COO        one index per dimension per non-zero,   ``a·(d·i + b)`` for a ``d``-dim tensor
           then the non-zeros
CSR        row pointers, column indices, values    ``(r + 1)·i + a·i + a·b`` for ``r`` rows
=========  =====================================  ==========================================

With ``b = i = 4`` CSR stores ``2a + r + 1`` numbers. Payloads hold the arrays only: the shape,
dtype and format are the container's header (a few dozen bytes per tensor, whatever the
sparsity), so `decode` takes them as arguments.

Quantized values are stored the same way: `pack_bits` writes b-bit integers densely (8/b per
byte), `export` turns a model fake-quantized by `levers.qmodel.quantize_` into packed integers
and their scales, and `codebook_bytes` counts a k-means codebook (`levers.kmeans`).
The structured-sparse formats (N:M, BSR) are `levers.structured_formats`.
"""

from __future__ import annotations

import io
import math
from numbers import Integral

import numpy as np
import torch
from torch import Tensor, nn

from levers._bytes import INDEX_DTYPES, index_bytes_of, raw_bytes
from levers._checks import (
    check_choice,
    check_instance,
    check_int,
    check_integers,
    check_shape,
    fail,
)
from levers.kmeans import Codebook
from levers.qmodel import FakeQuantLayer
from levers.quant import quantize_affine

FORMATS = ("dense", "bitmask", "coo", "csr")


def _check(fmt: str, index_bytes: int) -> None:
    check_choice("fmt", fmt, FORMATS)
    check_choice("index_bytes", index_bytes, tuple(INDEX_DTYPES))


def encode(w: Tensor, fmt: str, index_bytes: int = 4) -> bytes:
    """Serialize `w` in format `fmt` (see the module table for the layouts).

    Parameters
    ----------
    w : Tensor
        Any dtype; ``csr`` needs a 2-D tensor (reshape a conv weight to ``[out, -1]`` first).
    fmt : {"dense", "bitmask", "coo", "csr"}
    index_bytes : {1, 2, 4, 8}
        Width of each stored index (unsigned); a ValueError says so when an index does not fit.

    Returns
    -------
    bytes
        The payload; ``len(...)`` is its size on disk and equals `formula_bytes`.

    Examples
    --------
    >>> w = torch.tensor([[0., 2.], [3., 0.]])
    >>> [len(encode(w, f)) for f in FORMATS]
    [16, 9, 24, 28]
    """
    if not isinstance(w, Tensor):
        raise fail("w", w, "a torch.Tensor")
    _check(fmt, index_bytes)
    if fmt == "dense":
        return raw_bytes(w)
    flat = w.detach().contiguous().flatten()
    nonzero = flat != 0
    values = raw_bytes(flat[nonzero])
    if fmt == "bitmask":
        return np.packbits(nonzero.numpy()).tobytes() + values
    if fmt == "coo":
        coords = np.stack(np.unravel_index(np.flatnonzero(nonzero.numpy()), tuple(w.shape)))
        return b"".join(index_bytes_of(c, index_bytes, "coordinates") for c in coords) + values
    if w.dim() != 2:
        raise ValueError(f"csr needs a 2-D tensor, got shape {tuple(w.shape)}")
    rows, cols = np.nonzero(nonzero.reshape(w.shape).numpy())
    row_ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=w.shape[0]))])
    return (index_bytes_of(row_ptr, index_bytes, "row pointers")
            + index_bytes_of(cols, index_bytes, "column indices") + values)


def decode(data: bytes, fmt: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
           index_bytes: int = 4) -> Tensor:
    """Rebuild the dense tensor from an `encode` payload (its inverse).

    Examples
    --------
    >>> w = torch.tensor([[0., 2.], [3., 0.]])
    >>> all(torch.equal(decode(encode(w, f), f, (2, 2)), w) for f in FORMATS)
    True
    """
    if not isinstance(data, bytes | bytearray):
        raise fail("data", data, "bytes")
    _check(fmt, index_bytes)
    shape = check_shape("shape", shape)
    if not isinstance(dtype, torch.dtype):
        raise fail("dtype", dtype, "a torch.dtype")
    n = math.prod(shape)
    b = torch.empty(0, dtype=dtype).element_size()
    buf = np.frombuffer(bytes(data), dtype=np.uint8)

    def values(offset: int, count: int) -> Tensor:
        chunk = buf[offset:offset + count * b].copy()
        return torch.from_numpy(chunk).view(dtype) if count else torch.empty(0, dtype=dtype)

    def ints(offset: int, count: int) -> np.ndarray:
        return np.frombuffer(bytes(data), dtype=INDEX_DTYPES[index_bytes], count=count,
                             offset=offset).astype(np.int64)

    out = torch.zeros(n, dtype=dtype)
    if fmt == "dense":
        expected = n * b
        if len(data) == expected:
            return values(0, n).reshape(shape)
    elif fmt == "bitmask":
        head = math.ceil(n / 8)
        keep = torch.from_numpy(np.unpackbits(buf[:head], count=n).astype(bool)) \
            if len(data) >= head else torch.zeros(n, dtype=torch.bool)
        a = int(keep.sum())
        expected = head + a * b
        if len(data) == expected:
            out[keep] = values(head, a)
            return out.reshape(shape)
    elif fmt == "coo":
        a = len(data) // (len(shape) * index_bytes + b)
        expected = a * (len(shape) * index_bytes + b)
        if len(data) == expected:
            coords = [ints(d * a * index_bytes, a) for d in range(len(shape))]
            flat = np.ravel_multi_index(coords, shape) if a else np.zeros(0, dtype=np.int64)
            out[torch.from_numpy(flat)] = values(len(shape) * a * index_bytes, a)
            return out.reshape(shape)
    else:
        if len(shape) != 2:
            raise ValueError(f"csr needs a 2-D shape, got {shape}")
        head = (shape[0] + 1) * index_bytes
        a = int(ints(head - index_bytes, 1)[0]) if len(data) >= head else -1
        expected = head + a * (index_bytes + b)
        if a >= 0 and len(data) == expected:
            row_ptr, cols = ints(0, shape[0] + 1), ints(head, a)
            rows = np.repeat(np.arange(shape[0]), np.diff(row_ptr))
            out[torch.from_numpy(rows * shape[1] + cols)] = values(head + a * index_bytes, a)
            return out.reshape(shape)
    raise ValueError(f"data has {len(data)} bytes, which is not a {fmt} payload of shape {shape} "
                     f"and dtype {dtype}")


def formula_bytes(fmt: str, shape: tuple[int, ...], nnz: int, value_bytes: int = 4,
                  index_bytes: int = 4) -> int:
    """Size in bytes that format `fmt` needs, from the module table's formulas.

    Examples
    --------
    >>> formula_bytes("csr", (300, 784), nnz=23520)  # LeNet fc1 at 90 % sparsity
    189364
    """
    _check(fmt, index_bytes)
    shape = check_shape("shape", shape)
    n = math.prod(shape)
    if isinstance(nnz, bool) or not isinstance(nnz, Integral) or not 0 <= nnz <= n:
        raise ValueError(f"nnz must be an int in [0, {n}] for shape {shape}, got {nnz!r}")
    if isinstance(value_bytes, bool) or not isinstance(value_bytes, Integral) or value_bytes < 1:
        raise ValueError(f"value_bytes must be a positive int, got {value_bytes!r}")
    if fmt == "dense":
        return n * value_bytes
    if fmt == "bitmask":
        return math.ceil(n / 8) + nnz * value_bytes
    if fmt == "coo":
        return nnz * (len(shape) * index_bytes + value_bytes)
    if len(shape) != 2:
        raise ValueError(f"csr needs a 2-D shape, got {shape}")
    return (shape[0] + 1) * index_bytes + nnz * (index_bytes + value_bytes)


def saved_bytes(obj: object) -> int:
    """Size of ``torch.save(obj)`` (e.g. a state_dict), measured on an in-memory file.

    Examples
    --------
    >>> saved_bytes(torch.zeros(1000)) - saved_bytes(torch.zeros(0)) >= 4000
    True
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def compression_ratio(original_bytes: int, compressed_bytes: int) -> float:
    """``original / compressed``: how many times smaller (e.g. 12.0 = "12×").

    Examples
    --------
    >>> compression_ratio(1_066_440, 88_870)
    12.0
    """
    for name, v in (("original_bytes", original_bytes), ("compressed_bytes", compressed_bytes)):
        if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
            raise fail(name, v, "a positive int")
    return original_bytes / compressed_bytes


def pack_bits(q: Tensor, bits: int) -> Tensor:
    """Pack unsigned integers of `bits` bits densely into a flat uint8 tensor (little-endian).

    Parameters
    ----------
    q : Tensor
        An integer tensor (any shape) with values in [0, 2^bits − 1]; offset signed integers
        first (``q − q_min``). Floating-point input is refused, not truncated.
    bits : int
        Width of each value, 1 to 16.

    Returns
    -------
    Tensor
        ``⌈q.numel() · bits / 8⌉`` bytes.

    Examples
    --------
    >>> pack_bits(torch.tensor([1, 2, 3, 0]), 2).tolist()  # 0b00111001
    [57]
    """
    check_int("bits", bits, 1, 16)
    u = check_integers("q", q, 0, 2**bits - 1).reshape(-1).long()
    positions = torch.arange(bits)
    bit_stream = ((u[:, None] >> positions) & 1).reshape(-1)  # little-endian within a value
    bit_stream = torch.cat([bit_stream, bit_stream.new_zeros(-len(bit_stream) % 8)])
    return (bit_stream.reshape(-1, 8) << torch.arange(8)).sum(1).to(torch.uint8)


def unpack_bits(packed: Tensor, bits: int, n: int) -> Tensor:
    """Inverse of `pack_bits`: the first `n` unsigned `bits`-bit values, as int64.

    Examples
    --------
    >>> unpack_bits(torch.tensor([57], dtype=torch.uint8), 2, 4).tolist()
    [1, 2, 3, 0]
    """
    check_integers("packed", packed)
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise fail("packed", packed, "a 1-D torch.uint8 tensor, as pack_bits returns")
    check_int("bits", bits, 1, 16)
    check_int("n", n, 0, packed.numel() * 8 // bits)
    stream = ((packed.long()[:, None] >> torch.arange(8)) & 1).reshape(-1)[: n * bits]
    return (stream.reshape(n, bits) << torch.arange(bits)).sum(1)


def codebook_bytes(codebook: Codebook) -> int:
    """Payload bytes of a k-means codebook: 2^b float32 centroids plus b bits per index.

    Examples
    --------
    >>> from levers.kmeans import kmeans_quantize
    >>> codebook_bytes(kmeans_quantize(torch.linspace(-1, 1, 100), bits=2))  # 16 + 25
    41
    """
    check_instance("codebook", codebook, Codebook)
    return codebook.centroids.numel() * 4 + (codebook.indices.numel() * codebook.bits + 7) // 8


def export(model: nn.Module) -> dict[str, Tensor]:
    """The model as it would be stored: packed integer weights, scales and zero points.

    Quantized weights of a model fake-quantized by `levers.qmodel.quantize_` become
    ``<layer>.weight_packed`` (uint8, b bits per weight, `pack_bits`) with their
    ``scale``/``zero_point``; activation parameters, biases and unquantized tensors stay float.
    Measure the bytes with `saved_bytes`.

    Examples
    --------
    >>> from levers.models import MLP
    >>> from levers.qmodel import QuantConfig, quantize_
    >>> m = quantize_(MLP((4, 2)), QuantConfig(), torch.rand(3, 4))
    >>> export(m)["fc1.weight_packed"].dtype, export(m)["fc1.weight_packed"].numel()
    (torch.uint8, 8)
    """
    check_instance("model", model)
    state: dict[str, Tensor] = {}
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, FakeQuantLayer)}
    for name, m in quantized.items():
        if m.config.weight is not None:
            qp = m.weight_qparams()
            q = quantize_affine(m.layer.weight.detach(), qp).long() - qp.q_min
            state[f"{name}.weight_packed"] = pack_bits(q, qp.bits)
            state[f"{name}.weight_scale"], state[f"{name}.weight_zero_point"] = (
                qp.scale, qp.zero_point)
        else:
            state[f"{name}.weight"] = m.layer.weight.detach()
        if m.act_qp is not None:
            state[f"{name}.act_scale"], state[f"{name}.act_zero_point"] = (
                m.act_qp.scale, m.act_qp.zero_point)
        if m.layer.bias is not None:
            state[f"{name}.bias"] = m.layer.bias.detach()
    for key, value in model.state_dict().items():
        if not any(key.startswith(f"{n}.") for n in quantized):
            state[key] = value
    # Fresh contiguous copies: torch.save writes a view's whole underlying storage.
    return {k: v.detach().clone().contiguous() for k, v in state.items()}
