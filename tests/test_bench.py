"""Tests for levers.bench: latency, fair comparison, native runs, break-even, MACs, energy."""

import dataclasses
import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from levers.bench import (
    ENERGY_PJ,
    Timing,
    break_even,
    compare,
    compare_models,
    csr_vs_dense,
    energy_estimate_pj,
    latency,
    macs,
    matmul_formats,
    native,
)
from levers.models import LeNet5, LeNet300100, mlp
from levers.repro import KERNEL_PINS, NATIVE_FLAG


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- latency --------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("repeats", "warmup", "threads"), [(1, 0, 1), (5, 2, 2), (3, 1, 1)])
def test_latency_calls_fn_warmup_plus_repeats_times(repeats, warmup, threads):
    seen = []

    def fn():
        seen.append((torch.get_num_threads(), torch.is_inference_mode_enabled()))

    timing = latency(fn, repeats=repeats, warmup=warmup, threads=threads)
    assert isinstance(timing, Timing)
    assert timing.repeats == repeats and timing.threads == threads
    assert seen == [(threads, True)] * (warmup + repeats)
    assert 0.0 <= timing.minimum <= timing.median
    assert torch.get_num_threads() == 1  # restored


@pytest.mark.usefixtures("one_thread")
def test_latency_restores_threads_when_fn_fails():
    def boom():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        latency(boom, repeats=2, warmup=0, threads=2)
    assert torch.get_num_threads() == 1


def test_latency_of_a_matmul_is_positive():
    a = torch.ones(32, 32)
    timing = latency(lambda: a @ a, repeats=3, warmup=1)
    assert timing.median > 0 and timing.repeats == 3


def test_timing_str_and_frozen():
    t = Timing(median=0.0123, minimum=0.01, repeats=5, threads=2)
    assert str(t) == "12.3 ms (median of 5, 2 thread(s))"
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.median = 1.0


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"fn": 3}, TypeError, r"fn must be callable, got int"),
    ({"repeats": 0}, ValueError, r"repeats must be an int >= 1, got 0"),
    ({"repeats": 2.0}, ValueError, r"repeats must be an int >= 1, got 2.0"),
    ({"repeats": True}, ValueError, r"repeats must be an int >= 1, got True"),
    ({"warmup": -1}, ValueError, r"warmup must be an int >= 0, got -1"),
    ({"threads": 0}, ValueError, r"threads must be an int >= 1, got 0"),
    ({"threads": "2"}, ValueError, r"threads must be an int >= 1, got '2'"),
])
def test_latency_rejects_bad_arguments(kwargs, error, match):
    calls = []
    args = {"fn": lambda: calls.append(1), **kwargs}
    with pytest.raises(error, match=match):
        latency(**args)
    assert calls == []  # nothing ran


# --- compare --------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("rounds", "repeats", "warmup", "threads"),
                         [(1, 1, 0, 1), (3, 2, 1, 2), (2, 4, 2, 1)])
def test_compare_interleaves_rounds_of_warmup_plus_repeats_calls(rounds, repeats, warmup, threads):
    calls = []

    def record(key):
        return lambda: calls.append((key, torch.get_num_threads(),
                                     torch.is_inference_mode_enabled()))

    timings = compare({"a": record("a"), "b": record("b"), "c": record("c")}, rounds=rounds,
                      repeats=repeats, warmup=warmup, threads=threads)
    one_round = [(k, threads, True) for k in "abc" for _ in range(warmup + repeats)]
    assert calls == one_round * rounds  # a, b, c in turn, round after round
    assert list(timings) == ["a", "b", "c"]
    for t in timings.values():
        assert isinstance(t, Timing)
        assert t.repeats == rounds * repeats and t.threads == threads
        assert 0.0 <= t.minimum <= t.median
    assert torch.get_num_threads() == 1  # restored


def test_compare_keeps_any_hashable_keys_in_order():
    a = torch.ones(16, 16)
    timings = compare({0.9: lambda: a @ a, "dense": lambda: a + a, (1, 2): lambda: a * a},
                      rounds=1, repeats=2, warmup=0)
    assert list(timings) == [0.9, "dense", (1, 2)]
    assert all(t.median > 0 for t in timings.values())


