"""levers.book: glued values hold the precision that is meaningful, in every stored notebook."""

import math
import re
from fractions import Fraction
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from levers import book

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted([*ROOT.glob("chapters/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])
RECORD = "application/papermill.record/"


@pytest.mark.parametrize("value, want", [
    (6.084912753665043, 6.08491),
    (6.0849127536650425, 6.08491),  # the last-bit twin that once failed the suite
    (0.9229999780654907, 0.923),  # a float32 accuracy seen through float64
    (np.float64(1 / 3), 0.333333),
    (np.float32(2.5), 2.5),
    (torch.tensor(1e-7 / 3), 3.33333e-08),
    (np.array(123456789.0), 123457000.0),
    (-0.000123456789, -0.000123457),
    (0.0, 0.0),
])
def test_floats_round_to_six_significant_digits(value, want) -> None:
    got = book.meaningful(value)
    assert type(got) is float
    assert got == want


def test_other_values_pass_unchanged() -> None:
    assert book.meaningful(266_610) == 266_610 and type(book.meaningful(np.int64(3))) is int
    assert book.meaningful("fc1, fc3") == "fc1, fc3"
    assert book.meaningful(True) is True
    assert book.meaningful([1 / 3, 2, "a"]) == [0.333333, 2, "a"]
    assert book.meaningful((1 / 7,)) == (0.142857,)
    assert math.isnan(book.meaningful(float("nan"))) and book.meaningful(math.inf) == math.inf
    assert book.meaningful(1 / 3, digits=2) == 0.33


@pytest.mark.parametrize("bad, message", [
    ({"a": 1}, "value must be a number"),
    (torch.ones(2), "value must be a number"),
])
def test_meaningful_refuses_what_it_cannot_round(bad, message) -> None:
    with pytest.raises(TypeError, match=message):
        book.meaningful(bad)


@pytest.mark.parametrize("digits", [0, 18, 2.5, True])
def test_meaningful_checks_digits(digits) -> None:
    with pytest.raises(ValueError, match="digits must be an int in \\[1, 17\\]"):
        book.meaningful(1.0, digits=digits)


def test_glue_checks_the_name() -> None:
    with pytest.raises(ValueError, match="name must be a Python identifier"):
        book.glue("acc fp32", 0.5)


@pytest.mark.parametrize("text, digits", [
    ("6.084912753665043", 16), ("6.08491", 6), ("0.00123", 3), ("1e-05", 1),
    ("-3.33333e-08", 6), ("100.0", 1), ("np.float64(0.25)", 2),
    ("42", None), ("'fc1'", None), ("[0.1, 0.2]", None), ("nan", None),
])
def test_significant_digits_reads_float_literals(text, digits) -> None:
    assert book.significant_digits(text) == digits


def glued_values(nb: nbformat.NotebookNode) -> list[tuple[int, str, str]]:
    """(cell index, glue name, stored text) of every value glued in `nb`."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None:
                found.append((i, name, out.get("data", {}).get(RECORD + "text/plain", "")))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.name}" for p in NOTEBOOKS])
def test_stored_glue_values_hold_at_most_six_digits(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    too_long = [f"{path.parent.name}/{path.name} cell {i}: {name} = {text}"
                for i, name, text in glued_values(nb)
                if (book.significant_digits(text) or 0) > book.DIGITS]
    assert not too_long, (f"glued floats with more than {book.DIGITS} significant digits (glue "
                          f"them with lv.book.glue):\n" + "\n".join(too_long))


def test_the_digit_scan_sees_the_values_chapters_glue() -> None:
    chapters = [p for p in NOTEBOOKS if p.parent.name == "chapters"]
    counts = [len(glued_values(nbformat.read(p, as_version=4))) for p in chapters]
    assert all(n > 0 for n in counts), dict(zip([p.name for p in chapters], counts, strict=True))


# A float literal in printed text: 0.5, .5, 1e-05, -3.2e+07 (not part of a name or a version).
FLOAT = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][-+]?\d+)?(?![\w.])")
# Cells whose lesson is the exact value a format stores: they print it to ten or twelve digits on
# purpose, and IEEE rounding makes those digits the same on every CPU.
EXACT_VALUE_CELLS = {("chapters/01-precision.ipynb", "cell-16"),  # 0.1 stored in each format
                     ("chapters/01-precision.ipynb", "cell-20")}  # ties and subnormals in fp16


def printed_texts(cell: nbformat.NotebookNode) -> list[str]:
    """The text a reader sees of `cell`'s stored outputs: streams and text/plain results."""
    texts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            texts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            texts.append(out.get("data", {}).get("text/plain", ""))
    return ["".join(t) if isinstance(t, list) else t for t in texts]


def long_floats(text: str) -> list[str]:
    """The float literals of `text` with more than six significant digits, except exact binary
    fractions (1.00390625 = 1 + 2⁻⁸ prints the same everywhere)."""
    return [m.group() for m in FLOAT.finditer(text)
            if (book.significant_digits(m.group()) or 0) > book.DIGITS
            and Fraction(m.group()).denominator & (Fraction(m.group()).denominator - 1)]


@pytest.mark.parametrize("text, want", [
    ("1.1102230246251565e-15", ["1.1102230246251565e-15"]),
    ("max |Δx| = 6.9e-08, acc 92.3 %, 0.30000000000000004", ["0.30000000000000004"]),
    ("np.float64(0.13897029031065955)", ["0.13897029031065955"]),
    ("tie +1.00390625 -> +1.00000000", []),  # exact binary fractions
    ("levers 0.1.0, 266,610 parameters, fc1.weight 123.456", []),
])
def test_long_float_scan(text, want) -> None:
    assert long_floats(text) == want


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.name}" for p in NOTEBOOKS])
def test_stored_outputs_print_no_float_with_more_than_six_digits(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    page = f"{path.parent.name}/{path.name}"
    found = [f"{page} cell {i} ({cell.get('id')}): {', '.join(floats)}"
             for i, cell in enumerate(nb.cells) if (page, cell.get("id")) not in EXACT_VALUE_CELLS
             for floats in map(long_floats, printed_texts(cell)) if floats]
    assert not found, ("stored outputs print floats with more than six significant digits; "
                       "a last-bit difference on another CPU would fail nbval (format them, or "
                       "end the cell with a statement):\n" + "\n".join(found))
