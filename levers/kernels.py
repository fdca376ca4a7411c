"""The chapters' timing experiments: number formats and sparse kernels against dense ones.

Each is a top-level function so `levers.bench.native` can run it in a fresh process with the
machine's fastest kernels: `matmul_formats` (Chapter 1: one matrix product per number format) and
`csr_vs_dense` (Chapter 2: a CSR product at each sparsity against the dense one; `csr_vs_dense_runs`
repeats it to show the spread). They time their candidates in interleaved rounds with
`levers.bench.compare`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from levers._checks import check_int, check_weight, fail
from levers.bench import Timing, compare
from levers.prune import magnitude_mask


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