@pytest.mark.usefixtures("one_thread")
def test_compare_restores_threads_and_stops_when_a_candidate_fails():
    calls = []

    def boom():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        compare({"ok": lambda: calls.append(1), "bad": boom, "later": lambda: calls.append(2)},
                rounds=3, repeats=2, warmup=0, threads=2)
    assert calls == [1, 1]  # the first candidate's first round, then the failure
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"fns": {}}, ValueError, r"fns must be a non-empty mapping of name to callable, got \{\}"),
    ({"fns": [lambda: None]}, ValueError, r"fns must be a non-empty mapping"),
    ({"fns": {"a": 3}}, TypeError, r"fns\['a'\] must be callable, got int"),
    ({"rounds": 0}, ValueError, r"rounds must be an int >= 1, got 0"),
    ({"rounds": 1.5}, ValueError, r"rounds must be an int >= 1, got 1.5"),
    ({"repeats": 0}, ValueError, r"repeats must be an int >= 1, got 0"),
    ({"warmup": -1}, ValueError, r"warmup must be an int >= 0, got -1"),
    ({"threads": False}, ValueError, r"threads must be an int >= 1, got False"),
])
def test_compare_rejects_bad_arguments(kwargs, error, match):
    calls = []
    args = {"fns": {"a": lambda: calls.append(1)}, **kwargs}
    with pytest.raises(error, match=match):
        compare(**args)
    assert calls == []  # nothing ran


# --- macs -----------------------------------------------------------------------------------


def test_macs_of_lenet300100_is_one_per_weight():
    counts = macs(LeNet300100(), (1, 28, 28))
    assert counts == {"fc1": 784 * 300, "fc2": 300 * 100, "fc3": 100 * 10}
    assert sum(counts.values()) == 784 * 300 + 300 * 100 + 100 * 10


def test_macs_of_lenet5_by_hand():
    # conv: k_h·k_w·c_in · c_out · H_out·W_out; conv1 keeps 28×28 (padding 2), conv2 gives 10×10
    counts = macs(LeNet5(), (1, 28, 28))
    assert counts == {
        "conv1": 5 * 5 * 1 * 6 * 28 * 28,
        "conv2": 5 * 5 * 6 * 16 * 10 * 10,
        "fc1": 16 * 5 * 5 * 120,
        "fc2": 120 * 84,
        "fc3": 84 * 10,
    }


