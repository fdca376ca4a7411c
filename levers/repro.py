"""Deterministic set-up: one thread, fixed seeds, pinned numeric code paths.

Floating-point addition is not associative, so a sum computed by two threads, or by a kernel
that blocks or vectorizes it differently, can differ in its last bits. Those bits grow into
different weights after a few hundred training steps. To make every stored notebook output
reproduce on any x86 machine, we pin:

- the thread count of every math library to 1 (the results stop depending on the machine's
  core count; benchmarks ask for more threads explicitly);
- MKL, which computes PyTorch's float matrix products, to its ``COMPATIBLE`` branch of
  conditional numerical reproducibility: fixed code, fixed cache sizes, deterministic reductions,
  on Intel and AMD processors alike (MKL's ISA-specific branches, such as ``AVX2``, hold on Intel
  processors only; elsewhere MKL silently falls back to its automatic choice);
- PyTorch's own vectorized kernels to AVX2, a level nearly every x86 machine of the last ten
  years has;
- in `setup`, convolutions and 16-bit matrix products away from oneDNN and NNPACK, whose kernels
  and blocking follow the CPU (AMX, AVX-512, cache sizes), to PyTorch's reference kernels;
- the seeds of Python, NumPy and PyTorch, and PyTorch's deterministic-algorithms switch.

These pins cost speed, so a measurement of speed must not run under them:
`levers.bench.native` runs a benchmark in a fresh process with the machine's own fastest kernels
(it sets `NATIVE_FLAG`, which makes `pin_environment` leave the kernel choice alone).

`pin_environment` must run before ``import torch``; ``import levers`` does it first.
"""

from __future__ import annotations

import os
import platform
import random

#: Environment variables read once, when the numeric libraries load.
NUMERIC_ENV: dict[str, str] = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "PYTHONHASHSEED": "0",
    "KMP_WARNINGS": "0",
}


#: The entries of `NUMERIC_ENV` that choose kernels (not threads or seeds).
KERNEL_PINS: tuple[str, ...] = ("MKL_CBWR", "ATEN_CPU_CAPABILITY")

#: Set to "1" in a process's environment to keep the machine's own kernels (for benchmarks).
NATIVE_FLAG = "LEVERS_NATIVE_KERNELS"


def pin_environment() -> None:
    """Set `NUMERIC_ENV` in ``os.environ`` (overriding what the shell had).

    The shell's thread count is overridden on purpose: a notebook must print the same numbers
    whether the reader's environment says 1 thread or 16. In a process whose environment has
    ``LEVERS_NATIVE_KERNELS=1`` (see `levers.bench.native`), the `KERNEL_PINS` are removed
    instead, so that the numeric libraries pick the machine's fastest kernels.
    """
    env = dict(NUMERIC_ENV)
    if os.environ.get(NATIVE_FLAG) == "1":
        for name in KERNEL_PINS:
            env.pop(name)
            os.environ.pop(name, None)
    os.environ.update(env)


def setup(seed: int = 0) -> None:
    """Seed every generator and pin PyTorch to one deterministic thread and reference kernels.

    Besides the seeds and the thread, it switches PyTorch's oneDNN and NNPACK back ends off, so
    that convolutions and 16-bit matrix products run PyTorch's own kernels (pinned to AVX2) and
    float matrix products run MKL (pinned to its reproducible branch), whatever the CPU.

    Parameters
    ----------
    seed : int
        Seed for Python's ``random``, NumPy and PyTorch.

    Examples
    --------
    >>> import levers as lv
    >>> lv.repro.setup(seed=0)
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32 - 1] (NumPy's range), got {seed!r}")
    import numpy as np
    import torch

    pin_environment()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)


def environment() -> dict[str, str]:
    """Report the software and hardware the numbers came from (for a notebook's first cell)."""
    import numpy as np
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "torch threads": str(torch.get_num_threads()),
    }
