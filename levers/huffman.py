"""Huffman coding of a symbol stream, and the Shannon bound it meets.

For a stream whose symbols occur with probabilities pₛ, the entropy H = −Σ pₛ·log₂ pₛ bits per
symbol is a lower bound on the expected length L of any uniquely decodable code (Shannon), and
Huffman's code — built by merging the two least frequent subtrees until one tree is left — is an
optimal prefix code with H ≤ L < H + 1. Its code lengths satisfy Kraft's inequality
Σ 2^(−lₛ) ≤ 1 with equality (the tree is full).

Only code *lengths* are computed here; `canonical_codes` turns lengths into codewords, so a
decoder needs the lengths alone. A stream with a single distinct symbol gets a 1-bit code (as
DEFLATE does); the bound L < H + 1 then holds with equality, the one exception.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Hashable, Iterable, Mapping

import numpy as np
import torch


def _check_counts(counts: object) -> None:
    if not isinstance(counts, Mapping) or not counts:
        raise ValueError(f"counts must be a non-empty mapping symbol -> count, got {counts!r}")
    for s, c in counts.items():
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"counts must be positive ints, got {c!r} for symbol {s!r}")


def _check_lengths(lengths: object) -> None:
    if not isinstance(lengths, Mapping) or not lengths:
        raise ValueError(f"lengths must be a non-empty mapping symbol -> length, got {lengths!r}")
    for s, n in lengths.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"lengths must be positive ints, got {n!r} for symbol {s!r}")


def symbol_counts(stream: Iterable[Hashable] | torch.Tensor | np.ndarray) -> dict[Hashable, int]:
    """How often each symbol occurs: a tensor or array counts its values, anything else its items.

    Examples
    --------
    >>> symbol_counts(torch.tensor([3, 1, 3, 3]))
    {1: 1, 3: 3}
    """
    if isinstance(stream, torch.Tensor):
        stream = stream.detach().cpu().numpy()
    if isinstance(stream, np.ndarray):
        values, counts = np.unique(stream.reshape(-1), return_counts=True)
        return {v.item(): int(c) for v, c in zip(values, counts, strict=True)}
    if isinstance(stream, str | bytes) or not isinstance(stream, Iterable):
        raise TypeError(f"stream must be a tensor, an array or an iterable of symbols, got "
                        f"{stream!r} ({type(stream).__name__})")
    return dict(sorted(Counter(stream).items(), key=lambda kv: repr(kv[0])))


def entropy(counts: Mapping[Hashable, int]) -> float:
    """Shannon entropy H = −Σ pₛ·log₂ pₛ of the symbol frequencies, in bits per symbol.

    Examples
    --------
    >>> entropy({"a": 2, "b": 1, "c": 1})
    1.5
    """
    _check_counts(counts)
    total = sum(counts.values())
    return float(-sum(c / total * math.log2(c / total) for c in counts.values()))


def code_lengths(counts: Mapping[Hashable, int]) -> dict[Hashable, int]:
    """Huffman code length of each symbol, from its count.

    The two-queue construction: leaves sorted by count in one queue, merged subtrees (which come
    out in increasing weight) in a second; each step merges the two lightest fronts. A symbol's
    length is its leaf's depth in the final tree.

    Examples
    --------
    >>> code_lengths({"a": 5, "b": 2, "c": 1, "d": 1})
    {'a': 1, 'b': 2, 'c': 3, 'd': 3}
    """
    _check_counts(counts)
    symbols = sorted(counts, key=lambda s: (counts[s], repr(s)))
    n = len(symbols)
    if n == 1:
        return {symbols[0]: 1}
    parent = [0] * (2 * n - 1)
    leaves = deque((counts[s], i) for i, s in enumerate(symbols))
    merged: deque[tuple[int, int]] = deque()

    def lightest() -> tuple[int, int]:
        if not merged or (leaves and leaves[0][0] <= merged[0][0]):
            return leaves.popleft()
        return merged.popleft()

    for node in range(n, 2 * n - 1):
        (w1, a), (w2, b) = lightest(), lightest()
        parent[a] = parent[b] = node
        merged.append((w1 + w2, node))
    depth = [0] * (2 * n - 1)
    for node in range(2 * n - 3, -1, -1):  # children were created before their parents
        depth[node] = depth[parent[node]] + 1
    leaf = {s: i for i, s in enumerate(symbols)}
    return {s: depth[leaf[s]] for s in counts}


def canonical_codes(lengths: Mapping[Hashable, int]) -> dict[Hashable, str]:
    """The canonical prefix code for the given lengths: by (length, symbol), each codeword is the
    previous one plus 1, shifted left when the length grows.

    Examples
    --------
    >>> canonical_codes({"a": 1, "b": 2, "c": 3, "d": 3})
    {'a': '0', 'b': '10', 'c': '110', 'd': '111'}
    """
    _check_lengths(lengths)
    if kraft_sum(lengths) > 1:
        raise ValueError(f"lengths violate Kraft's inequality (sum {kraft_sum(lengths)} > 1): "
                         "no prefix code has them")
    code, previous, out = 0, 0, {}
    for s in sorted(lengths, key=lambda s: (lengths[s], repr(s))):
        code <<= lengths[s] - previous
        out[s] = format(code, f"0{lengths[s]}b")
        code, previous = code + 1, lengths[s]
    return out


def kraft_sum(lengths: Mapping[Hashable, int]) -> float:
    """Σ 2^(−lₛ): at most 1 for any prefix code (Kraft), exactly 1 for a Huffman code.

    Examples
    --------
    >>> kraft_sum({"a": 1, "b": 2, "c": 3, "d": 3})
    1.0
    """
    _check_lengths(lengths)
    return float(sum(2.0 ** -n for n in lengths.values()))


def expected_length(counts: Mapping[Hashable, int], lengths: Mapping[Hashable, int]) -> float:
    """L = Σ pₛ·lₛ, the mean code length in bits per symbol.

    Examples
    --------
    >>> expected_length({"a": 2, "b": 1, "c": 1}, {"a": 1, "b": 2, "c": 2})
    1.5
    """
    _check_counts(counts)
    _check_lengths(lengths)
    missing = sorted(set(counts) - set(lengths), key=repr)
    if missing:
        raise ValueError(f"lengths has no entry for symbols {missing!r}")
    total = sum(counts.values())
    return float(sum(c * lengths[s] for s, c in counts.items()) / total)