def test_macs_of_strided_grouped_conv_in_a_sequential():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, groups=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 5))
    counts = macs(model, (4, 9, 9))  # (9 − 3) / 2 + 1 = 4
    assert counts == {"0": (4 // 2) * 3 * 3 * 8 * 4 * 4, "3": 8 * 4 * 4 * 5}


def test_macs_does_not_depend_on_batch_or_width_of_input_list():
    assert macs(mlp((784, 10)), [784]) == {"fc1": 7840}
    assert macs(mlp((784, 10)), torch.Size([1, 28, 28])) == {"fc1": 7840}


def test_macs_of_a_model_without_linear_layers_is_empty():
    assert macs(nn.ReLU(), (3,)) == {}


@pytest.mark.parametrize("training", [True, False])
def test_macs_leaves_no_hooks_and_keeps_the_mode(training):
    model = LeNet5()
    model.train(training)
    macs(model, (1, 28, 28))
    assert all(not m._forward_hooks for m in model.modules())
    assert all(m.training is training for m in model.modules())


def test_macs_removes_hooks_when_the_forward_fails():
    model = LeNet5()
    with pytest.raises(ValueError, match="LeNet5 expects images"):
        macs(model, (784,))
    assert all(not m._forward_hooks for m in model.modules())


def test_macs_does_not_touch_gradients():
    model = LeNet300100()
    macs(model, (784,))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("model", "shape", "error", "match"), [
    ("lenet", (1, 28, 28), TypeError, r"model must be a torch.nn.Module, got str"),
    (None, (1, 28, 28), TypeError, r"model must be a torch.nn.Module, got NoneType"),
    (LeNet5(), 784, ValueError, r"input_shape must be a non-empty tuple of positive ints, got 784"),
    (LeNet5(), (), ValueError, r"input_shape must be .*got \(\)"),
    (LeNet5(), (1, 0, 28), ValueError, r"input_shape must be .*got \(1, 0, 28\)"),
    (LeNet5(), (1.0, 28, 28), ValueError, r"input_shape must be .*got \(1.0, 28, 28\)"),
    (LeNet5(), "1x28x28", ValueError, r"input_shape must be .*got '1x28x28'"),
])
def test_macs_rejects_bad_input(model, shape, error, match):
    with pytest.raises(error, match=match):
        macs(model, shape)


# --- energy ---------------------------------------------------------------------------------


def test_energy_table_holds_the_45nm_figures():
    assert ENERGY_PJ["fp32 add"] == 0.9
    assert ENERGY_PJ["fp32 mult"] == 3.7
    assert ENERGY_PJ["sram read 32b"] == 5.0
    assert ENERGY_PJ["dram read 32b"] == 640.0
    assert ENERGY_PJ["int8 add"] < ENERGY_PJ["int32 add"] < ENERGY_PJ["fp32 add"]
    assert ENERGY_PJ["int8 mult"] < ENERGY_PJ["fp16 mult"] < ENERGY_PJ["fp32 mult"]


def test_energy_fp32_in_dram_from_the_table():
    e = energy_estimate_pj(1000, 200)
    assert e["arithmetic"] == pytest.approx(1000 * (ENERGY_PJ["fp32 mult"] + ENERGY_PJ["fp32 add"]))
    assert e["memory"] == pytest.approx(200 * ENERGY_PJ["dram read 32b"])
    assert e["total"] == pytest.approx(e["arithmetic"] + e["memory"])
    assert set(e) == {"arithmetic", "memory", "total"}


@pytest.mark.parametrize("where", ["dram", "sram"])
def test_energy_int8_accumulates_in_int32_and_reads_a_quarter_of_the_words(where):
    fp32 = energy_estimate_pj(5000, 800, fmt="fp32", weights_in=where)
    int8 = energy_estimate_pj(5000, 800, fmt="int8", weights_in=where)
    fp16 = energy_estimate_pj(5000, 800, fmt="fp16", weights_in=where)
    assert int8["arithmetic"] == pytest.approx(
        5000 * (ENERGY_PJ["int8 mult"] + ENERGY_PJ["int32 add"]))
    assert fp16["arithmetic"] == pytest.approx(
        5000 * (ENERGY_PJ["fp16 mult"] + ENERGY_PJ["fp16 add"]))
    assert int8["memory"] == pytest.approx(fp32["memory"] / 4)
    assert fp16["memory"] == pytest.approx(fp32["memory"] / 2)
    assert int8["total"] < fp16["total"] < fp32["total"]


def test_energy_sram_is_cheaper_than_dram_by_the_table_ratio():
    dram = energy_estimate_pj(0, 1000, weights_in="dram")
    sram = energy_estimate_pj(0, 1000, weights_in="sram")
    assert dram["arithmetic"] == sram["arithmetic"] == 0
    assert dram["memory"] / sram["memory"] == pytest.approx(
        ENERGY_PJ["dram read 32b"] / ENERGY_PJ["sram read 32b"])


def test_energy_of_lenet300100_is_dominated_by_dram_reads():
    model = LeNet300100()
    e = energy_estimate_pj(sum(macs(model, (784,)).values()), 266_610)
    assert e["memory"] > 10 * e["arithmetic"]


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    ((10, 10), {"fmt": "bf16"}, r"fmt must be one of \['fp16', 'fp32', 'int8'\], got 'bf16'"),
    ((10, 10), {"fmt": "FP32"}, r"fmt must be one of .*got 'FP32'"),
    ((10, 10), {"weights_in": "hbm"}, r"weights_in must be 'dram' or 'sram', got 'hbm'"),
    ((-1, 10), {}, r"n_macs and n_weight_reads must be non-negative, got -1 and 10"),
    ((10, -5), {}, r"must be non-negative, got 10 and -5"),
    ((float("nan"), 10), {}, r"must be non-negative, got nan and 10"),
])
def test_energy_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        energy_estimate_pj(*args, **kwargs)


