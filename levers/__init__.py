"""levers: the shared library of *Precision and Sparsity*.

Importing it pins the numeric environment before torch loads, so every notebook that starts with
``import levers as lv`` computes the same numbers on any machine and any thread count. Submodules
load on first use (``lv.data``, ``lv.formats``, …), so the command-line tools start quickly.
"""

import importlib

from levers import repro

repro.pin_environment()

__version__ = "0.1.0"

_SUBMODULES = ("accumulate", "bench", "bits", "book", "calibration", "clipping", "compress",
               "cost", "data", "deepcompress", "distill", "encode", "float32", "formats",
               "grading", "huffman", "integer", "kernels", "kmeans", "lottery", "metrics", "mixed",
               "models", "mx", "plot", "policy", "prune", "qmodel", "quant", "regularize",
               "saliency", "schedule", "share", "structured", "structured_formats", "train")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"levers.{name}")
    raise AttributeError(f"module 'levers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
