"""What a model costs: measured latency, counted multiply-accumulates, estimated energy.

Latency is measured, never assumed: warm-up calls first (caches, lazy kernel selection), then
repeated timings of which we report the median (robust to the odd slow run). To compare several
candidates on a machine that other programs also use, `compare` times them in interleaved rounds
and keeps each one's fastest run; `break_even` finds where one candidate overtakes another. The
thread count is set for the measurement and restored afterwards, because the rest of the book
runs on one thread for reproducibility.

The book also pins its numeric kernels to reproducible, slower code paths (`levers.repro`). A
timing taken under those pins would not be the reader's machine at its best, so the chapters
time things through `native`, which runs a function of this module (`matmul_formats`,
`csr_vs_dense`, `compare_models`) in a fresh process with the machine's own kernels.
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

from levers._checks import check_int, check_real

K = TypeVar("K", bound=Hashable)

#: Energy per operation at 45 nm, 0.9 V, in picojoules (Horowitz, ISSCC 2014).
ENERGY_PJ: dict[str, float] = {
    "int8 add": 0.03,
    "int32 add": 0.1,
    "fp16 add": 0.4,
    "fp32 add": 0.9,
    "int8 mult": 0.2,
    "int32 mult": 3.1,
    "fp16 mult": 1.1,
    "fp32 mult": 3.7,
    "sram read 32b": 5.0,  # 8 KB SRAM, one 32-bit word
    "dram read 32b": 640.0,
}


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


def matmul_formats(batch: int, n_in: int, n_out: int, rounds: int = 3,
                   repeats: int = 5) -> dict[str, Timing]:
    """Time ``x @ wᵀ`` for ``x`` of shape (batch, n_in) and ``w`` of (n_out, n_in) per format.

    fp32, fp16 and bf16 multiply tensors of that dtype; int8 runs PyTorch's dynamic-quantization
    engine (a ``torch.ao`` dynamic ``Linear`` with an int8 weight: it quantizes ``x`` on the fly,
    multiplies in int8 with int32 accumulation, and returns fp32). Random operands; one thread;
    interleaved rounds as in `compare`. Run it through `native` to use the machine's kernels.

    Parameters
    ----------
    batch, n_in, n_out : int
        The shapes: ``x`` is (batch, n_in) and ``w`` is (n_out, n_in).
    rounds, repeats : int
        As in `compare`.

    Returns
    -------
    dict
        ``{"fp32": Timing, "fp16": Timing, "bf16": Timing, "int8": Timing}``.
    """
    for name, value in (("batch", batch), ("n_in", n_in), ("n_out", n_out)):
        check_int(name, value, 1)
    import warnings

    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    gen = torch.Generator().manual_seed(0)
    x32 = torch.randn(batch, n_in, generator=gen)
    w32 = torch.randn(n_out, n_in, generator=gen) / n_in**0.5
    fns: dict[str, Callable[[], object]] = {}
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16),
                        ("bf16", torch.bfloat16)):
        xd, wd = x32.to(dtype), w32.to(dtype)
        fns[name] = lambda xd=xd, wd=wd: xd @ wd.T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its deprecation
        q = DynamicInt8Linear(n_in, n_out, bias_=False)
        scale = w32.abs().max().item() / 127
        q.set_weight_bias(torch.quantize_per_tensor(w32, scale, 0, torch.qint8), None)
    fns["int8"] = lambda: q(x32)
    return compare(fns, rounds=rounds, repeats=repeats)


def csr_vs_dense(weight: torch.Tensor, x: torch.Tensor, sparsities: Sequence[float],
                 rounds: int = 3, repeats: int = 8) -> dict[object, Timing]:
    """Time the dense product ``weight @ x`` and CSR products at each magnitude-pruned sparsity.

    For each ``s`` in `sparsities`, the smallest-magnitude fraction ``s`` of `weight` is set to
    zero (`levers.sparse.magnitude_mask`) and the result stored in CSR. One thread; interleaved
    rounds as in `compare`. Run it through `native` to use the machine's kernels.

    Parameters
    ----------
    weight : Tensor
        A 2-D weight matrix (n_out, n_in).
    x : Tensor
        The right-hand operand (n_in, batch).
    sparsities : sequence of float
        Fractions in [0, 1] of `weight` to prune before the CSR products.
    rounds, repeats : int
        As in `compare`.

    Returns
    -------
    dict
        ``{"dense": Timing, s: Timing for each s}`` (the dense product uses the unpruned weight;
        its cost does not depend on how many entries are zero).
    """
    import warnings

    from levers.sparse import magnitude_mask

    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D tensor, got {weight!r:.80}")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] != weight.shape[1]:
        raise ValueError(f"x must be a 2-D tensor with {weight.shape[1]} rows (weight has "
                         f"{weight.shape[1]} columns), got shape "
                         f"{tuple(getattr(x, 'shape', ()))}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch labels its CSR support "beta"
        csr = {s: (weight * magnitude_mask(weight, s)).to_sparse_csr() for s in sparsities}
        fns: dict[object, Callable[[], object]] = {"dense": lambda: weight @ x}
        fns |= {s: (lambda c=c: c @ x) for s, c in csr.items()}
        return compare(fns, rounds=rounds, repeats=repeats)


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
    """
    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"models must be a non-empty mapping of name to model, got {models!r}")
    for key, model in models.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"models[{key!r}] must be a torch.nn.Module, "
                            f"got {type(model).__name__}")
        model.eval()
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


def macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates per layer for one input of `input_shape` (batch dimension excluded).

    Counts ``nn.Linear`` (in × out) and ``nn.Conv2d`` (k_h·k_w·c_in/groups · c_out · H_out·W_out)
    layers, by running one forward pass with hooks.

    Examples
    --------
    >>> from levers.models import LeNet300100
    >>> sum(macs(LeNet300100(), (1, 28, 28)).values())
    266200
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if (not isinstance(input_shape, tuple | list) or not input_shape
            or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in input_shape)):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, "
                         f"got {input_shape!r}")
    counts: dict[str, int] = {}

    def hook(name: str) -> Callable:
        def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(module, nn.Linear):
                counts[name] = module.in_features * module.out_features
            else:
                k = module.weight[0].numel()  # c_in/groups · k_h · k_w
                counts[name] = k * output.shape[1] * output.shape[2] * output.shape[3]
        return count

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Linear | nn.Conv2d)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)  # counting must not leave a model in the middle of training
    return counts


def energy_estimate_pj(n_macs: int, n_weight_reads: int, fmt: str = "fp32",
                       weights_in: str = "dram") -> dict[str, float]:
    """Energy of one inference from per-operation costs, split into arithmetic and memory.

    Each MAC is one multiply and one add in `fmt`; each weight is read once, as 32-bit words
    from DRAM or SRAM (so a narrower format reads proportionally fewer words).

    Parameters
    ----------
    n_macs : int
        Multiply-accumulates per inference (see `macs`).
    n_weight_reads : int
        Number of weights read per inference.
    fmt : {"fp32", "fp16", "int8"}
    weights_in : {"dram", "sram"}

    Returns
    -------
    dict
        ``{"arithmetic": pJ, "memory": pJ, "total": pJ}``.
    """
    widths = {"fp32": 32, "fp16": 16, "int8": 8}
    if fmt not in widths:
        raise ValueError(f"fmt must be one of {sorted(widths)}, got {fmt!r}")
    if weights_in not in ("dram", "sram"):
        raise ValueError(f"weights_in must be 'dram' or 'sram', got {weights_in!r}")
    if not (n_macs >= 0 and n_weight_reads >= 0):  # written so that NaN fails too
        raise ValueError(f"n_macs and n_weight_reads must be non-negative, "
                         f"got {n_macs!r} and {n_weight_reads!r}")
    add = "int32 add" if fmt == "int8" else f"{fmt} add"  # int8 products accumulate in int32
    arithmetic = n_macs * (ENERGY_PJ[f"{fmt} mult"] + ENERGY_PJ[add])
    words = n_weight_reads * widths[fmt] / 32
    memory = words * ENERGY_PJ["dram read 32b" if weights_in == "dram" else "sram read 32b"]
    return {"arithmetic": arithmetic, "memory": memory, "total": arithmetic + memory}
