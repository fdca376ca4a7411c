"""Non-uniform quantization by k-means weight sharing (Han et al., Deep Compression, 2016).

Instead of a uniform grid, the 2ᵇ levels are the centroids of a 1-D k-means clustering of the
weights: a codebook of 2ᵇ floats plus a b-bit index per weight. Levels crowd where the weights
are dense (near zero for a bell-shaped layer), so at equal bits the squared error is lower than
a uniform grid's. Lloyd's algorithm in one dimension is simple: sorted centroids split the line
at their midpoints, so on the sorted weights every cluster is a contiguous run that a binary
search finds and a running sum averages; each centroid then moves to the mean of its weights,
and a cluster left empty takes the weight farthest from its centroid (as
scikit-learn does). It runs until the centroids stop moving (scikit-learn's tolerance, relative to
the weights' variance) or until an iteration cap, which the codebook records and a
`ConvergenceWarning` announces. Three starts (`INITS`): ``"linear"`` levels over [min, max]
(deterministic, as Han et al. advise), ``"random"`` weights, or ``"k-means++"`` (Arthur and
Vassilvitskii, 2007: each new centroid drawn with probability ∝ squared distance to the nearest
one already chosen).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from levers._checks import check_choice, check_instance, check_int, check_real, check_weight, fail

#: The ways `kmeans_quantize` can choose its starting centroids.
INITS = ("linear", "random", "k-means++")


class ConvergenceWarning(UserWarning):
    """k-means stopped at its iteration cap before the centroids settled."""


@dataclass(frozen=True, eq=False)
class Codebook:
    """Shared weights: ``centroids`` (2ᵇ float32 values) and one index per weight.

    ``iterations`` is the number of Lloyd steps run and ``converged`` whether they stopped
    because the centroids settled (False: the cap was hit). Its size in bytes is
    `levers.encode.codebook_bytes`.
    """

    centroids: Tensor
    indices: Tensor
    bits: int
    iterations: int = 0
    converged: bool = True


def _start(x: Tensor, k: int, init: str, seed: int) -> Tensor:
    """Sorted starting centroids (float64) for the values `x` (float64)."""
    if init == "linear":
        return torch.linspace(float(x.min()), float(x.max()), k, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    if init == "random":  # k distinct weights, as scikit-learn's init="random"
        pick = torch.randperm(x.numel(), generator=gen)[:k]
        return x[pick].sort().values
    chosen = [x[torch.randint(x.numel(), (1,), generator=gen)]]
    d2 = (x - chosen[0]).pow(2)
    for _ in range(1, k):
        if float(d2.sum()) == 0.0:  # fewer distinct values than centroids
            chosen.append(chosen[-1])
            continue
        pick = torch.multinomial(d2, 1, generator=gen)
        chosen.append(x[pick])
        d2 = torch.minimum(d2, (x - x[pick]).pow(2))
    return torch.cat(chosen).sort().values


def _relocate_empty(xs: Tensor, sizes: Tensor, centroids: Tensor, sums: Tensor,
                    counts: Tensor) -> None:
    """Give each empty cluster the weight farthest from its centroid, as scikit-learn does.

    A start with levels where no weight lives (linear levels out to rare extremes) would
    otherwise waste them for good. Updates `sums` and `counts` in place.
    """
    empty = (counts == 0).nonzero().flatten()
    if empty.numel() == 0:
        return
    index = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    far = torch.topk((xs - centroids[index]).pow(2), empty.numel()).indices
    for e, f in zip(empty.tolist(), far.tolist(), strict=True):
        old = int(index[f])
        sums[old] -= xs[f]
        counts[old] -= 1
        sums[e], counts[e] = xs[f], 1.0


def _ends(xs: Tensor, centroids: Tensor) -> Tensor:
    """Where each cluster ends in the sorted weights: nearest-centroid assignment in 1-D."""
    mids = (centroids[1:] + centroids[:-1]) / 2  # a weight on a midpoint joins the lower one
    return torch.cat([torch.searchsorted(xs, mids, right=True),
                      torch.tensor([xs.numel()])])


def kmeans_quantize(w: Tensor, bits: int, init: str = "linear", tol: float = 1e-8,
                    iters: int = 1000, seed: int = 0) -> Codebook:
    """Cluster the values of `w` into 2ᵇ shared levels, running Lloyd's algorithm to a tolerance.

    Parameters
    ----------
    w : Tensor
        A floating-point weight tensor (any shape), finite.
    bits : int
        Index width b in [1, 8]: the codebook has 2ᵇ entries.
    init : {"linear", "random", "k-means++"}
        Starting centroids: evenly spaced over [min, max], 2ᵇ distinct weights drawn at random,
        or k-means++ seeding.
    tol : float
        Stop once the centroids' squared movement in one step, summed, is at most ``tol`` times
        the variance of the weights (scikit-learn's rule), or once no weight changes cluster.
    iters : int
        Cap on the Lloyd steps; hitting it sets ``converged=False`` and warns.
    seed : int
        Seed of the random starts ("random", "k-means++").

    Returns
    -------
    Codebook
        ``indices`` has the shape of `w`, dtype uint8; ``iterations`` and ``converged`` say how
        the run ended.

    Examples
    --------
    >>> cb = kmeans_quantize(torch.tensor([0.0, 0.1, 0.9, 1.0]), bits=1)
    >>> [round(c, 2) for c in cb.centroids.tolist()], cb.indices.tolist(), cb.converged
    ([0.05, 0.95], [0, 0, 1, 1], True)
    """
    check_weight(w)
    if w.numel() == 0:
        raise fail("w", w, "a non-empty tensor")
    check_int("bits", bits, 1, 8)
    check_choice("init", init, INITS)
    check_real("tol", tol)
    check_int("iters", iters, 1)
    check_int("seed", seed, 0)
    x = w.detach().reshape(-1).to(torch.float64)
    k = 2**bits
    centroids = _start(x, k, init, seed)
    limit = tol * float(x.var(correction=0))
    # Sorted, the weights of a cluster are contiguous: a step costs O(k log n), not O(n).
    xs = x.sort().values
    cumsum = torch.cat([torch.zeros(1, dtype=torch.float64), xs.cumsum(0)])
    ends, converged, step = None, False, 0
    while step < iters:
        step += 1
        new_ends = _ends(xs, centroids)
        if ends is not None and torch.equal(new_ends, ends):
            converged = True  # a fixed point: no weight changes cluster
            break
        ends = new_ends
        starts = torch.cat([torch.zeros(1, dtype=torch.long), ends[:-1]])
        sums, counts = cumsum[ends] - cumsum[starts], (ends - starts).to(torch.float64)
        _relocate_empty(xs, ends - starts, centroids, sums, counts)
        moved = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        shift = float((moved - centroids).pow(2).sum())
        centroids = moved.sort().values
        if shift <= limit:
            converged = True
            break
    if not converged:
        warnings.warn(f"k-means stopped at its cap of iters={iters} Lloyd steps before the "
                      f"centroids settled (tol={tol}); raise iters", ConvergenceWarning,
                      stacklevel=2)
    centroids = centroids.to(torch.float32)
    index = torch.bucketize(x.to(torch.float32), (centroids[1:] + centroids[:-1]) / 2)
    return Codebook(centroids, index.to(torch.uint8).reshape(w.shape), bits, step, converged)


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
