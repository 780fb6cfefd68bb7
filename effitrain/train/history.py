"""What a run records, and the arithmetic of time-to-target.

Per logged step: step, tokens, seconds (training wall time, evaluation excluded), flops
(measured, cumulative), flops_analytic (cumulative), train_loss, lr. Per evaluation: step,
tokens, seconds, flops, val_loss, val_accuracy (+ whatever techniques add in `on_eval`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STEP_COLUMNS = ("step", "tokens", "seconds", "flops", "flops_analytic", "train_loss", "lr")
EVAL_COLUMNS = ("step", "tokens", "seconds", "flops", "val_loss", "val_accuracy")


@dataclass
class History:
    steps: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)

    def log_step(self, **row: float) -> dict:
        self.steps.append(row)
        return row

    def log_eval(self, **row: float) -> dict:
        self.evals.append(row)
        return row

    def frame(self, kind: str = "steps") -> pd.DataFrame:
        if kind not in ("steps", "evals"):
            raise ValueError(f"kind must be 'steps' or 'evals'; got {kind!r}")
        rows = list(self.steps if kind == "steps" else self.evals)  # a snapshot: a trainer thread may append
        columns = STEP_COLUMNS if kind == "steps" else EVAL_COLUMNS
        df = pd.DataFrame(rows)
        for c in columns:
            if c not in df:
                df[c] = pd.Series(dtype=float)
        return df

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "evals": list(self.evals)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "History":
        """A history from `to_dict()`'s output; every row must hold the columns the trainer logs
        (STEP_COLUMNS, EVAL_COLUMNS) as numbers, else a one-line ValueError names the row and column."""
        if not isinstance(d, dict) or not isinstance(d.get("steps"), list) or not isinstance(d.get("evals"), list):
            raise ValueError("history must be a mapping with 'steps' and 'evals' lists")
        rows: dict[str, list[dict]] = {}
        for kind, columns in (("steps", STEP_COLUMNS), ("evals", EVAL_COLUMNS)):
            rows[kind] = []
            for i, row in enumerate(d[kind]):
                where = f"history {kind[:-1]} {i}"
                if not isinstance(row, dict):
                    raise ValueError(f"{where} must be a mapping; got {type(row).__name__}")
                for c in columns:
                    if c not in row:
                        raise ValueError(f"{where} has no {c!r} (a row holds {', '.join(columns)})")
                    if not isinstance(row[c], (int, float)) or isinstance(row[c], bool):
                        raise ValueError(f"{where}: {c!r} must be a number; got {row[c]!r:.40}")
                rows[kind].append(dict(row))
        return cls(rows["steps"], rows["evals"])

    def to_csv(self, path: str | Path) -> Path:
        """One CSV with a `kind` column (step / eval), readable by pandas or a spreadsheet."""
        steps = self.frame("steps").assign(kind="step")
        evals = self.frame("evals").assign(kind="eval")
        path = Path(path)
        pd.concat([steps, evals], ignore_index=True).to_csv(path, index=False)
        return path

    @classmethod
    def from_csv(cls, path: str | Path) -> "History":
        df = pd.read_csv(path)
        if "kind" not in df:
            raise ValueError(f"{path} has no 'kind' column; it was not written by History.to_csv")
        def rows(kind: str) -> list[dict]:
            part = df[df["kind"] == kind].drop(columns="kind").dropna(axis=1, how="all")
            return [{k: v for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))}
                    for r in part.to_dict("records")]
        return cls(rows("step"), rows("eval"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def _crossing(xs: np.ndarray, ys: np.ndarray, target: float, lower_is_better: bool) -> float | None:
    """First x where the piecewise-linear curve (xs, ys) reaches target; None if it never does."""
    reached = ys <= target if lower_is_better else ys >= target
    if not reached.any():
        return None
    i = int(np.argmax(reached))
    if i == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return float(x0 + (x1 - x0) * (target - y0) / (y1 - y0)) if y1 != y0 else float(x1)


def time_to_target(history: History, val_loss: float | None = None,
                   val_accuracy: float | None = None) -> dict[str, float] | None:
    """When the evaluation curve first reaches a target, linearly interpolated between evals.

    Returns ``{"seconds", "flops", "tokens", "step"}`` or None when the target was never reached
    (never a made-up number). Give exactly one of `val_loss` (reach ≤) or `val_accuracy` (≥).
    """
    if (val_loss is None) == (val_accuracy is None):
        raise ValueError("give exactly one target: val_loss=... or val_accuracy=...")
    df = history.frame("evals")
    column, target = ("val_loss", val_loss) if val_loss is not None else ("val_accuracy", val_accuracy)
    df = df.dropna(subset=[column])
    if df.empty:
        return None
    ys = df[column].to_numpy(dtype=float)
    lower = column == "val_loss"
    out = {}
    for x in ("seconds", "flops", "tokens", "step"):
        value = _crossing(df[x].to_numpy(dtype=float), ys, float(target), lower)
        if value is None:
            return None
        out[x] = value
    return out
