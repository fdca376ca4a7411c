"""Input checks shared by the library's modules (private: not part of the API).

Every public function of `levers` checks its arguments here, so one bad value always produces the
same kind of message: the argument's name, the bad value, and what is allowed. The errors are
`InvalidArgument`, which is both a `ValueError` and a `TypeError` (scikit-learn's
``InvalidParameterError`` does the same), so callers may catch either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from types import UnionType

import torch
from torch import Tensor, nn


class InvalidArgument(ValueError, TypeError):
    """An argument of a `levers` function has the wrong type or a value outside what it allows."""


def _show(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    if "\n" in text or len(text) > 60:
        return f"a {type(value).__name__}"
    return text if isinstance(value, int | float | str | type(None)) else \
        f"{text} ({type(value).__name__})"


def _kind(cls: type) -> str:
    module = "torch.nn" if cls.__module__.startswith("torch.nn.") else cls.__module__
    return f"a {module}.{cls.__qualname__}"


def fail(name: str, value: object, allowed: str) -> InvalidArgument:
    """The error for argument `name` holding `value` where `allowed` is what may be given."""
    return InvalidArgument(f"{name} must be {allowed}, got {_show(value)}")


def check_real(name: str, value: object, low: float = 0.0, high: float = math.inf,
               open_low: bool = False) -> None:
    """A finite real number (not a bool) in ``[low, high]`` (``(low, high]`` if `open_low`)."""
    is_number = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or not (low < value if open_low else low <= value) or value > high:
        allowed = (f"in [{low}, {high}]" if high < math.inf
                   else f"{'>' if open_low else '>='} {low}")
        raise fail(name, value, f"a finite number {allowed}")


def check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    """An int (not a bool) in ``[low, high]`` (no upper bound if `high` is None)."""
    if (isinstance(value, bool) or not isinstance(value, Integral) or value < low
            or (high is not None and value > high)):
        raise fail(name, value, f"an int >= {low}" if high is None
                   else f"an int in [{low}, {high}]")


def check_amount(amount: object, name: str = "amount") -> None:
    """A fraction in [0, 1], such as a sparsity."""
    check_real(name, amount, 0.0, 1.0)


def check_bool(name: str, value: object) -> None:
    """True or False."""
    if not isinstance(value, bool):
        raise fail(name, value, "a bool")


def check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    """One of `allowed` (compared with ``==``, so a str must match exactly)."""
    if isinstance(value, Tensor) or value not in tuple(allowed) \
            or type(value) not in {type(a) for a in allowed}:
        raise fail(name, value, f"one of {tuple(allowed)}")


def check_instance(name: str, value: object, cls: type | UnionType = nn.Module) -> None:
    """An instance of `cls` (``torch.nn.Module`` by default), e.g. a model or a Codebook."""
    if not isinstance(value, cls):
        kinds = cls.__args__ if isinstance(cls, UnionType) else (cls,)
        raise fail(name, value, " or ".join(_kind(k) for k in kinds))


def check_generator(name: str, value: object) -> None:
    """None or a torch.Generator (the source of randomness of a random choice)."""
    if value is not None and not isinstance(value, torch.Generator):
        raise fail(name, value, "a torch.Generator or None")


def check_mapping(name: str, value: object) -> None:
    """A non-empty mapping (e.g. of parameter names to tensors)."""
    if not isinstance(value, Mapping) or len(value) == 0:
        raise fail(name, value, "a non-empty mapping")


def check_tensor(name: str, value: object) -> Tensor:
    """A torch.Tensor (any dtype); returns it."""
    if not isinstance(value, Tensor):
        raise fail(name, value, "a torch.Tensor")
    return value


def check_weight(w: object, name: str = "w") -> None:
    """A floating-point tensor with only finite entries."""
    check_tensor(name, w)
    if not w.is_floating_point():
        raise fail(name, w, "a floating-point tensor")
    if not bool(torch.isfinite(w).all()):
        raise fail(name, w, "finite (no NaN or inf)")


def check_float32(name: str, value: object) -> Tensor:
    """A float32 tensor (float64 would be rounded twice, to float32 and then to a format)."""
    check_tensor(name, value)
    if value.dtype != torch.float32:
        raise fail(name, value, "a float32 tensor (convert with x.float())")
    return value


def check_integers(name: str, value: object, low: int | None = None,
                   high: int | None = None) -> Tensor:
    """A tensor of an integer dtype (not bool) whose values lie in ``[low, high]``."""
    check_tensor(name, value)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise fail(name, value, "a tensor of an integer dtype (e.g. torch.int64)")
    if value.numel() and ((low is not None and int(value.min()) < low)
                          or (high is not None and int(value.max()) > high)):
        allowed = (f"in [{low}, {high}]" if low is not None and high is not None
                   else f">= {low}" if low is not None else f"<= {high}")
        raise InvalidArgument(f"{name} must hold values {allowed}, got values in "
                              f"[{int(value.min())}, {int(value.max())}]")
    return value


def check_labels(name: str, value: object) -> Tensor:
    """1-D non-negative class labels of any integer dtype; returned as int64."""
    check_integers(name, value, low=0)
    if value.dim() != 1:
        raise fail(name, value, "a 1-D tensor of class labels")
    return value.long()


def check_shape(name: str, value: object) -> tuple[int, ...]:
    """A tuple or list of non-negative ints; returned as a tuple."""
    if (not isinstance(value, tuple | list | torch.Size)
            or any(isinstance(s, bool) or not isinstance(s, Integral) or s < 0 for s in value)):
        raise fail(name, value, "a tuple of non-negative ints")
    return tuple(int(s) for s in value)
