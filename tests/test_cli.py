"""Tests for levers.cli: the `levers` command's parsing and `levers notebooks run`."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from levers import cli
from levers.repro import NUMERIC_ENV


def levers(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 180):
    """Run the command as a user would, in a fresh process of this interpreter."""
    return subprocess.run([sys.executable, "-m", "levers.cli", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def write_notebook(path: Path, *sources: str) -> Path:
    cells = [nbformat.v4.new_markdown_cell("# A tiny notebook")]
    cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


# --- parsing --------------------------------------------------------------------------------


def test_help_lists_the_commands():
    result = levers("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: levers")
    for command in ("notebooks", "labs", "grade", "bench", "levers notebooks run PATH"):
        assert command in result.stdout


def test_notebooks_run_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["notebooks", "run", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: levers notebooks run" in out and "paths" in out


@pytest.mark.parametrize(("argv", "message"), [
    ([], "the following arguments are required: command"),
    (["notebooks"], "the following arguments are required: action"),
    (["notebooks", "run"], "the following arguments are required: paths"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_command_lines_exit_with_usage(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("name", ["notes.txt", "missing.ipynb", "notebook.ipynb.bak"])
def test_notebooks_run_rejects_a_non_notebook(tmp_path, name):
    path = tmp_path / name
    if name != "missing.ipynb":
        path.write_text("not a notebook")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["notebooks", "run", str(path)])
    # a string exit code: Python prints it to stderr and exits with status 1
    assert exit_info.value.code == f"levers: {path} is not a notebook or a folder of notebooks"


def test_folders_expand_to_their_notebooks_in_order(tmp_path):
    for name in ("b.ipynb", "a.ipynb", "c.txt"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.ipynb").write_text("{}")
    found = cli._notebooks([str(tmp_path), str(tmp_path / "sub" / "d.ipynb")])
    assert found == [tmp_path / "a.ipynb", tmp_path / "b.ipynb", tmp_path / "sub" / "d.ipynb"]


# --- the kernel environment -----------------------------------------------------------------


def test_kernel_env_pins_the_numeric_settings(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.setenv("LEVERS_TEST_MARKER", "kept")
    monkeypatch.delenv("LEVERS_EXECUTING", raising=False)
    env = cli.kernel_env()
    for name, value in NUMERIC_ENV.items():
        assert env[name] == value
    assert env["LEVERS_EXECUTING"] == "1"
    assert env["LEVERS_TEST_MARKER"] == "kept"
    assert os.environ["OMP_NUM_THREADS"] == "8"  # reported, not applied
    assert "LEVERS_EXECUTING" not in os.environ


def test_kernel_env_overrides_come_last():
    env = cli.kernel_env(LEVERS_EXECUTING="0", EXTRA="x")
    assert env["LEVERS_EXECUTING"] == "0" and env["EXTRA"] == "x"
    assert env["OMP_NUM_THREADS"] == "1"


# --- levers notebooks run -------------------------------------------------------------------


def test_notebooks_run_executes_in_place(tmp_path):
    folder = tmp_path / "chapter"
    folder.mkdir()
    (folder / "data.txt").write_text("read from the notebook's folder")
    first = write_notebook(
        folder / "first.ipynb",
        "import os\nprint(os.environ['OMP_NUM_THREADS'], os.environ['LEVERS_EXECUTING'])",
        "print(open('data.txt').read())",
        "6 * 7",
    )
    second = write_notebook(tmp_path / "second.ipynb", "import levers\nlevers.__name__")
    result = levers("notebooks", "run", str(folder), str(second), cwd=tmp_path / "..",
                    env={"OMP_NUM_THREADS": "2", "LEVERS_EXECUTING": ""})
    assert result.returncode == 0, result.stderr
    reported = [line.split(": ")[0] for line in result.stdout.splitlines()]
    assert reported == [str(first), str(second)]
    assert all(line.endswith(" s") for line in result.stdout.splitlines())

    nb = nbformat.read(first, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2, 3]
    assert code[0].outputs[0]["text"] == "1 1\n"
    assert code[1].outputs[0]["text"] == "read from the notebook's folder\n"
    assert code[2].outputs[0]["output_type"] == "execute_result"
    assert code[2].outputs[0]["data"]["text/plain"] == "42"
    assert all("execution" not in c.metadata for c in nb.cells)  # no timestamps stored
    assert "\"iopub.execute_input\"" not in first.read_text()
    nbformat.validate(nb)

    nb2 = nbformat.read(second, as_version=4)
    assert nb2.cells[1].outputs[0]["data"]["text/plain"] == "'levers'"


def test_notebooks_run_fails_loudly_and_keeps_the_file(tmp_path):
    path = write_notebook(tmp_path / "broken.ipynb", "print('before')",
                          "raise RuntimeError('deliberate failure')")
    before = path.read_text()
    result = levers("notebooks", "run", str(path))
    assert result.returncode != 0
    assert "deliberate failure" in result.stderr
    assert path.read_text() == before
