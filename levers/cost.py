"""What a model costs without running it, and what the machine could give it at most.

Counts come from the layers' shapes (one forward pass with hooks finds them), so they are exact
and machine-independent: multiply-accumulates (`macs`) and bytes moved (`bytes_moved`); energy
is an estimate from per-operation costs at 45 nm (Horowitz, ISSCC 2014). `peak` is the other
side of the ledger: one core's fp32 peak, from its vector width and clock as ``/proc/cpuinfo``
reports them, against which a measured rate is judged. Measured time is `levers.bench`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from levers._checks import check_choice, check_instance, check_int, check_real, fail

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
    check_instance("model", model)
    if (not isinstance(input_shape, tuple | list) or not input_shape
            or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in input_shape)):
        raise fail("input_shape", input_shape, "a non-empty tuple of positive ints")
    counts: dict[str, int] = {}

    def hook(name: str) -> Callable:
        def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(module, nn.Linear):
                counts[name] = module.in_features * module.out_features
            else:
                k = module.weight[0].numel()  # c_in/groups · k_h · k_w
                counts[name] = k * output.shape[1] * output.shape[2] * output.shape[3]
        return count

    _forward_with_hooks(model, input_shape, {m: hook(n) for n, m in model.named_modules()
                                             if isinstance(m, nn.Linear | nn.Conv2d)})
    return counts


def _forward_with_hooks(model: nn.Module, input_shape: tuple[int, ...],
                        hooks: dict[nn.Module, Callable]) -> None:
    """One eval-mode forward pass of a zero input with `hooks` on their layers, then removed."""
    handles = [m.register_forward_hook(h) for m, h in hooks.items()]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)  # counting must not leave a model in the middle of training


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

    Examples
    --------
    >>> {k: round(v, 3) for k, v in energy_estimate_pj(1000, 1000, "int8", "sram").items()}
    {'arithmetic': 300.0, 'memory': 1250.0, 'total': 1550.0}
    """
    widths = {"fp32": 32, "fp16": 16, "int8": 8}
    check_int("n_macs", n_macs, 0)
    check_int("n_weight_reads", n_weight_reads, 0)
    check_choice("fmt", fmt, tuple(widths))
    check_choice("weights_in", weights_in, ("dram", "sram"))
    add = "int32 add" if fmt == "int8" else f"{fmt} add"  # int8 products accumulate in int32
    arithmetic = n_macs * (ENERGY_PJ[f"{fmt} mult"] + ENERGY_PJ[add])
    words = n_weight_reads * widths[fmt] / 32
    memory = words * ENERGY_PJ["dram read 32b" if weights_in == "dram" else "sram read 32b"]
    return {"arithmetic": arithmetic, "memory": memory, "total": arithmetic + memory}


def bytes_moved(model: nn.Module, input_shape: tuple[int, ...], weight_bits: int = 32,
                act_bits: int = 32) -> dict[str, int]:
    """Bytes one inference reads and writes at each Linear/Conv2d layer, at the given widths.

    Each layer reads its weights once (``weight_bits`` each, rounded up to whole bytes per
    layer), reads its input and writes its output activations (``act_bits`` each): the traffic
    a layer-by-layer engine with no on-chip reuse between layers moves. Biases are not counted.

    Parameters
    ----------
    model : nn.Module
    input_shape : tuple of int
        One input, batch dimension excluded, e.g. ``(1, 28, 28)``.
    weight_bits, act_bits : int
        Storage widths, 1 to 32.

    Returns
    -------
    dict of str to int
        ``{"weights": bytes, "activations": bytes, "total": bytes}``.

    Examples
    --------
    >>> from levers.models import MLP
    >>> bytes_moved(MLP((4, 2)), (4,), weight_bits=8)
    {'weights': 8, 'activations': 24, 'total': 32}
    """
    check_instance("model", model)
    check_int("weight_bits", weight_bits, 1, 32)
    check_int("act_bits", act_bits, 1, 32)
    sizes: list[tuple[int, int, int]] = []

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        sizes.append((module.weight.numel(), inputs[0][0].numel(), output[0].numel()))

    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    macs(model, input_shape)  # checks input_shape and that the model runs on it
    _forward_with_hooks(model, input_shape, dict.fromkeys(layers, count))
    weights = sum((n * weight_bits + 7) // 8 for n, _, _ in sizes)
    acts = sum(((i + o) * act_bits + 7) // 8 for _, i, o in sizes)
    return {"weights": weights, "activations": acts, "total": weights + acts}


MATRIX_FLAGS = ("amx_bf16", "amx_fp16", "amx_int8", "avx512_bf16", "avx512_fp16",
                "avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class Peak:
    """This CPU's fp32 peak on one core, from its vector width and clock.

    ``lanes`` fp32 values per vector instruction (16 with AVX-512, 8 with AVX2, 4 otherwise),
    × 2 for the fused multiply-add, × ``units`` FMA units per core, × the highest clock the
    kernel reports. An achieved rate divided by ``gflops`` says how much of the core a kernel
    uses; a ratio between two kernels can then be judged against that share.
    """

    lanes: int
    units: int
    clock_ghz: float
    matrix_flags: tuple[str, ...]

    @property
    def gflops(self) -> float:
        return self.lanes * 2 * self.units * self.clock_ghz

    def share(self, flops: float, seconds: float) -> float:
        """Achieved share of the one-core fp32 peak for ``flops`` operations in ``seconds``."""
        check_real("flops", flops)
        check_real("seconds", seconds, open_low=True)
        return flops / seconds / 1e9 / self.gflops

    def __str__(self) -> str:
        return (f"one core: {self.lanes} fp32 lanes × 2 (FMA) × {self.units} units × "
                f"{self.clock_ghz:.2f} GHz = {self.gflops:.0f} GFLOP/s peak")


def peak(cpuinfo: str | None = None, units: int = 2) -> Peak:
    """The fp32 peak of one core of this CPU (see `Peak`), read from ``/proc/cpuinfo``.

    Parameters
    ----------
    cpuinfo : str, optional
        The text of ``/proc/cpuinfo`` (read from the machine when None). Without a clock the
        peak is NaN: the rate is still printed, its share is not.
    units : int
        FMA units per core (2 on recent x86 server cores).

    >>> p = peak("flags : fpu avx2 fma\\ncpu MHz : 2000.0\\n")
    >>> p.lanes, p.gflops
    (8, 64.0)
    """
    check_int("units", units, 1)
    if cpuinfo is None:
        from pathlib import Path

        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    if not isinstance(cpuinfo, str):
        raise fail("cpuinfo", cpuinfo, "the text of /proc/cpuinfo (a str)")
    flags: set[str] = set()
    mhz: list[float] = []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags |= set(value.split())
        elif key.strip() == "cpu MHz":
            try:
                mhz.append(float(value))
            except ValueError:
                pass
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    clock = max(mhz) / 1e3 if mhz else math.nan
    return Peak(lanes, units, clock, tuple(sorted(flags & set(MATRIX_FLAGS))))
