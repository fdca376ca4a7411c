"""Labs and the autograder: grade submitted lab notebooks against the solution, offline.

Modules, in the order a submission meets them:

- `labs`: the student version of a lab, generated from its solution;
- `spec`: the lab format (nbgrader metadata + probes) and defensive reading of submissions;
- `assemble`: the instructor's cells restored into the student's notebook;
- `static`: names and tampering read from the syntax tree (notes only: they score nothing);
- `guard`: the lab's rules inside the kernel: withheld functions replaced by raising stubs
  before student code runs, forbidden operators and dtypes observed at PyTorch's dispatcher
  while the probes run, and the probe runner set up with the builtins of that moment;
- `sandbox`, `cgroups` and `launcher`: the confined kernel (a bubblewrap allow-list filesystem,
  namespaces, a cgroup per sandbox, an unprivileged uid, rlimits);
- `execute` and `client`: running cells and probes with timeouts, restarts, a deadline for
  everything and output budgets;
- `values`: probe values as plain data and their type-strict comparison;
- `score`: points per check, computed with the static checks in a limited child process
  (`analysis`); `report`: results.json, feedback, gradebook;
- `grader`: a batch, the reference run once per seed; `cli`: ``levers grade``;
- `platforms`: what GitHub Actions, Classroom 50 and an LMS receive, made from results.json;
  `nbgrader_course`: an nbgrader course's ``source/`` and its ``gradebook.db``.

This package imports nothing heavy at import time: the launcher runs as ``python -m`` inside
every kernel start.
"""