# --- break_even -----------------------------------------------------------------------------


def test_break_even_interpolates_the_crossing_linearly():
    # ratio 3, 2, 0.5: crosses 1 between x = 0.5 and 1.0, two thirds of the way (2 → 0.5)
    assert break_even([0.0, 0.5, 1.0], [1.0, 1.0, 1.0], [3.0, 2.0, 0.5]) == pytest.approx(5 / 6)


def test_break_even_uses_the_ratio_when_both_times_vary():
    # ratios 2 and 0.5 at x = 10 and 20: the line crosses 1 two thirds of the way
    assert break_even([10, 20], [1.0, 4.0], [2.0, 2.0]) == pytest.approx(10 + 20 / 3)


def test_break_even_returns_the_first_crossing():
    assert break_even([1, 2, 3, 4], [1, 1, 1, 1], [2.0, 0.5, 2.0, 0.5]) == pytest.approx(1 + 2 / 3)


def test_break_even_at_the_first_point_and_never():
    assert break_even([0.2, 0.4], [1.0, 1.0], [0.9, 0.5]) == 0.2
    assert math.isnan(break_even([0.2, 0.4], [1.0, 1.0], [1.0, 1.5]))  # equal is not faster


def test_break_even_of_equal_ratio_at_a_point_is_that_point():
    assert break_even([0, 1, 2], [2, 2, 2], [4, 2, 1]) == pytest.approx(1.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 100), min_size=2, max_size=8),
       st.lists(st.floats(0.01, 100), min_size=2, max_size=8))
def test_break_even_lies_between_the_bracketing_points(t_a, t_b):
    n = min(len(t_a), len(t_b))
    xs = [float(i) for i in range(n)]
    x = break_even(xs, t_a[:n], t_b[:n])
    faster = [i for i in range(n) if t_b[i] < t_a[i]]
    if not faster:
        assert math.isnan(x)
    else:
        i = faster[0]
        assert (xs[i - 1] if i else xs[0]) <= x <= xs[i]


@pytest.mark.parametrize(("xs", "t_a", "t_b", "match"), [
    ([], [], [], r"xs must be a non-empty sequence of numbers, got \[\]"),
    ("abc", [1, 1, 1], [1, 1, 1], r"xs must be a non-empty sequence of numbers, got 'abc'"),
    ([0, 1], 1.0, [1, 1], r"t_a must be a non-empty sequence of numbers, got 1.0"),
    ([0, 1], [1, 1], [1, "2"], r"t_b must hold finite numbers only, got \[1, '2'\]"),
    ([0, float("nan")], [1, 1], [1, 1], r"xs must hold finite numbers only, got \[0, nan\]"),
    ([0, 1], [1, True], [1, 1], r"t_a must hold finite numbers only"),
    ([0, 1, 2], [1, 1], [1, 1], r"xs, t_a and t_b must have the same length, got 3, 2 and 2"),
    ([0, 1, 1], [1, 1, 1], [1, 1, 1], r"xs must be strictly increasing, got \[0, 1, 1\]"),
    ([1, 0], [1, 1], [1, 1], r"xs must be strictly increasing, got \[1, 0\]"),
    ([0, 1], [1, 0], [1, 1], r"t_a and t_b must be positive times, got \[1, 0\] and \[1, 1\]"),
    ([0, 1], [1, 1], [-1, 1], r"t_a and t_b must be positive times"),
])
def test_break_even_rejects_bad_input(xs, t_a, t_b, match):
    with pytest.raises(ValueError, match=match):
        break_even(xs, t_a, t_b)


# --- native: benchmarks in a fresh process with the machine's own kernels --------------------


