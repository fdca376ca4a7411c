"""Tests for levers.train: fit, evaluate, predict and the progress-bar switch."""

import math
import sys

import pytest
import torch
from torch import nn

from levers import train
from levers.data import Split, load_mnist5k
from levers.models import LeNet300100, mlp
from levers.train import History, evaluate, fit, predict, show_progress


@pytest.fixture(scope="module")
def split() -> Split:
    return load_mnist5k()


@pytest.fixture(scope="module")
def small(split) -> Split:
    """A few hundred images, for tests about mechanics rather than accuracy."""
    return Split(split.x_train[:300], split.y_train[:300], split.x_test[:50], split.y_test[:50])


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.setenv("LEVERS_PROGRESS", "0")


def fresh(seed: int = 0, sizes=(784, 32, 10)) -> nn.Module:
    torch.manual_seed(seed)
    return mlp(sizes)


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --- fit ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("quiet")
def test_fit_learns_mnist5k(split):
    torch.manual_seed(0)
    model = LeNet300100()
    history = fit(model, split, epochs=2, lr=0.1, batch_size=64)
    assert isinstance(history, History)
    assert len(history.loss) == len(history.test_accuracy) == 2
    assert history.loss[1] < history.loss[0] < math.log(10) * 1.5
    accuracy = evaluate(model, split.x_test, split.y_test)
    assert accuracy > 0.8  # chance is 0.1
    assert history.test_accuracy[-1] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.usefixtures("quiet")
def test_fit_is_deterministic(small):
    a, b = fresh(), fresh()
    fit(a, small, epochs=2, lr=0.05, batch_size=32, seed=3)
    fit(b, small, epochs=2, lr=0.05, batch_size=32, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(weights(a), weights(b), strict=True))
    c = fresh()
    fit(c, small, epochs=2, lr=0.05, batch_size=32, seed=4)
    assert not all(torch.equal(p, q) for p, q in zip(weights(a), weights(c), strict=True))


@pytest.mark.usefixtures("quiet")
def test_fit_trains_in_place_and_changes_weights(small):
    model = fresh()
    before = weights(model)
    fit(model, small, epochs=1, lr=0.05)
    assert all(not torch.equal(p, q) for p, q in zip(before, weights(model), strict=True))


@pytest.mark.usefixtures("quiet")
def test_fit_zero_epochs_changes_nothing(small):
    model = fresh()
    before = weights(model)
    history = fit(model, small, epochs=0)
    assert history.loss == [] and history.test_accuracy == []
    assert all(torch.equal(p, q) for p, q in zip(before, weights(model), strict=True))


@pytest.mark.usefixtures("quiet")
@pytest.mark.parametrize(("epochs", "batch_size"), [(2, 300), (1, 4000), (3, 999), (1, 5000)])
def test_after_step_runs_once_per_optimizer_step(split, epochs, batch_size):
    calls = []
    model = fresh(sizes=(784, 10))
    fit(model, split, epochs=epochs, batch_size=batch_size, lr=0.01,
        after_step=lambda m: calls.append(m))
    assert len(calls) == epochs * math.ceil(4000 / batch_size)
    assert all(m is model for m in calls)


@pytest.mark.usefixtures("quiet")
def test_after_step_can_keep_a_mask(small):
    model = fresh()
    mask = torch.rand_like(model.fc1.weight) < 0.5

    def apply_mask(m):
        with torch.no_grad():
            m.fc1.weight.mul_(mask)

    fit(model, small, epochs=2, lr=0.1, after_step=apply_mask)
    assert bool((model.fc1.weight[~mask] == 0).all())
    assert bool((model.fc1.weight[mask] != 0).any())


@pytest.mark.usefixtures("quiet")
def test_transform_replaces_the_forward_pass(small):
    seen = []

    def constant_logits(m, x):
        seen.append(len(x))
        return m(x) * 0.0  # equal logits: loss log(10), zero gradients

    model = fresh()
    before = weights(model)
    history = fit(model, small, epochs=1, batch_size=128, transform=constant_logits)
    assert seen == [128, 128, 44]
    assert history.loss[0] == pytest.approx(math.log(10), rel=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(before, weights(model), strict=True))


@pytest.mark.usefixtures("quiet")
def test_loss_fn_is_used(small):
    calls = []

    def loss_fn(logits, y):
        calls.append((logits.shape, y.dtype))
        return nn.functional.cross_entropy(logits, y) * 0 + 2.5

    history = fit(fresh(), small, epochs=1, batch_size=100, loss_fn=loss_fn)
    assert calls == [((100, 10), torch.int64)] * 3
    assert history.loss == [pytest.approx(2.5)]


