"""Tests for levers.bench: latency, fair comparison, native runs, break-even."""

import dataclasses
import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from levers.bench import Timing, break_even, compare, compare_models, latency, native
from levers.repro import KERNEL_PINS, NATIVE_FLAG

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
