"""Every public function names the argument it refuses (scikit-learn's standard).

For each public function of the library, a call with valid arguments must work; the same call
with any one argument replaced by an object of a type nothing accepts must raise a `TypeError` or
`ValueError` whose message starts with that argument's name. The specific leaks the review found
(an `AttributeError` from deep inside, a comparison error, a silently wrong answer) are pinned
below the table.
"""

import inspect
import re

import numpy as np
import pytest
import torch
from torch import nn

import levers
from levers import (
    accumulate,
    bench,
    bits,
    calibration,
    clipping,
    compress,
    cost,
    deepcompress,
    distill,
    encode,
    float32,
    formats,
    gptq,
    huffman,
    integer,
    kernels,
    kmeans,
    lottery,
    metrics,
    mixed,
    models,
    mx,
    policy,
    prune,
    qmodel,
    quant,
    regularize,
    saliency,
    schedule,
    share,
    structured,
    structured_formats,
    train,
)
from levers._checks import InvalidArgument
from levers.data import Split

MODULES = (accumulate, bench, bits, calibration, clipping, compress, cost, deepcompress, distill,
           encode, float32, formats, gptq, huffman, integer, kernels, kmeans, lottery, metrics,
           mixed, models, mx, policy, prune, qmodel, quant, regularize, saliency, schedule, share,
           structured, structured_formats, train)


class Wrong:
    """A value of a type no levers function accepts."""

    def __repr__(self) -> str:
        return "<wrong>"


WRONG = Wrong()
MLP = models.MLP((4, 3, 2))
QP = quant.QParams(torch.tensor(0.5), torch.tensor(0, dtype=torch.int32), quant.QScheme())
CB = kmeans.kmeans_quantize(torch.linspace(-1, 1, 8), bits=1)
MASKS = {"fc1.weight": torch.ones(3, 4, dtype=torch.bool)}
SPLIT = Split(torch.rand(8, 4), torch.zeros(8, dtype=torch.long), torch.rand(4, 4),
              torch.zeros(4, dtype=torch.long))


def fq_mlp() -> nn.Module:
    return qmodel.quantize_(models.MLP((4, 3, 2)), qmodel.QuantConfig(), torch.rand(5, 4))


