"""Tests of levers.encode: round trips, sizes equal to the formulas, agreement with torch CSR,
bit packing and model export."""

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers import encode
from levers.encode import export, pack_bits, saved_bytes, unpack_bits
from levers.models import LeNet300100
from levers.qmodel import QuantConfig, quantize_
from levers.quant import QScheme

FAST = settings(max_examples=40, deadline=None)


def sparse_tensor(seed: int, shape: list[int], density: float, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    return (w * (torch.rand(shape, generator=g) < density)).to(dtype)


@FAST
@given(shape=st.lists(st.integers(1, 12), min_size=1, max_size=3), density=st.floats(0, 1),
       seed=st.integers(0, 2**16), fmt=st.sampled_from(encode.FORMATS),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
       index_bytes=st.sampled_from([1, 2, 4, 8]))
def test_round_trip_and_size_equals_formula(shape, density, seed, fmt, dtype, index_bytes):
    if fmt == "csr" and len(shape) != 2:
        shape = [shape[0], 3]
    w = sparse_tensor(seed, shape, density, dtype)
    data = encode.encode(w, fmt, index_bytes=index_bytes)
    assert isinstance(data, bytes)
    back = encode.decode(data, fmt, tuple(shape), dtype=dtype, index_bytes=index_bytes)
    assert back.dtype == dtype and torch.equal(back, w)
    nnz = int(torch.count_nonzero(w))
    assert len(data) == encode.formula_bytes(fmt, tuple(shape), nnz, w.element_size(),
                                             index_bytes)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_csr_payload_is_torchs_csr_arrays(sparsity):
    w = sparse_tensor(1, [30, 40], 1 - sparsity, torch.float32)
    csr = w.to_sparse_csr()
    theirs = b"".join(a.to(torch.int32).numpy().tobytes() if a.dtype == torch.int64
                      else a.numpy().tobytes()
                      for a in (csr.crow_indices(), csr.col_indices(), csr.values()))
    assert encode.encode(w, "csr") == theirs


def test_csr_counts_2a_plus_r_plus_1_numbers():
    w = sparse_tensor(2, [300, 784], 0.1, torch.float32)
    a = int(torch.count_nonzero(w))
    assert len(encode.encode(w, "csr")) == 4 * (2 * a + 300 + 1)


def test_dense_bytes_do_not_depend_on_zeros():
    full = torch.randn(100, 50)
    pruned = full * (full.abs() > 1.5)
    assert len(encode.encode(full, "dense")) == len(encode.encode(pruned, "dense")) == 20_000
    model = LeNet300100()
    before = encode.saved_bytes(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    assert encode.saved_bytes(model.state_dict()) == before


@pytest.mark.parametrize("fmt", encode.FORMATS)
def test_non_contiguous_and_parameter_tensors_round_trip(fmt):
    w = torch.nn.Parameter(sparse_tensor(3, [7, 5], 0.4, torch.float32).T)  # transposed view
    back = encode.decode(encode.encode(w, fmt), fmt, (5, 7))
    assert torch.equal(back, w.detach())


def test_known_sizes():
    w = torch.tensor([[0.0, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 4.0]])
    sizes = {f: len(encode.encode(w, f)) for f in encode.FORMATS}
    assert sizes == {"dense": 32, "bitmask": 1 + 12, "coo": 3 * 12, "csr": 3 * 4 + 3 * 8}
    assert len(encode.encode(w, "coo", index_bytes=1)) == 3 * (2 + 4)


def test_compression_ratio():
    assert encode.compression_ratio(400, 100) == 4.0


@pytest.mark.parametrize("call, match", [
    (lambda: encode.encode(torch.ones(3), "csc"), "fmt must be one of"),
    (lambda: encode.encode(torch.ones(3), "coo", index_bytes=3), "index_bytes"),
    (lambda: encode.encode(torch.ones(2, 2, 2), "csr"), "2-D"),
    (lambda: encode.encode([1.0], "dense"), "torch.Tensor"),
    (lambda: encode.encode(torch.ones(1, 300), "csr", index_bytes=1), "cannot hold"),
    (lambda: encode.decode(b"\x00" * 7, "dense", (2,)), "not a dense payload"),
    (lambda: encode.decode(b"\x00" * 7, "csr", (2, 2)), "not a csr payload"),
    (lambda: encode.decode("abc", "dense", (2,)), "bytes"),
    (lambda: encode.formula_bytes("csr", (2, 2), nnz=5), "nnz"),
    (lambda: encode.formula_bytes("csr", (2, 2, 2), nnz=1), "2-D"),
    (lambda: encode.formula_bytes("dense", (2,), nnz=1, value_bytes=0), "value_bytes"),
    (lambda: encode.compression_ratio(0, 1), "original_bytes"),
])
def test_bad_input_gets_a_clear_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# --- quantized values: bit packing and model export -----------------------------------------


def _images(n=16, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 7, 8, 12])
def test_pack_unpack_round_trip_and_size(bits):
    q = torch.randint(0, 2**bits, (1001,), generator=torch.Generator().manual_seed(bits))
    packed = pack_bits(q, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == (1001 * bits + 7) // 8
    assert torch.equal(unpack_bits(packed, bits, 1001), q)
    with pytest.raises(ValueError, match=r"q must hold values in \[0, "):
        pack_bits(torch.tensor([2**bits]), bits)


def test_export_bytes_shrink_with_bits():
    model = LeNet300100()
    fp32 = saved_bytes(model.state_dict())
    sizes = {b: saved_bytes(export(quantize_(copy.deepcopy(model),
                                                  QuantConfig(weight=QScheme(b, axis=0)),
                                                  _images())))
             for b in (8, 4, 2)}
    assert 3.8 < fp32 / sizes[8] < 4.0
    assert sizes[8] > sizes[4] > sizes[2]
    assert fp32 / sizes[2] > 12


def test_export_decodes_to_the_fake_quantized_weights():
    model = quantize_(LeNet300100(), QuantConfig(weight=QScheme(3, axis=0)), _images())
    state = export(model)
    qp = model.fc2.weight_qparams()
    n = model.fc2.layer.weight.numel()
    q = unpack_bits(state["fc2.weight_packed"], 3, n).reshape(100, 300) + qp.q_min
    decoded = (q - state["fc2.weight_zero_point"][:, None]) * state["fc2.weight_scale"][:, None]
    assert torch.equal(decoded.float(), model.fc2.quantized_weight().detach())
    assert "fc1.weight" not in state and "fc1.bias" in state
