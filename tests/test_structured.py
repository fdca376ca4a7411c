"""Tests of levers.structured: whole-unit masks against torch.nn.utils.prune and NVIDIA's ASP
rule, and shrunk models against the masked ones they replace."""

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from hypothesis import given
from hypothesis import strategies as st
from test_prune import FAST, amounts, tensor_from  # the unstructured masks' test inputs
from torch import nn

from levers import prune, structured
from levers.models import MLP, LeNet5, LeNet300100


@FAST
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=4), amount=amounts,
       seed=st.integers(0, 2**16), data=st.data())
def test_structured_mask_prunes_whole_slices_with_smallest_norms(shape, amount, seed, data):
    w = tensor_from(seed, shape, ties=False)
    dim = data.draw(st.integers(0, len(shape) - 1))
    keep = structured.structured_mask(w, amount, dim=dim)
    units = keep.movedim(dim, 0).reshape(shape[dim], -1)
    assert (units.all(1) | ~units.any(1)).all()  # each slice is all kept or all pruned
    kept_units = units[:, 0]
    assert int((~kept_units).sum()) == round(amount * shape[dim])
    norms = w.movedim(dim, 0).reshape(shape[dim], -1).norm(dim=1)
    if kept_units.any() and (~kept_units).any():
        assert norms[~kept_units].max() <= norms[kept_units].min()


@FAST
@given(rows=st.integers(1, 5), groups=st.integers(1, 5), nm=st.sampled_from([(1, 2), (2, 4),
                                                                            (1, 4), (4, 8)]),
       seed=st.integers(0, 2**16), ties=st.booleans())
def test_nm_mask_keeps_n_largest_of_every_m(rows, groups, nm, seed, ties):
    n, m = nm
    w = tensor_from(seed, [rows, groups * m], ties)
    keep = structured.nm_mask(w, n, m)
    g_keep, g_mag = keep.reshape(-1, m), w.abs().reshape(-1, m)
    assert (g_keep.sum(1) == n).all()
    for k, mag in zip(g_keep, g_mag, strict=True):
        if n < m:
            assert mag[~k].max() <= mag[k].min()


def test_two_four_is_half_sparse_on_lenet():
    w = LeNet300100().fc1.weight
    assert float((~structured.nm_mask(w)).float().mean()) == 0.5


@pytest.mark.parametrize("amount", [0.0, 0.5, 0.9])
def test_shrunk_mlp_equals_the_neuron_masked_model(amount):
    torch.manual_seed(0)
    model = LeNet300100()
    masked = LeNet300100()
    masked.load_state_dict(model.state_dict())
    prune.apply_masks(masked, structured.neuron_masks(masked, amount))
    small = structured.shrink_mlp(model, amount)
    assert small.sizes == (784, 300 - round(300 * amount), 100 - round(100 * amount), 10)
    x = torch.rand(20, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(small(x), masked(x), atol=1e-5)


def asp_m4n2_mask(w: torch.Tensor) -> torch.Tensor:
    """NVIDIA ASP's 2:4 rule (apex.contrib.sparsity.sparse_masklib): a conv weight is permuted
    to [kh, kw, out, in] and viewed as rows of input channels; every group of 4 keeps the
    pattern of two ones with the largest sum of |w| (brute force over all six patterns)."""
    import itertools

    patterns = torch.tensor([[1.0 if i in keep else 0.0 for i in range(4)]
                             for keep in itertools.combinations(range(4), 2)])
    if w.dim() == 4:
        o, i, kh, kw = w.shape
        mat = w.permute(2, 3, 0, 1).reshape(-1, i)
    else:
        mat = w
    groups = mat.abs().reshape(-1, 4)
    best = patterns[torch.argmax(groups @ patterns.T, dim=1)].reshape(mat.shape).bool()
    if w.dim() == 4:
        return best.reshape(kh, kw, o, i).permute(2, 3, 0, 1)
    return best


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (16, 8, 5, 5), (4, 12, 1, 1), (6, 16)])
@pytest.mark.parametrize("seed", range(5))
def test_nm_mask_equals_nvidia_asp_rule_on_conv_and_linear(shape, seed):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(structured.nm_mask(w, 2, 4), asp_m4n2_mask(w))


