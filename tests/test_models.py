"""Tests for levers.models: LeNet-300-100, LeNet-5, MLPs and parameter counts."""

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from levers.models import MLP, LeNet5, LeNet300100, count_params, mlp


def test_lenet300100_has_the_textbook_parameter_count():
    assert count_params(LeNet300100()) == 266_610


def test_lenet300100_layers_are_fc1_to_fc3():
    model = LeNet300100()
    assert [name for name, _ in model.named_children()] == ["fc1", "fc2", "fc3"]
    assert [tuple(layer.weight.shape) for layer in model.layers()] == [(300, 784), (100, 300),
                                                                       (10, 100)]
    assert model.layers()[0] is model.fc1 and model.layers()[-1] is model.fc3
    assert model.sizes == (784, 300, 100, 10)
    assert isinstance(model, MLP)


def test_mlp_forward_is_relu_between_linear_layers():
    torch.manual_seed(0)
    model = mlp([784, 16, 8, 10])
    x = torch.rand(3, 1, 28, 28)
    h = x.flatten(1)
    h = F.relu(F.linear(h, model.fc1.weight, model.fc1.bias))
    h = F.relu(F.linear(h, model.fc2.weight, model.fc2.bias))
    expected = F.linear(h, model.fc3.weight, model.fc3.bias)  # no ReLU on the logits
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_mlp_accepts_images_or_flat_vectors():
    model = LeNet300100()
    x = torch.rand(4, 1, 28, 28)
    out = model(x)
    assert out.shape == (4, 10)
    assert torch.equal(out, model(x.reshape(4, 784)))


def test_mlp_logits_can_be_negative():
    torch.manual_seed(1)
    out = mlp((4, 3, 5))(torch.randn(64, 4))
    assert bool((out < 0).any())  # the last layer has no ReLU


def test_mlp_helper_builds_an_mlp_with_those_sizes():
    model = mlp([784, 10])
    assert isinstance(model, MLP) and model.sizes == (784, 10)
    assert count_params(model) == 784 * 10 + 10
    assert [name for name, _ in model.named_children()] == ["fc1"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=2, max_size=5))
def test_mlp_parameter_count_formula(sizes):
    model = mlp(sizes)
    assert count_params(model) == sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:],
                                                                  strict=True))
    assert model(torch.zeros(2, sizes[0])).shape == (2, sizes[-1])


@pytest.mark.parametrize("sizes", [(), (784,), [784, 0], (784, -1, 10), (784, 2.0),
                                   (784, True), "784", [784, None], (784.0, 10)])
def test_mlp_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match=r"sizes must be at least two positive ints, got"):
        MLP(sizes)


@pytest.mark.parametrize("sizes", [784, None, {784, 10}, (n for n in (784, 10))])
def test_mlp_rejects_non_sequences(sizes):
    with pytest.raises(TypeError, match=r"sizes must be a sequence of ints, e.g. \(784, 300, 10\)"):
        mlp(sizes)


def test_lenet5_output_shape_and_layers():
    model = LeNet5()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert [name for name, _ in model.named_children()] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert model.conv1.weight.shape == (6, 1, 5, 5)
    assert model.conv2.weight.shape == (16, 6, 5, 5)
    assert model.fc1.in_features == 16 * 5 * 5


def test_lenet5_parameter_count_by_formula():
    conv = (6 * 1 * 5 * 5 + 6) + (16 * 6 * 5 * 5 + 16)
    fc = (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert count_params(LeNet5()) == conv + fc


@pytest.mark.parametrize("shape", [(2, 784), (2, 1, 32, 32), (2, 3, 28, 28), (1, 28, 28),
                                   (2, 1, 28, 27)])
def test_lenet5_rejects_wrong_input_shapes(shape):
    message = f"LeNet5 expects images of shape [N, 1, 28, 28], got {shape}"
    with pytest.raises(ValueError, match=re.escape(message)):
        LeNet5()(torch.zeros(shape))


def test_models_train_end_to_end():
    torch.manual_seed(0)
    for model in (LeNet300100(), LeNet5()):
        F.cross_entropy(model(torch.rand(2, 1, 28, 28)), torch.tensor([0, 1])).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_same_seed_same_initial_weights():
    torch.manual_seed(7)
    a = LeNet300100()
    torch.manual_seed(7)
    b = LeNet300100()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_count_params_nonzero_after_zeroing_a_layer():
    model = LeNet300100()
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc3.bias[:4] = -0.0  # negative zero is still zero
    assert count_params(model) == 266_610
    assert count_params(model, nonzero=True) == 266_610 - 784 * 300 - 4


def test_count_params_nonzero_counts_tiny_values():
    model = mlp((3, 2))
    with torch.no_grad():
        model.fc1.weight.fill_(1e-30)
        model.fc1.bias.zero_()
    assert count_params(model, nonzero=True) == 6


@settings(max_examples=25, deadline=None)
@given(st.sets(st.integers(0, 3 * 4 + 4 + 4 * 2 + 2 - 1)))
def test_count_params_nonzero_property(zeroed):
    torch.manual_seed(0)
    model = mlp((3, 4, 2))
    with torch.no_grad():
        flat = torch.cat([p.flatten() for p in model.parameters()])
        assert bool((flat != 0).all())
        offset = 0
        for p in model.parameters():
            for i in range(p.numel()):
                if offset + i in zeroed:
                    p.view(-1)[i] = 0.0
            offset += p.numel()
    assert count_params(model, nonzero=True) == count_params(model) - len(zeroed)


def test_count_params_counts_any_module():
    assert count_params(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))) == 9 + 4
    assert count_params(nn.ReLU()) == 0


@pytest.mark.parametrize("model", [{}, None, [nn.Linear(2, 2)], nn.Linear])
def test_count_params_rejects_non_modules(model):
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got"):
        count_params(model)
