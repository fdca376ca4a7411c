"""Tests of levers.deepcompress and of levers.huffman's bit streams: round trips, bounds, errors."""

import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers import deepcompress as D
from levers import huffman, share
from levers.models import LeNet5, LeNet300100
from levers.prune import magnitude_mask

FAST = settings(max_examples=60, deadline=None)
STREAMS = st.lists(st.integers(0, 20), min_size=0, max_size=300)


def roundtrip(symbols: list[int]) -> tuple[np.ndarray, int, dict]:
    counts = huffman.symbol_counts(symbols)
    lengths = huffman.code_lengths(counts)
    data, n_bits = huffman.encode_stream(symbols, lengths)
    return huffman.decode_stream(data, lengths, len(symbols)), n_bits, counts


@FAST
@given(symbols=STREAMS.filter(bool))
def test_huffman_stream_round_trip_meets_kraft_and_the_entropy_bound(symbols):
    back, n_bits, counts = roundtrip(symbols)
    assert back.tolist() == symbols
    lengths = huffman.code_lengths(counts)
    if len(counts) > 1:
        assert huffman.kraft_sum(lengths) == 1.0  # a full tree: equality
    h = huffman.entropy(counts)
    assert len(symbols) * h <= n_bits <= len(symbols) * (h + 1) + 1e-9
    assert n_bits == sum(c * lengths[s] for s, c in counts.items())


@pytest.mark.parametrize("symbols", [[7], [3] * 50, [0, 1] * 20])
def test_huffman_stream_edge_cases(symbols):
    back, n_bits, counts = roundtrip(symbols)
    assert back.tolist() == symbols
    assert n_bits == len(symbols) * (1 if len(counts) <= 2 else 0)


def test_huffman_stream_empty_and_bad_streams():
    data, n_bits = huffman.encode_stream([], {0: 1})
    assert (data, n_bits) == (b"", 0)
    assert huffman.decode_stream(b"", {0: 1}, 0).tolist() == []
    with pytest.raises(ValueError, match="ends after 8 of 9"):
        huffman.decode_stream(b"\x00", {0: 1, 1: 1}, 9)
    with pytest.raises(ValueError, match="no codeword"):
        huffman.decode_stream(b"\xff", {0: 1}, 1)  # bit 1 starts no codeword
    with pytest.raises(ValueError, match="no code for"):
        huffman.encode_stream([0, 5], {0: 1, 1: 1})


@FAST
@given(n=st.integers(0, 400), density=st.floats(0, 1), index_bits=st.integers(1, 6),
       seed=st.integers(0, 1000))
def test_relative_indices_round_trip_any_mask(n, density, index_bits, seed):
    mask = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < density
    gaps, filler = D.relative_indices(mask, index_bits)
    assert bool(((gaps >= 0) & (gaps <= 2**index_bits - 1)).all())
    positions = D.positions_from_gaps(gaps)
    assert positions[~filler].tolist() == torch.nonzero(mask).reshape(-1).tolist()
    # Fillers exist only where a gap does not fit, and each covers the full span.
    assert bool((gaps[filler] == 2**index_bits - 1).all())
    gap_lengths = torch.diff(torch.nonzero(mask).reshape(-1), prepend=torch.tensor([-1])) - 1
    assert int(filler.sum()) == int((gap_lengths // 2**index_bits).sum())


def test_relative_indices_paper_figure_2():
    # Han et al. 2016, Fig. 2: 3-bit indices, a non-zero at position 3 and one 15 places later.
    mask = torch.zeros(20, dtype=torch.bool)
    mask[[3, 18]] = True
    gaps, filler = D.relative_indices(mask, 3)
    assert gaps.tolist() == [3, 7, 6] and filler.tolist() == [False, True, False]


def shared_lenet(bits: int = 4, sparsity: float = 0.9) -> torch.nn.Module:
    torch.manual_seed(0)
    m = LeNet300100()
    with torch.no_grad():
        for layer in m.layers():
            w = layer.weight
            w.mul_(magnitude_mask(w, sparsity))
            w.copy_(share.share(w, bits).weight())
    return m


@pytest.mark.parametrize("coding", D.CODINGS)
@pytest.mark.parametrize("bits", [None, 2, 5])
def test_serialization_round_trip_is_exact(coding, bits):
    m = shared_lenet(bits or 8)
    formats = {f"fc{i}.weight": D.LayerFormat(bits or None, 3, coding) for i in (1, 2, 3)}
    if bits is None:
        formats = {k: D.LayerFormat(None, 3, coding) for k in formats}
    else:
        m = shared_lenet(bits)
    data = D.serialize(m, formats)
    fresh = D.load(LeNet300100(), data)
    for key, t in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], t), key
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(fresh(x), m(x))
    counted = D.parts(data)
    assert sum(sum(p.values()) for p in counted.values()) == len(data)