def test_native_returns_the_result_computed_in_a_child_with_kernel_pins_lifted():
    names = (NATIVE_FLAG, *KERNEL_PINS, "OMP_NUM_THREADS")
    env = {name: native(os.getenv, name) for name in names}
    assert env[NATIVE_FLAG] == "1"
    assert all(env[name] is None for name in KERNEL_PINS), env
    assert env["OMP_NUM_THREADS"] == "1"  # threads stay pinned; benchmarks set them explicitly
    assert native(os.getpid) != os.getpid()
    assert os.environ["MKL_CBWR"] == "COMPATIBLE"  # the parent's pins are untouched


def test_native_passes_tensors_models_and_keyword_arguments():
    t = native(compare_models, {"a": nn.Linear(3, 2), "b": nn.Identity()}, torch.ones(4, 3),
               rounds=2, repeats=3)
    assert list(t) == ["a", "b"] and all(v.repeats == 6 and v.minimum > 0 for v in t.values())


def notebook_style_function():
    return 1


notebook_style_function.__module__ = "__main__"


@pytest.mark.parametrize("fn", [lambda: 1, notebook_style_function, "os.getpid", 3,
                                os.environ.copy, torch.ones(1).sum])
def test_native_rejects_functions_the_child_cannot_import(fn):
    with pytest.raises(TypeError, match="top level of an importable module"):
        native(fn)


def test_native_rejects_unpicklable_arguments():
    with pytest.raises(TypeError, match="must be picklable"):
        native(compare_models, {"gen": (x for x in [])}, torch.ones(1))


def test_native_reports_the_childs_error():
    with pytest.raises(RuntimeError, match=r"(?s)compare_models failed.*must be a torch.nn.Module"):
        native(compare_models, {"x": 3}, torch.ones(1))


@pytest.mark.parametrize("timeout", [0, -1.0, math.nan, "5"])
def test_native_rejects_bad_timeouts(timeout):
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        native(os.getpid, timeout=timeout)


@pytest.mark.usefixtures("one_thread")
def test_matmul_formats_times_the_four_formats():
    t = matmul_formats(8, 16, 4, rounds=1, repeats=2)
    assert list(t) == ["fp32", "fp16", "bf16", "int8"]
    assert all(v.repeats == 2 and v.minimum > 0 for v in t.values())


@pytest.mark.parametrize("shape", [(0, 4, 4), (4, -1, 4), (4, 4, 2.0)])
def test_matmul_formats_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        matmul_formats(*shape)


@pytest.mark.usefixtures("one_thread")
def test_csr_vs_dense_times_dense_and_each_sparsity():
    w = torch.randn(6, 5)
    t = csr_vs_dense(w, torch.randn(5, 3), [0.0, 0.5, 0.9], rounds=1, repeats=2)
    assert list(t) == ["dense", 0.0, 0.5, 0.9]
    assert all(v.minimum > 0 for v in t.values())


@pytest.mark.parametrize(("w", "x", "match"), [
    (torch.randn(6), torch.randn(6, 1), "weight must be a 2-D tensor"),
    (torch.randn(6, 5), torch.randn(4, 3), "x must be a 2-D tensor with 5 rows"),
    (torch.randn(6, 5), [1.0], "x must be a 2-D tensor"),
])
def test_csr_vs_dense_rejects_bad_shapes(w, x, match):
    with pytest.raises(ValueError, match=match):
        csr_vs_dense(w, x, [0.5])


def test_csr_vs_dense_rejects_bad_sparsities():
    with pytest.raises(ValueError, match="amount"):
        csr_vs_dense(torch.randn(6, 5), torch.randn(5, 3), [1.5])


@pytest.mark.parametrize(("models", "error", "match"), [
    ({}, ValueError, "non-empty mapping"),
    ([nn.Identity()], ValueError, "non-empty mapping"),
    ({"m": "model"}, TypeError, r"models\['m'\] must be a torch.nn.Module"),
])
def test_compare_models_rejects_bad_models(models, error, match):
    with pytest.raises(error, match=match):
        compare_models(models, torch.ones(1))


def test_compare_models_puts_models_in_eval_mode():
    model = nn.Dropout(0.5).train()
    compare_models({"d": model}, torch.ones(8), rounds=1, repeats=1)
    assert not model.training
