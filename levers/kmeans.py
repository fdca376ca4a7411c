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
    k = 2**bits
    centroids = torch.linspace(float(x.min()), float(x.max()), k)
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
    index = torch.bucketize(x, (centroids[1:] + centroids[:-1]) / 2)
    return Codebook(centroids, index.to(torch.uint8).reshape(w.shape), bits)


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
