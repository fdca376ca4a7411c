"""Latency, measured: warm-up, repeats, interleaved candidates, and the machine's own kernels.

Latency is measured, never assumed: warm-up calls first (caches, lazy kernel selection), then
repeated timings of which we report the median (robust to the odd slow run). To compare several
candidates on a machine that other programs also use, `compare` times them in interleaved rounds
and keeps each one's fastest run; `break_even` finds where one candidate overtakes another. The
thread count is set for the measurement and restored afterwards, because the rest of the book
runs on one thread for reproducibility.

The book also pins its numeric kernels to reproducible, slower code paths (`levers.repro`). A
timing taken under those pins would not be the reader's machine at its best, so the chapters
time things through `native`, which runs a function (`compare_models`, or one of the chapters'
experiments in `levers.kernels`) in a fresh process with the machine's own kernels. What a model
costs without running it (MACs, bytes moved, energy), and the CPU's peak a measured rate is
judged against, is `levers.cost`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from levers._checks import check_int, check_real, fail

K = TypeVar("K", bound=Hashable)

@dataclass(frozen=True)
class Timing:
    """Summary of repeated timings, in seconds."""

    median: float
    minimum: float
    repeats: int
    threads: int

    def __str__(self) -> str:
        return f"{self.median * 1e3:.3g} ms (median of {self.repeats}, {self.threads} thread(s))"


def _timed(fn: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    """`warmup` untimed calls of ``fn()``, then the wall-clock seconds of `repeats` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _check_counts(repeats: int, warmup: int, threads: int) -> None:
    check_int("repeats", repeats, 1)
    check_int("warmup", warmup, 0)
    check_int("threads", threads, 1)


def latency(fn: Callable[[], object], repeats: int = 20, warmup: int = 3,
            threads: int = 1) -> Timing:
    """Median wall-clock time of ``fn()`` over `repeats` calls after `warmup` calls.

    Parameters
    ----------
    fn : callable
        Takes no arguments; its result is discarded. It runs in inference mode.
    repeats, warmup : int
        Timed calls and untimed warm-up calls.
    threads : int
        PyTorch intra-op threads during the measurement (restored afterwards).

    Examples
    --------
    >>> a = torch.ones(64, 64)
    >>> latency(lambda: a @ a, repeats=3, warmup=1).repeats
    3
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    _check_counts(repeats, warmup, threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            times = _timed(fn, repeats, warmup)
    finally:
        torch.set_num_threads(before)
    return Timing(statistics.median(times), min(times), repeats, threads)


def compare(fns: Mapping[K, Callable[[], object]], rounds: int = 3, repeats: int = 8,
            warmup: int = 1, threads: int = 1) -> dict[K, Timing]:
    """Time several candidates fairly: in interleaved rounds, keeping every run of each.

    Each round times every candidate in turn (`warmup` untimed calls, then `repeats` timed
    ones), so a burst of load from other programs hits all candidates alike instead of favouring
    whichever ran at a quiet moment. Compare the ``minimum`` of the results: the fastest run is
    the one least disturbed.

    Parameters
    ----------
    fns : mapping of key to callable
        The candidates, each taking no arguments (results discarded); run in inference mode.
    rounds : int
        How many times to go through all candidates.
    repeats, warmup : int
        Timed and untimed calls of each candidate in each round.
    threads : int
        PyTorch intra-op threads during the measurement (restored afterwards).

    Returns
    -------
    dict of key to Timing
        Same keys and order as `fns`; each over its ``rounds · repeats`` timed calls.

    Examples
    --------
    >>> a = torch.ones(64, 64)
    >>> t = compare({"matmul": lambda: a @ a, "add": lambda: a + a}, rounds=2, repeats=3)
    >>> list(t), t["add"].repeats
    (['matmul', 'add'], 6)
    """
    if not isinstance(fns, Mapping) or len(fns) == 0:
        raise ValueError(f"fns must be a non-empty mapping of name to callable, got {fns!r}")
    for key, fn in fns.items():
        if not callable(fn):
            raise TypeError(f"fns[{key!r}] must be callable, got {type(fn).__name__}")
    check_int("rounds", rounds, 1)
    _check_counts(repeats, warmup, threads)
    times: dict[K, list[float]] = {key: [] for key in fns}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(rounds):
                for key, fn in fns.items():
                    times[key] += _timed(fn, repeats, warmup)
    finally:
        torch.set_num_threads(before)
    return {key: Timing(statistics.median(t), min(t), len(t), threads)
            for key, t in times.items()}


def native(fn: Callable, /, *args: object, timeout: float = 600.0, **kwargs: object) -> object:
    """``fn(*args, **kwargs)``, computed in a fresh process with the machine's fastest kernels.

    Everything else in the book runs with kernels pinned for reproducibility (see
    `levers.repro`): MKL's ``COMPATIBLE`` branch, AVX2 for PyTorch's own kernels, no oneDNN. A
    benchmark must measure what the machine can do, so it runs here, in a child Python process
    whose numeric libraries choose their kernels freely (threads stay as the function sets them).

    Parameters
    ----------
    fn : function
        Defined at the top level of an importable module, such as `compare_models`; not a
        function or lambda defined in a notebook, which the child process cannot import.
    *args, **kwargs
        Picklable arguments (tensors and ``nn.Module`` objects of importable classes are).
    timeout : float
        Seconds before the child is stopped and a TimeoutError raised.

    Returns
    -------
    object
        What `fn` returned (it must be picklable).

    Examples
    --------
    >>> t = native(compare_models, {"id": torch.nn.Identity()}, torch.ones(4, 4), repeats=2)
    >>> t["id"].repeats
    6
    """
    from levers import _native

    check_real("timeout", timeout, 0.0, open_low=True)
    return _native.run(fn, args, kwargs, float(timeout))


def compare_models(models: Mapping[K, nn.Module], x: torch.Tensor, rounds: int = 3,
                   repeats: int = 8) -> dict[K, Timing]:
    """Time ``model(x)`` for each model, in interleaved rounds on one thread (see `compare`).

    Run it through `native` to use the machine's kernels, e.g.
    ``native(compare_models, {"fp32": model, "int8": quantized}, x)``.

    Parameters
    ----------
    models : mapping of key to nn.Module
        The candidates; each is put in eval mode.
    x : Tensor
        The input every model gets.
    rounds, repeats : int
        As in `compare`.

    Returns
    -------
    dict of key to Timing
        Same keys and order as `models`.

    Examples
    --------
    >>> t = compare_models({"id": torch.nn.Identity()}, torch.ones(4), rounds=2, repeats=2)
    >>> t["id"].repeats
    4
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"models must be a non-empty mapping of name to model, got {models!r}")
    for key, model in models.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"models[{key!r}] must be a torch.nn.Module, "
                            f"got {type(model).__name__}")
        model.eval()
    if not isinstance(x, torch.Tensor):
        raise fail("x", x, "a torch.Tensor (the input of every model)")
    return compare({key: (lambda m=m: m(x)) for key, m in models.items()},
                   rounds=rounds, repeats=repeats)


