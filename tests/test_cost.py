"""Tests for levers.cost: MACs against hand counts, bytes moved, the energy model's table, the
CPU's peak read from /proc/cpuinfo."""

import math

import pytest
import torch
from torch import nn

from levers.cost import ENERGY_PJ, energy_estimate_pj, macs, peak
from levers.models import LeNet5, LeNet300100, mlp

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
    ("lenet", (1, 28, 28), TypeError, r"model must be a torch.nn.Module, got 'lenet'"),
    (None, (1, 28, 28), TypeError, r"model must be a torch.nn.Module, got None"),
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
    ((10, 10), {"fmt": "bf16"}, r"fmt must be one of \('fp32', 'fp16', 'int8'\), got 'bf16'"),
    ((10, 10), {"fmt": "FP32"}, r"fmt must be one of .*got 'FP32'"),
    ((10, 10), {"weights_in": "hbm"}, r"weights_in must be one of \('dram', 'sram'\), got 'hbm'"),
    ((-1, 10), {}, r"n_macs must be an int >= 0, got -1"),
    ((10, -5), {}, r"n_weight_reads must be an int >= 0, got -5"),
    ((float("nan"), 10), {}, r"n_macs must be an int >= 0, got nan"),
])
def test_energy_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        energy_estimate_pj(*args, **kwargs)


def test_peak_reads_vector_width_and_clock_from_cpuinfo():
    text = "flags : fpu avx2 avx512f amx_int8 fma\ncpu MHz : 2100.000\ncpu MHz : 1800\n"
    p = peak(text)
    assert (p.lanes, p.units, p.clock_ghz) == (16, 2, 2.1)
    assert p.gflops == pytest.approx(134.4) and p.matrix_flags == ("amx_int8",)
    assert p.share(134.4e9, 1.0) == pytest.approx(1.0)
    assert "134 GFLOP/s" in str(p)
    assert peak("flags : sse2\n").lanes == 4
    assert math.isnan(peak("").gflops)


def test_peak_names_its_bad_arguments():
    with pytest.raises(ValueError, match="units"):
        peak("", units=0)
    with pytest.raises(ValueError, match="cpuinfo"):
        peak(b"flags")
    with pytest.raises(ValueError, match="seconds"):
        peak("flags : avx2\ncpu MHz : 1000").share(1.0, 0.0)