#: Valid keyword arguments of each public function (the arguments every test varies).
VALID = {
    accumulate.round_stochastic: lambda: {"x": torch.randn(4), "fmt": formats.BF16,
                                          "generator": torch.Generator()},
    accumulate.running_sum: lambda: {"x": torch.randn(4), "fmt": formats.FP16,
                                     "method": "stochastic", "generator": torch.Generator()},
    float32.fields: lambda: {"x": torch.randn(4)},
    float32.pow2: lambda: {"k": torch.tensor([-3, 0, 2])},
    cost.peak: lambda: {"cpuinfo": "flags : avx2\ncpu MHz : 1000", "units": 2},
    clipping.mse_parts: lambda: {"alpha": 2.0, "bits": 4, "dist": "laplace",
                                 "quantizer": "midrise"},
    clipping.clip_mse: lambda: {"alpha": 2.0, "bits": 4, "dist": "gaussian",
                                "quantizer": "midrise"},
    clipping.optimal_clip: lambda: {"bits": 4, "dist": "gaussian", "quantizer": "noise"},
    prune.taylor_scores: lambda: {"model": MLP, "x": torch.rand(3, 4),
                                  "y": torch.tensor([0, 1, 1]), "batch_size": 2},
    compress.importance: lambda: {"model": MLP, "criterion": "random", "x": None, "y": None,
                                  "generator": torch.Generator()},
    compress.masks_from_scores: lambda: {"scores": {"a": torch.rand(4)}, "amount": 0.5,
                                         "scope": "layer"},
    compress.prune: lambda: {"model": models.MLP((4, 3, 2)), "amount": 0.5,
                             "criterion": "magnitude", "scope": "global", "x": None, "y": None,
                             "generator": None},
    compress.finetune: lambda: {"model": models.MLP((4, 3, 2)), "masks": MASKS,
                                "split": SPLIT},
    compress.iterative_amounts: lambda: {"sparsity": 0.9, "rounds": 3},
    compress.iterative: lambda: {"model": models.MLP((4, 3, 2)), "split": SPLIT,
                                 "sparsity": 0.5, "rounds": 1, "epochs_per_round": 1,
                                 "criterion": "magnitude", "scope": "global"},
    compress.gradual_hook: lambda: {"masks": dict(MASKS), "s_f": 0.5, "t0": 1, "n": 2,
                                    "dt": 1, "s_i": 0.0, "scope": "global"},
    compress.gradual: lambda: {"model": models.MLP((4, 3, 2)), "split": SPLIT,
                               "sparsity": 0.5, "epochs": 2, "t0": 1, "n": 1, "dt": 1,
                               "scope": "global"},
    lottery.snapshot_hook: lambda: {"at_step": 1, "store": {}},
    lottery.rewind: lambda: {"model": models.MLP((4, 3, 2)), "masks": MASKS,
                             "state": models.MLP((4, 3, 2)).state_dict()},
    lottery.reinit: lambda: {"model": models.MLP((4, 3, 2)), "masks": MASKS, "seed": 1},
    deepcompress.LayerFormat: lambda: {"bits": 4, "index_bits": 5, "coding": "fixed"},
    deepcompress.relative_indices: lambda: {"mask": torch.tensor([True, False, True]),
                                            "index_bits": 2},
    deepcompress.positions_from_gaps: lambda: {"gaps": torch.tensor([1, 3, 1])},
    deepcompress.layer_streams: lambda: {"w": torch.tensor([0.0, 0.5, 0.0, -0.5]),
                                         "fmt": deepcompress.LayerFormat(2, 1)},
    deepcompress.serialize: lambda: {"model": MLP, "formats": {}},
    deepcompress.parts: lambda: {"data": deepcompress.serialize(MLP, {})},
    deepcompress.deserialize: lambda: {"data": deepcompress.serialize(MLP, {})},
    deepcompress.load: lambda: {"model": models.MLP((4, 3, 2)),
                                "data": deepcompress.serialize(MLP, {})},
    distill.softmax_t: lambda: {"logits": torch.randn(2, 3), "T": 2.0},
    distill.distillation_loss: lambda: {"student_logits": torch.randn(2, 3),
                                        "teacher_logits": torch.randn(2, 3),
                                        "y": torch.tensor([0, 2]), "T": 2.0, "alpha": 0.5,
                                        "target": "hard"},
    distill.soft_gradient: lambda: {"student_logits": torch.randn(2, 3),
                                    "teacher_logits": torch.randn(2, 3), "T": 2.0,
                                    "scaled": False},
    distill.distill: lambda: {"student": models.MLP((4, 2)), "teacher": models.MLP((4, 2)),
                              "split": SPLIT, "T": 2.0, "alpha": 0.5, "target": "soft"},
    huffman.encode_stream: lambda: {"symbols": [1, 2, 2], "lengths": {1: 1, 2: 1}},
    huffman.decode_stream: lambda: {"data": huffman.encode_stream([1, 2, 2], {1: 1, 2: 1})[0],
                                    "lengths": {1: 1, 2: 1}, "n": 3},
    huffman.symbol_counts: lambda: {"stream": [1, 2, 2]},
    huffman.entropy: lambda: {"counts": {1: 1, 2: 2}},
    huffman.entropy_bytes: lambda: {"symbols": torch.tensor([0, 0, 1, 2])},
    huffman.code_lengths: lambda: {"counts": {1: 1, 2: 2}},
    huffman.canonical_codes: lambda: {"lengths": {1: 1, 2: 1}},
    huffman.kraft_sum: lambda: {"lengths": {1: 1, 2: 1}},
    huffman.expected_length: lambda: {"counts": {1: 1, 2: 2}, "lengths": {1: 1, 2: 1}},
    mixed.DynamicScale: lambda: {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                 "growth_interval": 10, "good_steps": 0},
    mixed.fit_mixed: lambda: {"model": models.MLP((4, 2)), "split": SPLIT, "epochs": 1,
                              "lr": 0.1, "batch_size": 4, "momentum": 0.0,
                              "fmt": formats.BF16, "loss_scale": 1.0,
                              "master_weights": True, "seed": 0},
    mx.e8m0_decode: lambda: {"code": torch.tensor([127], dtype=torch.uint8)},
    mx.e8m0_encode: lambda: {"x": torch.tensor([1.0, 0.25])},
    mx.mx_quantize: lambda: {"x": torch.randn(64), "fmt": formats.FP4_E2M1,
                             "block_size": 32},
    mx.mx_dequantize: lambda: dict(zip(("scale_code", "elements"),
                                       mx.mx_quantize(torch.randn(64), formats.FP4_E2M1),
                                       strict=True), shape=(64,)),
    mx.mx_round: lambda: {"x": torch.randn(64), "fmt": formats.FP4_E2M1,
                          "block_size": 32},
    mx.mx_bits_per_element: lambda: {"fmt": formats.FP4_E2M1, "block_size": 32},
    saliency.hessian: lambda: {"loss_fn": lambda w: (w ** 2).sum(), "w": torch.ones(3)},
    saliency.hessian_diagonal: lambda: {"loss_fn": lambda w: (w ** 2).sum(),
                                        "w": torch.ones(3)},
    saliency.obd_saliency: lambda: {"w": torch.ones(3), "h_diag": torch.ones(3)},
    saliency.obs_saliency: lambda: {"w": torch.ones(3), "h_inv": torch.eye(3)},
    saliency.obs_update: lambda: {"w": torch.ones(3), "h_inv": torch.eye(3), "q": 1},
    saliency.removal_loss_change: lambda: {"loss_fn": lambda w: (w ** 2).sum(),
                                           "w": torch.ones(3)},
    bench.latency: lambda: {"fn": lambda: None, "repeats": 1, "warmup": 0, "threads": 1},
    bench.compare: lambda: {"fns": {"a": lambda: None}, "rounds": 1, "repeats": 1, "warmup": 0,
                            "threads": 1},
    bench.compare_models: lambda: {"models": {"m": MLP}, "x": torch.rand(2, 4), "rounds": 1,
                                   "repeats": 1},
    bench.break_even: lambda: {"xs": [0.0, 1.0], "t_a": [1.0, 1.0], "t_b": [2.0, 0.5]},
    calibration.choose_qparams_affine: lambda: {"x": torch.randn(8), "scheme": quant.QScheme(),
                                                "method": "percentile", "percentile": 99.0,
                                                "grid": 10},
    cost.macs: lambda: {"model": MLP, "input_shape": (4,)},
    cost.energy_estimate_pj: lambda: {"n_macs": 10, "n_weight_reads": 10, "fmt": "int8",
                                      "weights_in": "sram"},
    cost.bytes_moved: lambda: {"model": MLP, "input_shape": (4,), "weight_bits": 8,
                               "act_bits": 8},
    encode.encode: lambda: {"w": torch.eye(3), "fmt": "csr", "index_bytes": 2},
    encode.decode: lambda: {"data": encode.encode(torch.eye(3), "coo", 2), "fmt": "coo",
                            "shape": (3, 3), "dtype": torch.float32, "index_bytes": 2},
    encode.formula_bytes: lambda: {"fmt": "csr", "shape": (3, 3), "nnz": 3, "value_bytes": 4,
                                   "index_bytes": 4},
    encode.compression_ratio: lambda: {"original_bytes": 10, "compressed_bytes": 5},
    structured_formats.encode_nm: lambda: {"w": torch.tensor([[0.0, 1.0, 0.0, 2.0]]), "n": 2,
                                           "m": 4},
    structured_formats.decode_nm: lambda: {
        "data": structured_formats.encode_nm(torch.tensor([[0.0, 1.0, 0.0, 2.0]])),
        "shape": (1, 4), "n": 2, "m": 4, "dtype": torch.float32},
    structured_formats.nm_bytes: lambda: {"shape": (1, 4), "n": 2, "m": 4, "value_bytes": 4},
    structured_formats.encode_bsr: lambda: {"w": torch.eye(4), "block": (2, 2),
                                            "index_bytes": 4},
    structured_formats.decode_bsr: lambda: {
        "data": structured_formats.encode_bsr(torch.eye(4), (2, 2)), "shape": (4, 4),
        "block": (2, 2), "dtype": torch.float32, "index_bytes": 4},
    structured_formats.bsr_bytes: lambda: {"shape": (4, 4), "n_blocks": 2, "block": (2, 2),
                                           "value_bytes": 4, "index_bytes": 4},
    encode.pack_bits: lambda: {"q": torch.tensor([1, 2, 3]), "bits": 2},
    encode.unpack_bits: lambda: {"packed": torch.tensor([57], dtype=torch.uint8), "bits": 2,
                                 "n": 4},
    encode.codebook_bytes: lambda: {"codebook": CB},
    encode.export: lambda: {"model": fq_mlp()},
    formats.FloatFormat: lambda: {"name": "fp6", "exponent_bits": 3, "mantissa_bits": 2,
                                  "has_inf": False, "saturate": True},
    formats.IntFormat: lambda: {"bits": 4, "signed": False},
    formats.float_format: lambda: {"fmt": "fp16"},
    formats.round_to_format: lambda: {"x": torch.randn(4), "fmt": "bf16"},
    bits.compose: lambda: {"sign": torch.tensor([0]), "exponent": torch.tensor([15]),
                              "mantissa": torch.tensor([0]), "fmt": "fp16"},
    bits.decompose: lambda: {"x": torch.randn(4), "fmt": "fp16"},
    bits.bit_string: lambda: {"value": 1.5, "fmt": "fp16"},
    bits.spacing: lambda: {"x": torch.randn(4), "fmt": "fp16"},
    bits.representable_values: lambda: {"fmt": "fp8_e4m3"},
    integer.quantize_multiplier: lambda: {"m": 0.1},
    integer.requantize: lambda: dict(zip(("m0", "n"), integer.quantize_multiplier(0.25),
                                         strict=True), acc=torch.tensor([3, 4])),
    integer.int_mlp: lambda: {"model": fq_mlp(), "calibration": torch.rand(5, 4), "bits": 8},
    integer.torch_int8_linear: lambda: {"fq": fq_mlp().fc1, "out_qp": fq_mlp().fc2.act_qp,
                                        "q_x": torch.zeros(2, 4, dtype=torch.uint8),
                                        "relu": True},
    gptq.hessian: lambda: {"x": torch.rand(5, 4)},
    gptq.gptq_quantize: lambda: {"w": torch.randn(3, 4), "h": torch.eye(4, dtype=torch.float64),
                                 "qp": calibration.choose_qparams_affine(
                                     torch.ones(3, 4), quant.QScheme(axis=0)), "damp": 0.01},
    gptq.output_error: lambda: {"w": torch.ones(2, 3), "w_hat": torch.zeros(2, 3),
                                "h": torch.eye(3, dtype=torch.float64)},
    gptq.bias_correction: lambda: {"w": torch.ones(2, 3), "w_hat": torch.zeros(2, 3),
                                   "x_mean": torch.ones(3)},
    gptq.quantize_weights_: lambda: {"model": models.MLP((4, 2)), "scheme": quant.QScheme(),
                                     "calibration": torch.rand(3, 4), "method": "rtn",
                                     "correct_bias": True, "damp": 0.01},
    integer.lsb_error: lambda: {"q": torch.tensor([1, 2]), "q_ref": torch.tensor([1, 3])},
    kernels.matmul_formats: lambda: {"batch": 2, "n_in": 4, "n_out": 3, "rounds": 1,
                                     "repeats": 1},
    kernels.csr_vs_dense_runs: lambda: {"weight": torch.randn(3, 4), "x": torch.randn(4, 2),
                                        "sparsities": [0.5], "runs": 1, "rounds": 1,
                                        "repeats": 1},
    kernels.csr_vs_dense: lambda: {"weight": torch.randn(3, 4), "x": torch.randn(4, 2),
                                   "sparsities": [0.5], "rounds": 1, "repeats": 1},
    kmeans.kmeans_quantize: lambda: {"w": torch.randn(16), "bits": 2, "init": "k-means++",
                                     "tol": 1e-4, "iters": 50, "seed": 1},
    kernels.batch_sweep: lambda: {"models": {"m": MLP}, "x": torch.rand(2, 4), "batches": [1],
                                  "rounds": 1, "repeats": 1},
    kernels.kernel_report: lambda: {"models": {"m": MLP}, "x": torch.rand(2, 4)},
    kmeans.lloyd: lambda: {"x": torch.randn(16), "centroids": torch.tensor([-1.0, 1.0]),
                           "iters": 3, "tol": 0.0, "empty": "farthest"},
    kmeans.kmeans_dequantize: lambda: {"codebook": CB},
    metrics.confusion_matrix: lambda: {"y_true": torch.tensor([0, 1]),
                                       "y_pred": torch.tensor([1, 1]), "n_classes": 3},
    metrics.classification_report: lambda: {"cm": torch.tensor([[2, 1], [0, 3]])},
    metrics.accuracy: lambda: {"y_true": torch.tensor([0, 1]), "y_pred": torch.tensor([1, 1])},
    metrics.mse: lambda: {"a": torch.ones(3), "b": torch.zeros(3)},
    metrics.cross_entropy: lambda: {"logits": torch.zeros(2, 3), "y": torch.tensor([0, 2])},
    metrics.density: lambda: {"t": torch.tensor([0.0, 1.0])},
    metrics.sparsity: lambda: {"t": torch.tensor([0.0, 1.0])},
    metrics.weight_sparsity: lambda: {"model": MLP},
    metrics.activation_sparsity: lambda: {"model": MLP, "x": torch.rand(3, 4)},
    metrics.sqnr_db: lambda: {"x": torch.ones(3), "x_hat": torch.zeros(3)},
    models.MLP: lambda: {"sizes": (4, 2)},
    models.mlp: lambda: {"sizes": (4, 2)},
    models.count_params: lambda: {"model": MLP, "nonzero": True},
    policy.LayerPolicy: lambda: {"sparsity": 0.5, "bits": 4, "granularity": "element",
                                 "coding": "huffman", "index_bits": 5},
    policy.check_policy: lambda: {"model": MLP, "policy": {"fc1": policy.LayerPolicy(0.5, 4)}},
    policy.apply: lambda: {"model": models.MLP((4, 3, 2)),
                           "policy": {"fc1": policy.LayerPolicy(0.5, 2)}, "split": SPLIT,
                           "prune_epochs": 1, "share_epochs": 1, "lr": 0.05,
                           "share_lr": 0.001, "seed": 0},
    policy.peak_activation_bytes: lambda: {"model": MLP, "input_shape": (1, 4),
                                           "act_bits": 8},
    prune.magnitude_mask: lambda: {"w": torch.randn(8), "amount": 0.5},
    prune.global_magnitude_masks: lambda: {"weights": {"a": torch.randn(4)}, "amount": 0.5},
    prune.random_mask: lambda: {"w": torch.randn(8), "amount": 0.5,
                                "generator": torch.Generator()},
    structured.structured_mask: lambda: {"w": torch.randn(4, 3), "amount": 0.5, "dim": 1,
                                         "p": 1.0},
    structured.nm_mask: lambda: {"w": torch.randn(2, 4), "n": 2, "m": 4},
    prune.prunable: lambda: {"model": MLP},
    prune.compute_masks: lambda: {"model": MLP, "amount": 0.5, "method": "random",
                                  "scope": "global", "generator": torch.Generator()},
    prune.apply_masks: lambda: {"model": models.MLP((4, 3, 2)), "masks": MASKS},
    structured.neuron_masks: lambda: {"model": MLP, "amount": 0.5, "p": 2.0},
    structured.shrink_mlp: lambda: {"model": MLP, "amount": 0.5, "p": 2.0},
    prune.std_threshold_masks: lambda: {"weights": {"a": torch.randn(4)}, "quality": 1.0},
    structured.block_mask: lambda: {"w": torch.randn(4, 4), "amount": 0.5, "block": (2, 2)},
    structured.channel_masks: lambda: {"model": models.LeNet5(), "amount": 0.5, "p": 1.0},
    structured.shrink_cnn: lambda: {"model": models.LeNet5(), "amount": 0.5, "p": 1.0},
    qmodel.QuantConfig: lambda: {"weight": quant.QScheme(bits=4), "act": None,
                                 "weight_method": "mse", "act_method": "minmax"},
    qmodel.FakeQuantLayer: lambda: {"layer": nn.Linear(2, 2), "config": qmodel.QuantConfig()},
    qmodel.quantizable: lambda: {"model": MLP},
    qmodel.calibrate_: lambda: {"model": fq_mlp(), "x": torch.rand(3, 4)},
    qmodel.quantize_: lambda: {"model": models.MLP((4, 2)), "config": qmodel.QuantConfig(),
                               "calibration": torch.rand(3, 4)},
    quant.QScheme: lambda: {"bits": 4, "signed": True, "symmetric": False, "axis": 0,
                            "group_size": 2},
    quant.QParams: lambda: {"scale": torch.tensor(0.5),
                            "zero_point": torch.tensor(0, dtype=torch.int32),
                            "scheme": quant.QScheme()},
    quant.blocks: lambda: {"x": torch.randn(4, 2), "scheme": quant.QScheme(axis=0)},
    quant.choose_qparams_affine_with_min_max: lambda: {"lo": torch.tensor(-1.0),
                                                       "hi": torch.tensor(1.0),
                                                       "scheme": quant.QScheme()},
    quant.quantize_affine: lambda: {"x": torch.randn(4), "qp": QP},
    quant.dequantize_affine: lambda: {"q": torch.tensor([1, -2]), "qp": QP},
    quant.fake_quantize_affine: lambda: {"x": torch.randn(4), "qp": QP},
    regularize.l1_penalty: lambda: {"model": MLP, "lam": 0.1},
    regularize.group_lasso_penalty: lambda: {"model": MLP, "lam": 0.1},
    regularize.subgradient_step: lambda: {"w": torch.ones(3), "grad": torch.ones(3),
                                          "lr": 0.1, "lam": 0.1},
    regularize.proximal_step: lambda: {"w": torch.ones(3), "grad": torch.ones(3), "lr": 0.1,
                                       "lam": 0.1},
    regularize.soft_threshold: lambda: {"w": torch.ones(3), "t": 0.1},
    regularize.group_soft_threshold: lambda: {"w": torch.ones(3, 2), "t": 0.1},
    regularize.proximal_hook: lambda: {"lr": 0.1, "lam": 0.1},
    regularize.neuron_groups: lambda: {"model": MLP},
    regularize.neuron_lasso_penalty: lambda: {"model": MLP, "lam": 0.1},
    regularize.neuron_lasso_hook: lambda: {"lr": 0.1, "lam": 0.1},
    regularize.alive_neurons: lambda: {"model": MLP},
    regularize.shrink_to_alive: lambda: {"model": MLP},
    schedule.mask_hook: lambda: {"masks": MASKS},
    schedule.gradual_sparsity: lambda: {"t": 5, "s_i": 0.0, "s_f": 0.9, "t0": 0, "n": 4, "dt": 2},
    schedule.regrow: lambda: {"mask": torch.tensor([True, False]), "w": torch.ones(2),
                              "grad": torch.ones(2), "fraction": 0.5},
    schedule.regrow_hook: lambda: {"masks": dict(MASKS), "every": 2, "fraction": 0.5},
    share.init_centroids: lambda: {"x": torch.randn(8), "k": 2, "method": "random",
                                   "generator": torch.Generator()},
    share.Shared: lambda: {"centroids": torch.tensor([0.0, 1.0]),
                           "indices": torch.tensor([0, 1, 1])},
    share.share: lambda: {"w": torch.randn(8), "bits": 1, "init": "linear", "iters": 3,
                          "generator": None},
    share.centroid_grad: lambda: {"weight_grad": torch.ones(3),
                                  "indices": torch.tensor([1, 0, 1]), "k": 2},
    share.SharedModel: lambda: {"model": MLP,
                                "shared": {"fc1.weight": share.share(MLP.fc1.weight, 1)}},
    share.finetune: lambda: {"model": models.MLP((4, 3, 2)),
                             "shared": {"fc1.weight": share.share(torch.randn(3, 4), 1)},
                             "split": SPLIT},
    train.predict: lambda: {"model": MLP, "x": torch.rand(3, 4), "batch_size": 2},
    train.evaluate: lambda: {"model": MLP, "x": torch.rand(3, 4), "y": torch.tensor([0, 1, 1])},
    train.fit: lambda: {"model": models.MLP((4, 2)), "split": SPLIT, "epochs": 1, "lr": 0.1,
                        "batch_size": 4, "optimizer": "sgd", "momentum": 0.0,
                        "weight_decay": 0.0, "loss_fn": None, "transform": None,
                        "after_step": None, "seed": 0, "desc": "t"},
}

