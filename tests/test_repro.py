"""Tests for levers.repro: pinned numeric environment, seeding, environment report."""

import json
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
    assert env["OPENBLAS_CORETYPE"] == "Haswell"  # NumPy's and SciPy's OpenBLAS, AVX2 family
    assert set(env) - set(repro.KERNEL_PINS) >= {"OMP_NUM_THREADS", "PYTHONHASHSEED"}
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())


AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512 = AVX2 | set(repro.NUMPY_AVX512_GROUPS["X86_V4"])
SAPPHIRE_RAPIDS = AVX2 | {f for need in repro.NUMPY_AVX512_GROUPS.values() for f in need}


@pytest.mark.parametrize("flags, disabled", [
    (AVX2, None),
    (AVX512, "X86_V4"),
    (AVX512 | {"avx512vbmi", "avx512_vbmi2"}, "X86_V4"),  # not all of Ice Lake's group
    (SAPPHIRE_RAPIDS - {"avx512_fp16"}, "X86_V4 AVX512_ICL"),
    (SAPPHIRE_RAPIDS, "X86_V4 AVX512_ICL AVX512_SPR"),
])
def test_numpy_is_held_at_its_avx2_loops_on_every_avx2_cpu(flags, disabled):
    if platform.machine() != "x86_64":
        pytest.skip("the AVX2 pins are for x86-64")
    env = repro.numeric_env(flags)
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env.get("NPY_DISABLE_CPU_FEATURES") == disabled


def test_no_avx2_pin_on_a_cpu_without_avx2():
    # forcing Haswell kernels where AVX2 is missing would stop the process (illegal instruction)
    env = repro.numeric_env(frozenset({"sse4_2", "avx"}))
    assert not {"ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES"} & set(env)
    assert env["MKL_CBWR"] == "COMPATIBLE" and env["OMP_NUM_THREADS"] == "1"


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists() or platform.machine() != "x86_64",
                    reason="reads the flags of an x86-64 Linux machine (the course's target)")
def test_cpu_flags_reads_this_machine():
    assert {"sse2", "avx2"} <= repro.cpu_flags()


def test_pin_environment_overrides_the_shell(monkeypatch):
    for name in repro.NUMERIC_ENV:
        monkeypatch.setenv(name, "16")
    monkeypatch.delenv("MKL_CBWR")
    for name in repro.CONFLICTING:
        monkeypatch.setenv(name, "AVX512F")
    repro.pin_environment()
    for name, value in repro.NUMERIC_ENV.items():
        assert os.environ[name] == value
    assert not set(repro.CONFLICTING) & set(os.environ)


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
    assert set(env) == {"python", "torch", "numpy", "machine", "cpu capability", "torch threads",
                        "numpy blas", "numpy simd"}
    assert all(isinstance(v, str) and v for v in env.values())
    assert env["python"] == platform.python_version()
    assert env["torch"] == torch.__version__
    assert env["numpy"] == np.__version__
    assert env["torch threads"] == str(torch.get_num_threads())


def test_environment_reports_the_blas_kernels_that_run():
    from threadpoolctl import threadpool_info

    env = repro.environment()
    families = {i.get("architecture") for i in threadpool_info() if i["user_api"] == "blas"}
    assert env["numpy blas"] == "openblas Haswell, 1 thread" and families == {"Haswell"}
    assert env["numpy simd"] == "X86_V3"  # NumPy's AVX2 loops, whatever this CPU has beyond


# --- NumPy's kernels: forced to another family by the shell, pinned back by `import levers` ---

#: A NumPy computation that goes through OpenBLAS (polyfit, lstsq, @) and NumPy's SIMD loops.
NUMPY_PROBE = """
import hashlib, json, sys
if sys.argv[1] == "levers":
    import levers
import numpy as np
from threadpoolctl import threadpool_info
rng = np.random.default_rng(0)
a, b = rng.standard_normal((300, 257)), rng.standard_normal(300)
blas = (np.linalg.lstsq(a, b, rcond=None)[0], a @ a.T, np.polyfit(a[:, 0], b, 3))
simd = (np.exp(b), np.log1p(np.abs(b)), np.log10(np.abs(b)))
digest = lambda xs: hashlib.sha1(b"".join(x.tobytes() for x in xs)).hexdigest()
print(json.dumps({"family": [i.get("architecture") for i in threadpool_info()
                             if i["user_api"] == "blas"][0],
                  "blas": digest(blas), "simd": digest(simd)}))
"""


def other_family() -> str:
    """An OpenBLAS kernel family other than Haswell that this CPU can run."""
    return "SkylakeX" if "avx512f" in repro.cpu_flags() else "Sandybridge"


def _numpy_probe(import_levers: bool, **env_extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in (*repro.KERNEL_PINS, *repro.CONFLICTING)}
    out = subprocess.run([sys.executable, "-c", NUMPY_PROBE, "levers" if import_levers else "-"],
                         env={**env, **env_extra}, capture_output=True, text=True, check=True,
                         timeout=120)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def numpy_runs() -> dict[str, dict]:
    if platform.machine() != "x86_64" or "avx2" not in repro.cpu_flags():
        pytest.skip("the AVX2 pins are for x86-64 CPUs with AVX2")
    other = other_family()
    return {"pinned": _numpy_probe(True),
            "pinned against the shell": _numpy_probe(True, OPENBLAS_CORETYPE=other),
            "shell's family": _numpy_probe(False, OPENBLAS_CORETYPE=other),
            "native": _numpy_probe(True, OPENBLAS_CORETYPE=other, **{repro.NATIVE_FLAG: "1"}),
            "unpinned": _numpy_probe(False)}


def test_import_levers_pins_numpy_against_the_shells_kernel_family(numpy_runs):
    pinned, forced = numpy_runs["pinned"], numpy_runs["pinned against the shell"]
    assert pinned["family"] == forced["family"] == "Haswell"
    assert pinned == forced


def test_the_shells_kernel_family_changes_the_bits_without_the_pin(numpy_runs):
    # not vacuous: the family the shell asks for runs, and its bits differ from Haswell's
    shell = numpy_runs["shell's family"]
    assert shell["family"] == other_family()
    assert shell["blas"] != numpy_runs["pinned"]["blas"]


def test_native_kernels_leave_numpy_to_pick_its_own(numpy_runs):
    native, unpinned = numpy_runs["native"], numpy_runs["unpinned"]
    assert native["family"] == unpinned["family"]  # the shell's family was lifted too
    assert native == unpinned


def test_numpy_avx512_loops_compute_other_bits_than_its_avx2_ones(numpy_runs):
    if not repro.numpy_disabled_features(repro.cpu_flags()):
        pytest.skip("this CPU has no AVX-512 loops for NumPy to pick")
    assert numpy_runs["unpinned"]["simd"] != numpy_runs["pinned"]["simd"]
