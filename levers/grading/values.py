"""Probe values as plain data: encoded in the kernel, decoded and compared in the grader.

A probe returns ``str``/``int``/``float``/``bool``/``None``, lists, tuples and str-keyed dicts of
those, torch tensors and numpy arrays. `PROBE_RUNNER` (sent to a kernel by `probe_code`) turns that
into JSON: floats as ``float.hex`` (exact), arrays and tensors as dtype + shape + base64 of the raw
bytes. Nothing is pickled, and the grader never evaluates what a kernel sends: it parses JSON,
checks every field's type, and rebuilds arrays with ``numpy.frombuffer``. Any other type (an
object whose ``__eq__`` always says yes, a tensor subclass) fails the check with a message.

Comparison is type-strict (a float is not an int, a list is not a tuple, float32 is not
float64, shapes must agree) with tolerances for floating-point values only.
"""

from __future__ import annotations

import base64
import json
import math
import zlib

import numpy as np

MAX_REPORT = 300

PROBE_MIME = "application/x-levers-probe"
# Module-level code of the kernel-side runner. It is executed in a fresh namespace whose
# builtins are the real ones (`probe_code`), so a student's honest `list = [3, 1, 2]` or
# `range = (0, 1)` cannot break it; the probe itself runs in the student's globals minus the
# names that shadow builtins, and the result leaves as display data of a private MIME type, not
# through a `sys.stdout` the student may have redirected.
PROBE_RUNNER = r'''
import base64, builtins, json

def tname(t):
    """A type's name as the report may show it: a short dotted identifier, nothing else."""
    name = f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', '?')}"
    return "".join(c for c in name if c.isalnum() or c in "._")[:60]

def enc(v, depth=0):
    if depth > 20:
        raise TypeError("value nested too deeply")
    t = type(v)
    if v is None or t is bool or t is str:
        return {"t": t.__name__, "v": v}
    if t is int:
        return {"t": "int", "v": str(v)}
    if t is float:
        return {"t": "float", "v": v.hex()}
    if t in (list, tuple):
        return {"t": t.__name__, "v": [enc(x, depth + 1) for x in v]}
    if t is dict:
        if not all(type(k) is str for k in v):
            raise TypeError("dict keys must be str")
        return {"t": "dict", "v": {k: enc(x, depth + 1) for k, x in v.items()}}
    mod = getattr(t, "__module__", "") or ""
    if mod.startswith("torch") and t.__name__ == "Tensor":
        import torch
        if t is not torch.Tensor:
            raise TypeError(f"unsupported type {tname(t)}")
        x = v.detach().cpu().contiguous()
        dtype = str(x.dtype).replace("torch.", "")
        if x.dtype == torch.bfloat16:
            x = x.view(torch.int16)
        data = x.numpy().tobytes()
        return {"t": "tensor", "dtype": dtype, "shape": list(v.shape),
                "v": base64.b64encode(data).decode()}
    if mod.startswith("numpy"):
        import numpy
        if t is not numpy.ndarray and not isinstance(v, numpy.generic):
            raise TypeError(f"unsupported type {tname(t)}")
        a = numpy.ascontiguousarray(v)
        if a.dtype.hasobject:
            raise TypeError("numpy arrays of Python objects are not supported")
        kind = "ndarray" if t is numpy.ndarray else "npscalar"
        return {"t": kind, "dtype": a.dtype.str, "shape": list(a.shape),
                "v": base64.b64encode(a.tobytes()).decode()}
    raise TypeError(f"unsupported type {tname(t)}")

def result(code, seed, user, ops, dtypes):
    ns = {k: v for k, v in user.items()
          if (k.startswith("__") and k.endswith("__")) or not hasattr(builtins, k)}
    ns["__builtins__"] = BUILTINS
    watch = observe(ops, dtypes)
    try:
        exec(code, ns)
        probe = ns["probe"]
        with watch:
            value = probe(seed)
    except BaseException as e:
        out = {"ok": False, "error": kind(e)}
    else:
        try:
            out = {"ok": True, "value": enc(value)}
        except (TypeError, RecursionError) as e:  # the grader's own messages
            out = {"ok": False, "error": "the result could not be read: " + str(e)[:200]}
        except BaseException as e:  # e.g. a tensor subclass whose methods raise
            out = {"ok": False, "error": kind(e)}
    out["violations"] = sorted(set(watch.violations))[:10]
    out["removed"] = watch.removed[:200]
    return json.dumps(out)

def kind(e):
    """What kind of failure, never its text: a message may carry what the code read."""
    t = type(e)
    name = t.__name__ if getattr(builtins, t.__name__, None) is t else "an exception"
    if t is Withheld:  # the grader's own stub: its message names the function
        return "Withheld: " + str(e)[:200]
    tb, where = e.__traceback__, ""
    while tb is not None:
        f = tb.tb_frame.f_code
        if f.co_filename.startswith(("/tmp/ipykernel", "<ipython")):
            where = f" in your function {f.co_name[:40]!s}, line {tb.tb_lineno}"
        tb = tb.tb_next
    return name + " raised" + where

def send(packed, seed, marker, user, mime, ops, dtypes):
    import zlib
    from IPython.display import publish_display_data
    code = compile(zlib.decompress(base64.b64decode(packed)).decode(), "<hidden check>", "exec")
    publish_display_data({mime: marker + result(code, seed, user, ops, dtypes)})
'''