#: Arguments that accept any object by design, with the reason.
ANY_OBJECT = {
    (encode.saved_bytes, "obj"): "torch.save accepts any picklable object",
    (train.fit, "desc"): "only a label for the progress bar",
    (lottery.snapshot_hook, "store"): "any mapping the caller wants the state written into",
}

#: Public functions outside the table, with the reason.
NOT_IN_TABLE = {
    bench.native: "forwards its arguments to another function (tested in test_bench)",
    compress.chain: "takes any number of hooks (each checked; tested in test_compress)",
    encode.saved_bytes: "takes any object",
    quant.check_scheme: "is itself a check",
    kmeans.ConvergenceWarning: "a warning class, raised by kmeans_quantize",
    train.show_progress: "takes no arguments",
}


def public_callables() -> list:
    found = []
    for module in MODULES:
        for name, obj in vars(module).items():
            if (not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__
                    and (inspect.isfunction(obj) or inspect.isclass(obj))):
                found.append(obj)
    return found


def test_every_public_function_is_in_the_table_or_excused():
    missing = [f"{f.__module__}.{f.__qualname__}" for f in public_callables()
               if f not in VALID and f not in NOT_IN_TABLE and not _is_plain_container(f)]
    assert not missing, f"add these to VALID (or NOT_IN_TABLE with a reason): {missing}"