def break_even(xs: Sequence[float], t_a: Sequence[float], t_b: Sequence[float]) -> float:
    """The first x at which candidate b becomes faster than candidate a.

    `t_a[i]` and `t_b[i]` are the times measured at `xs[i]` (e.g. a dense and a sparse kernel at
    increasing sparsity). The crossing is where the ratio ``t_b / t_a`` first drops below 1,
    linearly interpolated between the two measured points around it.

    Parameters
    ----------
    xs : sequence of float
        Strictly increasing positions, finite.
    t_a, t_b : sequence of float
        Positive finite times of the two candidates at each x, same length as `xs`.

    Returns
    -------
    float
        ``xs[0]`` if b is already faster there; NaN if b is never faster; otherwise the x where
        the interpolated ratio equals 1.

    Examples
    --------
    >>> round(break_even([0.0, 0.5, 1.0], [1.0, 1.0, 1.0], [3.0, 2.0, 0.5]), 4)
    0.8333
    >>> break_even([0.0, 1.0], [1.0, 1.0], [2.0, 2.0])
    nan
    """
    for name, seq in (("xs", xs), ("t_a", t_a), ("t_b", t_b)):
        if isinstance(seq, str | bytes) or not isinstance(seq, Sequence) or len(seq) == 0:
            raise ValueError(f"{name} must be a non-empty sequence of numbers, got {seq!r}")
        if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
               for v in seq):
            raise ValueError(f"{name} must hold finite numbers only, got {seq!r}")
    if not len(xs) == len(t_a) == len(t_b):
        raise ValueError(f"xs, t_a and t_b must have the same length, "
                         f"got {len(xs)}, {len(t_a)} and {len(t_b)}")
    if any(x1 <= x0 for x0, x1 in zip(xs, xs[1:], strict=False)):
        raise ValueError(f"xs must be strictly increasing, got {xs!r}")
    if any(t <= 0 for t in (*t_a, *t_b)):
        raise ValueError(f"t_a and t_b must be positive times, got {t_a!r} and {t_b!r}")
    ratio = [b / a for a, b in zip(t_a, t_b, strict=True)]
    i = next((j for j, q in enumerate(ratio) if q < 1), None)
    if i is None:
        return math.nan
    if i == 0:
        return float(xs[0])
    # ratio[i - 1] >= 1 > ratio[i]: the straight line between them crosses 1 once
    share = (ratio[i - 1] - 1) / (ratio[i - 1] - ratio[i])
    return float(xs[i - 1] + share * (xs[i] - xs[i - 1]))