def test_serialized_size_matches_its_parts_by_formula():
    m = shared_lenet(4)
    fmt = D.LayerFormat(4, 5, "fixed")
    data = D.serialize(m, {"fc1.weight": fmt})
    codebook, values, gaps = D.layer_streams(m.fc1.weight, fmt)
    p = D.parts(data)["fc1.weight"]
    assert p["codebook"] == 4 * len(codebook) <= 4 * 15
    assert p["values"] == math.ceil(len(values) * 4 / 8)
    assert p["indices"] == math.ceil(len(gaps) * 5 / 8)
    assert p["header"] == 1 + len("fc1.weight") + 2 + 2 * 4 + struct.calcsize("<BBBIH")
    huff = D.parts(D.serialize(m, {"fc1.weight": D.LayerFormat(4, 5, "huffman")}))["fc1.weight"]
    assert huff["values table"] == 16 + 4 and huff["indices table"] == 32 + 4
    bound = huffman.entropy_bytes(values)
    assert bound <= huff["values"] <= bound + len(values) / 8 + 1


def test_conv_model_round_trip():
    torch.manual_seed(1)
    m = LeNet5()
    with torch.no_grad():
        m.conv2.weight.copy_(share.share(m.conv2.weight, 3).weight())
    data = D.serialize(m, {"conv2.weight": D.LayerFormat(3, 4), "fc1.weight": D.LayerFormat(None)})
    assert torch.equal(D.load(LeNet5(), data).conv2.weight, m.conv2.weight)


def test_bad_input_gets_a_clear_error():
    m = shared_lenet(4)
    for bad in (0, 17):
        with pytest.raises(ValueError, match="bits"):
            D.LayerFormat(bits=bad)
        with pytest.raises(ValueError, match="index_bits"):
            D.LayerFormat(index_bits=bad)
    with pytest.raises(ValueError, match="coding"):
        D.LayerFormat(coding="zip")
    with pytest.raises(ValueError, match="does not have"):
        D.serialize(m, {"fc9.weight": D.LayerFormat()})
    with pytest.raises(ValueError, match="share its weights first"):
        D.serialize(LeNet300100(), {"fc1.weight": D.LayerFormat(4)})


def test_corrupted_or_truncated_streams_never_load():
    data = D.serialize(shared_lenet(4), {"fc1.weight": D.LayerFormat(4, 5)})
    with pytest.raises(ValueError, match="not a levers"):
        D.deserialize(b"PK" + data[2:])
    for cut in (len(data) - 1, len(data) // 2, 12):
        with pytest.raises(ValueError, match="CRC|truncated"):
            D.deserialize(data[:cut])
    for where in (20, len(data) // 3, len(data) - 10):
        flipped = bytearray(data)
        flipped[where] ^= 0x10
        with pytest.raises(ValueError, match="CRC"):
            D.deserialize(bytes(flipped))
    with pytest.raises(ValueError, match="CRC"):
        D.deserialize(data + b"\0")
    with pytest.raises(TypeError, match="bytes"):
        D.deserialize("text")
