"""Trained quantization (Han et al. 2016, §3): weight sharing with fine-tuned centroids.

The non-zero weights of a pruned layer are clustered into ``k = 2^b − 1`` shared values (1-D
k-means, `levers.kmeans.lloyd` to a fixed point; a cluster left empty keeps its centroid); code
0 stands for the exact zero, so pruned weights stay
pruned: every weight is ``W_i = c[I_i]`` with ``c[0] = 0`` fixed. The loss then depends on the
weights only through the centroids, and the chain rule gives the centroid's gradient as the sum
of the gradients of the weights that share it:

    ∂L/∂c_k = Σ_{i : I_i = k} ∂L/∂W_i.

`SharedModel` trains the centroids this way (autograd computes exactly that sum, see
`centroid_grad`), with `levers.train.fit`. Initialization matters because k-means only finds a
local optimum: the paper compares *random* (k weights drawn from the layer), *density-based*
(quantiles: centroids crowd where the weights are dense) and *linear* (evenly spaced over
[min, max], which keeps a few centroids on the rare large weights, and works best).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from levers._checks import (
    check_choice,
    check_generator,
    check_instance,
    check_int,
    check_integers,
    check_mapping,
    check_weight,
    fail,
)
from levers.data import Split
from levers.kmeans import lloyd
from levers.train import History, fit

INITS = ("linear", "random", "density")


def init_centroids(x: Tensor, k: int, method: str = "linear",
                   generator: torch.Generator | None = None) -> Tensor:
    """k initial centroids for the values `x`: linear, random (Forgy) or density-based.

    Examples
    --------
    >>> x = torch.tensor([0.0, 1.0, 2.0, 10.0])
    >>> init_centroids(x, 2).tolist(), init_centroids(x, 2, "density").tolist()
    ([0.0, 10.0], [0.75, 4.0])
    """
    check_weight(x, "x")
    check_int("k", k, 1)
    check_choice("method", method, INITS)
    check_generator("generator", generator)
    x = x.detach().reshape(-1).float()
    if len(x) == 0:
        raise fail("x", x, "a non-empty tensor")
    if method == "linear":
        return torch.linspace(float(x.min()), float(x.max()), k)
    if method == "random":
        return x[torch.randint(len(x), (k,), generator=generator)].sort().values
    return torch.quantile(x, (torch.arange(k) + 0.5) / k)


@dataclass(frozen=True, eq=False)
class Shared:
    """A shared layer: ``centroids`` (k non-zero values) and ``indices`` (0 = zero, j = c[j−1])."""

    centroids: Tensor
    indices: Tensor

    def __post_init__(self) -> None:
        check_weight(self.centroids, "centroids")
        check_integers("indices", self.indices, 0, len(self.centroids))

    def weight(self) -> Tensor:
        """The weights ``[0, c_1, …, c_k][indices]`` (differentiable in the centroids)."""
        return torch.cat([self.centroids.new_zeros(1), self.centroids])[self.indices]


def share(w: Tensor, bits: int, init: str = "linear", iters: int = 30,
          generator: torch.Generator | None = None) -> Shared:
    """Cluster the non-zero entries of `w` into ``2^bits − 1`` shared values; zeros stay zero.

    Examples
    --------
    >>> s = share(torch.tensor([0.0, 0.1, 0.5, 1.0]), bits=2)
    >>> [round(c, 2) for c in s.centroids.tolist()], s.indices.tolist()
    ([0.1, 0.5, 1.0], [0, 1, 2, 3])
    """
    check_weight(w)
    check_int("bits", bits, 1, 16)
    check_int("iters", iters, 1)
    check_choice("init", init, INITS)
    flat = w.detach().reshape(-1).float()
    nonzero = flat != 0
    if not bool(nonzero.any()):
        return Shared(torch.zeros(0), torch.zeros(w.shape, dtype=torch.int64))
    x = flat[nonzero]
    centroids, index, _, _ = lloyd(x, init_centroids(x, 2**bits - 1, init, generator), iters)
    indices = torch.zeros(len(flat), dtype=torch.int64)
    indices[nonzero] = index + 1
    return Shared(centroids, indices.reshape(w.shape))


def centroid_grad(weight_grad: Tensor, indices: Tensor, k: int) -> Tensor:
    """``∂L/∂c_j = Σ_{i: I_i = j} ∂L/∂W_i`` for ``j = 1 … k`` (code 0, the zero, has none).

    Examples
    --------
    >>> centroid_grad(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 0, 1]), k=2).tolist()
    [4.0, 0.0]
    """
    check_weight(weight_grad, "weight_grad")
    check_int("k", k, 0)
    check_integers("indices", indices, 0, k)
    if indices.shape != weight_grad.shape:
        raise fail("indices", indices, f"shaped like weight_grad {tuple(weight_grad.shape)}")
    total = torch.zeros(k + 1).index_add_(0, indices.reshape(-1), weight_grad.reshape(-1).float())
    return total[1:]


class SharedModel(nn.Module):
    """`model` with the weights named in `shared` tied to trainable centroids.

    Only the centroids (and the parameters not shared, such as biases) are trained; the
    assignments ``indices`` are fixed buffers, so pruned weights stay exactly zero.

    Examples
    --------
    >>> from levers.models import MLP
    >>> m = MLP((3, 2))
    >>> sm = SharedModel(m, {"fc1.weight": share(m.fc1.weight, bits=1)})
    >>> len(torch.unique(sm.to_model().fc1.weight.detach()))
    1
    """

    def __init__(self, model: nn.Module, shared: Mapping[str, Shared]) -> None:
        super().__init__()
        check_instance("model", model)
        check_mapping("shared", shared)
        params = dict(model.named_parameters())
        missing = sorted(set(shared) - set(params))
        if missing:
            raise ValueError(f"shared names {missing}, which model does not have; it has "
                             f"{sorted(params)}")
        self.model = copy.deepcopy(model)
        self.names = list(shared)
        self.centroids = nn.ParameterList()
        for i, name in enumerate(self.names):
            check_instance(f"shared[{name!r}]", shared[name], Shared)
            if shared[name].indices.shape != params[name].shape:
                raise fail(f"shared[{name!r}].indices", shared[name].indices,
                           f"shaped like {name} {tuple(params[name].shape)}")
            self.centroids.append(nn.Parameter(shared[name].centroids.detach().clone()))
            self.register_buffer(f"indices{i}", shared[name].indices.clone())
            self.model.get_parameter(name).requires_grad_(False)

    def shared(self) -> dict[str, Shared]:
        """The current centroids and the fixed indices, per weight name."""
        return {name: Shared(c, getattr(self, f"indices{i}"))
                for i, (name, c) in enumerate(zip(self.names, self.centroids, strict=True))}

    def forward(self, x: Tensor) -> Tensor:
        weights = {name: s.weight() for name, s in self.shared().items()}
        return functional_call(self.model, weights, (x,))

    @torch.no_grad()
    def to_model(self) -> nn.Module:
        """A plain copy of the model with the shared weights written in."""
        out = copy.deepcopy(self.model)
        for name, s in self.shared().items():
            out.get_parameter(name).copy_(s.weight()).requires_grad_(True)
        return out


def finetune(model: nn.Module, shared: Mapping[str, Shared], split: Split,
             **fit_kwargs: object) -> tuple[nn.Module, dict[str, Shared], History]:
    """Train the centroids of `shared` (and the unshared parameters) with `levers.train.fit`.

    Returns
    -------
    (model, shared, history)
        A new plain model with the trained shared weights, the trained centroids, and fit's
        history. `model` itself is not changed.
    """
    check_instance("split", split, Split)
    sm = SharedModel(model, shared)
    history = fit(sm, split, **fit_kwargs)
    return sm.to_model(), {k: Shared(s.centroids.detach().clone(), s.indices)
                           for k, s in sm.shared().items()}, history
