"""What Deep Compression stores (Han et al. 2016): relative indices, codebooks, Huffman streams.

A pruned, weight-shared layer is a list of *entries*, one per non-zero weight in row-major
order. Each entry has two symbols:

- its **relative index**: how many zeros were skipped since the previous entry, a fixed-width
  ``index_bits`` integer. A gap that does not fit gets a **filler zero**: an entry of gap
  ``2^index_bits − 1`` whose value is 0 (Fig. 2 of the paper), repeated as needed;
- its **value**: an index into the layer's codebook. Symbol 0 is the exact zero (fillers);
  symbols ``1 … m`` are the ``m ≤ 2^bits − 1`` shared weights. With ``bits=None`` the values
  are plain float32 (pruning alone, no sharing).

Each symbol stream is stored either with fixed-width codes (`levers.encode.pack_bits`) or with a
canonical Huffman code (`levers.huffman`), whose table (one code length per symbol, one byte
each) is stored too. `serialize` writes a whole model this way to one ``bytes`` (layers not
given a format, and every bias, stay raw float32), with a header per tensor and a CRC-32 at the
end; `deserialize` reads it back into a ``state_dict`` that rebuilds the model exactly, and
refuses a corrupted or truncated stream. `parts` says where every byte went.

Layout (little-endian): ``b"LVDC"``, version (u8), tensor count (u16); per tensor: name length
(u8), name, kind (u8: 0 raw, 1 coded), rank (u8), shape (u32 each); raw: float32 values;
coded: bits (u8, 0 = float32 values), index bits (u8), coding (u8: 0 fixed, 1 Huffman), entry
count (u32), codebook size m (u16) and m float32, then the value stream and the index stream
(Huffman: 2^b code lengths (u8), bit count (u32), the bits); finally CRC-32 (u32).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from levers import huffman
from levers._checks import check_choice, check_instance, check_int, check_tensor, fail
from levers.encode import pack_bits, unpack_bits

MAGIC, VERSION = b"LVDC", 1
CODINGS = ("fixed", "huffman")
MAX_HUFFMAN_BITS = 12  # the code table stores 2^b lengths


@dataclass(frozen=True)
class LayerFormat:
    """How one weight tensor is stored: codebook bits (None = float32), index bits, coding."""

    bits: int | None = 5
    index_bits: int = 5
    coding: str = "huffman"

    def __post_init__(self) -> None:
        if self.bits is not None:
            check_int("bits", self.bits, 1, 16)
        check_int("index_bits", self.index_bits, 1, 16)
        check_choice("coding", self.coding, CODINGS)
        if self.coding == "huffman" and max(self.bits or 0, self.index_bits) > MAX_HUFFMAN_BITS:
            raise fail("bits", self.bits, f"at most {MAX_HUFFMAN_BITS} with Huffman coding")


def relative_indices(mask: Tensor, index_bits: int) -> tuple[Tensor, Tensor]:
    """Relative (gap) indices of the ``True`` entries of a flattened mask, with filler zeros.

    Returns
    -------
    (gaps, filler)
        ``gaps[j]`` zeros precede entry ``j`` (since the previous entry), each in
        ``[0, 2^index_bits − 1]``; ``filler[j]`` is True for the filler entries, which hold a
        zero, not a weight.

    Examples
    --------
    >>> m = torch.zeros(12, dtype=torch.bool)
    >>> m[[1, 11]] = True  # a gap of 9 zeros does not fit in 2 bits (at most 3)
    >>> gaps, filler = relative_indices(m, index_bits=2)
    >>> gaps.tolist(), filler.tolist()
    ([1, 3, 3, 1], [False, True, True, False])
    """
    check_tensor("mask", mask)
    if mask.dtype != torch.bool:
        raise fail("mask", mask, "a bool tensor")
    check_int("index_bits", index_bits, 1, 16)
    span = 2**index_bits  # one filler covers span − 1 zeros and its own position
    positions = torch.nonzero(mask.reshape(-1)).reshape(-1)
    gaps = torch.diff(positions, prepend=torch.tensor([-1])) - 1
    fillers = gaps // span
    per_entry = fillers + 1
    filler = torch.ones(int(per_entry.sum()), dtype=torch.bool)
    last = torch.cumsum(per_entry, 0) - 1  # where each real entry lands
    filler[last] = False
    out = torch.full((len(filler),), span - 1, dtype=torch.int64)
    out[last] = gaps - fillers * span
    return out, filler


def positions_from_gaps(gaps: Tensor) -> Tensor:
    """The flat position of every entry: ``p_j = p_{j−1} + gaps[j] + 1``, from ``p_{−1} = −1``.

    Examples
    --------
    >>> positions_from_gaps(torch.tensor([1, 3, 3, 1])).tolist()
    [1, 5, 9, 11]
    """
    check_tensor("gaps", gaps)
    return torch.cumsum(gaps.long() + 1, 0) - 1


def layer_streams(w: Tensor, fmt: LayerFormat) -> tuple[Tensor, Tensor, Tensor]:
    """Split a weight tensor into (codebook, value symbols, gap symbols) as `serialize` stores them.

    With ``fmt.bits`` set, the distinct non-zero values of `w` are the codebook (so share the
    weights first: at most ``2^bits − 1`` of them); value symbol 0 is zero. With ``bits=None``
    the value "symbols" are the float32 values themselves and the codebook is empty.

    Examples
    --------
    >>> w = torch.tensor([0.0, 0.5, 0.0, 0.0, -0.5, 0.5])
    >>> [t.tolist() for t in layer_streams(w, LayerFormat(bits=2, index_bits=1))]
    [[-0.5, 0.5], [2, 0, 1, 2], [1, 1, 0, 0]]
    """
    check_tensor("w", w)
    check_instance("fmt", fmt, LayerFormat)
    flat = w.detach().reshape(-1).float()
    gaps, filler = relative_indices(flat != 0, fmt.index_bits)
    values = torch.zeros(len(gaps))
    values[~filler] = flat[flat != 0]
    if fmt.bits is None:
        return torch.zeros(0), values, gaps
    codebook = torch.unique(flat[flat != 0])
    if len(codebook) > 2**fmt.bits - 1:
        raise ValueError(f"w has {len(codebook)} distinct non-zero values; {fmt.bits}-bit "
                         f"codes hold at most {2**fmt.bits - 1}: share its weights first")
    symbols = torch.bucketize(values, codebook) + 1
    return codebook, torch.where(values == 0, 0, symbols), gaps


def _stream(symbols: Tensor, bits: int, coding: str) -> bytes:
    if coding == "fixed":
        return pack_bits(symbols, bits).numpy().tobytes()
    counts = huffman.symbol_counts(symbols)
    lengths = huffman.code_lengths(counts) if counts else {}
    table = bytes(lengths.get(s, 0) for s in range(2**bits))
    data, n_bits = huffman.encode_stream(symbols, lengths) if counts else (b"", 0)
    return table + struct.pack("<I", n_bits) + data


def serialize(model: nn.Module, formats: Mapping[str, LayerFormat]) -> bytes:
    """The whole model as Deep Compression stores it: one ``bytes``, ready for a file.

    Parameters
    ----------
    model : nn.Module
        Its ``state_dict`` is stored; every tensor must be floating point.
    formats : mapping of str to LayerFormat
        Weight tensors (``"fc1.weight"``) to code; every other tensor is stored raw (float32).

    Returns
    -------
    bytes
        ``len(...)`` is the size on disk, headers, codebooks and tables included.

    Examples
    --------
    >>> from levers.models import MLP
    >>> m = MLP((4, 2))
    >>> len(serialize(m, {}))  # 7 + 21 + 32 (fc1.weight) + 15 + 8 (fc1.bias) + CRC 4
    87
    """
    check_instance("model", model)
    state = model.state_dict()
    if not isinstance(formats, Mapping):
        raise fail("formats", formats, "a mapping of weight name to LayerFormat")
    missing = sorted(set(formats) - set(state))
    if missing:
        raise ValueError(f"formats names {missing} which the model does not have; it has "
                         f"{sorted(state)}")
    out = bytearray(MAGIC + struct.pack("<BH", VERSION, len(state)))
    for name, t in state.items():
        if not t.is_floating_point():
            raise fail(f"state_dict[{name!r}]", t, "a floating-point tensor")
        key = name.encode()
        coded = name in formats
        out += struct.pack(f"<B{len(key)}sBB{t.dim()}I", len(key), key, int(coded), t.dim(),
                           *t.shape)
        if not coded:
            out += t.detach().float().contiguous().numpy().tobytes()
            continue
        fmt = formats[name]
        check_instance(f"formats[{name!r}]", fmt, LayerFormat)
        codebook, values, gaps = layer_streams(t, fmt)
        out += struct.pack("<BBBIH", fmt.bits or 0, fmt.index_bits, CODINGS.index(fmt.coding),
                           len(gaps), len(codebook)) + codebook.numpy().tobytes()
        out += (values.numpy().astype("<f4").tobytes() if fmt.bits is None
                else _stream(values, fmt.bits, fmt.coding))
        out += _stream(gaps, fmt.index_bits, fmt.coding)
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


class _Reader:
    """Reads the layout front to back; every read checks that the bytes are there."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.parts = data, 0, {}

    def take(self, n: int, part: str) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"data is truncated: {part} needs bytes {self.pos}..{self.pos + n} "
                             f"but the stream has {len(self.data)}")
        self.parts[part] = self.parts.get(part, 0) + n
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def unpack(self, fmt: str, part: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), part))

    def stream(self, n: int, bits: int, coding: str, part: str) -> Tensor:
        if coding == "fixed":
            packed = np.frombuffer(self.take(math.ceil(n * bits / 8), part), dtype=np.uint8)
            return unpack_bits(torch.from_numpy(packed.copy()), bits, n)
        table = self.take(2**bits, f"{part} table")
        (n_bits,) = self.unpack("<I", f"{part} table")
        lengths = {s: b for s, b in enumerate(table) if b}
        payload = self.take(math.ceil(n_bits / 8), part)
        if not n:
            return torch.zeros(0, dtype=torch.int64)
        return torch.from_numpy(huffman.decode_stream(payload, lengths, n))


