"""Read the student's code without running it: forbidden shortcuts and tampering.

Two checks, both on the syntax tree (``ast``), with every import alias resolved to its dotted
name (``import levers.formats as F`` makes ``F.round_to_format`` read as
``levers.formats.round_to_format``):

- **forbidden**: a question may list names its answer must not use. The question's solution cell
  is scanned, together with every student definition it reaches (a helper defined in a scratch
  cell counts). Dynamic escapes that would hide a name (``eval``, ``getattr(m, "na" + "me")``,
  ``__import__``...) count as forbidden too.
- **tampering**: code that rewrites shared objects (``torch.allclose = ...``, ``setattr(np, ...)``,
  ``sys.modules``, ``builtins``), or defines classes whose comparisons can lie (``__eq__``), makes
  the notebook's own verdicts untrustworthy: its public tests then score nothing.

Static reading is a bar, not a proof; the hidden checks compare values in the grader's process
and do not depend on it. Reading costs time and memory in proportion to the code (about a
second per 100,000 characters), so a cell over `MAX_CELL_CHARS`, or past `MAX_TOTAL_CHARS` of
the notebook's code, is not read: it is a finding itself (code the grader could not read), for
both checks. The grader also runs them in a child process with its own limits
(`levers.grading.analysis`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from IPython.core.inputtransformer2 import TransformerManager

DYNAMIC = {"eval", "exec", "compile", "__import__", "globals", "vars", "locals", "breakpoint"}
REBINDING = ("__main__", "sys.modules", "sys._getframe", "f_globals", "f_locals", "user_ns",
             "currentframe", "__builtins__", "sys.path", "IPython.get_ipython",
             "getipython.get_ipython", "get_ipython(<alias>)")
MUTATORS = {"update", "append", "extend", "insert", "setdefault", "__setitem__"}
PATCHING_CALLS = {"setattr", "delattr"}
DANGEROUS_MODULES = ("builtins", "importlib", "ctypes", "gc", "inspect", "unittest.mock", "mock",
                     "IPython", "sys.modules", "sys.settrace", "sys.setprofile", "sys.meta_path",
                     "sys.path_hooks", "sys.addaudithook", "sys._getframe", "types.FunctionType",
                     "types.CodeType")
DUNDER_ACCESS = {"__dict__", "__class__", "__globals__", "__code__", "__builtins__",
                 "__subclasses__", "__setattr__", "__delattr__", "__getattribute__", "__bases__",
                 "__mro__", "__closure__", "__defaults__", "__kwdefaults__", "__func__",
                 "__self__", "__loader__", "__spec__", "__wrapped__"}
LYING_METHODS = {"__eq__", "__ne__", "__bool__", "__torch_function__", "__torch_dispatch__",
                 "__array_ufunc__", "__array_function__", "__instancecheck__",
                 "__subclasscheck__"}
ALLOWED_MAGICS = {"time", "timeit", "matplotlib", "precision", "who", "whos", "pip"}
# (The kernel's working folder is not on its sys.path, so `%load_ext` and `%autoreload` can
# only reach installed modules.)
CODE_MAGICS = {"run", "load", "loadpy", "rerun", "recall", "macro", "edit", "store",
               "script", "python", "python2", "python3", "pypy", "writefile", "file", "sx",
               "alias_magic"}
PYTHON_CELL_MAGICS = {"time", "timeit", "capture", "prun", "debug"}
# Ways to reach code or objects by a name the reader cannot see: in an answer, they count as
# forbidden for a question that forbids anything.
HIDING_DUNDERS = {"__globals__", "__dict__", "__builtins__", "__code__", "__closure__",
                  "__wrapped__", "__subclasses__", "__loader__", "__spec__", "__func__",
                  "__self__", "__getattribute__"}
HIDING_MODULES = ("importlib", "pickle", "_pickle", "cloudpickle", "marshal", "dill", "shelve",
                  "copyreg", "runpy", "pkgutil", "zipimport", "joblib", "torch.load",
                  "numpy.load", "operator.attrgetter", "operator.methodcaller",
                  "inspect.getattr_static")
SHELL = {"system", "getoutput"}
MAX_CELL_CHARS = 64_000  # a lab's cells are a few thousand characters
MAX_TOTAL_CHARS = 400_000
ALIASED = {"getattr": "getattr(<computed name>)", "get_ipython": "get_ipython(<alias>)"}


@dataclass(frozen=True)
class Finding:
    """One suspicious use of a name: where, and what."""

    cell: int
    line: int
    what: str

    def __str__(self) -> str:
        return f"`{self.what}` (cell {self.cell + 1}, line {self.line})"


def parse(source: str) -> ast.Module | None:
    """Parse a cell (IPython magics turned into calls); None if it is not valid Python.

    The body of a cell magic that runs it as Python (``%%time``, ``%%capture``...) is read as
    the Python it is, not as the string argument IPython passes to the magic.
    """
    head, _, body = source.lstrip().partition("\n")
    if head.startswith("%%") and head[2:].split(" ")[0].strip() in PYTHON_CELL_MAGICS:
        source = body
    try:
        return ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # Python could not compile it either: the cell cannot run


def readable(cells: list[tuple[int, str]]) -> tuple[dict[int, str], list[Finding]]:
    """The cells small enough to read (by index), and a finding for each one that is not.

    Examples
    --------
    >>> ok, big = readable([(0, "x = 1"), (1, "#" * 70_000)])
    >>> list(ok), [str(f) for f in big]
    ([0], ['`a cell too large to read (70000 characters)` (cell 2, line 1)'])
    """
    ok, found, total = {}, [], 0
    for i, src in cells:
        total += len(src)
        if len(src) > MAX_CELL_CHARS or total > MAX_TOTAL_CHARS:
            found.append(Finding(i, 1, f"a cell too large to read ({len(src)} characters)"))
        else:
            ok[i] = src
    return ok, found


def aliases(trees: list[ast.Module | None]) -> dict[str, str]:
    """Map every imported local name to the dotted name it stands for."""
    names: dict[str, str] = {}
    for tree in trees:
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.Import):
                for a in node.names:
                    names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(
                        ".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    names[a.asname or a.name] = f"{node.module}.{a.name}"
    for tree in trees:  # a module-level `t = torch` makes `t` another name for the module
        for node in tree.body if tree else ():
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Name | ast.Attribute)):
                value = dotted(node.value, names)
                if value and value.split(".")[0] in set(names.values()) | set(names):
                    names.setdefault(node.targets[0].id, value)
    return names


def dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    """``lv.formats.f`` -> ``levers.formats.f``; ``getattr(torch, "x")`` -> ``torch.x``."""
    if isinstance(node, ast.Name):
        return names.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = dotted(node.value, names)
        return f"{base}.{node.attr}" if base else f"?.{node.attr}"
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "getattr" and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
        base = dotted(node.args[0], names)
        return f"{base or '?'}.{node.args[1].value}"
    if isinstance(node, ast.Call):
        return dotted(node.func, names)
    return None


def references(tree: ast.AST, names: dict[str, str]) -> list[tuple[int, str]]:
    """Every dotted name the code reads, calls or imports, with its line."""
    refs = []
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        # `ga = getattr`, `gi = get_ipython`: called later under a name nobody reads
        if isinstance(node, ast.Name) and node.id in ALIASED and id(node) not in called:
            refs.append((node.lineno, ALIASED[node.id]))
        if isinstance(node, ast.Name | ast.Attribute) or (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
        ):
            name = dotted(node, names)
            if name:
                refs.append((getattr(node, "lineno", 0), name))
            if isinstance(node, ast.Call) and not (
                len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
            ):
                refs.append((node.lineno, "getattr(<computed name>)"))
        elif isinstance(node, ast.Import):
            refs += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            refs += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return refs


def matches(ref: str, entry: str) -> bool:
    """Does a used name hit a forbidden entry?

    An entry matches when its dotted components appear, in order and adjacent, among the
    reference's: ``levers.formats`` hits ``levers.formats.round_to_format``, ``bfloat16`` (one
    component) hits ``torch.bfloat16`` and ``x.bfloat16``. Leading ``*.``/``.`` and a trailing
    ``(`` are ignored, so ``.half(`` means any attribute named ``half``.

    Examples
    --------
    >>> matches("levers.formats.round_to_format", "levers.formats")
    True
    >>> matches("x.bfloat16", "bfloat16"), matches("torch.float16", "bfloat16")
    (True, False)
    """
    entry = entry.strip().rstrip("(").removeprefix("*").removeprefix(".")
    want, have = entry.split("."), ref.split(".")
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


def _bound(stmt: ast.stmt) -> set[str]:
    """Global names a top-level statement binds: ``=``, ``for``, ``with ... as``, ``:=``...

    What runs inside a nested function, class or lambda is not entered (its names are its
    own), except its decorators and default values, which run in the global scope. Imports are
    not definitions here: an imported name resolves to its module through `aliases`.
    """
    names: set[str] = set()
    todo: list[ast.AST] = [stmt]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            if not isinstance(n, ast.Lambda):
                names.add(n.name)
            todo += getattr(n, "decorator_list", [])
            args = getattr(n, "args", None)
            if isinstance(args, ast.arguments):
                todo += [*args.defaults, *[d for d in args.kw_defaults if d is not None]]
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
            names.add(n.id)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
        elif isinstance(n, ast.Global):
            names |= set(n.names)
        todo += ast.iter_child_nodes(n)
    return names


def _locals(node: ast.AST) -> set[str]:
    """Names local to every function in `node`: parameters and what their bodies bind."""
    names: set[str] = set()
    for f in ast.walk(node):
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            a = f.args
            names |= {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs,
                                      *([a.vararg] if a.vararg else []),
                                      *([a.kwarg] if a.kwarg else [])]}
            body = f.body if isinstance(f.body, list) else [f.body]
            declared = {n for s in ast.walk(f) if isinstance(s, ast.Global | ast.Nonlocal)
                        for n in s.names}
            names |= {n for s in body for n in _bound(s)} - declared
    return names


def _defined(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {stmt.name}
    # `TOOLS.update(r=...)`, `hooks.append(f)`: filling a container defines what it holds.
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr in MUTATORS and isinstance(call.func.value, ast.Name)):
        return {call.func.value.id}
    # `TOOLS["r"] = f`, `Impl.run = f`, `setattr(Impl, "run", f)`: changing what a name holds
    # defines it too (its root name is only read, so `_bound` does not see it).
    return _bound(stmt) | {root for node in ast.walk(stmt) for root in map(_root, _changed(node))
                           if root}


def _root(node: ast.AST) -> str | None:
    """The name at the root of ``a.b[c].d`` (``a``), if it is a plain name."""
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Starred):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _changed(node: ast.AST) -> list[ast.AST]:
    """What a node changes in place: ``x.a = ``, ``x[i] += ``, ``del x.a``, ``setattr(x, ...)``."""
    if isinstance(node, ast.Assign | ast.Delete):
        targets = node.targets
    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
        targets = [node.target]
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
          and node.func.id in PATCHING_CALLS and node.args):
        return [node.args[0]]
    else:
        return []
    return [t for t in targets if isinstance(t, ast.Attribute | ast.Subscript)]


def _dynamic(ref: str, anywhere: bool = False) -> bool:
    """Code that can hide what it calls or rebind the answer from elsewhere.

    In the answer and what it reaches: ``eval``, ``exec``, ``__import__``, ``importlib``,
    ``getattr(m, name)`` with a computed name. Anywhere in the notebook (``anywhere``), only what
    can rebind the answer's names from a distance: ``eval``, ``exec``, ``globals()``,
    ``__main__``, ``sys.modules``, ``sys._getframe``, a frame's ``f_globals``, IPython's
    ``user_ns`` (a ``getattr`` in scratch code is harmless unless the answer
    reaches it, and then the first rule sees it).
    """
    bare = ref.removeprefix("builtins.")
    if bare in DYNAMIC or matches(ref, "importlib") or any(matches(ref, r) for r in REBINDING):
        return True
    if anywhere:
        return False
    return (ref.startswith("getattr(<")
            or any(matches(ref, m) for m in HIDING_MODULES)
            or any(part in HIDING_DUNDERS for part in ref.split(".")))


def forbidden_uses(cells: list[tuple[int, str]], solution: int | None, forbidden: tuple[str, ...],
                   instructor: list[str] = ()) -> list[Finding]:
    """Forbidden names used by the solution cell or by any student definition it reaches.

    Parameters
    ----------
    cells : list of (index, source)
        The student's code cells, by notebook index.
    solution : int or None
        Index of the question's solution cell; None when the submission lost it (the answer
        may then be in any cell, so every student cell is read as part of it).
    forbidden : tuple of str
        Dotted names (``levers.formats.round_to_format``) or ``*.attr`` patterns.
    instructor : list of str
        The instructor's code cells, read only for their import aliases.
    """
    if not forbidden:
        return []
    sources, found = readable(cells)
    cells = list(sources.items())
    trees = {i: parse(src) for i, src in cells}
    names = aliases([parse(s) for s in instructor] + list(trees.values()))
    defs: dict[str, list[tuple[int, ast.stmt]]] = {}
    for i, tree in trees.items():
        for stmt in tree.body if tree else ():
            for name in _defined(stmt):
                defs.setdefault(name, []).append((i, stmt))
    lab_defs: dict[str, list[ast.stmt]] = {}
    for tree in map(parse, instructor):
        for stmt in tree.body if tree else ():
            for name in _defined(stmt):
                lab_defs.setdefault(name, []).append(stmt)
    if solution is not None:
        todo = [(solution, trees.get(solution))]
    else:  # every cell but the student's copies of the instructor's cells (tests use anything)
        theirs = {src.strip() for src in instructor}
        todo = [(i, trees[i]) for i, src in cells if src.strip() not in theirs]
    # Rebinding the answer's names elsewhere (a scratch cell defining `round_bf16` again) or
    # dynamic code anywhere can swap the answer at run time: both are read as part of it.
    answer = trees.get(solution)
    for name in {n for stmt in (answer.body if answer else ()) for n in _defined(stmt)}:
        todo += defs.get(name, [])
    modules = {v.split(".")[0] for v in names.values()}
    for i, tree in trees.items():
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)} if tree else {}
        for node in ast.walk(tree) if tree else ():  # %run, %load, %%script...: unseen code
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "get_ipython" and _runs_unseen_code(node, parents)):
                found.append(Finding(i, node.lineno, "get_ipython()"))
        for line, ref in references(tree, names) if tree else ():
            if _dynamic(ref, anywhere=True) or (
                    ref.split(".")[0] in modules and ".__dict__" in ref):  # torch.__dict__[...]
                found.append(Finding(i, line, ref))
        for line, text in _strings(tree):  # a module written to disk, imported unseen
            if text.endswith(".py"):
                found.append(Finding(i, line, f"writes {text!r}"))
    seen: set[int] = set()
    while todo:
        cell, node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        own = _locals(node)  # a function's parameters and locals are not the globals of that name
        for line, ref in references(node, names) + references(node, {}):
            bad = [e for e in forbidden if matches(ref, e)]
            if bad or _dynamic(ref):
                found.append(Finding(cell, line, ref))
            head = ref.split(".")[0]
            if head in own:
                continue
            todo += defs.get(head, [])
            # A global only the lab's own cells set (a public test's table holding
            # torch.bfloat16): the answer reaches what it holds.
            for stmt in lab_defs.get(head, []) if head not in defs else ():
                found += [Finding(cell, line, f"{head} (set by the lab's code: {r})")
                          for _, r in references(stmt, names)
                          if any(matches(r, e) for e in forbidden)]
        found += [Finding(cell, line, repr(text)) for line, text in _strings(node)
                  if any(_names_in_text(text, e) for e in forbidden)]
    return sorted(set(found), key=lambda f: (f.cell, f.line, f.what))


def _strings(tree: ast.AST | None) -> list[tuple[int, str]]:
    """String constants without whitespace (names, not prose), docstrings excepted."""
    if tree is None:
        return []
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}
    return [(getattr(n, "lineno", 0), n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
            and n.value and not any(c.isspace() for c in n.value)]


def _names_in_text(text: str, entry: str) -> bool:
    """Does a string name a forbidden entry (``x.type("torch.BFloat16Tensor")``)?

    Case-insensitive; a dotted or long entry may sit inside the string, a short one-word entry
    (``half``, ``prune``) must be the whole string, so ordinary words rarely collide.
    """
    entry = entry.strip().rstrip("(").removeprefix("*").removeprefix(".").lower()
    text = text.lower()
    return entry in text if "." in entry or len(entry) >= 6 else entry == text


def _magic(call: ast.Call, parents: dict) -> str | None:
    """What a ``get_ipython()`` call is for: ``"!"`` (a shell command), a magic's name, or None.

    ``%timeit`` and ``!ls`` become ``get_ipython().run_line_magic("timeit", ...)`` and
    ``.system(...)``; None means the shell object itself (``.run_cell``, ``.events``...) or a
    magic whose name is computed.
    """
    attr, outer = parents.get(call), parents.get(parents.get(call))
    if not isinstance(attr, ast.Attribute) or not isinstance(outer, ast.Call):
        return None
    if attr.attr in SHELL:
        return "!"
    first = outer.args[0] if outer.args else None
    if attr.attr in ("run_line_magic", "run_cell_magic") and isinstance(first, ast.Constant):
        return str(first.value)
    return None


def _allowed_magic(call: ast.Call, parents: dict) -> bool:
    """A shell command or a magic that only configures or measures (no tampering note)."""
    magic = _magic(call, parents)
    return magic == "!" or magic in ALLOWED_MAGICS


def _runs_unseen_code(call: ast.Call, parents: dict) -> bool:
    """Can this use of ``get_ipython()`` run code the grader does not read?

    ``%run``, ``%load``, ``%%script python`` and the like can, and so can the shell object used
    directly (``.run_cell``, ``.user_ns``, ``.events``); ``%config``, ``%matplotlib``, ``!ls``
    and other magics that only configure or inspect cannot.
    """
    magic = _magic(call, parents)
    return magic is None or magic in CODE_MAGICS


def tampering(cells: list[tuple[int, str]], instructor: list[str] = ()) -> list[Finding]:
    """Places where student code rewrites shared objects or defines lying comparisons."""
    sources, found = readable(cells)
    trees = {i: parse(src) for i, src in sources.items()}
    names = aliases([parse(s) for s in instructor] + list(trees.values()))
    modules = set(names)
    for cell, tree in trees.items():
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)} if tree else {}
        for node in ast.walk(tree) if tree else ():
            line = getattr(node, "lineno", 0)
            for t in _changed(node):
                if isinstance(t, ast.Attribute) and _root(t) in modules:
                    found.append(Finding(cell, line, f"{dotted(t, names)} = ..."))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id in PATCHING_CALLS | DYNAMIC:
                    found.append(Finding(cell, line, f"{node.func.id}(...)"))
            if isinstance(node, ast.Attribute) and node.attr in DUNDER_ACCESS:
                found.append(Finding(cell, line, f"?.{node.attr}"))
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name in LYING_METHODS:
                        found.append(Finding(cell, item.lineno, f"{node.name}.{item.name}"))
            if isinstance(node, ast.Name | ast.Attribute | ast.Import | ast.ImportFrom):
                refs = ([dotted(node, names)] if not isinstance(node, ast.Import | ast.ImportFrom)
                        else [r for _, r in references(node, names)])
                for ref in refs:
                    if ref and any(matches(ref, m) for m in DANGEROUS_MODULES):
                        found.append(Finding(cell, line, ref))
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "get_ipython" and not _allowed_magic(node, parents)):
                found.append(Finding(cell, line, "get_ipython()"))
    return sorted(set(found), key=lambda f: (f.cell, f.line, f.what))
