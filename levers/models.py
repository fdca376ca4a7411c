"""The book's models: LeNet-300-100, a LeNet-5-style CNN, and plain MLPs.

All take MNIST images ``[N, 1, 28, 28]`` (or already flat ``[N, 784]`` for the MLPs) and return
10 logits. Layers are named so later chapters can address them: ``fc1, fc2, fc3`` and
``conv1, conv2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from levers._checks import check_bool, check_instance


class MLP(nn.Module):
    """A ReLU multilayer perceptron with layers named ``fc1, fc2, …``.

    Parameters
    ----------
    sizes : sequence of int
        Widths from input to output, e.g. ``(784, 300, 100, 10)``.

    Examples
    --------
    >>> MLP((784, 32, 10))(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, sizes: Sequence[int]):
        super().__init__()
        if not isinstance(sizes, Sequence):
            raise TypeError(f"sizes must be a sequence of ints, e.g. (784, 300, 10), got {sizes!r}")
        sizes = tuple(sizes)
        if len(sizes) < 2 or any(not isinstance(s, int) or isinstance(s, bool) or s < 1
                                 for s in sizes):
            raise ValueError(f"sizes must be at least two positive ints, got {sizes!r}")
        self.sizes = sizes
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
            self.add_module(f"fc{i}", nn.Linear(n_in, n_out))

    def layers(self) -> list[nn.Linear]:
        """The linear layers in order."""
        return [getattr(self, f"fc{i}") for i in range(1, len(self.sizes))]

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        *hidden, last = self.layers()
        for layer in hidden:
            x = torch.relu(layer(x))
        return last(x)


class LeNet300100(MLP):
    """LeNet-300-100: 784 → 300 → 100 → 10 with ReLU, 266,610 parameters (LeCun et al. 1998)."""

    def __init__(self) -> None:
        super().__init__((784, 300, 100, 10))


class LeNet5(nn.Module):
    """A LeNet-5-style CNN: two 5×5 conv + max-pool stages, then 120-84-10 fully connected.

    Examples
    --------
    >>> LeNet5()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)  # 28×28 → 28×28 → pool 14×14
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)  # 14×14 → 10×10 → pool 5×5
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"LeNet5 expects images of shape [N, 1, 28, 28], got {tuple(x.shape)}")
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def mlp(sizes: Sequence[int]) -> MLP:
    """Build an `MLP` with the given layer widths (e.g. a wider one for timing experiments).

    Examples
    --------
    >>> mlp((784, 2048, 10)).sizes
    (784, 2048, 10)
    """
    return MLP(sizes)


def count_params(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters of `model` (only the non-zero ones if ``nonzero=True``).

    Examples
    --------
    >>> count_params(LeNet300100())
    266610
    """
    check_instance("model", model)
    check_bool("nonzero", nonzero)
    if nonzero:
        return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))