def probe_code(source: str, seed: int, marker: str, ops: tuple[str, ...] = (),
               dtypes: tuple[str, ...] = ()) -> str:
    """The code sent to the student's kernel to run one probe and send back its result.

    The runner was set up by `levers.grading.guard.install` before the first student cell, with
    the builtins of that moment; the probe's source travels compressed, and the runner keeps no
    frame local holding it while the student's code runs.
    """
    packed = base64.b64encode(zlib.compress(source.encode())).decode()
    return ("import levers.grading.guard as __levers_guard\n"
            f"__levers_guard.RUNNER['send']({packed!r}, {seed!r}, {marker!r}, "
            f"__levers_guard._B['globals'](), {PROBE_MIME!r}, {list(ops)!r}, "
            f"{list(dtypes)!r})\n")


class ProbeDataError(ValueError):
    """A kernel sent something that is not a well-formed encoded value."""


def decode(node: object) -> object:
    """Rebuild a probe value from its JSON form, checking every field; raise `ProbeDataError`."""
    if not isinstance(node, dict) or not isinstance(node.get("t"), str):
        raise ProbeDataError("malformed value")
    t, v = node["t"], node.get("v")
    simple = {"NoneType": type(None), "bool": bool, "str": str}
    if t in simple:
        if type(v) is not simple[t]:
            raise ProbeDataError(f"malformed {t}")
        return v
    if t == "int" and isinstance(v, str):
        return int(v)
    if t == "float" and isinstance(v, str):
        return float.fromhex(v)
    if t in ("list", "tuple") and isinstance(v, list):
        items = [decode(x) for x in v]
        return items if t == "list" else tuple(items)
    if t == "dict" and isinstance(v, dict):
        return {str(k): decode(x) for k, x in v.items()}
    if t in ("tensor", "ndarray", "npscalar") and isinstance(v, str):
        return _array(node)
    raise ProbeDataError(f"malformed value of type {t!r}")


class Array:
    """A decoded tensor or numpy array/scalar: its kind, dtype name and values as numpy."""

    def __init__(self, kind: str, dtype: str, data: np.ndarray):
        self.kind, self.dtype, self.data = kind, dtype, data

    def __repr__(self) -> str:
        return f"{self.kind}(dtype={self.dtype}, shape={tuple(self.data.shape)})"


TORCH_DTYPES = {"float64": "<f8", "float32": "<f4", "float16": "<f2", "int64": "<i8",
                "int32": "<i4", "int16": "<i2", "int8": "|i1", "uint8": "|u1", "bool": "|b1",
                "bfloat16": "<i2"}


def _array(node: dict) -> Array:
    shape, dtype = node.get("shape"), node.get("dtype")
    if not (isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)
            and isinstance(dtype, str)):
        raise ProbeDataError("malformed array header")
    try:
        raw = base64.b64decode(node["v"], validate=True)
        np_dtype = np.dtype(TORCH_DTYPES[dtype] if node["t"] == "tensor" else dtype)
        if np_dtype.hasobject:
            raise ProbeDataError("object arrays are not supported")
        data = np.frombuffer(raw, dtype=np_dtype).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProbeDataError(f"malformed array data ({exc})") from exc
    if dtype == "bfloat16":  # stored as its 16 bits; widen exactly to float32
        data = (data.astype(np.int32) << 16).view(np.float32)
    return Array(node["t"], dtype, data)


