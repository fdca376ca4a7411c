"""A lab's rules, enforced inside the grading kernel where no spelling can avoid them.

This module runs in the student's kernel. `install` is sent as the first code of every kernel,
before any cell of the submission, and does three things:

- captures the builtins (``exec``, ``compile``, ``type``...) the probe runner uses later, so a
  student who patches ``builtins.compile`` cannot rewrite a probe;
- replaces each *withheld* library function (``levers.formats.round_to_format``, or every
  public function of a withheld module such as ``levers.metrics``) by a stub that raises
  `Withheld`, in every loaded module that holds it, so ``lv.formats.round_to_format``, ``from
  levers.formats import round_to_format`` or ``pydoc.locate(...)`` all reach the stub;
- makes a withheld top-level package other than ``levers`` (``ml_dtypes``: its dtypes, not
  only its functions, would do the question's work) not importable at all, with the same
  `Withheld` message;
- wraps the few PyTorch entry points that switch the dispatcher's Python hooks off
  (``torch._C._DisableTorchDispatch``...) so that any use outside PyTorch's own code is logged.

`observe` is entered by the probe runner around each ``probe(seed)`` call. It pushes a
``TorchDispatchMode`` that sees every ATen operator the student's code reaches (whatever Python
path led there: a method added to ``torch.Tensor``, a string built at run time, an alias) and
records the operators and output dtypes the question forbids (and, for rules written as
``torch.nn.functional.kl_div``, a ``TorchFunctionMode`` that sees torch API calls before they
decompose into ATen operators), and a profile hook that sees
Python calls into the original code of a withheld function (a ``reload`` of its module) and C
calls that remove the hooks (``sys.setprofile``, popping the mode, starting a thread). When the
probe ends, the mode stack and the hook must be as they were; if not, the observer was removed
and the question scores 0 (`levers.grading.score`).
"""

from __future__ import annotations

import builtins
import fnmatch
import sys

_B = dict(vars(builtins))  # the real builtins, captured when the grader imports this module
_TORCH_DIR: list[str] = []
_STATE: dict = {"codes": {}, "tamper": []}
INSTRUCTOR: set[str] = set()  # file names IPython gives the instructor's cells
_LIBRARY: tuple[str, ...] = ()
_STDLIB: tuple[str, ...] = ()
_LATER: dict[str, list[str]] = {}  # top-level package -> entries withheld once it is imported
_BLOCKED: set[str] = set()  # top-level packages the graded kernel refuses to import
RUNNER: dict = {}  # the probe runner (`levers.grading.values.PROBE_RUNNER`), set up by install
# C functions that take the observer away; flagged when reached from outside PyTorch.
TAMPER_C = frozenset({"setprofile", "settrace", "_pop_torch_dispatch_mode",
                      "_pop_torch_function_mode", "_set_dispatch_mode", "_unset_dispatch_mode",
                      "_push_on_torch_dispatch_stack", "start_new_thread",
                      "start_joinable_thread", "_set_torch_function_mode",
                      "_set_torch_dispatch_mode"})
# Context managers of torch._C that hide operators from Python modes.
TAMPER_TORCH = ("_DisableTorchDispatch", "DisableTorchFunction", "DisableTorchFunctionSubclass",
                "_DisableFuncTorch", "_ExcludeDispatchKeyGuard", "_pop_torch_dispatch_mode",
                "_pop_torch_function_mode", "_unset_dispatch_mode", "_set_dispatch_mode")
# Python helpers of PyTorch that pop or disable modes.
TAMPER_PY = frozenset({"_pop_mode", "_pop_mode_temporarily", "_disable_current_modes",
                       "_disable_infra_mode", "_disable_dynamo"})


def cell_hash(source: str) -> int:
    """The number IPython's kernel names a cell's code file by (``ipykernel.compiler``)."""
    from ipykernel.compiler import get_tmp_hash_seed, murmur2_x86

    return murmur2_x86(source, get_tmp_hash_seed())


class Withheld(NotImplementedError):  # noqa: N818 - the name students read in the error
    """Raised by a library function that this graded lab asks the student to write."""


def _library_dirs() -> tuple[str, ...]:
    import os
    import site
    import sysconfig

    dirs = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"],
            *site.getsitepackages(), os.path.dirname(os.path.dirname(__file__))}
    return tuple(os.path.join(d, "") for d in dirs)


