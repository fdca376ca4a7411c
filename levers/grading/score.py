"""Points per check, from what ran and what the probes returned.

Rules, per question:

- the question's rules are enforced at run time (`levers.grading.guard`): a withheld library
  function raises when called, so the probe fails like any error; a forbidden operator or dtype
  seen at PyTorch's dispatcher while a probe ran, or an observer found removed, scores 0 for
  every check of the question, with a message naming the operator (or what removed it);
- a forbidden *name* in the answer (`levers.grading.static.forbidden_uses`) scores nothing: it
  is reported as a note, since a name (``half``, ``qmodel``, ``calibrate``) is not a use;
- a hidden check scores its points when the student's probe values equal the reference's
  (type-strict, with the check's tolerances); with ``partial`` it scores the fraction of
  top-level keys that agree. An experiment's check (``measure``) compares, instead of what the
  kernel sent, what the grader measures from it here (`levers.grading.measure`): the weights or
  bytes loaded into the grader's own model, run on the grader's own test set;
- a public test cell scores its points when it ran without an exception **and** the question's
  hidden check passed in full. The student's kernel judged the public test, and that kernel is
  theirs: a patched ``torch.allclose``, an object whose ``__eq__`` always says yes, or a function
  that hard-codes the public inputs' answers can make it pass, but none of them survives the
  value comparison done here. A question without a hidden check keeps its public points as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from levers.grading.assemble import Assembled
from levers.grading.execute import Execution
from levers.grading.measure import MeasureError, measure
from levers.grading.spec import Lab, grade_id, rules_text
from levers.grading.static import Finding, forbidden_uses
from levers.grading.values import compare

#: Partial credit is rounded once, here, to this many decimals; every output (Gradescope, the
#: gradebook, nbgrader, Actions, Classroom 50) shows these values and sums of them, never a
#: rounding of its own.
DECIMALS = 2


@dataclass
class CheckResult:
    """The outcome of one graded cell."""

    grade_id: str
    kind: str
    question: str
    score: float
    max_score: float
    status: str  # "passed", "failed" or "error"
    message: str
    #: An experiment's numbers as the grader measured them, for the leaderboard:
    #: ``{name: (value, "desc"|"asc")}`` (`levers.grading.measure`).
    measured: dict = field(default_factory=dict)


@dataclass
class Report:
    """One submission's grade: checks, notes for the student, and the executed notebook."""

    student: str
    seed: int
    checks: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    execution: Execution | None = None
    assembled: Assembled | None = None
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return round(sum(c.score for c in self.checks), DECIMALS)

    @property
    def max_score(self) -> float:
        return sum(c.max_score for c in self.checks)


def zero(lab: Lab, student: str, seed: int, reason: str) -> Report:
    """A report with 0 for every check, for a submission that could not run at all."""
    checks = [CheckResult(c.grade_id, c.kind, q.name, 0.0, c.points, "error", reason)
              for q in lab.questions for c in q.checks]
    return Report(student, seed, checks, [reason])


def renumber(found: list[Finding], assembled: Assembled) -> list[Finding]:
    """Findings with cells numbered as in the student's notebook, not the assembled one."""
    return [replace(f, cell=p - 1) if (p := assembled.position[f.cell]) is not None else f
            for f in found]


def broken_rules(q, probes: dict[str, dict]) -> str:  # noqa: ANN001
    """Why question ``q`` scores 0 under its run-time rules, or "" when it kept them."""
    for c in q.checks:
        probe = probes.get(c.grade_id, {})
        if probe.get("removed"):
            return (f"Question {q.name} scores 0: the grader's observer was removed while the "
                    f"hidden check ran your code ({probe['removed']}), so the question's rules "
                    "could not be checked.")
        if probe.get("violations"):
            seen = ", ".join(probe["violations"][:3])
            return (f"Question {q.name} scores 0: while the hidden check ran your code, "
                    f"PyTorch or the library ran {seen}, which this question does not allow. "
                    + rules_text(q).replace("**", ""))
    return ""


