"""Test-wide settings, at the root so that nbval runs over chapters/ and solutions/ get them too.

Every kernel that nbval or a test starts inherits this process's environment: the pinned numeric
settings, and LEVERS_EXECUTING, which keeps progress bars out of stored outputs.
"""

import os

from levers.repro import CONFLICTING, NUMERIC_ENV

for _name in CONFLICTING:
    os.environ.pop(_name, None)
os.environ.update(NUMERIC_ENV)
os.environ["LEVERS_EXECUTING"] = "1"
