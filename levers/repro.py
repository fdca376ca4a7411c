"""Deterministic set-up: one thread, fixed seeds, pinned numeric code paths.

Floating-point addition is not associative, so a sum computed by two threads, or with AVX-512
instead of AVX2 kernels, can differ in its last bits. Those bits grow into different weights
after a few hundred training steps. To make every stored notebook output reproduce, we pin:

- the thread count of every math library to 1 (the results stop depending on the machine's
  core count; benchmarks ask for more threads explicitly);
- the CPU code path of MKL and of PyTorch's own kernels to AVX2, a level nearly every x86
  machine of the last ten years has;
- the seeds of Python, NumPy and PyTorch, and PyTorch's deterministic-algorithms switch.

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
    "MKL_CBWR": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "PYTHONHASHSEED": "0",
    "KMP_WARNINGS": "0",
}


def pin_environment() -> None:
    """Set `NUMERIC_ENV` in ``os.environ`` (overriding what the shell had).

    The shell's thread count is overridden on purpose: a notebook must print the same numbers
    whether the reader's environment says 1 thread or 16.
    """
    os.environ.update(NUMERIC_ENV)


def setup(seed: int = 0) -> None:
    """Seed every generator and pin PyTorch to one deterministic thread.

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
