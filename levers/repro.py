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
- NumPy's two kernel choices to the same AVX2 level: the OpenBLAS that NumPy and SciPy ship
  (``np.polyfit``, ``np.linalg``, ``@``) to its ``Haswell`` kernels, and NumPy's own SIMD loops
  (``np.exp``, ``np.log1p``, …) to their AVX2 versions, by disabling the AVX-512 groups this CPU
  has (`numpy_disabled_features`). Without these, OpenBLAS picks ``SkylakeX`` kernels on an
  AVX-512 machine and NumPy its AVX-512 loops, and the last bits of their results change;
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

#: NumPy 2.4's dispatched x86 groups above AVX2 (``X86_V3``), each with the CPU flags (as Linux
#: names them in /proc/cpuinfo) it needs; NumPy warns when asked to disable a group the CPU lacks.
NUMPY_AVX512_GROUPS: dict[str, tuple[str, ...]] = {
    "X86_V4": ("avx512f", "avx512cd", "avx512vl", "avx512bw", "avx512dq"),
    "AVX512_ICL": ("avx512f", "avx512cd", "avx512vl", "avx512bw", "avx512dq", "avx512vbmi",
                   "avx512_vbmi2", "avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq",
                   "avx512ifma"),
    "AVX512_SPR": ("avx512f", "avx512cd", "avx512vl", "avx512bw", "avx512dq", "avx512vbmi",
                   "avx512_vbmi2", "avx512_vnni", "avx512_bitalg", "avx512_vpopcntdq",
                   "avx512ifma", "avx512_fp16"),
}


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU as Linux reports them (empty where it cannot say)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def numpy_disabled_features(flags: frozenset[str]) -> str:
    """The value of ``NPY_DISABLE_CPU_FEATURES`` that leaves NumPy at its AVX2 loops: every
    AVX-512 group of `NUMPY_AVX512_GROUPS` whose flags are all in `flags` (none on a CPU
    without AVX-512, where NumPy already runs its AVX2 loops)."""
    return " ".join(g for g, need in NUMPY_AVX512_GROUPS.items() if set(need) <= flags)


def numeric_env(flags: frozenset[str] | None = None) -> dict[str, str]:
    """The pinned environment for a CPU with `flags` (default: this one's).

    The AVX2 pins are set only on a CPU that has AVX2 (forcing AVX2 kernels on one without it
    would crash); such a CPU, or an ARM one, computes with its own kernels, and the stored
    outputs are not promised to reproduce there.
    """
    flags = cpu_flags() if flags is None else flags
    env = {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_CBWR": "COMPATIBLE",
        "PYTHONHASHSEED": "0",
        "KMP_WARNINGS": "0",
    }
    if platform.machine() in ("x86_64", "AMD64") and "avx2" in flags:
        env["ATEN_CPU_CAPABILITY"] = "avx2"
        env["OPENBLAS_CORETYPE"] = "Haswell"
        disabled = numpy_disabled_features(flags)
        if disabled:
            env["NPY_DISABLE_CPU_FEATURES"] = disabled
    return env


#: Environment variables read once, when the numeric libraries load (for this machine's CPU).
NUMERIC_ENV: dict[str, str] = numeric_env()

#: The variables that choose kernels (not threads or seeds): `pin_environment` removes them in
#: a process that asks for native kernels, whether the shell or the pins set them.
KERNEL_PINS: tuple[str, ...] = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE",
                                "NPY_DISABLE_CPU_FEATURES")

#: Variables from the shell that would change a pinned kernel's blocking or choice; removed.
CONFLICTING: tuple[str, ...] = ("NPY_ENABLE_CPU_FEATURES", "OPENBLAS_L2_SIZE")

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
            env.pop(name, None)
            os.environ.pop(name, None)
    else:
        for name in CONFLICTING:
            os.environ.pop(name, None)  # NumPy refuses both ENABLE and DISABLE at once
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
        "numpy blas": numpy_blas(),
        "numpy simd": numpy_simd(),
    }


def numpy_blas() -> str:
    """The BLAS that NumPy calls and the kernel family it runs, as ``threadpoolctl`` reads it
    from the loaded library (e.g. ``"openblas Haswell, 1 thread"``)."""
    import numpy as np  # noqa: F401  (loads NumPy's BLAS, so that threadpoolctl can see it)
    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        if info.get("user_api") == "blas" and "numpy" in info.get("filepath", ""):
            threads = info.get("num_threads")
            return (f"{info.get('internal_api')} {info.get('architecture', '?')}, "
                    f"{threads} thread{'s' if threads != 1 else ''}")
    return "unknown"


def numpy_simd() -> str:
    """The highest group of NumPy's dispatched SIMD loops that runs (e.g. ``"X86_V3"``)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    running = [g for g in __cpu_dispatch__ if __cpu_features__.get(g)]
    return running[-1] if running else "baseline"
