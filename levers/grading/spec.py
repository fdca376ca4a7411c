"""The lab format as the grader reads it: questions, their cells, points and probe settings.

A lab is an nbgrader-style notebook (``metadata.nbgrader``: ``grade``, ``solution``, ``locked``,
``grade_id``, ``points``). A *question* is every cell whose ``grade_id`` starts with the same
prefix before the first ``-``: ``q1-solution`` (the student's code), ``q1-public`` (plain asserts)
and ``q1-hidden`` (a ``probe(seed)`` between ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN
TESTS``). ``metadata.levers`` carries the grader's extras:

- on a solution cell, the question's *rules*, enforced at run time (`levers.grading.guard`):
  ``withheld`` (library functions, or modules, replaced by raising stubs in the grading kernel
  before any student code runs), ``ops`` (ATen operator patterns such as
  ``aten._to_sparse_csr`` or ``aten.fake_quantize_per_*`` that must not run while the probes
  call the student's code) and ``dtypes`` (tensor dtypes such as ``bfloat16`` that no operator
  may produce then); ``forbidden`` (names) is still read, for a note that scores nothing;
- ``rtol``/``atol``/``partial`` on a hidden cell, and ``in_place`` (run the probe right after
  its own cell, on the state the question's cells left: for experiments, which later scratch
  cells must not change), and ``measure`` (the grader's own measurement of what the probe
  moved out, `levers.grading.measure`: experiments return weights or bytes, never verdicts);
- ``files`` (paths the lab needs in its working directory) and ``withheld`` (for the whole lab)
  on the notebook.

Submissions are read defensively: every way a file can fail to be a notebook becomes a
`SubmissionError` whose message is the reason a student reads in the report.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from levers.grading.labs import HIDDEN_STUB as HIDDEN_PLACEHOLDER  # what students see
from levers.grading.measure import check_measure

HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-8
MAX_SUBMISSION_BYTES = 64 << 20


class LabError(ValueError):
    """The solution notebook is not a valid lab: the grader cannot run at all."""


class SubmissionError(ValueError):
    """A submission could not be read as a notebook; the message is shown to the student."""


@dataclass(frozen=True)
class Check:
    """One graded cell: public asserts, or a hidden probe compared against the reference."""

    grade_id: str
    kind: str  # "public" or "hidden"
    points: float
    source: str  # the cell as the student sees it (hidden: the placeholder)
    probe: str = ""  # hidden only: the code between the hidden-test markers
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    partial: bool = False
    in_place: bool = False  # run right after its own cell, not after the last one
    measure: dict | None = field(default=None, hash=False)  # `levers.grading.measure` spec


@dataclass(frozen=True)
class Question:
    """A solution cell and the checks that grade it."""

    name: str
    solution_id: str | None
    forbidden: tuple[str, ...]
    checks: tuple[Check, ...]
    withheld: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()

    @property
    def points(self) -> float:
        return sum(c.points for c in self.checks)


@dataclass(frozen=True)
class Lab:
    """A parsed solution notebook."""

    path: Path
    notebook: nbformat.NotebookNode
    questions: tuple[Question, ...]
    files: tuple[str, ...]
    withheld: tuple[str, ...] = ()

    @property
    def points(self) -> float:
        return sum(q.points for q in self.questions)

    @property
    def all_withheld(self) -> list[str]:
        """Every function the grading kernel replaces by a stub: the lab's and its questions'."""
        return sorted({*self.withheld, *(w for q in self.questions for w in q.withheld)})


TORCH_DTYPES = ("bfloat16", "float16", "float64", "int8", "uint8", "qint8", "quint8", "qint32",
                "quint4x2", "float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "float4_e2m1fn_x2",
                "int16", "int32")


def _names(meta: dict, key: str, where: str) -> tuple[str, ...]:
    value = meta.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise LabError(f"{where}: metadata.levers.{key} must be a list of non-empty str, "
                       f"got {value!r}")
    if key == "dtypes" and (bad := [v for v in value if v not in TORCH_DTYPES]):
        raise LabError(f"{where}: metadata.levers.dtypes has {bad}; allowed: {TORCH_DTYPES}")
    if key == "ops" and (bad := [v for v in value if not v.startswith(("aten.", "prims.",
                                                                        "quantized.", "torch."))]):
        raise LabError(f"{where}: metadata.levers.ops has {bad}; write operators as "
                       "'aten.name' (seen at the dispatcher; * matches families) or torch API "
                       "functions as 'torch.nn.functional.name' or 'torch.Tensor.name'")
    return tuple(value)


def rules_text(question: Question) -> str:
    """The question's rules as the lab's text states them, from the same metadata.

    Examples
    --------
    >>> q = Question("q1", "q1-solution", (), (), withheld=("levers.formats",),
    ...              ops=("aten._to_sparse_csr",), dtypes=("bfloat16",))
    >>> print(rules_text(q))
    **Rules checked while your code runs** (breaking one scores the question 0):
    - not available in the graded kernel: `levers.formats`
    - PyTorch operators it must not run: `aten._to_sparse_csr`
    - tensor dtypes it must not create: `bfloat16`
    """
    parts = []
    if question.withheld:
        parts.append("not available in the graded kernel: "
                     + ", ".join(f"`{w}`" for w in question.withheld))
    if question.ops:
        parts.append("PyTorch operators it must not run: "
                     + ", ".join(f"`{o}`" for o in question.ops))
    if question.dtypes:
        parts.append("tensor dtypes it must not create: "
                     + ", ".join(f"`{d}`" for d in question.dtypes))
    head = "**Rules checked while your code runs** (breaking one scores the question 0):"
    return "\n".join([head, *(f"- {p}" for p in parts)]) if parts else ""


def nbgrader(cell: dict) -> dict:
    """The ``metadata.nbgrader`` dict of a cell (empty when absent or malformed)."""
    meta = cell.get("metadata")
    data = meta.get("nbgrader") if isinstance(meta, dict) else None
    return data if isinstance(data, dict) else {}


def grade_id(cell: dict) -> str | None:
    """The cell's ``grade_id``, or None for a free cell."""
    gid = nbgrader(cell).get("grade_id")
    return gid if isinstance(gid, str) and gid else None