def parts(data: bytes) -> dict[str, dict[str, int]]:
    """Where the bytes of a `serialize` stream went: per tensor, bytes per part.

    Parts are ``header``, ``raw`` (float32 tensors), ``codebook``, ``values``, ``values table``,
    ``indices`` and ``indices table``; the file header and CRC are under ``""``. The numbers
    add up to ``len(data)`` exactly.

    Examples
    --------
    >>> from levers.models import MLP
    >>> p = parts(serialize(MLP((4, 2)), {}))
    >>> p["fc1.weight"], sum(sum(v.values()) for v in p.values())
    ({'header': 21, 'raw': 32}, 87)
    """
    return _read(data)[1]


def deserialize(data: bytes) -> dict[str, Tensor]:
    """Read a `serialize` stream back into a ``state_dict`` (float32 tensors).

    Raises ValueError if the stream is not one (wrong magic or version), is truncated, has
    trailing bytes, or fails its CRC-32: a damaged file never becomes a silently wrong model.

    Examples
    --------
    >>> from levers.models import MLP
    >>> m = MLP((4, 2))
    >>> state = deserialize(serialize(m, {}))
    >>> torch.equal(state["fc1.weight"], m.fc1.weight.detach())
    True
    """
    return _read(data)[0]


def _read(data: bytes) -> tuple[dict[str, Tensor], dict[str, dict[str, int]]]:
    if not isinstance(data, bytes | bytearray):
        raise fail("data", data, "bytes, as serialize returns")
    data = bytes(data)
    if len(data) < 11 or data[:4] != MAGIC:
        raise ValueError(f"data is not a levers Deep Compression stream (it starts with "
                         f"{data[:4]!r}, expected {MAGIC!r})")
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise ValueError("data fails its CRC-32 check: the stream is corrupted or truncated")
    r = _Reader(data[:-4])
    r.take(len(MAGIC), "")
    version, count = r.unpack("<BH", "")
    if version != VERSION:
        raise ValueError(f"data has format version {version}; this reader reads {VERSION}")
    file_parts, state, out_parts = dict(r.parts), {}, {}
    for _ in range(count):
        r.parts = {}
        (n,) = r.unpack("<B", "header")
        name = r.take(n, "header").decode()
        kind, rank = r.unpack("<BB", "header")
        shape = r.unpack(f"<{rank}I", "header")
        numel = math.prod(shape)
        if kind == 0:
            raw = np.frombuffer(r.take(4 * numel, "raw"), dtype="<f4")
            state[name] = torch.from_numpy(raw.copy()).reshape(shape)
        else:
            state[name] = _read_coded(r, shape, numel, name)
        out_parts[name] = r.parts
    if r.pos != len(r.data):
        raise ValueError(f"data has {len(r.data) - r.pos} bytes after its last tensor")
    out_parts[""] = {"header": file_parts.get("", 0), "crc": 4}
    return state, out_parts


