"""The chapters' timing experiments: number formats and sparse kernels against dense ones.

Each is a top-level function so `levers.bench.native` can run it in a fresh process with the
machine's fastest kernels: `matmul_formats` (Chapter 1: one matrix product per number format),
`csr_vs_dense` (Chapter 2: a CSR product at each sparsity against the dense one;
`csr_vs_dense_runs` repeats it to show the spread) and `batch_sweep` (Chapter 4: models at
several batch sizes). They time their candidates in interleaved rounds with
`levers.bench.compare`. `kernel_report` says which kernels that process has: the CPU's
instruction set as PyTorch uses it, the quantized engine, the BLAS, and the operators each
model's forward pass dispatches to.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

import torch
from torch import nn

from levers._checks import check_int, check_weight, fail
from levers.bench import Timing, compare
from levers.prune import magnitude_mask

K = TypeVar("K", bound=Hashable)


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
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear  # slow to import

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
    zero (`levers.prune.magnitude_mask`) and the result stored in CSR. One thread; interleaved
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
    check_weight(weight, "weight")
    if weight.dim() != 2:
        raise fail("weight", weight, "a 2-D tensor (n_out, n_in)")
    check_weight(x, "x")
    if x.dim() != 2 or x.shape[0] != weight.shape[1]:
        raise fail("x", x, f"a 2-D tensor with {weight.shape[1]} rows (the columns of weight)")
    if isinstance(sparsities, str) or not isinstance(sparsities, Sequence):
        raise fail("sparsities", sparsities, "a sequence of fractions in [0, 1]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch labels its CSR support "beta"
        csr = {s: (weight * magnitude_mask(weight, s)).to_sparse_csr() for s in sparsities}
        fns: dict[object, Callable[[], object]] = {"dense": lambda: weight @ x}
        fns |= {s: (lambda c=c: c @ x) for s, c in csr.items()}
        return compare(fns, rounds=rounds, repeats=repeats)


def csr_vs_dense_runs(weight: torch.Tensor, x: torch.Tensor, sparsities: Sequence[float],
                      runs: int = 5, rounds: int = 1, repeats: int = 5
                      ) -> list[dict[object, Timing]]:
    """`csr_vs_dense` `runs` times in a row: one result per run, to show how much runs vary.

    A quantity derived from one run (such as a break-even sparsity) should be reported as the
    median and range over the runs, not as one number.

    Examples
    --------
    >>> out = csr_vs_dense_runs(torch.eye(4), torch.ones(4, 2), [0.5], runs=2, repeats=1)
    >>> len(out), sorted(map(str, out[0]))
    (2, ['0.5', 'dense'])
    """
    check_int("runs", runs, 1)
    return [csr_vs_dense(weight, x, sparsities, rounds=rounds, repeats=repeats)
            for _ in range(runs)]


def _check_models(models: object) -> None:
    if not isinstance(models, Mapping) or not models:
        raise fail("models", models, "a non-empty mapping of name to nn.Module")
    for key, model in models.items():
        if not isinstance(model, nn.Module):
            raise fail(f"models[{key!r}]", model, "a torch.nn.Module")


def batch_sweep(models: Mapping[K, nn.Module], x: torch.Tensor, batches: Sequence[int],
                rounds: int = 3, repeats: int = 5) -> dict[tuple[K, int], Timing]:
    """Time ``model(x[:b])`` for every model and every batch size ``b``, on one thread.

    All candidates of one batch size are timed together, in interleaved rounds (`compare`), so
    their ratio is fair even when the machine is busy. Run it through `native` to use the
    machine's kernels.

    Parameters
    ----------
    models : mapping of key to nn.Module
        The candidates (put in eval mode).
    x : Tensor
        Inputs; the first ``b`` rows form the batch of size ``b``.
    batches : sequence of int
        Batch sizes, each in [1, len(x)].
    rounds, repeats : int
        As in `compare`.

    Returns
    -------
    dict
        ``{(key, b): Timing}`` for every model key and batch size.

    Examples
    --------
    >>> t = batch_sweep({"id": torch.nn.Identity()}, torch.ones(4, 2), [1, 4], 1, 2)
    >>> sorted(b for _, b in t)
    [1, 4]
    """
    _check_models(models)
    check_weight(x, "x")
    if x.dim() == 0:
        raise fail("x", x, "a batch of inputs (at least 1-D)")
    if isinstance(batches, str) or not isinstance(batches, Sequence) or not batches:
        raise fail("batches", batches, "a non-empty sequence of batch sizes")
    for b in batches:
        check_int("batches[i]", b, 1, x.shape[0])
    for model in models.values():
        model.eval()
    out: dict[tuple[K, int], Timing] = {}
    for b in batches:
        xb = x[:b]
        fns = {key: (lambda m=m, xb=xb: m(xb)) for key, m in models.items()}
        out |= {(key, b): t for key, t in compare(fns, rounds, repeats).items()}
    return out


def _ops_that_ran(model: nn.Module, x: torch.Tensor) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    names = [e.key for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
             if e.self_cpu_time_total > 0 and "::" in e.key]
    return names[:4]


def kernel_report(models: Mapping[K, nn.Module], x: torch.Tensor) -> dict[str, object]:
    """Which kernels this process has, and the operators each model's forward pass runs.

    Run it through `native` to see what the timed process uses (the book's own process pins
    PyTorch to AVX2 and MKL to its compatible branch).

    Parameters
    ----------
    models : mapping of key to nn.Module
        The models whose operators to list.
    x : Tensor
        One input batch for them.

    Returns
    -------
    dict
        ``"cpu_capability"`` (PyTorch's vector instruction set, e.g. "AVX512"),
        ``"quantized_engine"`` (e.g. "x86": fbgemm with oneDNN), ``"blas"`` (the BLAS fp32
        matrix products call), ``"mkldnn"`` (whether oneDNN is built in) and ``"ops"``: for
        each key, the operators with the largest self time, slowest first.

    Examples
    --------
    >>> r = kernel_report({"linear": torch.nn.Linear(4, 2)}, torch.ones(3, 4))
    >>> all(op.startswith("aten::") for op in r["ops"]["linear"])  # slowest first
    True
    """
    _check_models(models)
    check_weight(x, "x")
    blas = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "quantized_engine": torch.backends.quantized.engine,
            "blas": blas.group(1) if blas else "unknown",
            "mkldnn": torch.backends.mkldnn.is_available(),
            "ops": {key: _ops_that_ran(m.eval(), x) for key, m in models.items()}}