def by_instructor(frame: object) -> bool:
    """True when the nearest caller outside the installed libraries is the instructor's code.

    Walking out from ``frame``: a frame of an instructor cell (known by the file name IPython
    gives a cell, `INSTRUCTOR`) or of a hidden check says yes; any other frame that is not
    library code (a student's cell, code made by ``exec``, a file the notebook wrote) says no.
    """
    while frame is not None:
        name = frame.f_code.co_filename
        if name in INSTRUCTOR or name == "<hidden check>":
            return True
        if not name.startswith(_LIBRARY):
            return False
        frame = frame.f_back
    return False


def inside_levers(frame: object) -> bool:
    """True when `frame` runs the course library's own code (not its grader).

    A withheld function that another library function calls (``policy.apply`` serializing
    through ``huffman.code_lengths``) is part of a tool the lab allows, not a shortcut: only a
    call made directly from the student's code is refused.
    """
    import os

    levers_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")
    name = frame.f_code.co_filename
    return (name.startswith(levers_dir)
            and not name.startswith(os.path.join(levers_dir, "grading", "")))


def _stub(name: str, real: object):  # noqa: ANN202
    def withheld(*args: object, **kwargs: object) -> object:
        caller = sys._getframe(1)
        # the lab's own cells may use the library, and so may the library's other functions
        if by_instructor(caller) or inside_levers(caller):
            return real(*args, **kwargs)
        raise Withheld(f"{name} is not available in this graded lab: the question asks you "
                       "to write it yourself")

    withheld.__qualname__ = withheld.__name__ = name.rsplit(".", 1)[-1]
    withheld.levers_withheld = name  # type: ignore[attr-defined]
    return withheld


def _targets(entry: str) -> dict[int, tuple[str, object]]:
    import importlib

    try:
        mod = importlib.import_module(entry)
    except ImportError:
        mod = None
    if mod is not None:  # a module: every public function defined in it or its submodules
        return {id(v): (f"{entry}.{k}", v) for k, v in vars(mod).items()
                if callable(v) and not isinstance(v, type) and not k.startswith("_")
                and (getattr(v, "__module__", None) or "").startswith(entry)}
    parent, _, attr = entry.rpartition(".")
    try:
        value = getattr(importlib.import_module(parent), attr)
    except (ImportError, AttributeError, ValueError):
        return {}  # a library that is not installed withholds nothing
    return {id(value): (entry, value)}


def install(withheld: list[str], instructor: list[int] = ()) -> list[str]:  # noqa: B006
    """Replace every withheld function by a raising stub in all loaded modules.

    Parameters
    ----------
    withheld : list of str
        Dotted names of functions, or modules whose public functions are all withheld.
    instructor : list of int
        `cell_hash` of every instructor cell: code there may call withheld functions.

    Returns
    -------
    list of str
        The functions replaced.
    """
    global _LIBRARY, _STDLIB
    import os

    from ipykernel.compiler import get_tmp_directory

    _LIBRARY = _library_dirs()
    _STDLIB = (os.path.join(os.path.dirname(os.__file__), ""),)
    INSTRUCTOR.update(os.path.join(get_tmp_directory(), f"{h}.py") for h in instructor)
    targets: dict[int, tuple[str, object]] = {}
    for entry in withheld:
        top = entry.split(".", 1)[0]
        if entry == top and top != "levers" and top not in sys.modules:
            _BLOCKED.add(top)  # a whole package: not importable, not even its types
        elif top in sys.modules or top == "levers":
            targets.update(_targets(entry))
        else:  # e.g. sklearn: stubbed when the student imports it, not imported here
            _LATER.setdefault(top, []).append(entry)
    if (_LATER or _BLOCKED) and not any(isinstance(f, _Later) for f in sys.meta_path):
        sys.meta_path.insert(0, _Later())
    _withhold(targets)
    _guard_torch()
    setup_runner()
    return sorted(name for name, _ in targets.values()) + sorted(
        f"{e} (when imported)" for v in _LATER.values() for e in v) + sorted(
        f"{b} (not importable)" for b in _BLOCKED)


def setup_runner() -> dict:
    """The probe runner's namespace (`RUNNER`): `levers.grading.values.PROBE_RUNNER` executed
    with the builtins captured at import, before any student code ran."""
    from levers.grading.values import PROBE_RUNNER

    RUNNER.clear()
    RUNNER.update(__builtins__=_B, __name__="__levers__", BUILTINS=_B, Withheld=Withheld,
                  observe=observe)
    _B["exec"](PROBE_RUNNER, RUNNER)
    return RUNNER