def _is_plain_container(obj) -> bool:
    """Results and models built by the library itself (Timing, Split, Codebook, LeNet5, …)."""
    return inspect.isclass(obj) and obj not in VALID and not inspect.signature(obj).parameters \
        or obj in (bench.Timing, cost.Peak, policy.Compressed, levers.data.Split, kmeans.Codebook,
                   metrics.ClassReport, train.History, integer.IntLinear, integer.IntMLP,
                   mixed.MixedHistory)


CASES = [(fn, name) for fn, make in VALID.items() for name in make()
         if (fn, name) not in ANY_OBJECT]


@pytest.mark.parametrize("fn", list(VALID), ids=lambda f: f.__qualname__)
def test_valid_arguments_work(fn):
    fn(**VALID[fn]())


@pytest.mark.parametrize(("fn", "name"), CASES,
                         ids=[f"{f.__module__.removeprefix('levers.')}.{f.__qualname__}-{n}"
                              for f, n in CASES])
def test_a_wrong_type_is_refused_naming_the_argument(fn, name):
    kwargs = {**VALID[fn](), name: WRONG}
    with pytest.raises((TypeError, ValueError)) as info:
        fn(**kwargs)
    message = str(info.value)
    assert re.match(rf"{re.escape(name)}\b", message), message
    assert "<wrong>" in message or "Wrong" in message, message  # it shows the bad value


