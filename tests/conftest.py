"""Test-wide settings: the pinned numeric environment and silent progress bars for every kernel
that nbval or the tests start (they inherit this process's environment)."""

import os

from levers.repro import NUMERIC_ENV

os.environ.update(NUMERIC_ENV)
os.environ["LEVERS_EXECUTING"] = "1"
