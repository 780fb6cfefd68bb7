"""The notebook lab: a live plot, a control panel generated from the technique registry, and
an honest comparison table.

    from effitrain.lab import Panel, LivePlot, compare, styled
    panel = Panel(et.profile_config("cpu")); panel           # tick techniques, press Run
    styled(compare(panel.runs))                               # time to target ± 95% CI, speedup
    save_runs(panel.runs, "runs.json"); runs = load_runs("runs.json")
    profile_steps(et.profile_config("cpu"))                   # seconds per step: attention, FFN, head, optimizer
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from effitrain.data.cache import atomic_path
from effitrain.lab.compare import aggregate_curves, common_target, compare, display_frame, group_runs, styled, to_text
from effitrain.lab.panel import Panel, has_frontend
from effitrain.lab.plot import LivePlot
from effitrain.lab.profile import profile_steps
from effitrain.train.run import Run, read_json

RUNS_FORMAT = "effitrain-runs-v1"


def save_runs(runs: Iterable[Run], path: str | Path) -> Path:
    """Write runs (settings, techniques, history, status; no model weights) as one JSON list.

    The file is written under a temporary name and renamed into place, so it is never half-written.
    """
    path = Path(path)
    data = [r.to_dict() for r in runs]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))
    return path


def load_runs(path: str | Path) -> list[Run]:
    """Read a file written by `save_runs` (a single `Run.save` file is accepted too).

    A missing file raises FileNotFoundError; anything else wrong raises a one-line ValueError.
    """
    path = Path(path)
    data = read_json(path, "runs file")
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError(f"runs file {path} must hold a list of runs; got {type(data).__name__}")
    runs = []
    for i, d in enumerate(data):
        try:
            runs.append(Run.from_dict(d))
        except (ValueError, TypeError, KeyError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"runs file {path}: entry {i} is not a valid run ({msg})") from None
    return runs


__all__ = ["LivePlot", "Panel", "common_target", "compare", "styled", "display_frame", "to_text", "aggregate_curves", "group_runs",
           "save_runs", "load_runs", "has_frontend", "profile_steps"]
