"""Huffman coding of a symbol stream, and the Shannon bound it meets.

For a stream whose symbols occur with probabilities pₛ, the entropy H = −Σ pₛ·log₂ pₛ bits per
symbol is a lower bound on the expected length L of any uniquely decodable code (Shannon), and
Huffman's code — built by merging the two least frequent subtrees until one tree is left — is an
optimal prefix code with H ≤ L < H + 1. Its code lengths satisfy Kraft's inequality
Σ 2^(−lₛ) ≤ 1 with equality (the tree is full).

Only code *lengths* are computed here; `canonical_codes` turns lengths into codewords, so a
decoder needs the lengths alone: `encode_stream` writes a real bit stream with them and
`decode_stream` reads it back from the lengths and the symbol count. A stream with a single
distinct symbol gets a 1-bit code (as DEFLATE does); the bound L < H + 1 then holds with
equality, the one exception.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Hashable, Iterable, Mapping

import numpy as np
import torch

from levers._checks import fail


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


def entropy_bytes(symbols: torch.Tensor | np.ndarray) -> float:
    """The entropy bound of a symbol stream: ``n·H / 8`` bytes (no code can do better on average).

    Examples
    --------
    >>> entropy_bytes(torch.tensor([0, 0, 1, 2]))  # H = 1.5 bits, 4 symbols
    0.75
    """
    if not isinstance(symbols, torch.Tensor | np.ndarray):
        raise fail("symbols", symbols, "a tensor or array of symbols")
    counts = symbol_counts(symbols)
    return sum(counts.values()) * entropy(counts) / 8 if counts else 0.0


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


def encode_stream(symbols: Iterable[int] | torch.Tensor | np.ndarray,
                  lengths: Mapping[int, int]) -> tuple[bytes, int]:
    """Write `symbols` as a bit stream of their canonical codewords (first bit = MSB of byte 0).

    Parameters
    ----------
    symbols : sequence, array or tensor of int
        The stream; every symbol must have a length in `lengths`.
    lengths : mapping of int to int
        Code lengths, e.g. ``code_lengths(symbol_counts(symbols))``.

    Returns
    -------
    (bytes, int)
        The stream padded with 0 bits to whole bytes, and its length in bits.

    Examples
    --------
    >>> data, n_bits = encode_stream([0, 0, 1, 2], {0: 1, 1: 2, 2: 2})  # 0 0 10 11
    >>> data.hex(), n_bits
    ('2c', 6)
    """
    codes = canonical_codes(lengths)
    if isinstance(symbols, str | bytes) or not isinstance(symbols, Iterable):
        raise TypeError(f"symbols must be a tensor, an array or an iterable of ints, got "
                        f"{symbols!r} ({type(symbols).__name__})")
    stream = np.asarray(symbols.detach().cpu() if isinstance(symbols, torch.Tensor)
                        else list(symbols) if not isinstance(symbols, np.ndarray) else symbols)
    try:
        bits = "".join(codes[s] for s in stream.reshape(-1).tolist())
    except KeyError as e:
        raise ValueError(f"symbols holds {e.args[0]!r}, which lengths has no code for") from None
    unpacked = np.frombuffer(bits.encode(), dtype=np.uint8) - ord("0")
    return np.packbits(unpacked).tobytes(), len(bits)


def decode_stream(data: bytes, lengths: Mapping[int, int], n: int) -> np.ndarray:
    """Read `n` symbols back from an `encode_stream` bit stream (canonical decoding).

    A canonical code of length ``l`` is an integer in ``[first_l, first_l + count_l)``, so a
    decoder reads bits one at a time and needs only the first code and the number of codes of
    each length. A stream that ends early, or holds a bit pattern no codeword starts with,
    raises ValueError instead of returning wrong symbols.

    Examples
    --------
    >>> decode_stream(bytes.fromhex("2c"), {0: 1, 1: 2, 2: 2}, 4).tolist()
    [0, 0, 1, 2]
    """
    if not isinstance(data, bytes | bytearray):
        raise ValueError(f"data must be bytes, got {type(data).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    codes = canonical_codes(lengths)
    longest = max(lengths.values())
    first, symbols_of = [0] * (longest + 1), [[] for _ in range(longest + 1)]
    for s in sorted(codes, key=lambda s: (lengths[s], repr(s))):
        if not symbols_of[lengths[s]]:
            first[lengths[s]] = int(codes[s], 2)
        symbols_of[lengths[s]].append(s)
    bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8)).tolist()
    out, pos = [], 0
    for _ in range(n):
        code = 0
        for length in range(1, longest + 1):
            if pos >= len(bits):
                raise ValueError(f"the bit stream ends after {len(out)} of {n} symbols")
            code, pos = 2 * code + bits[pos], pos + 1
            offset = code - first[length]
            if symbols_of[length] and 0 <= offset < len(symbols_of[length]):
                out.append(symbols_of[length][offset])
                break
        else:
            raise ValueError(f"bit pattern at bit {pos - longest} is no codeword of lengths")
    return np.asarray(out, dtype=np.int64)
