"""Tests of levers.prune: exact budgets, criteria, masks that persist through training."""

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from levers import metrics, prune, schedule, structured
from levers.data import Split
from levers.models import MLP, LeNet5, LeNet300100
from levers.train import fit

FAST = settings(max_examples=40, deadline=None)

shapes = st.lists(st.integers(1, 9), min_size=1, max_size=3)
amounts = st.floats(0.0, 1.0)


def tensor_from(seed: int, shape: list[int], ties: bool) -> torch.Tensor:
    """Random weights; with ``ties`` the magnitudes take only a handful of values."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    return torch.round(w * 2) / 2 if ties else w


@FAST
@given(shape=shapes, amount=amounts, seed=st.integers(0, 2**16), ties=st.booleans())
def test_magnitude_mask_prunes_exactly_the_budget_and_only_the_smallest(shape, amount, seed, ties):
    w = tensor_from(seed, shape, ties)
    keep = prune.magnitude_mask(w, amount)
    assert keep.dtype == torch.bool and keep.shape == w.shape
    assert int((~keep).sum()) == round(amount * w.numel())
    if keep.any() and (~keep).any():
        assert w.abs()[~keep].max() <= w.abs()[keep].min()


@FAST
@given(shape=shapes, amount=amounts, seed=st.integers(0, 2**16))
def test_magnitude_mask_equals_torch_l1_unstructured_without_ties(shape, amount, seed):
    w = tensor_from(seed, shape, ties=False)
    # continuous draws rarely tie, but two float32 normals can share |w|: skip those draws
    assume(w.abs().unique().numel() == w.numel())
    theirs = torch_prune.L1Unstructured(amount).compute_mask(w, torch.ones_like(w))
    assert torch.equal(prune.magnitude_mask(w, amount), theirs.bool())


def test_magnitude_mask_all_equal_weights_still_meets_budget():
    keep = prune.magnitude_mask(torch.ones(10), 0.3)
    assert keep.tolist() == [False] * 3 + [True] * 7


def test_magnitude_threshold_keeps_strictly_larger():
    w = torch.tensor([-0.3, 0.1, 0.2, -0.2, 0.0])
    assert prune.magnitude_mask(w, threshold=0.2).tolist() == [True, False, False, False, False]


@FAST
@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4), amount=amounts,
       seed=st.integers(0, 2**16), ties=st.booleans())
def test_global_masks_share_one_threshold_and_budget(sizes, amount, seed, ties):
    weights = {f"w{i}": tensor_from(seed + i, [n], ties) for i, n in enumerate(sizes)}
    masks = prune.global_magnitude_masks(weights, amount)
    keep = torch.cat([masks[k] for k in weights])
    mags = torch.cat([w.abs() for w in weights.values()])
    assert int((~keep).sum()) == round(amount * mags.numel())
    if keep.any() and (~keep).any():
        assert mags[~keep].max() <= mags[keep].min()


def test_global_mask_of_one_tensor_is_the_layerwise_mask():
    w = tensor_from(3, [7, 5], ties=True)
    assert torch.equal(prune.global_magnitude_masks({"w": w}, 0.6)["w"],
                       prune.magnitude_mask(w, 0.6))


@FAST
@given(shape=shapes, amount=amounts, seed=st.integers(0, 2**16))
def test_random_mask_exact_budget_and_reproducible(shape, amount, seed):
    w = torch.ones(shape)
    a = prune.random_mask(w, amount, torch.Generator().manual_seed(seed))
    b = prune.random_mask(w, amount, torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)
    assert int((~a).sum()) == round(amount * w.numel())


def test_prunable_and_compute_masks_on_lenet():
    model = LeNet300100()
    assert list(prune.prunable(model)) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    layer = prune.compute_masks(model, 0.9)
    assert all(int((~m).sum()) == round(0.9 * m.numel()) for m in layer.values())
    glob = prune.compute_masks(model, 0.9, scope="global")
    total = sum(m.numel() for m in glob.values())
    assert sum(int((~m).sum()) for m in glob.values()) == round(0.9 * total)
    rand = prune.compute_masks(model, 0.5, method="random",
                                generator=torch.Generator().manual_seed(0))
    assert all(int((~m).sum()) == round(0.5 * m.numel()) for m in rand.values())


def test_masks_cover_conv_weights():
    masks = prune.compute_masks(LeNet5(), 0.75, scope="global")
    assert list(masks)[:2] == ["conv1.weight", "conv2.weight"]
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.75 * total)
    conv = structured.structured_mask(LeNet5().conv2.weight, 0.5)  # whole output channels
    assert int(conv.flatten(1).all(1).sum()) == 8 and int(conv.flatten(1).any(1).sum()) == 8


def tiny_split(seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(96, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)
    return Split(x, y, x[:32], y[:32])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masks_survive_training_only_with_the_hook(optimizer):
    torch.manual_seed(0)
    model = MLP((784, 16, 10))
    masks = prune.compute_masks(model, 0.8)
    prune.apply_masks(model, masks)
    fit(model, tiny_split(), epochs=2, lr=0.01, batch_size=16, optimizer=optimizer,
        after_step=schedule.mask_hook(masks))  # 12 optimizer steps
    for name, w in prune.prunable(model).items():
        assert (w[~masks[name]] == 0).all()
        assert (w[masks[name]] != 0).all()
    assert metrics.weight_sparsity(model)["total"] == pytest.approx(0.8, abs=1e-3)
    fit(model, tiny_split(), epochs=1, lr=0.01, batch_size=16, optimizer=optimizer)
    assert metrics.weight_sparsity(model)["total"] < 0.5  # without the hook they grow back


def test_apply_masks_zeroes_and_rejects_bad_masks():
    model = MLP((4, 3, 2))
    prune.apply_masks(model, {"fc1.weight": torch.zeros(3, 4, dtype=torch.bool)})
    assert (model.fc1.weight == 0).all() and not torch.signbit(model.fc1.weight).any()
    with pytest.raises(ValueError, match="fc9.weight"):
        prune.apply_masks(model, {"fc9.weight": torch.ones(3, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        prune.apply_masks(model, {"fc1.weight": torch.ones(4, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool"):
        prune.apply_masks(model, {"fc1.weight": torch.ones(3, 4)})


@pytest.mark.parametrize("call, match", [
    (lambda: prune.magnitude_mask(torch.ones(3), -0.1), "amount"),
    (lambda: prune.magnitude_mask(torch.ones(3), 1.5), "amount"),
    (lambda: prune.magnitude_mask(torch.ones(3), True), "amount"),
    (lambda: prune.magnitude_mask(torch.ones(3), "0.5"), "amount"),
    (lambda: prune.magnitude_mask(torch.ones(3)),
     "amount must be given exactly when threshold is not"),
    (lambda: prune.magnitude_mask(torch.ones(3), 0.5, threshold=0.1),
     "amount must be given exactly when threshold is not"),
    (lambda: prune.magnitude_mask(torch.ones(3), threshold=-1.0), "threshold"),
    (lambda: prune.magnitude_mask(torch.tensor([1.0, float("nan")]), 0.5), "finite"),
    (lambda: prune.global_magnitude_masks({}, 0.5), "non-empty"),
    (lambda: prune.random_mask(torch.ones(3), 2.0), "amount"),
    (lambda: prune.compute_masks(MLP((4, 2)), 0.5, method="taylor"), "method"),
    (lambda: prune.compute_masks(MLP((4, 2)), 0.5, scope="row"), "scope"),
    (lambda: prune.magnitude_mask(torch.ones(3), float("nan")), "amount"),
])
def test_bad_input_gets_a_clear_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_non_tensor_weight_is_a_type_error():
    with pytest.raises(TypeError, match="torch.Tensor"):
        prune.magnitude_mask([1.0, 2.0], 0.5)
    with pytest.raises(TypeError, match="floating-point"):
        prune.magnitude_mask(torch.ones(3, dtype=torch.int64), 0.5)


# --- Han et al.'s per-layer threshold ------------------------------------------------------


@FAST
@given(sizes=st.lists(st.integers(2, 40), min_size=1, max_size=3), q=st.floats(0.0, 2.0),
       seed=st.integers(0, 2**16))
def test_std_threshold_is_each_layers_quality_times_its_std(sizes, q, seed):
    import numpy as np

    g = torch.Generator().manual_seed(seed)
    weights = {f"w{i}": torch.randn(n, generator=g) * (i + 1) for i, n in enumerate(sizes)}
    masks = prune.std_threshold_masks(weights, q)
    for name, w in weights.items():
        tau = q * float(np.std(w.double().numpy(), ddof=1))
        expected = torch.from_numpy(np.abs(w.double().numpy()) > tau)
        assert torch.equal(masks[name], expected)
        assert torch.equal(masks[name], prune.magnitude_mask(w, threshold=q * float(w.std())))


def test_std_threshold_gives_each_layer_its_own_sparsity():
    weights = {"a": torch.linspace(-1, 1, 101), "b": torch.linspace(-1, 1, 101) ** 3}
    masks = prune.std_threshold_masks(weights, 0.5)
    assert float(masks["a"].float().mean()) != float(masks["b"].float().mean())


@pytest.mark.parametrize("call, match", [
    (lambda: prune.std_threshold_masks({"w": torch.ones(1)}, 1.0), "at least two"),
    (lambda: prune.std_threshold_masks({"w": torch.ones(3)}, -1.0), "quality"),
])
def test_new_criteria_reject_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
