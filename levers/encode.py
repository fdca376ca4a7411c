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
"""

from __future__ import annotations

import io
import math
from numbers import Integral

import numpy as np
import torch
from torch import Tensor, nn

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
_INDEX_DTYPES = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}


def _check(fmt: str, index_bytes: int) -> None:
    check_choice("fmt", fmt, FORMATS)
    check_choice("index_bytes", index_bytes, tuple(_INDEX_DTYPES))


def _raw(t: Tensor) -> bytes:
    """The values of `t` as little-endian bytes, whatever the dtype (bfloat16 included)."""
    return t.detach().contiguous().flatten().view(torch.uint8).numpy().tobytes()


def _indices(values: np.ndarray, index_bytes: int, what: str) -> bytes:
    if values.size and int(values.max()) >= 256 ** index_bytes:
        raise ValueError(f"index_bytes={index_bytes} cannot hold {what} up to {int(values.max())}; "
                         f"use at least {math.ceil(math.log2(int(values.max()) + 1) / 8)} bytes")
    return values.astype(_INDEX_DTYPES[index_bytes]).tobytes()


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
        return _raw(w)
    flat = w.detach().contiguous().flatten()
    nonzero = flat != 0
    values = _raw(flat[nonzero])
    if fmt == "bitmask":
        return np.packbits(nonzero.numpy()).tobytes() + values
    if fmt == "coo":
        coords = np.stack(np.unravel_index(np.flatnonzero(nonzero.numpy()), tuple(w.shape)))
        return b"".join(_indices(c, index_bytes, "coordinates") for c in coords) + values
    if w.dim() != 2:
        raise ValueError(f"csr needs a 2-D tensor, got shape {tuple(w.shape)}")
    rows, cols = np.nonzero(nonzero.reshape(w.shape).numpy())
    row_ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=w.shape[0]))])
    return (_indices(row_ptr, index_bytes, "row pointers")
            + _indices(cols, index_bytes, "column indices") + values)


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
        return np.frombuffer(bytes(data), dtype=_INDEX_DTYPES[index_bytes], count=count,
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


# --- Structured sparse formats: N:M (2:4) and block-sparse rows (BSR) -------------------------
# N:M: a tensor whose every group of m consecutive entries (flatten order, i.e. along the last
# dimension) holds at most n non-zeros is stored as n values and n position indices of
# ⌈log2 m⌉ bits per group: g·n·b + ⌈g·n·⌈log2 m⌉ / 8⌉ bytes for g = numel/m groups (2:4: half
# the values plus 2 bits each). BSR: an (r, c) matrix cut into bh × bw blocks stores the blocks
# that hold a non-zero, whole, as CSR over block rows (scipy.sparse.bsr_matrix's arrays):
# (r/bh + 1)·i + k·i + k·bh·bw·b bytes for k stored blocks.


def _nm_layout(shape: tuple[int, ...], n: int, m: int) -> tuple[int, int]:
    """Number of groups and bits per position of an N:M payload of `shape`."""
    check_int("m", m, 2)
    check_int("n", n, 1, m)
    numel = math.prod(shape)
    if numel % m:
        raise fail("shape", shape, f"a shape whose number of entries is a multiple of m={m}")
    return numel // m, math.ceil(math.log2(m))


def encode_nm(w: Tensor, n: int = 2, m: int = 4) -> bytes:
    """Serialize `w` in the compressed N:M format: per group, `n` values then packed positions.

    Layout: all ``g·n`` values (group by group, in position order; a group with fewer than `n`
    non-zeros stores explicit zeros), then the ``g·n`` positions in the group, ⌈log2 m⌉ bits
    each, packed with `pack_bits`. Reshape a conv weight so its groups are consecutive first.

    Examples
    --------
    >>> w = torch.tensor([[0., 3., 0., -1., 5., 0., 0., 0.]])  # two groups of 4
    >>> len(encode_nm(w)), nm_bytes((1, 8))  # 4 values · 4 B + 4 positions · 2 bits
    (17, 17)
    """
    if not isinstance(w, Tensor):
        raise fail("w", w, "a torch.Tensor")
    g, bits = _nm_layout(tuple(w.shape), n, m)
    groups = w.detach().contiguous().reshape(g, m)
    nonzero = groups != 0
    if bool((nonzero.sum(1) > n).any()):
        raise fail("w", w, f"a tensor with at most n={n} non-zeros in every group of m={m} "
                   "consecutive entries (prune it with levers.prune.nm_mask)")
    # the non-zeros first (stable, so in position order), then zeros to fill n slots
    slots = torch.argsort((~nonzero).to(torch.int8), dim=1, stable=True)[:, :n]
    slots = slots.sort(dim=1).values
    return _raw(groups.gather(1, slots)) + pack_bits(slots, bits).numpy().tobytes()


def decode_nm(data: bytes, shape: tuple[int, ...], n: int = 2, m: int = 4,
              dtype: torch.dtype = torch.float32) -> Tensor:
    """Rebuild the dense tensor from an `encode_nm` payload (its inverse).

    Examples
    --------
    >>> w = torch.tensor([[0., 3., 0., -1., 5., 0., 0., 0.]])
    >>> torch.equal(decode_nm(encode_nm(w), (1, 8)), w)
    True
    """
    if not isinstance(data, bytes | bytearray):
        raise fail("data", data, "bytes")
    shape = check_shape("shape", shape)
    if not isinstance(dtype, torch.dtype):
        raise fail("dtype", dtype, "a torch.dtype")
    g, bits = _nm_layout(shape, n, m)
    b = torch.empty(0, dtype=dtype).element_size()
    if len(data) != nm_bytes(shape, n, m, b):
        raise ValueError(f"data has {len(data)} bytes, which is not an {n}:{m} payload of shape "
                         f"{shape} and dtype {dtype}")
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    values = torch.from_numpy(buf[:g * n * b].copy()).view(dtype).reshape(g, n)
    slots = unpack_bits(torch.from_numpy(buf[g * n * b:].copy()), bits, g * n).reshape(g, n)
    return torch.zeros(g, m, dtype=dtype).scatter_(1, slots, values).reshape(shape)


def nm_bytes(shape: tuple[int, ...], n: int = 2, m: int = 4, value_bytes: int = 4) -> int:
    """Size of the `encode_nm` payload: ``g·n·b + ⌈g·n·⌈log2 m⌉ / 8⌉`` for ``g`` groups.

    Examples
    --------
    >>> nm_bytes((300, 784))  # LeNet fc1 in 2:4: 117,600 values and 117,600 2-bit positions
    499800
    """
    g, bits = _nm_layout(check_shape("shape", shape), n, m)
    check_int("value_bytes", value_bytes, 1)
    return g * n * value_bytes + math.ceil(g * n * bits / 8)


def _bsr_grid(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, int]:
    if (not isinstance(block, tuple) or len(block) != 2
            or any(isinstance(v, bool) or not isinstance(v, Integral) or v < 1 for v in block)):
        raise fail("block", block, "a tuple of two positive ints (bh, bw)")
    if len(shape) != 2 or shape[0] % block[0] or shape[1] % block[1]:
        raise fail("shape", shape, f"a 2-D shape divisible by block={block}")
    return shape[0] // block[0], shape[1] // block[1]


def encode_bsr(w: Tensor, block: tuple[int, int] = (4, 4), index_bytes: int = 4) -> bytes:
    """Serialize a matrix in BSR: block-row pointers, block-column indices, then the blocks.

    A block is stored (all ``bh·bw`` values, row-major) when it holds at least one non-zero;
    the three arrays are those of ``scipy.sparse.bsr_matrix``.

    Examples
    --------
    >>> w = torch.zeros(4, 4)
    >>> w[0, 1] = w[3, 3] = 1.0
    >>> len(encode_bsr(w, (2, 2))), bsr_bytes((4, 4), 2, (2, 2))  # 3 + 2 indices, 2 blocks
    (52, 52)
    """
    if not isinstance(w, Tensor):
        raise fail("w", w, "a torch.Tensor")
    check_choice("index_bytes", index_bytes, tuple(_INDEX_DTYPES))
    (rb, cb), (bh, bw) = _bsr_grid(tuple(w.shape), block), block
    blocks = w.detach().contiguous().reshape(rb, bh, cb, bw).transpose(1, 2)  # [rb, cb, bh, bw]
    stored = blocks.flatten(2).ne(0).any(2)
    rows, cols = np.nonzero(stored.numpy())
    row_ptr = np.concatenate([[0], np.cumsum(stored.sum(1).numpy())])
    return (_indices(row_ptr, index_bytes, "block-row pointers")
            + _indices(cols, index_bytes, "block-column indices")
            + _raw(blocks[torch.from_numpy(rows), torch.from_numpy(cols)]))


def decode_bsr(data: bytes, shape: tuple[int, int], block: tuple[int, int] = (4, 4),
               dtype: torch.dtype = torch.float32, index_bytes: int = 4) -> Tensor:
    """Rebuild the dense matrix from an `encode_bsr` payload (its inverse).

    Examples
    --------
    >>> w = torch.zeros(4, 4)
    >>> w[0, 1] = w[3, 3] = 1.0
    >>> torch.equal(decode_bsr(encode_bsr(w, (2, 2)), (4, 4), (2, 2)), w)
    True
    """
    if not isinstance(data, bytes | bytearray):
        raise fail("data", data, "bytes")
    check_choice("index_bytes", index_bytes, tuple(_INDEX_DTYPES))
    shape = check_shape("shape", shape)
    if not isinstance(dtype, torch.dtype):
        raise fail("dtype", dtype, "a torch.dtype")
    (rb, cb), (bh, bw) = _bsr_grid(shape, block), block
    b, head = torch.empty(0, dtype=dtype).element_size(), (rb + 1) * index_bytes
    k = (int(np.frombuffer(bytes(data), dtype=_INDEX_DTYPES[index_bytes], count=1,
                           offset=head - index_bytes)[0]) if len(data) >= head else -1)
    if k < 0 or len(data) != bsr_bytes(shape, k, block, b, index_bytes):
        raise ValueError(f"data has {len(data)} bytes, which is not a BSR payload of shape "
                         f"{shape}, block {block} and dtype {dtype}")
    ints = np.frombuffer(bytes(data), dtype=_INDEX_DTYPES[index_bytes], count=rb + 1 + k)
    row_ptr, cols = ints[:rb + 1].astype(np.int64), ints[rb + 1:].astype(np.int64)
    rows = np.repeat(np.arange(rb), np.diff(row_ptr))
    chunk = np.frombuffer(bytes(data), dtype=np.uint8, offset=head + k * index_bytes).copy()
    blocks = torch.zeros(rb, cb, bh, bw, dtype=dtype)
    if k:
        blocks[torch.from_numpy(rows), torch.from_numpy(cols)] = (
            torch.from_numpy(chunk).view(dtype).reshape(k, bh, bw))
    return blocks.transpose(1, 2).reshape(shape)


def bsr_bytes(shape: tuple[int, int], n_blocks: int, block: tuple[int, int] = (4, 4),
              value_bytes: int = 4, index_bytes: int = 4) -> int:
    """Size of the `encode_bsr` payload: ``(r/bh + 1)·i + k·i + k·bh·bw·b`` for `n_blocks` k.

    Examples
    --------
    >>> bsr_bytes((300, 784), 1470)  # fc1 with 10 % of its 4 × 4 blocks kept
    100264
    """
    shape = check_shape("shape", shape)
    (rb, cb), (bh, bw) = _bsr_grid(shape, block), block
    check_int("n_blocks", n_blocks, 0, rb * cb)
    check_int("value_bytes", value_bytes, 1)
    check_choice("index_bytes", index_bytes, tuple(_INDEX_DTYPES))
    return (rb + 1) * index_bytes + n_blocks * (index_bytes + bh * bw * value_bytes)
# --- end of the structured sparse formats -------------------------------------------------------


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
