"""Tests of levers.structured_formats: N:M round trips and layout, BSR byte for byte against
scipy.sparse.bsr_matrix, sizes equal to the formulas."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers import encode, structured
from levers import structured_formats as SF
from levers.encode import unpack_bits

FAST = settings(max_examples=40, deadline=None)


def sparse_tensor(seed: int, shape: list[int], density: float, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    return (w * (torch.rand(shape, generator=g) < density)).to(dtype)


def nm_sparse(seed: int, shape: tuple[int, ...], n: int, m: int, dtype=torch.float32):
    """Random weights with at most n non-zeros in every group of m (some groups fewer)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    w = w * structured.nm_mask(w, n, m) * (torch.rand(shape, generator=g) < 0.8)
    return w.to(dtype)


@FAST
@given(rows=st.integers(1, 6), groups=st.integers(1, 6),
       nm=st.sampled_from([(2, 4), (1, 4), (1, 2), (4, 8), (3, 8)]), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.float64]))
def test_nm_round_trip_and_size_equals_formula(rows, groups, nm, seed, dtype):
    n, m = nm
    w = nm_sparse(seed, (rows, groups * m), n, m, dtype)
    data = SF.encode_nm(w, n, m)
    assert len(data) == SF.nm_bytes(tuple(w.shape), n, m, w.element_size())
    back = SF.decode_nm(data, tuple(w.shape), n, m, dtype=dtype)
    assert back.dtype == dtype and torch.equal(back, w)


def test_two_four_payload_is_values_then_two_bit_positions():
    w = torch.tensor([[0.0, 3.0, 0.0, -1.0, 5.0, 0.0, 0.0, 0.0]])
    data = SF.encode_nm(w)
    values = torch.frombuffer(bytearray(data[:16]), dtype=torch.float32).tolist()
    assert values == [3.0, -1.0, 5.0, 0.0]  # the second group has one non-zero: a zero fills
    positions = unpack_bits(torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8), 2, 4)
    assert positions.tolist() == [1, 3, 0, 1]
    fc1 = nm_sparse(0, (300, 784), 2, 4)
    assert len(SF.encode_nm(fc1)) == 300 * 784 // 2 * 4 + 300 * 784 // 2 * 2 // 8


@pytest.mark.parametrize("block", [(1, 1), (2, 2), (4, 4), (2, 8), (3, 5)])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.3, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bsr_payload_is_scipy_bsr_arrays(block, density, dtype):
    import numpy as np
    import scipy.sparse

    shape = (block[0] * 6, block[1] * 5)
    w = sparse_tensor(7, list(shape), density, dtype)
    w = torch.where(w == 0, torch.zeros_like(w), w)  # +0.0 only: scipy rebuilds blocks
    theirs = scipy.sparse.bsr_matrix(w.numpy(), blocksize=block)
    theirs.sort_indices()
    expected = (theirs.indptr.astype("<u4").tobytes() + theirs.indices.astype("<u4").tobytes()
                + np.ascontiguousarray(theirs.data).tobytes())
    data = SF.encode_bsr(w, block)
    assert data == expected
    assert len(data) == SF.bsr_bytes(shape, theirs.data.shape[0], block, w.element_size())
    back = SF.decode_bsr(data, shape, block, dtype=dtype)
    assert torch.equal(back, w)
    assert torch.equal(back, torch.from_numpy(theirs.toarray()))


def test_bsr_of_one_by_one_blocks_is_csr():
    w = sparse_tensor(4, [20, 30], 0.2, torch.float32)
    assert SF.encode_bsr(w, (1, 1)) == encode.encode(w, "csr")


@pytest.mark.parametrize("call, match", [
    (lambda: SF.encode_nm(torch.ones(1, 4)), "at most n=2 non-zeros"),
    (lambda: SF.encode_nm(torch.ones(1, 6)), "multiple of m=4"),
    (lambda: SF.encode_nm(torch.ones(1, 4), n=5, m=4), "n must be"),
    (lambda: SF.decode_nm(b"\x00" * 3, (1, 4)), "not an 2:4 payload"),
    (lambda: SF.encode_bsr(torch.ones(4, 6), (4, 4)), "divisible by block"),
    (lambda: SF.encode_bsr(torch.ones(4, 4), (4, 4, 1)), "block"),
    (lambda: SF.decode_bsr(b"\x00" * 5, (4, 4), (2, 2)), "not a BSR payload"),
    (lambda: SF.bsr_bytes((4, 4), 5, (2, 2)), "n_blocks"),
])
def test_structured_formats_reject_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
