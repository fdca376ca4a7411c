"""Experiments measured by the grader, not by the student's kernel.

An experiment question's probe only moves data out of the kernel: the weights the student's
run produced (a ``state_dict`` of tensors), the bytes it serialized, and the numbers the student
reported. A hidden cell names, in its metadata, the measurement the grader then makes in its own
process (``"measure": {"name": ..., parameters}``): the weights are loaded into the grader's own
reference model, and accuracy on the grader's own copy of the test set, sparsity and byte counts
are computed here. A patched ``evaluate``, a typed-in accuracy or a model changed by a later
scratch cell cannot reach these numbers. The result goes through the check's usual comparison
with the reference run, which is measured the same way.

Every measurement validates what it is given (keys, shapes, dtypes, byte streams) and raises
`MeasureError` with a message for the student; the check then scores 0.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from levers.grading.values import Array

if TYPE_CHECKING:  # torch is imported when a measurement runs, not with the grader
    from torch import nn

#: The key under which a measurement returns its leaderboard entries, ``{name: (value,
#: "desc"|"asc")}``: the unclipped measured numbers, shown only for a check that passed and
#: never compared with the reference.
BOARD = "_leaderboard"
#: Added to an accuracy margin so that a model exactly at the threshold is not lost to rounding.
EPS = 1e-9


class MeasureError(ValueError):
    """What the probe moved out cannot be measured: the message is shown to the student."""


@functools.cache
def _test_set() -> tuple:
    import torch

    from levers.data import load_mnist5k

    torch.set_num_threads(1)  # the grader's own process: no thread pool of its own
    split = load_mnist5k()
    return split.x_test, split.y_test


def _field(value: object, key: str) -> object:
    if not isinstance(value, dict) or key not in value:
        raise MeasureError(f"the hidden check's result has no {key!r}")
    return value[key]


def model_from_state(state: object, what: str) -> nn.Module:
    """A fresh `levers.models.LeNet300100` holding the decoded `state` (a ``state_dict``)."""
    import torch

    from levers.models import LeNet300100

    model = LeNet300100()
    want = model.state_dict()
    if not isinstance(state, dict) or set(state) != set(want):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise MeasureError(f"`{what}` is not a LeNet-300-100: its state has {got}, "
                           f"expected {sorted(want)}")
    tensors = {}
    for name, ref in want.items():
        part = state[name]
        if not (isinstance(part, Array) and part.kind == "tensor" and part.dtype == "float32"
                and part.data.shape == tuple(ref.shape)):
            raise MeasureError(f"`{what}`: {name} must be a float32 tensor of shape "
                               f"{list(ref.shape)}, got {part!r}")
        tensors[name] = torch.from_numpy(np.array(part.data, dtype=np.float32))
    model.load_state_dict(tensors)
    return model.eval()


def accuracy(model: nn.Module) -> float:
    """Test accuracy of `model` on the grader's own copy of the test set."""
    from levers.train import evaluate

    x, y = _test_set()
    return evaluate(model, x, y)


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros among the weight matrices of `model` (biases do not count)."""
    import torch

    weights = torch.cat([layer.weight.detach().flatten() for layer in model.layers()])
    return float((weights == 0).double().mean())


def _reported(value: object, key: str) -> float:
    number = _field(value, key)
    if type(number) is not float:
        raise MeasureError(f"{key} must be a Python float, got {type(number).__name__}")
    return number


def pruning_report(value: object, accuracy_of: dict[str, str],
                   sparsity_of: dict[str, str]) -> dict:
    """Each reported number next to the same quantity measured here.

    `value` holds the student's reported floats and the states of their models; `accuracy_of`
    maps a reported name to the state whose accuracy it claims, `sparsity_of` to the state whose
    weight sparsity it claims. Returns ``{name: [reported, measured]}``.
    """
    reported, states = _field(value, "reported"), _field(value, "states")
    models = {k: model_from_state(_field(states, k), k)
              for k in {*accuracy_of.values(), *sparsity_of.values()}}
    out = {name: [_reported(reported, name), accuracy(models[k])]
           for name, k in accuracy_of.items()}
    out |= {name: [_reported(reported, name), weight_sparsity(models[k])]
            for name, k in sparsity_of.items()}
    out[BOARD] = {f"{name} accuracy": (out[name][1], "desc") for name in accuracy_of}
    return out


def sparse_model(value: object, sparsity: float, drop: float) -> dict:
    """Whether `pruned` has at least `sparsity` zero weights within `drop` of `model`'s accuracy.

    The numbers are clipped at the thresholds, so every model that meets them reports the same
    values as the reference run.
    """
    dense = model_from_state(_field(value, "model"), "model")
    pruned = model_from_state(_field(value, "pruned"), "pruned")
    acc_dense, acc, zeros = accuracy(dense), accuracy(pruned), weight_sparsity(pruned)
    return {"sparsity_at_least": min(zeros, sparsity),
            "shortfall_beyond_drop": min(acc - acc_dense + drop + EPS, 0.0),
            "dense_accuracy": acc_dense,
            BOARD: {"accuracy": (acc, "desc"), "sparsity": (zeros, "desc")}}


def compressed_model(value: object, max_bytes: int, drop: float) -> dict:
    """Whether `blob` (`levers.deepcompress.serialize` bytes) fits `max_bytes` within `drop`.

    The bytes are loaded by the library's own loader into a fresh LeNet-300-100 here.
    """
    from levers import deepcompress
    from levers.models import LeNet300100

    blob = _field(value, "blob")
    if not (isinstance(blob, Array) and blob.data.dtype == np.uint8 and blob.data.ndim == 1):
        raise MeasureError(f"`blob` must be bytes, got {blob!r}")
    data = blob.data.tobytes()
    dense = model_from_state(_field(value, "model"), "model")
    try:
        loaded = deepcompress.load(LeNet300100(), data).eval()
    except Exception as exc:  # the loader refuses a damaged stream with a message
        raise MeasureError(f"`blob` could not be loaded: {str(exc)[:200]}") from None
    acc_dense, acc = accuracy(dense), accuracy(loaded)
    return {"bytes_over": max(len(data) - max_bytes, 0),
            "shortfall_beyond_drop": min(acc - acc_dense + drop + EPS, 0.0),
            "dense_accuracy": acc_dense,
            BOARD: {"accuracy": (acc, "desc"), "bytes": (float(len(data)), "asc")}}


def quantized_accuracy(model: nn.Module, bits: int) -> float:
    """Test accuracy of `model` with every weight fake-quantized by the library's own quantizer:
    per output row, symmetric, signed, `bits` bits, the scale from the row's min and max."""
    import torch

    from levers.quant import QScheme, choose_qparams_affine_with_min_max, fake_quantize_affine

    scheme = QScheme(bits=bits, signed=True, symmetric=True, axis=0)
    x, y = _test_set()
    with torch.no_grad():
        h = x.flatten(1)
        *hidden, last = model.layers()
        for layer in [*hidden, last]:
            w = layer.weight
            qp = choose_qparams_affine_with_min_max(w.amin(dim=1), w.amax(dim=1), scheme)
            h = torch.nn.functional.linear(h, fake_quantize_affine(w, qp), layer.bias)
            if layer is not last:
                h = torch.relu(h)
    return float((h.argmax(1) == y).float().mean())