class _Later:
    """Withholds functions of a package the moment its top-level module is first imported, and
    refuses to import a package withheld whole (`_BLOCKED`)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name.split(".", 1)[0] in _BLOCKED:
            raise Withheld(f"{name} is not available in this graded lab: the question asks "
                           "you to write what it does yourself")
        if name not in _LATER:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        real = spec.loader.exec_module

        def exec_module(module: object) -> None:
            real(module)
            targets: dict[int, tuple[str, object]] = {}
            for entry in _LATER.pop(name, []):
                targets.update(_targets(entry))
            _withhold(targets)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _withhold(targets: dict[int, tuple[str, object]]) -> None:
    _replace({key: (value, _stub(name, value)) for key, (name, value) in targets.items()})
    for name, value in targets.values():
        while hasattr(value, "__wrapped__"):  # @torch.no_grad() and functools.wraps wrappers
            value = value.__wrapped__
        code = getattr(value, "__code__", None)
        if code is not None and code.co_name == name.rsplit(".", 1)[-1]:
            _STATE["codes"][(code.co_filename, code.co_firstlineno, code.co_name)] = name


def _outside_torch(frame: object) -> bool:
    """True when the code that led to ``frame`` is neither PyTorch's nor this module's.

    Frames of the standard library (``contextlib``, ``threading``) are passed over: what counts
    is who called them.
    """
    while frame is not None and frame.f_code.co_filename.startswith(_STDLIB) and (
            "site-packages" not in frame.f_code.co_filename):
        frame = frame.f_back
    name = getattr(getattr(frame, "f_code", None), "co_filename", "")
    return name != __file__ and not any(name.startswith(d) for d in _TORCH_DIR)


def _guard_torch() -> None:
    try:
        import torch
    except ImportError:
        return
    import os

    import torch.overrides
    import torch.utils._python_dispatch
    import torch.utils._pytree  # noqa: F401 - imported now, not while a probe's clock runs

    with _ops_mode(["aten.warm"], ["bfloat16"], []), _functions_mode(["torch.warm"], []):
        torch.ones(2).add(1).sum()  # the first observed operator loads PyTorch's Python dispatch
    _TORCH_DIR[:] = [os.path.dirname(torch.__file__) + os.sep]
    swap = {}
    for name in TAMPER_TORCH:
        real = getattr(torch._C, name, None)
        if real is None or getattr(real, "levers_guarded", False):
            continue

        def guarded(*args: object, _real: object = real, _name: str = name,
                    **kwargs: object) -> object:
            if _outside_torch(sys._getframe(1)):
                _STATE["tamper"].append(f"torch._C.{_name}")
            return _real(*args, **kwargs)

        guarded.levers_guarded = True  # type: ignore[attr-defined]
        swap[id(real)] = (real, guarded)
    _replace(swap)


def _replace(swap: dict[int, tuple[object, object]]) -> None:
    """In every loaded module, bind ``new`` wherever ``old`` was bound (``swap[id(old)]``)."""
    for mod in list(sys.modules.values()):
        space = getattr(mod, "__dict__", None)
        if not isinstance(space, dict):
            continue
        for k, v in list(space.items()):
            if id(v) in swap and swap[id(v)][0] is v:
                space[k] = swap[id(v)][1]


def _ops_mode(ops: list[str], dtypes: list[str], seen: list[str]):  # noqa: ANN202
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    banned = {getattr(torch, d) for d in dtypes}

    verdict: dict[object, bool] = {}  # operator -> forbidden, decided once per operator

    class Observer(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            bad = verdict.get(func)
            if bad is None:
                name = f"{func.namespace}.{func._opname}"
                bad = verdict[func] = any(fnmatch.fnmatchcase(name, p) for p in ops)
            if bad:
                seen.append(f"{func.namespace}.{func._opname}")
            out = func(*args, **(kwargs or {}))
            if banned:
                leaves = (out,) if type(out) is torch.Tensor else tree_leaves(out)
                for leaf in leaves:
                    if isinstance(leaf, torch.Tensor) and leaf.dtype in banned:
                        seen.append(f"{func.namespace}.{func._opname} -> "
                                    + str(leaf.dtype).replace("torch.", ""))
                        break
            return out

    return Observer()


def function_name(func: object) -> str:
    """A torch API function as rules name it: ``torch.nn.functional.kl_div``,
    ``torch.Tensor.backward``, ``torch.autograd.grad``, ``torch._make_dual``."""
    name = getattr(func, "__name__", "?")
    qual = getattr(func, "__qualname__", "") or ""
    if qual.startswith(("TensorBase.", "Tensor.")):
        return f"torch.Tensor.{name}"
    if qual.startswith("_VariableFunctionsClass."):
        return f"torch.{name}"
    return f"{getattr(func, '__module__', None) or 'torch'}.{name}"


def _functions_mode(patterns: list[str], seen: list[str]):  # noqa: ANN202
    from torch.overrides import TorchFunctionMode

    verdict: dict[object, bool] = {}

    class FunctionObserver(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            try:
                bad = verdict.get(func)
            except TypeError:  # an unhashable callable
                bad = any(fnmatch.fnmatchcase(function_name(func), p) for p in patterns)
            if bad is None:
                bad = verdict[func] = any(fnmatch.fnmatchcase(function_name(func), p)
                                          for p in patterns)
            if bad:
                seen.append(function_name(func))
            return func(*args, **(kwargs or {}))

    return FunctionObserver()


class observe:  # noqa: N801 - used as a context manager, like `open`
    """Watch one probe call: forbidden operators and dtypes, withheld code, tampering.

    After the ``with`` block, ``violations`` lists what the rules forbid (empty when clean) and
    ``removed`` says why the observer was taken away ("" when it stayed in place).
    """

    def __init__(self, ops: list[str], dtypes: list[str]):
        self.ops, self.dtypes = list(ops), list(dtypes)
        self.violations: list[str] = []
        self.removed = ""

    def _profile(self, frame, event, arg):  # noqa: ANN001, ANN202
        if event == "call":
            code = frame.f_code
            name = _STATE["codes"].get((code.co_filename, code.co_firstlineno, code.co_name))
            if name and not by_instructor(frame.f_back):
                self.violations.append(f"{name} (the library's own code, reached another way)")
            elif code.co_name in TAMPER_PY and _outside_torch(frame.f_back):
                self.removed = f"a call to torch's {code.co_name}"
        elif event == "c_call" and getattr(arg, "__name__", "") in TAMPER_C:
            if _outside_torch(frame):
                self.removed = f"a call to {arg.__name__}"

    def __enter__(self) -> observe:
        self._tamper = len(_STATE["tamper"])
        self._mode = self._fmode = None
        aten = [p for p in self.ops if not p.startswith("torch.")]
        api = [p for p in self.ops if p.startswith("torch.")]
        if "torch" in sys.modules and api:
            from torch.overrides import _get_current_function_mode_stack

            self._fstack = _get_current_function_mode_stack
            self._fmode = _functions_mode(api, self.violations)
            self._fmode.__enter__()
            self._fbefore = [id(m) for m in self._fstack()]
        if "torch" in sys.modules and (aten or self.dtypes):
            from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

            self._stack = _get_current_dispatch_mode_stack
            self._mode = _ops_mode(aten, self.dtypes, self.violations)
            self._mode.__enter__()
            self._before = [id(m) for m in self._stack()]
        self._old = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def _leave(self, mode: object, stack: object, before: list[int], what: str) -> None:
        """Exit `mode` if it is still on top of `stack`; note a stack that changed."""
        now = [id(m) for m in stack()]
        if now != before and not self.removed:
            self.removed = f"PyTorch's {what} was changed"
        if now and now[-1] == id(mode):
            mode.__exit__(None, None, None)

    def __exit__(self, *exc: object) -> None:
        hook = sys.getprofile()
        sys.setprofile(self._old)
        if hook != self._profile and not self.removed:
            self.removed = "the profile hook was replaced"
        if self._mode is not None:  # leave in the reverse order of entering
            self._leave(self._mode, self._stack, self._before, "mode stack")
        if self._fmode is not None:
            self._leave(self._fmode, self._fstack, self._fbefore, "function mode stack")
        if len(_STATE["tamper"]) > self._tamper and not self.removed:
            self.removed = f"a call to {_STATE['tamper'][-1]}"
        if _STATE["tamper"] and not self.removed:  # used in a cell, before this probe
            self.removed = f"{_STATE['tamper'][0]} was used in the notebook"
