"""Input checks shared by the library's modules (private: not part of the API).

Each check raises with a message that names the argument, the bad value and what is allowed.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor


def check_real(name: str, value: object, low: float = 0.0, high: float = math.inf,
               open_low: bool = False) -> None:
    """A finite real number (not a bool) in ``[low, high]`` (``(low, high]`` if `open_low`)."""
    is_number = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or not (low < value if open_low else low <= value) or value > high:
        allowed = (f"in [{low}, {high}]" if high < math.inf
                   else f"{'>' if open_low else '>='} {low}")
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")


def check_int(name: str, value: object, low: int) -> None:
    """An int (not a bool) of at least `low`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def check_amount(amount: object, name: str = "amount") -> None:
    """A fraction in [0, 1], such as a sparsity."""
    check_real(name, amount, 0.0, 1.0)


def check_weight(w: object, name: str = "w") -> None:
    """A floating-point tensor with only finite entries."""
    if not isinstance(w, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {w.dtype}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} must contain only finite values (no NaN or inf)")