def _hidden(check, probe: dict, want: dict,  # noqa: ANN001
            board: dict | None = None) -> tuple[float, str, str]:
    if not probe.get("ok"):
        return 0.0, "error", f"The hidden check could not finish: {probe.get('error')}"
    got = probe["value"]
    if check.measure is not None:  # an experiment: the grader measures what the probe moved out
        want, _ = measure(check.measure, want)
        try:
            got, measured = measure(check.measure, got)
        except MeasureError as exc:
            return 0.0, "failed", f"The grader could not measure your experiment: {exc}"
        if board is not None:
            board.update(measured)
    if check.partial and isinstance(got, dict) and isinstance(want, dict) and want:
        right = [k for k in want if k in got and not compare(got[k], want[k], check.rtol,
                                                            check.atol, k, hide=True)]
        diffs = compare(got, want, check.rtol, check.atol, hide=True)
        fraction = len(right) / len(want)
        status = "passed" if fraction == 1 else "failed"
        return (round(check.points * fraction, DECIMALS), status,
                "\n".join(diffs[:5]) or "All values match.")
    diffs = compare(got, want, check.rtol, check.atol, hide=True)
    if diffs:
        more = f"\n(and {len(diffs) - 5} more differences)" if len(diffs) > 5 else ""
        return 0.0, "failed", "Your values differ from the reference:\n" + "\n".join(
            diffs[:5]) + more
    return check.points, "passed", "All values match the reference."


def _public(check, run, confirmed: bool) -> tuple[float, str, str]:  # noqa: ANN001
    if run.status == "error":
        return 0.0, "failed", f"The test raised {run.error}"
    if run.status != "ok":
        return 0.0, "failed", (f"The test did not complete: "
                               f"{run.error or 'grading stopped before it ran'}")
    if not confirmed:
        return 0.0, "failed", ("The public test passed, but the hidden check found the answer "
                               "wrong on other inputs, so these points are withheld.")
    return check.points, "passed", "The public test passed."


def score(lab: Lab, assembled: Assembled, execution: Execution, reference: dict[str, object],
          student: str, seed: int) -> Report:
    """Grade one executed submission.

    Parameters
    ----------
    lab : Lab
        The parsed solution.
    assembled : Assembled
        The notebook that ran, with the origin of each cell.
    execution : Execution
        Cell statuses and probe replies from the student's kernel.
    reference : dict
        ``grade_id`` -> decoded probe value from the reference kernel.
    student, seed
        Name for the reports, and the probe seed used.
    """
    # Only the cells assembly placed as the instructor's or the student's answers are graded;
    # a free cell is never looked up by grade_id, whatever metadata it carried.
    index = {grade_id(c): i for i, (c, o) in enumerate(zip(assembled.notebook.cells,
                                                          assembled.origin, strict=True))
             if grade_id(c) and o != "free"}
    student_code = [(i, s) for i, _, s in assembled.student_sources()]
    instructor_code = [c.source for c, o in zip(assembled.notebook.cells, assembled.origin,
                                                  strict=True)
                       if o == "instructor" and c.cell_type == "code"]
    report = Report(student, seed, notes=list(assembled.notes) + list(execution.notes),
                    execution=execution, assembled=assembled, seconds=execution.seconds)
    for q in lab.questions:
        found: list[Finding] = []
        if q.forbidden and q.solution_id in index:
            answer = index[q.solution_id]
            if (q.solution_id in assembled.missing
                    or assembled.notebook.cells[answer].cell_type != "code"):
                answer = None  # no answer cell to read: every student cell is read instead
            found = renumber(forbidden_uses(student_code, answer, q.forbidden, instructor_code),
                             assembled)
        if found:
            uses = ", ".join(str(f) for f in found[:3])
            report.notes.append(f"Note on question {q.name} (it scores nothing): the code names "
                                f"{uses}; only what runs while the hidden check calls your "
                                "code is judged by the question's rules.")
        if why := broken_rules(q, execution.probes):
            report.checks += [CheckResult(c.grade_id, c.kind, q.name, 0.0, c.points, "failed",
                                          why) for c in q.checks]
            continue
        boards: dict[str, dict] = {c.grade_id: {} for c in q.checks}
        hidden = {c.grade_id: _hidden(c, execution.probes.get(c.grade_id, {}),
                                      reference[c.grade_id], boards[c.grade_id])
                  for c in q.checks if c.kind == "hidden"}
        confirmed = all(status == "passed" for _, status, _ in hidden.values())
        for c in q.checks:
            pts, status, msg = (hidden[c.grade_id] if c.kind == "hidden" else
                                _public(c, execution.cells[index[c.grade_id]], confirmed))
            report.checks.append(CheckResult(c.grade_id, c.kind, q.name, pts, c.points, status,
                                             msg, measured=boards[c.grade_id]))
    return report
