"""Tests of levers.huffman against a heapq Huffman reference, brute force and the Shannon bound."""

import doctest
import heapq
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers import huffman

FAST = settings(max_examples=60, deadline=None)
COUNTS = st.dictionaries(st.integers(0, 50), st.integers(1, 1000), min_size=2, max_size=30)


def heapq_lengths(counts: dict) -> dict:
    """The textbook construction: a heap of (weight, tiebreak, {symbol: depth})."""
    tie = itertools.count()
    heap = [(c, next(tie), {s: 0}) for s, c in counts.items()]
    heapq.heapify(heap)
    while len(heap) > 1:
        w1, _, a = heapq.heappop(heap)
        w2, _, b = heapq.heappop(heap)
        heapq.heappush(heap, (w1 + w2, next(tie), {s: d + 1 for s, d in {**a, **b}.items()}))
    return heap[0][2]


def test_docstring_examples_run():
    assert doctest.testmod(huffman, raise_on_error=False).failed == 0


@FAST
@given(counts=COUNTS)
def test_expected_length_equals_the_heapq_reference(counts):
    ours = huffman.code_lengths(counts)
    ref = heapq_lengths(counts)
    assert set(ours) == set(counts)
    assert huffman.expected_length(counts, ours) == pytest.approx(
        huffman.expected_length(counts, ref), rel=1e-12)


@FAST
@given(counts=COUNTS)
def test_shannon_bound_and_kraft_equality(counts):
    lengths = huffman.code_lengths(counts)
    h, length = huffman.entropy(counts), huffman.expected_length(counts, lengths)
    assert h - 1e-12 <= length < h + 1
    assert huffman.kraft_sum(lengths) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_no_prefix_code_is_shorter_brute_force(seed):
    # Every length assignment with Kraft sum <= 1 is a prefix code; Huffman must beat them all.
    rng = np.random.default_rng(seed)
    counts = {s: int(c) for s, c in enumerate(rng.integers(1, 60, size=5))}
    best = min(sum(counts[s] * n for s, n in enumerate(ls))
               for ls in itertools.product(range(1, 6), repeat=5)
               if sum(2.0**-n for n in ls) <= 1)
    lengths = huffman.code_lengths(counts)
    assert sum(counts[s] * n for s, n in lengths.items()) == best


@FAST
@given(counts=COUNTS)
def test_canonical_codes_are_prefix_free_and_decode(counts):
    codes = huffman.canonical_codes(huffman.code_lengths(counts))
    words = sorted(codes.values())
    assert all(not b.startswith(a) for a, b in itertools.pairwise(words))
    stream = [s for s, c in counts.items() for _ in range(min(c, 3))]
    bits = "".join(codes[s] for s in stream)
    decode = {w: s for s, w in codes.items()}
    out, word = [], ""
    for bit in bits:
        word += bit
        if word in decode:
            out.append(decode[word])
            word = ""
    assert out == stream and word == ""


def test_entropy_matches_scipy_and_symbol_counts_read_tensors():
    from scipy import stats

    stream = torch.tensor([0, 1, 1, 2, 2, 2, 2, 7])
    counts = huffman.symbol_counts(stream)
    assert counts == {0: 1, 1: 2, 2: 4, 7: 1}
    assert huffman.symbol_counts(stream.numpy()) == counts
    assert huffman.symbol_counts(["b", "a", "b"]) == {"a": 1, "b": 2}
    assert huffman.entropy(counts) == pytest.approx(stats.entropy(list(counts.values()), base=2))


def test_single_symbol_gets_one_bit():
    assert huffman.code_lengths({5: 10}) == {5: 1}
    assert huffman.entropy({5: 10}) == 0.0


@pytest.mark.parametrize("call", [
    lambda: huffman.entropy({}),
    lambda: huffman.code_lengths({"a": 0}),
    lambda: huffman.code_lengths({"a": 1.5}),
    lambda: huffman.kraft_sum({"a": 0}),
    lambda: huffman.canonical_codes({"a": 1, "b": 1, "c": 1}),
    lambda: huffman.expected_length({"a": 1, "b": 1}, {"a": 1}),
])
def test_bad_input_raises(call):
    with pytest.raises(ValueError):
        call()


def test_kraft_sum_of_a_non_full_code():
    assert huffman.kraft_sum({"a": 1, "b": 2}) == 0.75
    assert math.isclose(huffman.kraft_sum({i: 3 for i in range(8)}), 1.0)
