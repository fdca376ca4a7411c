"""Tests of levers.policy: one call from a trained model to real bytes; bad policies refused."""

import pytest
import torch

from levers import deepcompress as D
from levers import policy as Pol
from levers.data import load_mnist5k
from levers.models import LeNet300100
from levers.train import evaluate


@pytest.fixture(scope="module")
def split():
    return load_mnist5k()


def test_apply_prunes_shares_and_serializes(split):
    torch.manual_seed(0)
    model = LeNet300100()
    rules = {"fc1": Pol.LayerPolicy(0.9, bits=4), "fc2": Pol.LayerPolicy(0.5, bits=None),
             "fc3": Pol.LayerPolicy(0.5, granularity="row", bits=3, coding="fixed")}
    out = Pol.apply(model, rules, split, prune_epochs=0, share_epochs=0)
    w1, w2, w3 = (out.model.get_parameter(f"fc{i}.weight").detach() for i in (1, 2, 3))
    assert float((w1 == 0).float().mean()) == pytest.approx(0.9, abs=1e-3)
    assert len(torch.unique(w1[w1 != 0])) <= 15 and len(torch.unique(w3[w3 != 0])) <= 7
    assert float((w2 == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)
    assert int((w3.abs().sum(1) == 0).sum()) == 5  # whole rows
    assert torch.equal(model.fc1.weight.detach() != 0, torch.ones_like(w1, dtype=torch.bool))
    fresh = D.load(LeNet300100(), out.data)
    assert evaluate(fresh, split.x_test, split.y_test) == out.accuracy
    assert D.parts(out.data)["fc3.weight"].get("values table") is None


def test_bad_policies(split):
    model = LeNet300100()
    with pytest.raises(ValueError, match="does not have"):
        Pol.apply(model, {"conv1": Pol.LayerPolicy(0.5)}, split)
    with pytest.raises(ValueError, match="sparsity"):
        Pol.LayerPolicy(1.0)
    with pytest.raises(ValueError, match="bits"):
        Pol.LayerPolicy(bits=17)
    with pytest.raises(ValueError, match="granularity"):
        Pol.LayerPolicy(granularity="block")
    with pytest.raises(TypeError, match="LayerPolicy"):
        Pol.apply(model, {"fc1": 0.5}, split)
    assert Pol.LayerPolicy().format() is None
