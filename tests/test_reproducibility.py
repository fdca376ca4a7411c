"""Every stored output reproduces with 2 threads in the environment, images included.

nbval (run on chapters/ and solutions/ by the same `make test`) re-executes each notebook once
with the test environment's settings and compares text outputs. This test executes each notebook
a second time, in a kernel whose environment asks for 2 threads everywhere, and compares every
output with the stored one, including the PNG bytes of figures, which nbval skips. Together they
show that two runs in a row and a change of thread count leave every output unchanged. A third
run starts a kernel whose environment asks NumPy's OpenBLAS for another kernel family and holds
none of the kernel pins: `import levers` in the notebook's first cell must pin them all back.
Cells that print wall-clock times (tagged `nbval-ignore-output`, or the older
`# NBVAL_IGNORE_OUTPUT` comment) are the only ones exempt.
"""

import configparser
import re
from pathlib import Path

import nbformat
import pytest

from levers import repro
from levers.cli import kernel_env, run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted([*ROOT.glob("chapters/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])
TWO_THREADS = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}


def _sanitizers() -> list[tuple[re.Pattern, str]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "tests" / "sanitize.cfg")
    return [(re.compile(cfg[s]["regex"]), cfg[s]["replace"]) for s in cfg.sections()]


def comparable_outputs(nb: nbformat.NotebookNode) -> list[tuple[int, dict]]:
    """Per code cell (unless it ignores its output): the text of each stream, joined (the kernel
    may split a stream into chunks differently from run to run), and the rich outputs in order,
    without metadata or counters."""
    subs = _sanitizers()

    def clean(value):
        if isinstance(value, str):
            for pattern, replacement in subs:
                value = pattern.sub(replacement, value)
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()
                    if k not in ("metadata", "execution_count", "transient")}
        return value

    def split(outputs: list) -> dict:
        streams: dict[str, str] = {}
        rich = []
        for out in outputs:
            if out["output_type"] == "stream":
                streams[out["name"]] = streams.get(out["name"], "") + out["text"]
            else:
                rich.append(out)
        return {"streams": clean(streams), "rich": clean(rich)}

    return [(i, split(cell.outputs)) for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and not ignores_output(cell)]


def ignores_output(cell) -> bool:
    """Whether nbval exempts the cell's output: the cell tag, or the older source comment."""
    return ("nbval-ignore-output" in cell.get("metadata", {}).get("tags", [])
            or "NBVAL_IGNORE_OUTPUT" in cell.source)


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.name}" for p in NOTEBOOKS])
def test_outputs_reproduce_with_two_threads(path: Path, tmp_path: Path) -> None:
    out = tmp_path / path.name
    run_notebook(path, out=out, env=kernel_env(**TWO_THREADS))
    stored = comparable_outputs(nbformat.read(path, as_version=4))
    fresh = comparable_outputs(nbformat.read(out, as_version=4))
    assert [i for i, _ in fresh] == [i for i, _ in stored]
    for (i, want), (_, got) in zip(stored, fresh, strict=True):
        assert got == want, f"{path.name}: cell {i} output changed when re-executed"


def test_there_are_notebooks_to_check() -> None:
    assert any(p.parent.name == "chapters" for p in NOTEBOOKS)


#: A notebook whose stored outputs go through NumPy's BLAS (np.polyfit) and SIMD loops (np.log10).
BLAS_NOTEBOOK = ROOT / "chapters" / "04-quantization.ipynb"
REPORT_KERNELS = ("import levers as lv\n"
                  "print(lv.repro.numpy_blas(), lv.repro.numpy_simd(), sep='; ')")


@pytest.mark.notebooks
def test_outputs_reproduce_when_the_shell_forces_another_blas_family(tmp_path: Path) -> None:
    if "avx2" not in repro.cpu_flags():
        pytest.skip("the AVX2 pins are for x86-64 CPUs with AVX2")
    # another family this CPU can run (never one whose instructions it lacks)
    other = "SkylakeX" if "avx512f" in repro.cpu_flags() else "Sandybridge"
    nb = nbformat.read(BLAS_NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(REPORT_KERNELS))
    forced, out = tmp_path / "forced.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, forced)
    env = {k: v for k, v in kernel_env().items() if k not in repro.KERNEL_PINS}
    run_notebook(forced, out=out, env={**env, "OPENBLAS_CORETYPE": other})
    ran = nbformat.read(out, as_version=4)
    assert ran.cells[-1].outputs[0]["text"].strip() == "openblas Haswell, 1 thread; X86_V3"
    ran.cells.pop()
    stored = comparable_outputs(nbformat.read(BLAS_NOTEBOOK, as_version=4))
    fresh = comparable_outputs(ran)
    for (i, want), (_, got) in zip(stored, fresh, strict=True):
        assert got == want, f"{BLAS_NOTEBOOK.name}: cell {i} changed with {other} forced"
