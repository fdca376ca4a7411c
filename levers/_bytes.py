"""Byte helpers shared by the storage formats (`levers.encode`, `levers.structured_formats`).

Private to the library: raw little-endian values of a tensor, and index arrays written with a
fixed number of bytes per index, refusing an index that does not fit.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

#: Little-endian unsigned dtypes by index width in bytes.
INDEX_DTYPES = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}


def raw_bytes(t: Tensor) -> bytes:
    """The values of `t` as little-endian bytes, whatever the dtype (bfloat16 included)."""
    return t.detach().contiguous().flatten().view(torch.uint8).numpy().tobytes()


def index_bytes_of(values: np.ndarray, index_bytes: int, what: str) -> bytes:
    """`values` as ``index_bytes``-byte unsigned integers; ValueError naming `what` if too large."""
    if values.size and int(values.max()) >= 256 ** index_bytes:
        raise ValueError(f"index_bytes={index_bytes} cannot hold {what} up to {int(values.max())}; "
                         f"use at least {math.ceil(math.log2(int(values.max()) + 1) / 8)} bytes")
    return values.astype(INDEX_DTYPES[index_bytes]).tobytes()
