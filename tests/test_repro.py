"""Tests for levers.repro: pinned numeric environment, seeding, environment report."""

import os
import platform
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from levers import repro


@pytest.fixture
def restore_torch_state():
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    mkldnn, nnpack = torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.mkldnn.enabled = mkldnn
    torch.backends.nnpack.set_flags(nnpack)


def test_numeric_env_pins_one_thread_and_vendor_neutral_kernels():
    env = repro.NUMERIC_ENV
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert env[name] == "1"
    # MKL's ISA branches (AVX2, ...) hold on Intel only; COMPATIBLE holds on AMD too
    assert env["MKL_CBWR"] == "COMPATIBLE"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert set(repro.KERNEL_PINS) <= set(env)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())


def test_pin_environment_overrides_the_shell(monkeypatch):
    for name in repro.NUMERIC_ENV:
        monkeypatch.setenv(name, "16")
    monkeypatch.delenv("MKL_CBWR")
    repro.pin_environment()
    for name, value in repro.NUMERIC_ENV.items():
        assert os.environ[name] == value


def test_import_levers_pins_before_torch_loads():
    code = ("import os, levers, torch; "
            "print(os.environ['OMP_NUM_THREADS'], os.environ['MKL_CBWR'], torch.get_num_threads())")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_CBWR": "AUTO"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == ["1", "COMPATIBLE", "1"]


def test_native_flag_lifts_only_the_kernel_pins():
    code = ("import os, levers, torch; "
            "print(os.environ['OMP_NUM_THREADS'], os.environ.get('MKL_CBWR', '-'), "
            "os.environ.get('ATEN_CPU_CAPABILITY', '-'), torch.backends.cpu.get_cpu_capability())")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_CBWR": "AUTO", repro.NATIVE_FLAG: "1",
           "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    threads, cbwr, aten, capability = out.stdout.split()
    assert (threads, cbwr, aten) == ("1", "-", "-")
    assert capability != "DEFAULT"  # PyTorch picked the machine's own vector width


def _weights_after_training(env_extra: dict[str, str]) -> str:
    """SHA-1 of a small MLP's and CNN's outputs after a few SGD steps, in a fresh process."""
    code = """
import hashlib, levers as lv, torch
lv.repro.setup(0)
x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
outs = []
for model in (lv.models.LeNet300100(), lv.models.LeNet5()):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    outs.append(model(x).detach())
outs.append(lv.models.LeNet300100().to(torch.bfloat16)(x.to(torch.bfloat16)).float().detach())
print(hashlib.sha1(b"".join(o.numpy().tobytes() for o in outs)).hexdigest())
"""
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    return out.stdout.strip()


def test_pinned_training_does_not_depend_on_which_instructions_mkl_may_use():
    # MKL_ENABLE_INSTRUCTIONS caps MKL's dispatch, as an older CPU would; under the pins the
    # trained weights must not change (and the test is not vacuous: see the next test)
    hashes = {cap: _weights_after_training({"MKL_ENABLE_INSTRUCTIONS": cap})
              for cap in ("SSE4_2", "AVX2", "AVX512")}
    assert len(set(hashes.values())) == 1, hashes


def test_native_kernels_compute_other_bits_than_the_pinned_ones():
    if "avx2" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("needs an x86 CPU with AVX2")
    assert _weights_after_training({}) != _weights_after_training({repro.NATIVE_FLAG: "1"})


@pytest.mark.usefixtures("restore_torch_state")
def test_setup_makes_every_generator_reproducible():
    def draw():
        return torch.randn(5), np.random.rand(3), random.random()

    repro.setup(seed=123)
    t1, n1, r1 = draw()
    repro.setup(seed=123)
    t2, n2, r2 = draw()
    assert torch.equal(t1, t2) and np.array_equal(n1, n2) and r1 == r2
    repro.setup(seed=124)
    assert not torch.equal(torch.randn(5), t1)


@pytest.mark.usefixtures("restore_torch_state")
def test_setup_pins_one_deterministic_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(False)
    repro.setup()
    assert torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert not torch.backends.mkldnn.enabled
    assert not torch._C._get_nnpack_enabled()


@pytest.mark.usefixtures("restore_torch_state")
def test_setup_default_seed_is_zero():
    repro.setup()
    a = torch.randn(4)
    repro.setup(seed=0)
    assert torch.equal(a, torch.randn(4))


@pytest.mark.usefixtures("restore_torch_state")
def test_setup_accepts_the_largest_numpy_seed():
    repro.setup(seed=2**32 - 1)
    assert torch.initial_seed() == 2**32 - 1


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, 0.0, "0", None, True, np.float64(3)])
def test_setup_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*32 - 1\].*got"):
        repro.setup(seed=seed)


def test_environment_reports_versions_as_strings():
    env = repro.environment()
    assert set(env) == {"python", "torch", "numpy", "machine", "cpu capability", "torch threads"}
    assert all(isinstance(v, str) and v for v in env.values())
    assert env["python"] == platform.python_version()
    assert env["torch"] == torch.__version__
    assert env["numpy"] == np.__version__
    assert env["torch threads"] == str(torch.get_num_threads())
