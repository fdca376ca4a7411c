"""Structured-sparse storage: the N:M compressed format (2:4) and block-sparse rows (BSR).

A mask with structure (`levers.structured`) pays for positions more cheaply than CSR does:

- **N:M**: a tensor whose every group of m consecutive entries (flatten order, i.e. along the
  last dimension) holds at most n non-zeros is stored as n values and n positions of
  ⌈log2 m⌉ bits per group: ``g·n·b + ⌈g·n·⌈log2 m⌉ / 8⌉`` bytes for ``g = numel/m`` groups
  (2:4: half the values plus 2 bits each), the layout sparse tensor cores read;
- **BSR**: an (r, c) matrix cut into ``bh × bw`` blocks stores the blocks that hold a
  non-zero, whole, as CSR over block rows (``scipy.sparse.bsr_matrix``'s arrays):
  ``(r/bh + 1)·i + k·i + k·bh·bw·b`` bytes for ``k`` stored blocks.

As in `levers.encode`, each format has a writer, its inverse and the formula its size must
match; positions are packed with `levers.encode.pack_bits`.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import torch
from torch import Tensor

from levers._bytes import INDEX_DTYPES, index_bytes_of, raw_bytes
from levers._checks import check_choice, check_int, check_shape, fail
from levers.encode import pack_bits, unpack_bits


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
                   "consecutive entries (prune it with levers.structured.nm_mask)")
    # the non-zeros first (stable, so in position order), then zeros to fill n slots
    slots = torch.argsort((~nonzero).to(torch.int8), dim=1, stable=True)[:, :n]
    slots = slots.sort(dim=1).values
    return raw_bytes(groups.gather(1, slots)) + pack_bits(slots, bits).numpy().tobytes()


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
    check_choice("index_bytes", index_bytes, tuple(INDEX_DTYPES))
    (rb, cb), (bh, bw) = _bsr_grid(tuple(w.shape), block), block
    blocks = w.detach().contiguous().reshape(rb, bh, cb, bw).transpose(1, 2)  # [rb, cb, bh, bw]
    stored = blocks.flatten(2).ne(0).any(2)
    rows, cols = np.nonzero(stored.numpy())
    row_ptr = np.concatenate([[0], np.cumsum(stored.sum(1).numpy())])
    return (index_bytes_of(row_ptr, index_bytes, "block-row pointers")
            + index_bytes_of(cols, index_bytes, "block-column indices")
            + raw_bytes(blocks[torch.from_numpy(rows), torch.from_numpy(cols)]))


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
    check_choice("index_bytes", index_bytes, tuple(INDEX_DTYPES))
    shape = check_shape("shape", shape)
    if not isinstance(dtype, torch.dtype):
        raise fail("dtype", dtype, "a torch.dtype")
    (rb, cb), (bh, bw) = _bsr_grid(shape, block), block
    b, head = torch.empty(0, dtype=dtype).element_size(), (rb + 1) * index_bytes
    k = (int(np.frombuffer(bytes(data), dtype=INDEX_DTYPES[index_bytes], count=1,
                           offset=head - index_bytes)[0]) if len(data) >= head else -1)
    if k < 0 or len(data) != bsr_bytes(shape, k, block, b, index_bytes):
        raise ValueError(f"data has {len(data)} bytes, which is not a BSR payload of shape "
                         f"{shape}, block {block} and dtype {dtype}")
    ints = np.frombuffer(bytes(data), dtype=INDEX_DTYPES[index_bytes], count=rb + 1 + k)
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
    check_choice("index_bytes", index_bytes, tuple(INDEX_DTYPES))
    return (rb + 1) * index_bytes + n_blocks * (index_bytes + bh * bw * value_bytes)
