"""Test-wide settings, at the root so that nbval runs over chapters/ and solutions/ get them too.

Every kernel that nbval or a test starts inherits this process's environment: the pinned numeric
settings, and LEVERS_EXECUTING, which keeps progress bars out of stored outputs.
"""

import os

import pytest

from levers.repro import CONFLICTING, NUMERIC_ENV

for _name in CONFLICTING:
    os.environ.pop(_name, None)
os.environ.update(NUMERIC_ENV)
os.environ["LEVERS_EXECUTING"] = "1"


@pytest.fixture
def one_thread():
    """Run a timing test on one intra-op thread, restoring the count after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
