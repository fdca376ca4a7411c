"""Run one function in a fresh Python process with the machine's own kernels (private).

`levers.bench.native` is the public entry point. The parent writes the function's module and
name and its arguments to a file, starts ``python -m levers._native IN OUT`` with
``LEVERS_NATIVE_KERNELS=1`` (so that ``import levers`` in the child leaves MKL and PyTorch free
to pick their fastest kernels), and reads the result back. Both files are pickles exchanged
between two processes of the same user and the same program, never data from elsewhere.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from levers.repro import KERNEL_PINS, NATIVE_FLAG


def function_name(fn: Callable) -> tuple[str, str]:
    """``(module, qualified name)`` of a function the child can import, or a TypeError."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    owner = getattr(fn, "__self__", None)  # a bound method would lose its object on the way
    if (not callable(fn) or not module or module == "__main__" or "<" in qualname
            or not qualname or not (owner is None or isinstance(owner, ModuleType))):
        raise TypeError(
            f"fn must be a function defined at the top level of an importable module (such as "
            f"levers.bench.compare_models), because it runs in another process; got {fn!r}. "
            f"Functions and lambdas defined in a notebook cannot be sent there.")
    return module, qualname


def run(fn: Callable, args: tuple, kwargs: dict, timeout: float) -> object:
    """``fn(*args, **kwargs)`` computed by a child process with native kernels."""
    module, qualname = function_name(fn)
    env = {**os.environ, NATIVE_FLAG: "1"}
    for name in KERNEL_PINS:
        env.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="levers-native-") as tmp:
        job, result = Path(tmp, "job.pkl"), Path(tmp, "result.pkl")
        try:
            job.write_bytes(pickle.dumps((module, qualname, args, kwargs)))
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            raise TypeError(f"the arguments of {module}.{qualname} must be picklable to reach "
                            f"the benchmark process: {err}") from err
        try:
            proc = subprocess.run([sys.executable, "-m", "levers._native", str(job), str(result)],
                                  env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise TimeoutError(f"{module}.{qualname} did not finish within {timeout} s in the "
                               f"benchmark process") from err
        if proc.returncode != 0 or not result.exists():
            detail = proc.stderr.strip()[-3000:] or f"exit status {proc.returncode}"
            raise RuntimeError(f"{module}.{qualname} failed in the benchmark process:\n{detail}")
        return pickle.loads(result.read_bytes())


def main(job: str, result: str) -> None:
    """The child's side: import the function, call it, write its result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. unpickling quantized modules warns about storages
        module, qualname, args, kwargs = pickle.loads(Path(job).read_bytes())
        fn = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
        value = fn(*args, **kwargs)
    Path(result).write_bytes(pickle.dumps(value))


if __name__ == "__main__":
    import levers  # noqa: F401  (pins threads, and with LEVERS_NATIVE_KERNELS=1 lifts kernel pins)

    try:
        main(*sys.argv[1:3])
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
