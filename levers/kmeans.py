"""Non-uniform quantization by k-means weight sharing (Han et al., Deep Compression, 2016).

Instead of a uniform grid, the 2ᵇ levels are the centroids of a 1-D k-means clustering of the
weights: a codebook of 2ᵇ floats plus a b-bit index per weight. Levels crowd where the weights
are dense (near zero for a bell-shaped layer), so at equal bits the squared error is lower than
a uniform grid's. Lloyd's algorithm in one dimension is simple: sorted centroids split the line
at their midpoints, so assignment is a `torch.bucketize`; each centroid then moves to the mean
of its weights. Initialization is linear over [min, max], deterministic, as Han et al. advise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from levers._checks import check_instance, check_int, check_weight, fail


@dataclass(frozen=True, eq=False)
class Codebook:
    """Shared weights: ``centroids`` (2ᵇ float32 values) and one index per weight.

    Its size in bytes is `levers.encode.codebook_bytes`.
    """

    centroids: Tensor
    indices: Tensor
    bits: int


def kmeans_quantize(w: Tensor, bits: int, iters: int = 30) -> Codebook:
    """Cluster the values of `w` into 2ᵇ shared levels.

    Parameters
    ----------
    w : Tensor
        A floating-point weight tensor (any shape), finite.
    bits : int
        Index width b in [1, 8]: the codebook has 2ᵇ entries.
    iters : int
        Lloyd iterations (stops early once assignments stop changing).

    Returns
    -------
    Codebook
        ``indices`` has the shape of `w`, dtype uint8.

    Examples
    --------
    >>> cb = kmeans_quantize(torch.tensor([0.0, 0.1, 0.9, 1.0]), bits=1)
    >>> [round(c, 2) for c in cb.centroids.tolist()], cb.indices.tolist()
    ([0.05, 0.95], [0, 0, 1, 1])
    """
    check_weight(w)
    if w.numel() == 0:
        raise fail("w", w, "a non-empty tensor")
    check_int("bits", bits, 1, 8)
    check_int("iters", iters, 1)
    x = w.detach().reshape(-1).float()
    centroids, index = lloyd(x, torch.linspace(float(x.min()), float(x.max()), 2**bits), iters)
    return Codebook(centroids, index.to(torch.uint8).reshape(w.shape), bits)


def lloyd(x: Tensor, centroids: Tensor, iters: int = 30) -> tuple[Tensor, Tensor]:
    """Lloyd's algorithm in one dimension from the given initial `centroids`.

    Parameters
    ----------
    x : Tensor
        1-D float values to cluster.
    centroids : Tensor
        1-D initial centroids (sorted here); their number is k.
    iters : int
        Iterations at most; stops once the assignments stop changing.

    Returns
    -------
    (centroids, index)
        The sorted final centroids and each value's cluster (int64).

    Examples
    --------
    >>> c, i = lloyd(torch.tensor([0.0, 0.1, 0.9, 1.0]), torch.tensor([1.0, 0.0]))
    >>> [round(v, 2) for v in c.tolist()], i.tolist()
    ([0.05, 0.95], [0, 0, 1, 1])
    """
    check_weight(x, "x")
    check_weight(centroids, "centroids")
    if x.dim() != 1 or centroids.dim() != 1 or len(centroids) == 0:
        raise fail("x", x, "1-D, with 1-D non-empty centroids")
    check_int("iters", iters, 1)
    k = len(centroids)
    centroids = torch.sort(centroids.float()).values
    index = None
    for _ in range(iters):
        new_index = torch.bucketize(x, (centroids[1:] + centroids[:-1]) / 2)
        if index is not None and torch.equal(new_index, index):
            break
        index = new_index
        sums = torch.zeros(k).index_add_(0, index, x)
        counts = torch.zeros(k).index_add_(0, index, torch.ones_like(x))
        # An empty cluster keeps its centroid; the centroids stay sorted either way.
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return centroids, torch.bucketize(x, (centroids[1:] + centroids[:-1]) / 2)


def kmeans_dequantize(codebook: Codebook) -> Tensor:
    """Rebuild the weights: each index replaced by its centroid.

    Examples
    --------
    >>> cb = kmeans_quantize(torch.tensor([0.0, 0.1, 0.9, 1.0]), bits=1)
    >>> [round(v, 2) for v in kmeans_dequantize(cb).tolist()]
    [0.05, 0.05, 0.95, 0.95]
    """
    check_instance("codebook", codebook, Codebook)
    return codebook.centroids[codebook.indices.long()]