def parse_reply(text: str, marker: str) -> dict:
    """Find the marked line in a probe cell's stdout; return ``{"ok", "value"|"error"}``."""
    lines = [ln for ln in text.splitlines() if ln.startswith(marker)]
    if len(lines) != 1:
        raise ProbeDataError("the probe produced no readable result")
    try:
        reply = json.loads(lines[0][len(marker):])
    except json.JSONDecodeError as exc:
        raise ProbeDataError("the probe result is not JSON") from exc
    if not isinstance(reply, dict) or reply.get("ok") not in (True, False):
        raise ProbeDataError("the probe result is malformed")
    rules: dict[str, object] = {}  # what the run-time rules saw (`levers.grading.guard`)
    if isinstance(reply.get("violations"), list) and reply["violations"]:
        rules["violations"] = [str(v)[:200] for v in reply["violations"]][:10]
    if reply.get("removed"):
        rules["removed"] = str(reply["removed"])[:200]
    if reply["ok"]:
        return {"ok": True, "value": decode(reply.get("value")), **rules}
    return {"ok": False, "error": str(reply.get("error", ""))[:500], **rules}


def compare(got: object, want: object, rtol: float, atol: float, path: str = "value",
            hide: bool = False) -> list[str]:
    """Differences between a student's decoded value and the reference's; empty when equal.

    With ``hide`` a difference names where and what kind (type, shape, length, keys, how many
    entries), and the student's own number, never the reference's value.

    Examples
    --------
    >>> compare({"acc": 0.5}, {"acc": 0.5 + 1e-9}, rtol=1e-6, atol=0.0)
    []
    >>> compare(1, 1.0, rtol=1e-6, atol=0.0)
    ['value: expected float, got int']
    """
    if type(got) is not type(want):
        return [f"{path}: expected {_kind(want)}, got {_kind(got)}"]
    if isinstance(want, dict):
        if set(got) != set(want):
            return [f"{path}: expected keys {sorted(want)}, got {sorted(got)}"]
        return [d for k in want for d in compare(got[k], want[k], rtol, atol, f"{path}[{k!r}]",
                                                 hide)]
    if isinstance(want, list | tuple):
        if len(got) != len(want):
            return [f"{path}: expected length {len(want)}, got {len(got)}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True))
                for d in compare(g, w, rtol, atol, f"{path}[{i}]", hide)]
    if isinstance(want, float):
        same = (math.isnan(got) and math.isnan(want)) or math.isclose(
            got, want, rel_tol=rtol, abs_tol=atol)
        return [] if same else [f"{path}: got {got!r}, not the reference value" if hide
                                else f"{path}: expected {want!r}, got {got!r}"]
    if isinstance(want, Array):
        return _compare_arrays(got, want, rtol, atol, path, hide)
    if got == want:
        return []
    if hide:
        return [f"{path}: got " + (_short(got) if isinstance(got, int | bool | None)
                                   else f"a different {type(got).__name__}")
                + ", not the reference value"]
    return [f"{path}: expected {_short(want)}, got {_short(got)}"]


def _compare_arrays(got: Array, want: Array, rtol: float, atol: float, path: str,
                    hide: bool = False) -> list[str]:
    if (got.kind, got.dtype) != (want.kind, want.dtype):
        return [f"{path}: expected {want.kind} of {want.dtype}, got {got.kind} of {got.dtype}"]
    if got.data.shape != want.data.shape:
        return [f"{path}: expected shape {list(want.data.shape)}, got {list(got.data.shape)}"]
    g, w = got.data, want.data
    if np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.complexfloating):
        ok = np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    else:
        ok = g == w
    if np.all(ok):
        return []
    bad = int(np.size(ok) - np.count_nonzero(ok))
    first = tuple(int(i) for i in np.argwhere(~np.asarray(ok))[0]) if np.ndim(ok) else ()
    head = f"{path}: {bad} of {np.size(ok)} entries differ; first at index {list(first)}: "
    if hide:
        return [head + f"got {_short(g[first].item())}"]
    return [head + f"expected {_short(w[first].item())}, got {_short(g[first].item())}"]


def _kind(v: object) -> str:
    return repr(v) if isinstance(v, Array) else type(v).__name__


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= MAX_REPORT else text[:MAX_REPORT] + "..."
