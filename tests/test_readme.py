"""The README's code blocks run as written (issue 32: its library block once named an undefined `data`)."""
from __future__ import annotations

import re
from pathlib import Path

import effitrain as et

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_every_python_block_of_the_readme_runs_in_order_as_a_reader_pastes_it(monkeypatch, tmp_path):
    """In one namespace, in order; only the profile is swapped: the smoke model with a short budget
    stands in for the cpu profile's 90 seconds."""
    real = et.profile_config
    monkeypatch.setattr(et, "profile_config", lambda profile=None, **kw: real("smoke", **{**kw, "budget": "30steps"}))
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    assert len(blocks) >= 2 and all("import effitrain as et" in b or "et." in b for b in blocks)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    assert (tmp_path / "runs" / "baseline.json").exists()  # the library block saved its run where it says
    assert namespace["run"].extra["cache"]["loaded"]  # et.cached_train loaded what et.train kept