def qat_run(value: object, bits: int) -> dict:
    """The QAT experiment measured here: the reported accuracies next to the measured ones.

    `value` holds the fp32 model, the student's QAT-trained copy at `bits` and a re-run at the
    bits in ``rerun_bits``; the other keys pass through unchanged.
    """
    out = {k: v for k, v in value.items() if k not in ("fp32", "qat", "rerun")} \
        if isinstance(value, dict) else {}
    fp32 = model_from_state(_field(value, "fp32"), "fp32_model")
    qat = model_from_state(_field(value, "qat"), f"the model qat_experiment(..., {bits}) "
                           "returned")
    rerun_bits = _field(value, "rerun_bits")
    if type(rerun_bits) is not int or not 2 <= rerun_bits <= 8:
        raise MeasureError("rerun_bits must be an int in [2, 8]")
    rerun = model_from_state(_field(value, "rerun"), f"the model qat_experiment(..., "
                             f"{rerun_bits}) returned")
    out[f"ptq{bits}"] = [_reported(value, f"ptq{bits}_accuracy"),
                         quantized_accuracy(fp32, bits)]
    out[f"qat{bits}"] = [_reported(value, f"qat{bits}_accuracy"),
                         quantized_accuracy(qat, bits)]
    out[f"qat{rerun_bits}_rerun"] = quantized_accuracy(rerun, rerun_bits)
    out.pop(f"ptq{bits}_accuracy", None)
    out.pop(f"qat{bits}_accuracy", None)
    out[BOARD] = {f"qat{bits} accuracy": (out[f"qat{bits}"][1], "desc")}
    return out


MEASURES: dict[str, Callable[..., dict]] = {
    "pruning_report": pruning_report,
    "sparse_model": sparse_model,
    "compressed_model": compressed_model,
    "qat_run": qat_run,
}


def check_measure(spec: object, where: str) -> dict:
    """Validate a hidden cell's ``measure`` metadata; return it (raise ValueError)."""
    if not isinstance(spec, dict) or spec.get("name") not in MEASURES:
        raise ValueError(f"{where}: measure must be a dict whose 'name' is one of "
                         f"{sorted(MEASURES)}, got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    try:  # its parameters are checked now, not when the first submission is scored
        inspect.signature(MEASURES[spec["name"]]).bind(None, **params)
    except TypeError as exc:
        raise ValueError(f"{where}: measure {spec['name']!r}: {exc}") from None
    return spec


def measure(spec: dict, value: object) -> tuple[dict, dict]:
    """Apply the measurement `spec` (``{"name": ..., parameters}``) to a decoded probe value.

    Returns
    -------
    (dict, dict)
        The values to compare with the reference's, and the leaderboard entries
        ``{name: (value, order)}``.
    """
    params = {k: v for k, v in spec.items() if k != "name"}
    out = MEASURES[spec["name"]](value, **params)
    board = out.pop(BOARD, {})
    return out, board
