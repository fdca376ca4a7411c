"""What a chapter hands to the book's prose: numbers glued at the precision that is meaningful.

The prose quotes numbers with myst-nb's ``{glue:text}`` role, which reads the value a notebook
stored with ``glue``. A float stored with all 17 significant digits makes the stored notebook
depend on the last bit of every computation, so that a different but equally correct summation
order on another CPU fails the reproducibility check although no reader could ever see the
difference. `glue` therefore rounds every float to `DIGITS` significant digits before storing
it: the prose shows at most four, and a last-bit difference cannot reach the sixth digit except
in the rare case of a value lying on a rounding boundary.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

#: Significant digits kept for a glued float (the prose never shows more than four).
DIGITS = 6


def meaningful(value: object, digits: int = DIGITS) -> object:
    """`value` with every float rounded to `digits` significant digits.

    Python and NumPy floats, 0-d tensors and arrays become Python floats; ints, bools and
    strings pass unchanged; lists and tuples are rounded element by element.

    Examples
    --------
    >>> meaningful(6.084912753665043)
    6.08491
    >>> meaningful([0.1 + 0.2, 3, "fc1"])
    [0.3, 3, 'fc1']
    """
    if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 17:
        raise ValueError(f"digits must be an int in [1, 17], got {digits!r}")
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(meaningful(v, digits) for v in value)
    if hasattr(value, "ndim") and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # a 0-d tensor or array, or a NumPy scalar
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        x = float(value)
        return x if not math.isfinite(x) or x == 0 else float(f"{x:.{digits}g}")
    raise TypeError(f"value must be a number, a string or a list of them, got "
                    f"{type(value).__name__}")


def glue(name: str, value: object, digits: int = DIGITS) -> None:
    """Store `value` under `name` for the prose (``{glue:text}`name:.1f```), not displayed.

    Floats are rounded by `meaningful` first, so a stored notebook never holds more digits than
    the book could show.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Python identifier (letters, digits, _), got {name!r}")
    from myst_nb import glue as myst_glue

    myst_glue(name, meaningful(value, digits), display=False)


def significant_digits(text: str) -> int | None:
    """How many significant digits the decimal float literal `text` holds, or None if it is not
    a float literal (an int, a string, a list…).

    Examples
    --------
    >>> significant_digits("6.084912753665043")
    16
    >>> significant_digits("0.00123")
    3
    >>> significant_digits("42") is None
    True
    """
    text = text.strip()
    if text.startswith("np.float64(") and text.endswith(")"):
        text = text[len("np.float64("):-1]
    try:
        x = float(text)
    except ValueError:
        return None
    if not any(c in text for c in ".eE") or not math.isfinite(x):
        return None
    mantissa = text.lstrip("+-").split("e")[0].split("E")[0].replace(".", "").lstrip("0")
    return max(len(mantissa.rstrip("0")), 1)