@pytest.mark.usefixtures("quiet")
def test_adam_and_weight_decay_train(small):
    model = fresh()
    history = fit(model, small, epochs=3, lr=1e-3, optimizer="adam", weight_decay=1e-4)
    assert history.loss[-1] < history.loss[0]


@pytest.mark.usefixtures("quiet")
def test_weight_decay_shrinks_weights(small):
    def zero_loss(logits, y):
        return logits.sum() * 0.0

    model = fresh()
    norm = float(model.fc1.weight.detach().norm())
    fit(model, small, epochs=1, lr=0.1, momentum=0.0, weight_decay=0.1, loss_fn=zero_loss)
    assert float(model.fc1.weight.detach().norm()) < norm


def bad_split(small, **changes) -> Split:
    fields = {"x_train": small.x_train, "y_train": small.y_train, "x_test": small.x_test,
              "y_test": small.y_test}
    return Split(**{**fields, **changes})


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"epochs": -1}, ValueError, r"epochs must be an int >= 0, got -1"),
    ({"epochs": 1.5}, ValueError, r"epochs must be an int >= 0, got 1.5"),
    ({"lr": 0}, ValueError, r"lr must be a finite number > 0.0, got 0"),
    ({"lr": -0.1}, ValueError, r"lr must be a finite number > 0.0, got -0.1"),
    ({"lr": float("nan")}, ValueError, r"lr must be a finite number > 0.0, got nan"),
    ({"batch_size": 0}, ValueError, r"batch_size must be an int >= 1, got 0"),
    ({"batch_size": 32.0}, ValueError, r"batch_size must be an int >= 1, got 32.0"),
    ({"optimizer": "rmsprop"}, ValueError,
     r"optimizer must be one of \('sgd', 'adam'\), got 'rmsprop'"),
    ({"optimizer": "SGD"}, ValueError, r"optimizer must be one of \('sgd', 'adam'\)"),
])
def test_fit_rejects_bad_arguments(small, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(fresh(), small, **{"epochs": 1, **kwargs})


def test_fit_rejects_non_module_and_non_split(small):
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got a function"):
        fit(lambda x: x, small)
    with pytest.raises(TypeError, match=r"split must be a levers.data.Split, got a tuple"):
        fit(fresh(), (small.x_train, small.y_train, small.x_test, small.y_test))


@pytest.mark.parametrize(("changes", "error", "match"), [
    (lambda s: {"y_train": s.y_train.float()}, ValueError,
     r"split.y_train must be a tensor of an integer dtype.*got a torch.float32 tensor"),
    (lambda s: {"y_train": s.y_train.bool()}, ValueError, r"split.y_train must be .*torch.bool"),
    (lambda s: {"y_train": s.y_train[:, None]}, ValueError,
     r"split.y_train must be a 1-D tensor.*\(300, 1\)"),
    (lambda s: {"x_train": (s.x_train * 255).to(torch.uint8)}, TypeError,
     r"split.x_train must be a floating-point tensor, got a torch.uint8 tensor"),
    (lambda s: {"x_train": s.x_train[:10]}, ValueError,
     r"split.y_train must be as long as split.x_train \(10 samples\), got"),
    (lambda s: {"x_train": s.x_train.numpy()}, TypeError,
     r"split.x_train must be a torch.Tensor, got a ndarray"),
    (lambda s: {"y_test": s.y_test[:3]}, ValueError,
     r"split.y_test must be as long as split.x_test \(50 samples\)"),
])
def test_fit_rejects_bad_split_contents(small, changes, error, match):
    with pytest.raises(error, match=match):
        fit(fresh(), bad_split(small, **changes(small)), epochs=1)


# --- progress bar ---------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("0", False),
                                                 ("false", False), ("False", False),
                                                 (" 0 ", False), ("", False)])
def test_levers_progress_overrides_everything(monkeypatch, value, expected):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("LEVERS_EXECUTING", "1")
    monkeypatch.setenv("LEVERS_PROGRESS", value)
    assert show_progress() is expected


