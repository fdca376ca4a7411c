"""Non-uniform quantization by k-means weight sharing (Han et al., Deep Compression, 2016).

Instead of a uniform grid, the 2ᵇ levels are the centroids of a 1-D k-means clustering of the
weights: a codebook of 2ᵇ floats plus a b-bit index per weight. Levels crowd where the weights
are dense (near zero for a bell-shaped layer), so at equal bits the squared error is lower than
a uniform grid's. Lloyd's algorithm in one dimension (`lloyd`, also the loop of `levers.share`)
is simple: sorted centroids split the line at their midpoints, so on the sorted weights every
cluster is a contiguous run that a binary search finds and a running sum averages; each
centroid then moves to the mean of its weights, and a cluster left empty takes the weight
farthest from its centroid (as scikit-learn does). It runs until the centroids stop moving
(scikit-learn's tolerance, relative to the weights' variance) or until an iteration cap, which
the codebook records and a `ConvergenceWarning` announces. Three starts (`INITS`):
``"linear"`` levels over [min, max] (deterministic, as Han et al. advise), ``"random"``
weights, or ``"k-means++"`` (Arthur and Vassilvitskii, 2007: each new centroid drawn with
probability ∝ squared distance to the nearest one already chosen).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from levers._checks import check_choice, check_instance, check_int, check_real, check_weight, fail

#: The ways `kmeans_quantize` can choose its starting centroids.
INITS = ("linear", "random", "k-means++")
#: What `lloyd` does with a cluster left empty.
EMPTY = ("keep", "farthest")


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


def _relocate_empty(x: Tensor, index: Tensor, centroids: Tensor, sums: Tensor,
                    counts: Tensor) -> None:
    """Give each empty cluster the value farthest from its centroid, as scikit-learn does.

    A start with levels where no value lives (linear levels out to rare extremes) would
    otherwise waste them for good. Updates `sums` and `counts` in place.
    """
    empty = (counts == 0).nonzero().flatten()
    if empty.numel() == 0:
        return
    far = torch.topk((x - centroids[index]).pow(2), empty.numel()).indices
    for e, f in zip(empty.tolist(), far.tolist(), strict=True):
        old = int(index[f])
        sums[old] -= x[f]
        counts[old] -= 1
        sums[e], counts[e] = x[f], 1.0


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
    # Sorted, the values of a cluster are contiguous, and the empty-cluster rule breaks ties
    # between equally far values by their order: sort once.
    centroids, _, step, converged = lloyd(x.sort().values, _start(x, 2**bits, init, seed),
                                          iters, tol, empty="farthest")
    if not converged:
        warnings.warn(f"k-means stopped at its cap of iters={iters} Lloyd steps before the "
                      f"centroids settled (tol={tol}); raise iters", ConvergenceWarning,
                      stacklevel=2)
    centroids = centroids.to(torch.float32)
    index = torch.bucketize(x.to(torch.float32), (centroids[1:] + centroids[:-1]) / 2)
    return Codebook(centroids, index.to(torch.uint8).reshape(w.shape), bits, step, converged)


def lloyd(x: Tensor, centroids: Tensor, iters: int = 30, tol: float = 0.0,
          empty: str = "keep") -> tuple[Tensor, Tensor, int, bool]:
    """Lloyd's algorithm in one dimension from the given initial `centroids`, to convergence.

    Each step assigns every value to its nearest centroid (sorted centroids split the line at
    their midpoints; a value on a midpoint joins the lower one), then moves each centroid to the
    mean of its values. It stops at a fixed point (no value changes cluster), once the
    centroids' squared movement in one step, summed, is at most ``tol`` times the variance of
    `x` (scikit-learn's rule), or after `iters` steps. It computes in the dtype of `x`
    (float64 for `kmeans_quantize`, float32 for `levers.share.share`). Given sorted values,
    every cluster is a contiguous run that a binary search finds and a running sum (float64)
    averages, so a step costs O(k log n); otherwise each step sums the values in their order,
    O(n).

    Parameters
    ----------
    x : Tensor
        1-D floating-point values to cluster.
    centroids : Tensor
        1-D initial centroids (sorted here); their number is k.
    iters : int
        Cap on the steps.
    tol : float
        Tolerance of the movement rule, ≥ 0; ``0`` stops only once the centroids stand still.
    empty : {"keep", "farthest"}
        What a cluster left without values does: keep its centroid, or take the value farthest
        from its own centroid (scikit-learn's rule).

    Returns
    -------
    (centroids, index, iterations, converged)
        The sorted final centroids, each value's cluster (int64), the steps run, and whether
        they stopped before the cap.

    Examples
    --------
    >>> c, i, steps, done = lloyd(torch.tensor([0.0, 0.1, 0.9, 1.0]), torch.tensor([1.0, 0.0]))
    >>> [round(v, 2) for v in c.tolist()], i.tolist(), steps, done
    ([0.05, 0.95], [0, 0, 1, 1], 2, True)
    """
    check_weight(x, "x")
    check_weight(centroids, "centroids")
    if x.dim() != 1 or centroids.dim() != 1 or len(centroids) == 0 or len(x) == 0:
        raise fail("x", x, "1-D and non-empty, with 1-D non-empty centroids")
    check_int("iters", iters, 1)
    check_real("tol", tol)
    check_choice("empty", empty, EMPTY)
    k = len(centroids)
    centroids = torch.sort(centroids.to(x.dtype)).values
    limit = tol * float(x.var(correction=0))
    runs = bool((x[1:] >= x[:-1]).all())  # sorted: clusters are runs [start, end)
    if runs:
        prefix = torch.cat([torch.zeros(1, dtype=torch.float64), x.double().cumsum(0)])
    assigned, converged, step = None, False, 0
    while step < iters:
        step += 1
        mids = (centroids[1:] + centroids[:-1]) / 2
        new = (torch.cat([torch.searchsorted(x, mids, right=True), torch.tensor([len(x)])])
               if runs else torch.bucketize(x, mids))  # run ends, or each value's cluster
        if assigned is not None and torch.equal(new, assigned):
            converged = True  # a fixed point: no value changes cluster
            break
        assigned = new
        if runs:
            sizes = new - torch.cat([torch.zeros(1, dtype=torch.long), new[:-1]])
            sums, counts = (prefix[new] - prefix[new - sizes]).to(x.dtype), sizes.to(x.dtype)
        else:
            sums = torch.zeros(k, dtype=x.dtype).index_add_(0, new, x)
            counts = torch.zeros(k, dtype=x.dtype).index_add_(0, new, torch.ones_like(x))
        if empty == "farthest" and bool((counts == 0).any()):
            index = torch.repeat_interleave(torch.arange(k), sizes) if runs else new
            _relocate_empty(x, index, centroids, sums, counts)
        moved = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        shift = float((moved - centroids).pow(2).sum())
        centroids = moved.sort().values
        if shift <= limit:
            converged = True
            break
    return centroids, torch.bucketize(x, (centroids[1:] + centroids[:-1]) / 2), step, converged


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