def test_nm_mask_on_lenet5_groups_input_channels_and_refuses_too_few():
    model = LeNet5()
    for name in ("fc1.weight", "fc2.weight", "fc3.weight"):
        w = model.get_parameter(name)
        assert torch.equal(structured.nm_mask(w), asp_m4n2_mask(w.detach()))
    wide = torch.randn(4, 8, 5, 5)
    keep = structured.nm_mask(wide)
    assert (keep.reshape(4, 2, 4, 5, 5).sum(2) == 2).all()  # along the input channels
    with pytest.raises(ValueError, match="input dimension"):
        structured.nm_mask(model.conv2.weight)  # 6 input channels: not a multiple of 4


@pytest.mark.parametrize("block", [(1, 1), (2, 2), (4, 4), (2, 8)])
@pytest.mark.parametrize("amount", [0.0, 0.5, 0.9])
def test_block_mask_prunes_the_smallest_blocks_by_norm(block, amount):
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(3))
    keep = structured.block_mask(w, amount, block)
    bh, bw = block
    tiles = keep.reshape(16 // bh, bh, 32 // bw, bw)
    assert (tiles.all(dim=(1, 3)) == tiles.any(dim=(1, 3))).all()  # whole blocks
    kept = tiles.all(dim=(1, 3))
    norms = torch.tensor([[float(w[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw].norm())
                           for c in range(32 // bw)] for r in range(16 // bh)])
    assert int((~kept).sum()) == round(amount * kept.numel())
    if kept.any() and (~kept).any():
        assert norms[~kept].max() <= norms[kept].min()
    if block == (1, 1):
        assert torch.equal(keep, prune.magnitude_mask(w, amount))


@pytest.mark.parametrize("amount", [0.25, 0.5, 0.75])
def test_channel_masks_equal_torch_ln_structured(amount):
    torch.manual_seed(1)
    model = LeNet5()
    masks = structured.channel_masks(model, amount)
    for name in ("conv1", "conv2"):
        conv = getattr(model, name)
        theirs = torch_prune.LnStructured(amount, n=1, dim=0).compute_mask(
            conv.weight.detach(), torch.ones_like(conv.weight))
        assert torch.equal(masks[f"{name}.weight"], theirs.bool())
        assert torch.equal(masks[f"{name}.bias"], theirs.bool().flatten(1)[:, 0])


@pytest.mark.parametrize("amount", [0.0, 0.25, 0.5, 0.75])
def test_shrunk_cnn_equals_the_channel_masked_model(amount):
    torch.manual_seed(2)
    model = LeNet5()
    masked = LeNet5()
    masked.load_state_dict(model.state_dict())
    prune.apply_masks(masked, structured.channel_masks(masked, amount))
    small = structured.shrink_cnn(model, amount)
    c1, c2 = 6 - round(6 * amount), 16 - round(16 * amount)
    assert (small.conv1.out_channels, small.conv2.in_channels) == (c1, c1)
    assert (small.conv2.out_channels, small.fc1.in_features) == (c2, 25 * c2)
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(small(x), masked(x), atol=1e-5)
    assert model.conv1.out_channels == 6  # the original is untouched


@pytest.mark.parametrize("call, match", [
    (lambda: structured.structured_mask(torch.ones(3, 3), 0.5, dim=2), "dim"),
    (lambda: structured.structured_mask(torch.ones(3, 3), 0.5, p=0), "p must"),
    (lambda: structured.nm_mask(torch.ones(2, 4), n=3, m=2), "n must be <= m"),
    (lambda: structured.nm_mask(torch.ones(2, 6), n=2, m=4), "multiple of m"),
    (lambda: structured.nm_mask(torch.ones(2, 4), n=0, m=4), "n must be an int >= 1"),
    (lambda: structured.shrink_mlp(nn.Linear(3, 3), 0.5), "MLP"),
    (lambda: structured.block_mask(torch.ones(4, 6), 0.5, (4, 4)), "multiple of block"),
    (lambda: structured.block_mask(torch.ones(4, 4), 0.5, (4, 0)), "block"),
    (lambda: structured.channel_masks(MLP((4, 2)), 0.5), "LeNet5"),
    (lambda: structured.shrink_cnn(LeNet5(), 1.5), "amount"),
])
def test_bad_input_gets_a_clear_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