def is_instructor_cell(cell: dict) -> bool:
    """True for cells the student may not change: locked or graded, and not a solution."""
    meta = nbgrader(cell)
    return bool(meta.get("locked") or meta.get("grade")) and not meta.get("solution")


def comments_only(source: str) -> bool:
    """True when a cell holds nothing but comments and blank lines (nothing to run)."""
    return all(not ln.strip() or ln.lstrip().startswith("#") for ln in source.splitlines())


def question_name(gid: str) -> str:
    """The question a cell belongs to: the ``grade_id`` up to its first ``-``.

    Examples
    --------
    >>> question_name("q1-metrics-solution")
    'q1'
    """
    return gid.split("-", 1)[0]


def hidden_probe(source: str, gid: str) -> str:
    """The code between the hidden-test markers of a hidden check cell."""
    start, end = source.find(HIDDEN_BEGIN), source.find(HIDDEN_END)
    if start < 0 or end < start:
        raise LabError(f"hidden check {gid!r} must wrap its probe in {HIDDEN_BEGIN}/{HIDDEN_END}")
    body = source[start + len(HIDDEN_BEGIN) : end].strip("\n")
    if "def probe(" not in body:
        raise LabError(f"hidden check {gid!r} must define `def probe(seed: int) -> dict`")
    return body


def _measure(spec: object, gid: str) -> dict | None:
    if spec is None:
        return None
    try:
        return check_measure(spec, f"hidden check {gid!r}")
    except ValueError as exc:
        raise LabError(str(exc)) from None