def _read_coded(r: _Reader, shape: tuple[int, ...], numel: int, name: str) -> Tensor:
    bits, index_bits, coding, n, m = r.unpack("<BBBIH", "header")
    if coding >= len(CODINGS) or not 1 <= index_bits <= 16 or bits > 16:
        raise ValueError(f"tensor {name!r} has an invalid header (bits {bits}, index bits "
                         f"{index_bits}, coding {coding})")
    codebook = torch.from_numpy(np.frombuffer(r.take(4 * m, "codebook"), dtype="<f4").copy())
    if bits:
        symbols = r.stream(n, bits, CODINGS[coding], "values")
        if len(symbols) and int(symbols.max()) > m:
            raise ValueError(f"tensor {name!r} refers to codebook entry {int(symbols.max())} "
                             f"of {m}")
        values = torch.cat([torch.zeros(1), codebook])[symbols]
    else:
        values = torch.from_numpy(np.frombuffer(r.take(4 * n, "values"), dtype="<f4").copy())
    positions = positions_from_gaps(r.stream(n, index_bits, CODINGS[coding], "indices"))
    if len(positions) and int(positions[-1]) >= numel:
        raise ValueError(f"tensor {name!r} has an entry at position {int(positions[-1])} of "
                         f"a tensor of {numel}")
    w = torch.zeros(numel)
    w[positions] = values
    return w.reshape(shape)


def load(model: nn.Module, data: bytes) -> nn.Module:
    """Load a `serialize` stream into `model` (same architecture, strict names and shapes).

    Examples
    --------
    >>> from levers.models import MLP
    >>> a, b = MLP((4, 2)), MLP((4, 2))
    >>> torch.equal(load(b, serialize(a, {})).fc1.weight, a.fc1.weight)
    True
    """
    check_instance("model", model)
    model.load_state_dict(deserialize(data), strict=True)
    return model