@pytest.fixture
def interactive(monkeypatch):
    """An interactive terminal with none of the switches set."""
    for name in ("LEVERS_PROGRESS", "CI", "LEVERS_EXECUTING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "nbval", raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)


@pytest.mark.usefixtures("interactive")
def test_show_progress_in_a_terminal():
    assert show_progress() is True


@pytest.mark.usefixtures("interactive")
@pytest.mark.parametrize("name", ["CI", "LEVERS_EXECUTING"])
def test_ci_and_notebook_execution_silence_progress(monkeypatch, name):
    monkeypatch.setenv(name, "1")
    assert show_progress() is False


@pytest.mark.usefixtures("interactive")
def test_nbval_silences_progress(monkeypatch):
    monkeypatch.setitem(sys.modules, "nbval", sys)
    assert show_progress() is False


@pytest.mark.usefixtures("interactive")
def test_not_a_terminal_silences_progress(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert show_progress() is False
    monkeypatch.setitem(sys.modules, "ipykernel", sys)
    assert show_progress() is True


@pytest.mark.parametrize(("value", "shown"), [("1", True), ("0", False)])
def test_fit_draws_the_bar_only_when_asked(monkeypatch, capsys, small, value, shown):
    monkeypatch.setenv("LEVERS_PROGRESS", value)
    fit(fresh(), small, epochs=1, desc="probe-desc")
    assert ("probe-desc" in capsys.readouterr().err) is shown


# --- evaluate / predict ---------------------------------------------------------------------


def identity_classifier() -> nn.Module:
    """Predicts the index of the largest input feature."""
    model = mlp((3, 3))
    with torch.no_grad():
        model.fc1.weight.copy_(torch.eye(3))
        model.fc1.bias.zero_()
    return model


def test_evaluate_counts_correct_predictions():
    model = identity_classifier()
    x = torch.eye(3)
    assert evaluate(model, x, torch.tensor([0, 1, 2])) == 1.0
    assert evaluate(model, x, torch.tensor([0, 1, 0])) == pytest.approx(2 / 3)
    assert evaluate(model, x, torch.tensor([1, 2, 0])) == 0.0
    assert isinstance(evaluate(model, x[:1], torch.tensor([0])), float)


@pytest.mark.parametrize(("x", "y", "error", "match"), [
    (torch.eye(3), torch.tensor([0.0, 1.0, 2.0]), ValueError,
     r"y must be a tensor of an integer dtype"),
    (torch.eye(3), torch.tensor([[0, 1, 2]]), ValueError,
     r"y must be a 1-D tensor of class labels.*\(1, 3\)"),
    (torch.eye(3), torch.tensor([0, 1]), ValueError, r"y must be as long as x \(3 samples\)"),
    (torch.eye(3, dtype=torch.int64), torch.tensor([0, 1, 2]), TypeError,
     r"x must be a floating-point tensor, got a torch.int64 tensor"),
    ([[1.0, 0, 0]], torch.tensor([0]), TypeError,
     r"x must be a torch.Tensor, got \[\[1.0, 0, 0\]\] \(list\)"),
    (torch.eye(3), [0, 1, 2], TypeError, r"y must be a torch.Tensor, got \[0, 1, 2\] \(list\)"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), ValueError,
     r"x must be a tensor holding at least one sample, got .* shape \(0, 3\)"),
])
def test_evaluate_rejects_bad_input(x, y, error, match):
    with pytest.raises(error, match=match):
        evaluate(identity_classifier(), x, y)


@pytest.mark.parametrize("batch_size", [1, 3, 7, 1000])
def test_predict_batches_give_the_full_batch_logits(batch_size):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    x = torch.randn(7, 4)
    logits = predict(model, x, batch_size=batch_size)
    assert logits.shape == (7, 3) and not logits.requires_grad
    assert not model.training  # evaluation mode: dropout off
    assert torch.allclose(logits, model(x), atol=1e-6)


def test_predict_default_batch_covers_more_than_one_batch():
    model = identity_classifier()
    x = torch.eye(3).repeat(700, 1)  # 2100 rows: three batches of up to 1000
    assert torch.equal(predict(model, x).argmax(1), torch.arange(3).repeat(700))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"batch_size": 0}, ValueError, r"batch_size must be an int >= 1, got 0"),
    ({"batch_size": 2.0}, ValueError, r"batch_size must be an int >= 1, got 2.0"),
    ({"batch_size": True}, ValueError, r"batch_size must be an int >= 1, got True"),
    ({"x": [[1.0, 2.0, 3.0]]}, TypeError,
     r"x must be a torch.Tensor, got \[\[1.0, 2.0, 3.0\]\] \(list\)"),
    ({"x": torch.zeros(0, 3)}, ValueError, r"x must be a tensor holding at least one sample"),
    ({"x": torch.tensor(1.0)}, ValueError,
     r"x must be a tensor holding at least one sample, got .* shape \(\)"),
    ({"model": "model"}, TypeError, r"model must be a torch.nn.Module, got 'model'"),
])
def test_predict_rejects_bad_input(kwargs, error, match):
    args = {"model": identity_classifier(), "x": torch.eye(3), **kwargs}
    with pytest.raises(error, match=match):
        predict(**args)


def test_history_starts_empty_and_is_not_shared():
    a, b = History(), History()
    a.loss.append(1.0)
    assert b.loss == [] and b.test_accuracy == []


def test_module_exports():
    assert train.fit is fit and train.evaluate is evaluate
