"""Shared helpers for the grader's tests, and the tests of `levers grade`'s command line.

The helpers run the real command (`levers.grading.cli.main`) on fixture notebooks, with a short
cell timeout and a small memory limit so faults are caught fast. The reference run is cached
per process and seed, so a worker grades the solution once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

from levers.grading.cli import main
from levers.grading.sandbox import INSTALL, bubblewrap

FIXTURES = Path(__file__).parent / "fixtures" / "grading"
MINILAB = FIXTURES / "minilab.ipynb"
BLANK = FIXTURES / "minilab-blank.ipynb"
SUBMISSIONS = FIXTURES / "submissions"
SEED = 11
TIMEOUT = 3  # seconds per cell: the fixtures' own cells take milliseconds


def bubblewrap_or_skip() -> None:
    """As root, grading needs bubblewrap: skip without it, except on CI (CI=true): a failure."""
    if os.geteuid() != 0 or sys.platform != "linux" or bubblewrap() is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"the grader's tests cannot run on CI: {INSTALL}")
    pytest.skip(INSTALL)


def grade(tmp_path: Path, solution: Path, *submissions: Path, seed: int = SEED,
          extra: tuple[str, ...] = ()) -> tuple[int, Path]:
    """Run ``levers grade`` into ``tmp_path/out``; return the exit status and the folder."""
    bubblewrap_or_skip()
    out = tmp_path / "out"
    status = main([str(solution), *map(str, submissions), "--out", str(out), "--seed", str(seed),
                   "--timeout", str(TIMEOUT), "--memory", "2048", "--quiet", *extra])
    return status, out


def results(out: Path, student: str) -> dict:
    """The Gradescope results.json of one student."""
    return json.loads((out / student / "results.json").read_text())


def by_question(report: dict) -> dict[str, float]:
    """Points per question from a results.json."""
    scores: dict[str, float] = {}
    for test in report["tests"]:
        q = test["name"].split()[0]
        scores[q] = scores.get(q, 0.0) + test["score"]
    return scores


def test_exit_status_two_when_the_solution_is_not_a_lab(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text("not json")
    status, _ = grade(tmp_path, bad, SUBMISSIONS / "honest" / "right_answers.ipynb")
    assert status == 2


def test_exit_status_two_for_a_student_version_without_public_only(tmp_path, capsys):
    status, _ = grade(tmp_path, BLANK, SUBMISSIONS / "honest" / "right_answers.ipynb")
    assert status == 2
    assert "--public-only" in capsys.readouterr().err


def test_exit_status_two_for_bad_arguments(tmp_path):
    assert main([str(MINILAB), str(BLANK), "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert main([str(MINILAB), str(BLANK), "--seed", "-1", "--out", str(tmp_path)]) == 2


@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux",
                    reason="without root the grader needs no bubblewrap")
def test_without_bubblewrap_grading_refuses_and_says_how_to_install_it(tmp_path, capsys,
                                                                      monkeypatch):
    import levers.grading.cli as cli

    monkeypatch.setattr(cli, "bubblewrap", lambda: None)
    status = main([str(MINILAB), str(SUBMISSIONS / "honest" / "right_answers.ipynb"), "--out",
                   str(tmp_path / "out"), "--quiet"])
    assert status == 2
    assert "apt-get install bubblewrap" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_missing_submission_file_gets_a_report(tmp_path):
    status, out = grade(tmp_path, MINILAB, tmp_path / "gone.ipynb")
    assert status == 0
    report = results(out, "gone")
    assert report["score"] == 0 and "cannot read the file" in report["output"]


def test_solution_whose_own_cell_fails_is_a_grader_error(tmp_path, capsys):
    nb = nbformat.read(MINILAB, as_version=4)
    nb.cells[1].source += "\nraise RuntimeError('broken solution')\n"
    broken = tmp_path / "broken.ipynb"
    nbformat.write(nb, broken)
    status, _ = grade(tmp_path, broken, BLANK)
    assert status == 2
    assert "does not run cleanly" in capsys.readouterr().err


def test_batch_writes_every_report_gradebook_and_summary(tmp_path, capsys):
    bubblewrap_or_skip()
    subs = [SUBMISSIONS / "honest" / "half_right.ipynb", SUBMISSIONS / "fault" / "not_json.ipynb"]
    out = tmp_path / "out"
    status = main([str(MINILAB), *map(str, subs), "--out", str(out), "--seed", str(SEED),
                   "--jobs", "2", "--timeout", "5"])
    assert status == 0
    for student in ("half_right", "not_json"):
        assert {p.name for p in (out / student).iterdir()} == {
            "results.json", "feedback.ipynb"}
    rows = (out / "gradebook.csv").read_text().splitlines()
    assert rows[0] == "student,q1,q2,q3,total,max,notes"
    assert rows[1].startswith("half_right,0,3,2,5,8,")
    assert rows[2].startswith("not_json,0,0,0,0,8,")
    table = capsys.readouterr().out
    assert "half_right" in table and f"seed {SEED}" in table


def test_public_only_previews_the_public_part_against_the_student_version(tmp_path):
    status, out = grade(tmp_path, BLANK, SUBMISSIONS / "honest" / "half_right.ipynb",
                        extra=("--public-only",))
    assert status == 0
    report = results(out, "half_right")
    assert [t["name"] for t in report["tests"]] == ["q1 public test", "q2 public test",
                                                     "q3 public test"]
    assert report["score"] == 2.0  # q1's public test fails on the tie; q2 and q3 pass
    assert report["output"] == "**Score 2 / 3**."  # no probe seed: no probe ran


def test_public_only_says_nothing_of_hidden_checks(tmp_path):
    status, out = grade(tmp_path, BLANK, SUBMISSIONS / "attack" / "patch_allclose.ipynb",
                        extra=("--public-only",))
    report = results(out, "patch_allclose")
    assert status == 0 and "seed" not in report["output"]
    assert "Suspicious" not in report["output"]
    assert "probe seed" not in (out / "patch_allclose" / "feedback.ipynb").read_text()


def test_report_names_stay_unique_whatever_the_file_names():
    from levers.grading.grader import student_names

    paths = [Path(p) for p in ("A/x.ipynb", "B/A-x.ipynb", "C/x.ipynb", "D/A-x-2.ipynb",
                               "E/a-X.ipynb")]
    names = student_names(paths)
    assert len({n.lower() for n in names}) == len(paths)
    assert names[:3] == ["A-x", "A-x-2", "C-x"]


def test_report_names_fit_a_file_system_however_long_the_paths():
    from levers.grading.grader import student_names

    paths = [Path("a" * 200) / ("b" * 240 + ".ipynb"), Path("c" * 200) / ("b" * 240 + ".ipynb"),
             Path("-=cmd.ipynb")]
    names = student_names(paths)
    assert all(len(n.encode()) <= 100 for n in names) and len(set(names)) == 3
    assert names[2] == "_cmd"  # nothing a spreadsheet would read as a formula


def test_two_files_with_one_name_get_two_reports(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for folder in (a, b):
        (folder / "lab.ipynb").write_bytes(b"{}")
    status, out = grade(tmp_path, MINILAB, a / "lab.ipynb", b / "lab.ipynb")
    assert status == 0
    assert (out / "a-lab" / "results.json").exists() and (out / "b-lab" / "results.json").exists()


@pytest.mark.parametrize("folder", ["honest"])
def test_a_folder_is_expanded_to_its_notebooks(tmp_path, folder):
    from levers.grading.cli import expand

    found = expand([SUBMISSIONS / folder])
    assert found == sorted(found) and all(p.suffix == ".ipynb" for p in found)
    assert len(found) == len(list((SUBMISSIONS / folder).glob("*.ipynb")))
