"""Tests of levers.share (trained quantization) against brute-force autograd and k-means."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from levers import share
from levers.data import load_mnist5k
from levers.models import MLP
from levers.prune import magnitude_mask
from levers.train import fit

FAST = settings(max_examples=40, deadline=None)


@FAST
@given(seed=st.integers(0, 10_000), bits=st.integers(1, 4))
def test_centroid_gradient_is_the_sum_of_its_weights_gradients(seed, bits):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 9, generator=g) * (torch.rand(6, 9, generator=g) > 0.4)
    s = share.share(w, bits)
    x, y = torch.randn(5, 9, generator=g), torch.randint(0, 6, (5,), generator=g)
    # Reference: autograd through W = c[I], differentiating the loss w.r.t. the centroids.
    c = s.centroids.clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x @ share.Shared(c, s.indices).weight().T, y)
    (ref,) = torch.autograd.grad(loss, c)
    # Brute force: each centroid's gradient by summing, weight by weight.
    wt = s.weight().clone().requires_grad_()
    (gw,) = torch.autograd.grad(torch.nn.functional.cross_entropy(x @ wt.T, y), wt)
    brute = torch.stack([sum((gw[i, j] for i in range(6) for j in range(9)
                              if int(s.indices[i, j]) == k), torch.tensor(0.0))
                         for k in range(1, len(c) + 1)])
    ours = share.centroid_grad(gw, s.indices, len(c))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, brute, rtol=1e-5, atol=1e-6)


@FAST
@given(seed=st.integers(0, 10_000), bits=st.integers(1, 5),
       init=st.sampled_from(share.INITS))
def test_share_keeps_zeros_and_each_weight_takes_its_nearest_centroid(seed, bits, init):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(10, 20, generator=g)
    w = w * magnitude_mask(w, 0.5)
    s = share.share(w, bits, init=init, generator=g)
    assert len(s.centroids) == 2**bits - 1
    assert torch.equal(s.indices == 0, w == 0)
    nz = w[w != 0]
    nearest = (nz[:, None] - s.centroids).abs().min(1).values
    assert torch.allclose((s.weight()[w != 0] - nz).abs(), nearest)


def test_init_methods():
    x = torch.cat([torch.zeros(90) + 0.01, torch.tensor([5.0] * 10)])
    assert share.init_centroids(x, 3).tolist() == torch.linspace(0.01, 5.0, 3).tolist()
    dens = share.init_centroids(x, 3, "density")
    assert torch.allclose(dens, torch.quantile(x, torch.tensor([1 / 6, 0.5, 5 / 6])))
    rand = share.init_centroids(x, 4, "random", torch.Generator().manual_seed(0))
    assert all(v in x.tolist() for v in rand.tolist())
    with pytest.raises(ValueError, match="method"):
        share.init_centroids(x, 3, "kmeans++")


def test_finetune_trains_centroids_and_keeps_masks():
    split = load_mnist5k()
    torch.manual_seed(0)
    m = MLP((784, 32, 10))
    fit(m, split, epochs=1, lr=0.05)
    w = m.fc1.weight.detach()
    m.fc1.weight.data.mul_(magnitude_mask(w, 0.8))
    shared = {"fc1.weight": share.share(m.fc1.weight, 3)}
    before = shared["fc1.weight"].centroids.clone()
    out, trained, history = share.finetune(m, shared, split, epochs=1, lr=1e-4)
    after = trained["fc1.weight"]
    assert not torch.equal(after.centroids, before)
    assert torch.equal(out.fc1.weight.detach() == 0, m.fc1.weight.detach() == 0)
    assert len(torch.unique(out.fc1.weight.detach())) <= 8
    assert torch.equal(out.fc1.weight.detach(), after.weight())
    assert history.test_accuracy[-1] > 0.8
    with pytest.raises(ValueError, match="does not have"):
        share.SharedModel(m, {"fc7.weight": shared["fc1.weight"]})