# --- the leaks found in review ----------------------------------------------------------------


@pytest.mark.parametrize(("call", "match"), [
    (lambda: calibration.choose_qparams_affine(torch.ones(3), "int8"),
     r"scheme must be a levers.quant.QScheme.*got 'int8'"),
    (lambda: quant.choose_qparams_affine_with_min_max(torch.tensor(0.0), torch.tensor(1.0), "x"),
     r"scheme must be a levers.quant.QScheme.*got 'x'"),
    (lambda: calibration.choose_qparams_affine(torch.ones(3), quant.QScheme(), "percentile",
                                               percentile="99"),
     r"percentile must be a finite number in \[50.0, 100.0\], got '99'"),
    (lambda: integer.requantize([1, 2], torch.tensor(2**30), torch.tensor(0)),
     r"acc must be a torch.Tensor, got \[1, 2\] \(list\)"),
    (lambda: encode.unpack_bits(encode.pack_bits(torch.tensor([1, 2, 3]), 2), 2, n=100),
     r"n must be an int in \[0, 4\], got 100"),
    (lambda: encode.pack_bits(torch.tensor([0.5, 1.7]), 2),
     r"q must be a tensor of an integer dtype.*got a torch.float32 tensor"),
    (lambda: encode.pack_bits(torch.tensor([True, False]), 1), r"q must be .*integer dtype"),
    (lambda: encode.pack_bits(torch.tensor([-1, 2]), 2), r"q must hold values in \[0, 3\]"),
    (lambda: schedule.regrow(torch.ones(4), torch.ones(4), torch.ones(4), 0.5),
     r"mask must be a torch.bool tensor"),
])
def test_review_leaks_now_name_the_argument(call, match):
    with pytest.raises(InvalidArgument, match=match):
        call()


def test_labels_of_any_integer_dtype_train_and_score_alike():
    y32 = SPLIT.y_train.to(torch.int32)
    model = models.MLP((4, 2))
    train.fit(model, Split(SPLIT.x_train, y32, SPLIT.x_test, SPLIT.y_test.to(torch.int16)),
              epochs=1)
    x = SPLIT.x_test
    pred = train.predict(model, x).argmax(1)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        y = SPLIT.y_test.to(dtype)
        assert train.evaluate(model, x, y) == metrics.accuracy(y, pred)
    with pytest.raises(InvalidArgument, match="y must be a tensor of an integer dtype"):
        train.evaluate(model, x, SPLIT.y_test.bool())


def test_errors_are_both_value_and_type_errors():
    assert issubclass(InvalidArgument, ValueError) and issubclass(InvalidArgument, TypeError)
    assert np.issubdtype(np.int64, np.integer)  # the numpy index dtypes stay accepted below
    assert encode.formula_bytes("dense", (2, 2), 1) == 16
