"""Lessons: every `lessons/*.py` has its notebook, in sync and without outputs; each lesson has the
lesson structure; and every notebook runs top to bottom under nbmake on the smoke profile and really
trains something.

Fix a failing sync test with `make sync` (the .py files are the sources).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nbformat
import pytest

jupytext = pytest.importorskip("jupytext", reason="jupytext is in the dev extra: pip install -e .[dev]")

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SMOKE_SECONDS = 60  # what a lesson may take on the smoke profile (each lesson ≲ 60 s keeps the notebook suite inside CI time)
TIMEOUT = 240
MAX_CELL_LINES = 15  # a longer code cell means the package lacks a function (lessons never redefine what it provides)
# jupytext writes its own version into the .py header; another jupytext version is not a change
VERSION_LINE = re.compile(r"^#\s+(format_version|jupytext_version):.*\n", re.MULTILINE)
SUMMARY = re.compile(r"\bcompleted\b.*?val loss (\d+\.\d+) → (\d+\.\d+)")


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_lessons():
    assert LESSONS, "no lessons/*.py found"


@pytest.mark.parametrize("lesson", LESSONS, ids=_ids(LESSONS))
def test_lesson_has_a_notebook_in_sync(lesson: Path):
    notebook = ROOT / "notebooks" / f"{lesson.stem}.ipynb"
    assert notebook.exists(), f"{lesson.name} has no notebooks/{notebook.name}; run `make sync`"
    from_py = jupytext.read(lesson)
    from_nb = jupytext.read(notebook)
    assert _cells(from_nb) == _cells(from_py), f"{notebook.name} is not in sync with {lesson.name}; run `make sync`"
    as_text = jupytext.writes(from_nb, fmt="py:percent")
    assert VERSION_LINE.sub("", as_text) == VERSION_LINE.sub("", lesson.read_text(encoding="utf-8")), \
        f"{lesson.name} is not what jupytext writes for {notebook.name}; run `make sync`"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_has_a_lesson_and_no_outputs(notebook: Path):
    assert (ROOT / "lessons" / f"{notebook.stem}.py").exists(), \
        f"{notebook.name} has no lessons/{notebook.stem}.py (lessons are the sources)"
    nb = nbformat.read(notebook, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{notebook.name} carries outputs or execution counts in cells {dirty}; clear them"


@pytest.mark.parametrize("lesson", LESSONS, ids=_ids(LESSONS))
def test_lesson_structure(lesson: Path):
    """Opens with a title, what you will learn, prerequisites and run time per profile; ends with exercises."""
    nb = jupytext.read(lesson)
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "a lesson opens with a '# title' cell"
    for heading in ("what you will learn", "prerequisites", "expected run time"):
        assert heading in first.source.lower(), f"{lesson.name}: the first cell must say '{heading}'"
    for profile in ("smoke", "cpu", "gpu"):
        assert f"`{profile}`" in first.source, f"{lesson.name}: the run time table must give profile `{profile}`"
    assert last.cell_type == "markdown", f"{lesson.name} must end with a markdown cell of exercises"
    exercises = re.split(r"^#+\s*Exercises\s*$", last.source, flags=re.MULTILINE | re.IGNORECASE)
    assert len(exercises) == 2, f"{lesson.name}: the last cell must have an '## Exercises' heading"
    assert re.search(r"^\s*1\.\s+\S", exercises[1], flags=re.MULTILINE), f"{lesson.name}: number the exercises"
    assert any(re.search(r"^#+\s*Summary", c.source, re.MULTILINE) for c in nb.cells if c.cell_type == "markdown"), \
        f"{lesson.name} needs a '## Summary'"


@pytest.mark.parametrize("lesson", LESSONS, ids=_ids(LESSONS))
def test_lesson_cells_call_the_package(lesson: Path):
    nb = jupytext.read(lesson)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any(re.search(r"^import effitrain|^from effitrain", s, re.MULTILINE) for s in code), \
        f"{lesson.name} must use the effitrain package"
    for i, source in enumerate(code):
        lines = [ln for ln in source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        assert len(lines) <= MAX_CELL_LINES, (
            f"{lesson.name}: code cell {i} has {len(lines)} lines (> {MAX_CELL_LINES}); move the logic into effitrain")


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(str(out["data"].get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_under_nbmake_and_trains(notebook: Path, tmp_path: Path, record_property):
    """`pytest --nbmake` on a copy (so the outputs can be read back), EFFITRAIN_PROFILE=smoke."""
    pytest.importorskip("nbmake", reason="nbmake is in the dev extra: pip install -e .[dev]")
    copy = tmp_path / notebook.name
    copy.write_bytes(notebook.read_bytes())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # keep the repo's pytest settings out of this run
    env = {**os.environ, "EFFITRAIN_PROFILE": "smoke"}
    cmd = [sys.executable, "-m", "pytest", "--nbmake", "--overwrite", f"--nbmake-timeout={TIMEOUT}",
           "-p", "no:cacheprovider", "-q", copy.name]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{notebook.name} did not finish within {TIMEOUT} s on the smoke profile")
    wall = time.perf_counter() - start
    record_property("smoke_wall_seconds", round(wall, 1))
    assert proc.returncode == 0, f"{notebook.name} failed under nbmake:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"

    text = _outputs_text(nbformat.read(copy, as_version=4))
    runs = [(float(a), float(b)) for a, b in SUMMARY.findall(text)]
    assert runs, f"{notebook.name} printed no completed run ('… completed … val loss A → B'): did it train?"
    assert any(b < a for a, b in runs), f"{notebook.name}: no run lowered its validation loss: {runs}"
    print(f"{notebook.name}: {wall:.1f} s on the smoke profile, {len(runs)} runs")
    if wall > SMOKE_SECONDS:
        warnings.warn(f"{notebook.name} took {wall:.0f} s on the smoke profile (aim: ≤ {SMOKE_SECONDS} s)")