def _check(cell: dict, gid: str) -> Check:
    meta = nbgrader(cell)
    extra = cell.get("metadata", {}).get("levers", {})
    points = meta.get("points", 0)
    if not isinstance(points, int | float) or isinstance(points, bool) or points < 0:
        raise LabError(f"cell {gid!r}: points must be a non-negative number, got {points!r}")
    source = cell["source"]
    if comments_only(source):  # a student version: the probe was removed
        return Check(gid, "hidden", float(points), HIDDEN_PLACEHOLDER)
    if HIDDEN_BEGIN in source:
        return Check(
            gid,
            "hidden",
            float(points),
            HIDDEN_PLACEHOLDER,
            probe=hidden_probe(source, gid),
            rtol=float(extra.get("rtol", DEFAULT_RTOL)),
            atol=float(extra.get("atol", DEFAULT_ATOL)),
            partial=bool(extra.get("partial", False)),
            in_place=bool(extra.get("in_place", False)),
            measure=_measure(extra.get("measure"), gid),
        )
    return Check(gid, "public", float(points), source)


def _builtin_names(source: str) -> list[str]:
    """Top-level names a cell binds that shadow a builtin (``def sum(...)``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    bound = {s.name for s in tree.body if isinstance(s, ast.FunctionDef | ast.ClassDef)}
    bound |= {n.id for s in tree.body if isinstance(s, ast.Assign) for t in s.targets
              for n in ast.walk(t) if isinstance(n, ast.Name)}
    return sorted(n for n in bound if hasattr(builtins, n) and not n.startswith("__"))


def read_solution(path: str | Path, public_only: bool = False) -> Lab:
    """Parse a solution notebook into a `Lab`; raise `LabError` if it is not a valid lab.

    Parameters
    ----------
    path : str or Path
        The instructor's notebook (``solutions/labNN-name.ipynb``).
    public_only : bool
        Keep only the public tests: a student previewing their score against ``labs/``.

    Returns
    -------
    Lab
        The questions in notebook order, with their checks and settings.
    """
    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read solution notebook {str(path)!r}: {exc}") from exc
    order: list[str] = []
    solutions: dict[str, dict] = {}
    checks: dict[str, list[Check]] = {}
    seen: set[str] = set()
    for cell in nb.cells:
        gid = grade_id(cell)
        if gid is None:
            continue
        if gid in seen:
            raise LabError(f"grade_id {gid!r} appears twice in {path.name}")
        seen.add(gid)
        meta = nbgrader(cell)
        name = question_name(gid)
        if meta.get("solution") and cell.cell_type == "code":
            solutions[name] = cell
            if clash := _builtin_names(cell.source):
                raise LabError(f"solution cell {gid!r} defines {clash}, named like Python "
                               "builtins: probes do not see names that shadow builtins, rename it")
        elif meta.get("grade") and cell.cell_type == "code":
            checks.setdefault(name, []).append(_check(cell, gid))
        else:
            continue
        if name not in order:
            order.append(name)
    questions = []
    for name in order:
        if public_only:
            checks[name] = [c for c in checks.get(name, []) if c.kind == "public"]
        if not checks.get(name):
            continue  # a solution cell nobody grades (e.g. helpers) is not a question
        sol = solutions.get(name)
        extra = sol.get("metadata", {}).get("levers", {}) if sol else {}
        where = f"question {name!r}"
        rules = {k: _names(extra, k, where) for k in ("forbidden", "withheld", "ops", "dtypes")}
        questions.append(Question(name, grade_id(sol) if sol else None, rules["forbidden"],
                                  tuple(checks[name]), rules["withheld"], rules["ops"],
                                  rules["dtypes"]))
    if not questions:
        raise LabError(f"{path.name} has no graded cells (metadata.nbgrader.grade = true)")
    stripped = [c.grade_id for q in questions for c in q.checks if c.kind == "hidden"
                and not c.probe]
    if stripped:
        raise LabError(f"{path.name} is a student version (hidden checks {stripped} have no "
                       "probe): grade against the solution, or pass --public-only")
    files = nb.metadata.get("levers", {}).get("files", [])
    withheld = _names(nb.metadata.get("levers", {}), "withheld", path.name)
    return Lab(path, nb, tuple(questions), tuple(files), withheld)


def read_submission(path: str | Path) -> nbformat.NotebookNode:
    """Read a student's file as an nbformat-4 notebook, or raise `SubmissionError` saying why.

    Parameters
    ----------
    path : str or Path
        The submitted ``.ipynb`` file.

    Returns
    -------
    NotebookNode
        The notebook, with cell sources normalised to strings.
    """
    path = Path(path)
    try:
        if path.is_symlink():  # e.g. a link committed to a repository, pointing at the solution
            raise SubmissionError("the file is a symbolic link; submit the notebook file itself")
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block, /dev/zero would never end
            raise SubmissionError("it is not a regular file")
        if info.st_size > MAX_SUBMISSION_BYTES:
            raise SubmissionError(f"the file is {info.st_size >> 20} MB; a lab notebook must be "
                                  f"under {MAX_SUBMISSION_BYTES >> 20} MB (clear large outputs)")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_SUBMISSION_BYTES + 1)
        if len(raw) > MAX_SUBMISSION_BYTES:
            raise SubmissionError(f"the file is over {MAX_SUBMISSION_BYTES >> 20} MB")
    except OSError as exc:
        raise SubmissionError(f"cannot read the file: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8-sig")  # some editors start UTF-8 files with a BOM
    except UnicodeDecodeError as exc:
        raise SubmissionError(
            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubmissionError(f"the file is not JSON ({exc.msg}, line {exc.lineno})") from exc
    except RecursionError as exc:
        raise SubmissionError("the file is JSON nested too deeply to be a notebook") from exc
    if not isinstance(data, dict) or "nbformat" not in data:
        raise SubmissionError("the file is JSON but not a Jupyter notebook (no nbformat field)")
    version = data.get("nbformat")
    if version != 4:
        raise SubmissionError(f"the notebook has nbformat version {version!r}; expected 4 "
                              "(save it from Jupyter 4 or later)")
    if not isinstance(data.get("cells"), list):
        raise SubmissionError("the file is JSON but not a Jupyter notebook (no list of cells)")
    cells = []
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise SubmissionError(f"cell {i} is not a valid notebook cell")
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(s for s in source if isinstance(s, str))
        if not isinstance(source, str):
            raise SubmissionError(f"cell {i} has a source that is not text")
        meta = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
        new = (nbformat.v4.new_code_cell if cell["cell_type"] == "code"
               else nbformat.v4.new_markdown_cell if cell["cell_type"] == "markdown"
               else nbformat.v4.new_raw_cell)(source=source, metadata=meta)
        cells.append(new)
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    return nbformat.v4.new_notebook(cells=cells, metadata=meta)


RULES_PARAGRAPHS = ("**Rules checked while your code runs**", "Not allowed in this cell",
                    "Nothing is forbidden here", "Nothing is checked here")


def with_rules(nb: nbformat.NotebookNode) -> list[int]:
    """Write each question's `rules_text` into the markdown cell that introduces it.

    The paragraph stating the rules (one starting like `RULES_PARAGRAPHS`) in the last markdown
    cell before the question's solution cell is replaced, or the rules are appended there, so
    the lab's text says exactly what the grader enforces. Returns the indices of changed cells.

    Parameters
    ----------
    nb : NotebookNode
        A solution notebook, changed in place.

    Returns
    -------
    list of int
        The markdown cells whose text changed.
    """
    changed = []
    markdown = None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            markdown = cell
            continue
        meta = nbgrader(cell)
        if not meta.get("solution") or markdown is None:
            continue
        extra = cell.get("metadata", {}).get("levers", {})
        q = Question("", None, (), (), *(tuple(extra.get(k, ())) for k in
                                          ("withheld", "ops", "dtypes")))
        text = rules_text(q) or ("Nothing is checked here beyond the lab's general rules.")
        paragraphs = markdown.source.rstrip("\n").split("\n\n")
        kept = [p for p in paragraphs if not p.startswith(RULES_PARAGRAPHS)]
        new = "\n\n".join([*kept, text])
        if new != markdown.source:
            markdown.source = new
            changed.append(nb.cells.index(markdown))
        markdown = None  # one question per introducing cell
    return changed
