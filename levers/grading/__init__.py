"""Labs and the autograder: grade submitted lab notebooks against the solution, offline.

Modules, in the order a submission meets them:

- `labs`: the student version of a lab, generated from its solution;
- `spec`: the lab format (nbgrader metadata + probes) and defensive reading of submissions;
- `assemble`: the instructor's cells restored into the student's notebook;
- `static`: forbidden names and tampering, read from the syntax tree;
- `sandbox` and `launcher`: the confined kernel (namespaces, unprivileged uid, rlimits);
- `execute`: running cells and probes with timeouts, restarts and output budgets;
- `values`: probe values as plain data and their type-strict comparison;
- `score`: points per check; `report`: results.json, runner JSON, feedback, gradebook;
- `grader`: a batch, the reference run once per seed; `cli`: ``levers grade``.

This package imports nothing heavy at import time: the launcher runs as ``python -m`` inside
every kernel start.
"""
