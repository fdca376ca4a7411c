"""Tests for levers.metrics: confusion matrix, classification report, losses, sparsity, SQNR."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from levers import metrics
from levers.calibration import choose_qparams_affine
from levers.metrics import (
    ClassReport,
    accuracy,
    classification_report,
    confusion_matrix,
    cross_entropy,
    density,
    mse,
    sparsity,
    sqnr_db,
)
from levers.models import MLP
from levers.quant import QScheme, fake_quantize_affine


@st.composite
def label_pairs(draw, min_size=0):
    k = draw(st.integers(1, 8))
    n = draw(st.integers(min_size, 60))
    y_true = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    return torch.tensor(y_true, dtype=torch.int64), torch.tensor(y_pred, dtype=torch.int64), k


# --- confusion_matrix -----------------------------------------------------------------------


def test_confusion_matrix_docstring_example():
    assert confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])).tolist() == [
        [1, 0], [1, 1]]


@settings(max_examples=80, deadline=None)
@given(label_pairs(), st.integers(0, 3))
def test_confusion_matrix_matches_a_brute_force_count(pair, extra):
    y_true, y_pred, k = pair
    n = k + extra
    cm = confusion_matrix(y_true, y_pred, n_classes=n)
    expected = [[0] * n for _ in range(n)]
    for t, p in zip(y_true.tolist(), y_pred.tolist(), strict=True):
        expected[t][p] += 1
    assert cm.tolist() == expected
    assert cm.dtype == torch.int64
    assert int(cm.sum()) == len(y_true)
    assert cm.sum(1).tolist() == torch.bincount(y_true, minlength=n).tolist()
    assert cm.sum(0).tolist() == torch.bincount(y_pred, minlength=n).tolist()


@settings(max_examples=40, deadline=None)
@given(label_pairs(min_size=1))
def test_confusion_matrix_size_defaults_to_the_largest_label(pair):
    y_true, y_pred, _ = pair
    cm = confusion_matrix(y_true, y_pred)
    top = max(int(y_true.max()), int(y_pred.max()))
    assert cm.shape == (top + 1, top + 1)
    assert torch.equal(cm, confusion_matrix(y_true, y_pred, n_classes=top + 1))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_confusion_matrix_accepts_narrow_integer_labels(dtype):
    y_true, y_pred = torch.tensor([2, 0, 1, 2]), torch.tensor([2, 1, 1, 0])
    assert torch.equal(confusion_matrix(y_true.to(dtype), y_pred.to(dtype)),
                       confusion_matrix(y_true, y_pred))


def test_confusion_matrix_of_no_samples():
    empty = torch.zeros(0, dtype=torch.int64)
    assert confusion_matrix(empty, empty).shape == (0, 0)
    assert confusion_matrix(empty, empty, n_classes=3).tolist() == [[0] * 3] * 3


@pytest.mark.parametrize(("y_true", "y_pred", "kwargs", "error", "match"), [
    ([0, 1], torch.tensor([0, 1]), {}, TypeError,
     r"y_true must be a torch.Tensor, got \[0, 1\] \(list\)"),
    (torch.tensor([0, 1]), np.array([0, 1]), {}, TypeError,
     r"y_pred must be a torch.Tensor, got .*\(ndarray\)"),
    (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), {}, ValueError,
     r"y_true must be a tensor of an integer dtype.*got a torch.float32 tensor of shape \(2,\)"),
    (torch.tensor([True, False]), torch.tensor([0, 1]), {}, ValueError,
     r"y_true must be a tensor of an integer dtype.*torch.bool"),
    (torch.tensor([0, 1]), torch.tensor([[0, 1]]), {}, ValueError,
     r"y_pred must be a 1-D tensor of class labels.*\(1, 2\)"),
    (torch.tensor([0, -3]), torch.tensor([0, 1]), {}, ValueError,
     r"y_true must hold values >= 0, got values in \[-3, 0\]"),
    (torch.tensor([0, 1, 1]), torch.tensor([0, 1]), {}, ValueError,
     r"y_true and y_pred must have the same length, got 3 and 2"),
    (torch.tensor([0, 4]), torch.tensor([0, 1]), {"n_classes": 2}, ValueError,
     r"n_classes=2 but labels go up to 4"),
    (torch.tensor([0, 1]), torch.tensor([0, 1]), {"n_classes": -1}, ValueError,
     r"n_classes must be None or a non-negative int, got -1"),
    (torch.tensor([0, 1]), torch.tensor([0, 1]), {"n_classes": 2.0}, ValueError,
     r"n_classes must be None or a non-negative int, got 2.0"),
    (torch.tensor([0, 1]), torch.tensor([0, 1]), {"n_classes": True}, ValueError,
     r"n_classes must be None or a non-negative int, got True"),
])
def test_confusion_matrix_rejects_bad_input(y_true, y_pred, kwargs, error, match):
    with pytest.raises(error, match=match):
        confusion_matrix(y_true, y_pred, **kwargs)


# --- classification_report ------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(label_pairs(min_size=1))
def test_classification_report_matches_sklearn(pair):
    y_true, y_pred, k = pair
    report = classification_report(confusion_matrix(y_true, y_pred, n_classes=k))
    p, r, f, _ = precision_recall_fscore_support(y_true.numpy(), y_pred.numpy(),
                                                 labels=list(range(k)), zero_division=0)
    np.testing.assert_allclose(report.precision.numpy(), p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(report.recall.numpy(), r, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(report.f1.numpy(), f, rtol=1e-6, atol=1e-7)
    assert report.accuracy == pytest.approx(accuracy_score(y_true.numpy(), y_pred.numpy()))
    mp, mr, mf, _ = precision_recall_fscore_support(y_true.numpy(), y_pred.numpy(),
                                                    labels=list(range(k)), zero_division=0,
                                                    average="macro")
    assert report.macro_precision == pytest.approx(mp, abs=1e-6)
    assert report.macro_recall == pytest.approx(mr, abs=1e-6)
    assert report.macro_f1 == pytest.approx(mf, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6).flatmap(lambda k: st.lists(st.lists(st.integers(0, 50), min_size=k,
                                                             max_size=k),
                                                    min_size=k, max_size=k)))
def test_classification_report_identities(rows):
    cm = torch.tensor(rows)
    report = classification_report(cm)
    total = int(cm.sum())
    assert report.accuracy == (pytest.approx(int(cm.trace()) / total) if total else 0.0)
    for p, r, f in zip(report.precision.tolist(), report.recall.tolist(), report.f1.tolist(),
                       strict=True):
        assert 0.0 <= p <= 1.0 and 0.0 <= r <= 1.0
        assert min(p, r) - 1e-6 <= f <= max(p, r) + 1e-6
        assert f == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=1e-6)
    assert report.precision.shape == report.recall.shape == report.f1.shape == (len(rows),)


def test_classification_report_docstring_example():
    r = classification_report(torch.tensor([[8, 2], [1, 9]]))
    assert r.accuracy == pytest.approx(17 / 20)
    assert r.precision.tolist() == pytest.approx([8 / 9, 9 / 11])
    assert r.recall.tolist() == pytest.approx([8 / 10, 9 / 10])
    assert isinstance(r, ClassReport) and r.precision.dtype == torch.float32


def test_classification_report_zero_division_is_zero():
    # class 1 never occurs and is never predicted; class 2 occurs but is never predicted
    r = classification_report(torch.tensor([[3, 0, 0], [0, 0, 0], [2, 0, 0]]))
    assert r.precision.tolist() == pytest.approx([3 / 5, 0.0, 0.0])
    assert r.recall.tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert r.f1.tolist() == pytest.approx([2 * 0.6 / 1.6, 0.0, 0.0])
    assert classification_report(torch.zeros(2, 2, dtype=torch.int64)).accuracy == 0.0


def test_class_report_is_frozen():
    r = classification_report(torch.eye(2, dtype=torch.int64))
    with pytest.raises(AttributeError):
        r.accuracy = 0.5


@pytest.mark.parametrize(("cm", "error", "match"), [
    ([[1, 0], [0, 1]], TypeError, r"cm must be a torch.Tensor, got list"),
    (torch.tensor([1, 2]), ValueError, r"cm must be a non-empty square matrix, got shape \(2,\)"),
    (torch.zeros(2, 3, dtype=torch.int64), ValueError, r"non-empty square.*\(2, 3\)"),
    (torch.zeros(0, 0, dtype=torch.int64), ValueError, r"non-empty square.*\(0, 0\)"),
    (torch.eye(2), ValueError, r"cm must hold non-negative integer counts"),
    (torch.tensor([[1, -1], [0, 2]]), ValueError, r"cm must hold non-negative integer counts"),
])
def test_classification_report_rejects_bad_matrices(cm, error, match):
    with pytest.raises(error, match=match):
        classification_report(cm)


# --- accuracy, mse, cross_entropy -----------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(label_pairs(min_size=1))
def test_accuracy_is_the_fraction_of_matches(pair):
    y_true, y_pred, _ = pair
    matches = sum(t == p for t, p in zip(y_true.tolist(), y_pred.tolist(), strict=True))
    assert accuracy(y_true, y_pred) == pytest.approx(matches / len(y_true))
    assert accuracy(y_true, y_pred) == pytest.approx(
        classification_report(confusion_matrix(y_true, y_pred)).accuracy)


@pytest.mark.parametrize(("y_true", "y_pred", "error", "match"), [
    (torch.tensor([0, 1]), torch.tensor([0]), ValueError,
     r"non-empty and of equal length, got 2 and 1"),
    (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), ValueError,
     r"non-empty and of equal length, got 0 and 0"),
    (torch.tensor([0.0]), torch.tensor([0]), ValueError, r"y_true must be a tensor of an integer"),
    (torch.tensor([0]), 0, TypeError, r"y_pred must be a torch.Tensor, got 0"),
])
def test_accuracy_rejects_bad_input(y_true, y_pred, error, match):
    with pytest.raises(error, match=match):
        accuracy(y_true, y_pred)


def test_mse_by_definition():
    assert mse(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 3.0])) == pytest.approx(5.0)
    assert mse(torch.tensor([[1, 2]]), torch.tensor([[1.0, 2.0]])) == 0.0
    a, b = torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), torch.zeros(4, 5)
    assert mse(a, b) == pytest.approx(float((a.double() ** 2).mean()))
    assert mse(a, b) == mse(b, a)


@pytest.mark.parametrize(("a", "b", "error", "match"), [
    ([1.0], torch.tensor([1.0]), TypeError, r"a must be a torch.Tensor, got \[1.0\] \(list\)"),
    (torch.zeros(2, 3), torch.zeros(3, 2), ValueError,
     r"a and b must have the same non-empty shape, got \(2, 3\) and \(3, 2\)"),
    (torch.zeros(0), torch.zeros(0), ValueError, r"same non-empty shape, got \(0,\) and \(0,\)"),
])
def test_mse_rejects_bad_input(a, b, error, match):
    with pytest.raises(error, match=match):
        mse(a, b)


def test_cross_entropy_of_uniform_logits_is_log_c():
    assert cross_entropy(torch.zeros(4, 10), torch.tensor([0, 3, 9, 9])) == pytest.approx(
        math.log(10))


def test_cross_entropy_by_definition():
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 0, 1])
    log_p = logits.double().log_softmax(1)
    expected = -sum(float(log_p[i, c]) for i, c in enumerate(y.tolist())) / 6
    assert cross_entropy(logits, y) == pytest.approx(expected, rel=1e-12)
    assert cross_entropy(logits, y.int()) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("logits", "y", "error", "match"), [
    (torch.zeros(3), torch.tensor([0, 1, 2]), ValueError,
     r"logits must be \[N, C\] with N = len\(y\) = 3 > 0, got \(3,\)"),
    (torch.zeros(2, 3), torch.tensor([0, 1, 2]), ValueError, r"N = len\(y\) = 3.*got \(2, 3\)"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), ValueError, r"len\(y\) = 0 > 0"),
    (torch.zeros(2, 3), torch.tensor([0, 3]), ValueError,
     r"y holds class 3 but logits have 3 columns"),
    (torch.zeros(2, 3, dtype=torch.int64), torch.tensor([0, 1]), TypeError,
     r"logits must be a floating-point torch.Tensor, got torch.int64"),
    ([[0.0, 0.0]], torch.tensor([0]), TypeError,
     r"logits must be a floating-point torch.Tensor, got list"),
    (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), ValueError,
     r"y must be a tensor of an integer dtype"),
    (torch.zeros(2, 3), torch.tensor([0, -1]), ValueError, r"y must hold values >= 0"),
])
def test_cross_entropy_rejects_bad_input(logits, y, error, match):
    with pytest.raises(error, match=match):
        cross_entropy(logits, y)


# --- density / sparsity ---------------------------------------------------------------------


def test_tiny_values_are_nonzero_and_negative_zero_is_zero():
    t = torch.tensor([0.0, 1e-30, -0.0, float("nan"), 2.0, float("-inf")])
    assert density(t) == pytest.approx(4 / 6)
    assert sparsity(t) == pytest.approx(2 / 6)
    assert density(torch.tensor([6e-8], dtype=torch.float16)) == 1.0  # a float16 subnormal
    assert density(torch.tensor([-0.0, -0.0])) == 0.0 and sparsity(torch.tensor([-0.0])) == 1.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([0.0, -0.0, 1e-38, -1.0, 3.5, 1e-45]), min_size=1, max_size=50))
def test_density_counts_exact_nonzeros(values):
    t = torch.tensor(values, dtype=torch.float32)
    nonzero = sum(1 for v in values if v != 0.0)  # 1e-45 is a float32 subnormal, not zero
    assert density(t) == pytest.approx(nonzero / len(values))
    assert density(t) + sparsity(t) == pytest.approx(1.0)
    assert density(t.reshape(1, -1, 1)) == density(t)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.bool, torch.bfloat16])
def test_density_of_other_dtypes(dtype):
    t = torch.tensor([[0, 1], [0, 0]]).to(dtype)
    assert density(t) == 0.25 and sparsity(t) == 0.75


def test_density_of_a_scalar_tensor():
    assert density(torch.tensor(3.0)) == 1.0 and sparsity(torch.tensor(0.0)) == 1.0


@pytest.mark.parametrize("fn", [density, sparsity])
def test_density_and_sparsity_reject_bad_input(fn):
    with pytest.raises(TypeError, match=r"t must be a torch.Tensor, got \[0.0, 1.0\] \(list\)"):
        fn([0.0, 1.0])
    with pytest.raises(ValueError, match=r"density of an empty tensor is undefined"):
        fn(torch.zeros(0, 3))


# --- sparsity of a model, signal-to-noise ratio --------------------------------------------


def test_sqnr_grows_about_six_db_per_bit():
    x = torch.sin(2 * math.pi * 0.0123457 * math.sqrt(2) * torch.arange(100_000.0))
    sqnr = [sqnr_db(x, fake_quantize_affine(x, choose_qparams_affine(x, QScheme(bits=b))))
            for b in (6, 8, 10)]
    slope = (sqnr[2] - sqnr[0]) / 4
    assert slope == pytest.approx(6.02, abs=0.1)
    assert sqnr[1] == pytest.approx(6.02 * 8 + 1.76, abs=0.5)


def test_sqnr_db_values():
    assert sqnr_db(torch.ones(3), torch.ones(3)) == math.inf
    with pytest.raises(ValueError, match="x_hat must be a tensor of the shape of x"):
        sqnr_db(torch.ones(3), torch.ones(2))


def test_activation_sparsity_counts_relu_zeros():
    torch.manual_seed(0)
    model, x = MLP((10, 8, 6, 3)), torch.randn(50, 10)
    got = metrics.activation_sparsity(model, x)
    h1 = torch.relu(model.fc1(x))
    h2 = torch.relu(model.fc2(h1))
    assert got == {"fc1": 1 - int(h1.count_nonzero()) / h1.numel(),
                   "fc2": 1 - int(h2.count_nonzero()) / h2.numel()}
    assert got["fc1"] == pytest.approx(float((h1 == 0).float().mean()))
    assert not model.fc1._forward_hooks  # hooks are removed
    assert model.training  # the mode is restored


def test_activation_sparsity_keeps_an_evaluating_model_in_eval_mode():
    model = MLP((4, 3, 2)).eval()
    metrics.activation_sparsity(model, torch.randn(5, 4))
    assert not model.training


def test_activation_sparsity_of_the_cnn_counts_each_relu_map():
    from levers.models import LeNet5

    torch.manual_seed(0)
    model, x = LeNet5(), torch.rand(20, 1, 28, 28)
    got = metrics.activation_sparsity(model, x)
    with torch.no_grad():
        a1 = torch.relu(model.conv1(x))
        a2 = torch.relu(model.conv2(torch.max_pool2d(a1, 2)))
        a3 = torch.relu(model.fc1(torch.max_pool2d(a2, 2).flatten(1)))
        a4 = torch.relu(model.fc2(a3))
    expected = {k: float((a == 0).double().mean())
                for k, a in zip(["conv1", "conv2", "fc1", "fc2"], [a1, a2, a3, a4], strict=True)}
    assert got == pytest.approx(expected, abs=1e-12)
    assert list(got) == ["conv1", "conv2", "fc1", "fc2"]
    with pytest.raises(TypeError, match="MLP or a levers.models.LeNet5"):
        metrics.activation_sparsity(torch.nn.Linear(4, 2), torch.ones(1, 4))
