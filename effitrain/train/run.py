"""A `Run`: the resolved config, the techniques, the history, the model and how it ended."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from effitrain.config import Config
from effitrain.data.cache import atomic_path
from effitrain.train.history import History

STATUSES = ("created", "running", "completed", "stopped", "interrupted", "diverged", "failed")


@dataclass
class Run:
    config: Config
    techniques: list[dict[str, Any]] = field(default_factory=list)
    history: History = field(default_factory=History)
    model: torch.nn.Module | None = None
    status: str = "created"
    message: str = ""
    device: str = ""
    name: str = ""
    started: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. unigram_entropy, parameters

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        names = "+".join(t["name"] for t in self.techniques) or "baseline"
        return f"{names} s{self.config.run.seed}"

    @property
    def finished(self) -> bool:
        return self.status not in ("created", "running")

    def summary(self) -> dict[str, Any]:
        steps, evals = self.history.steps, self.history.evals
        last = steps[-1] if steps else {}
        seconds = float(last.get("seconds", 0.0))
        tokens = int(last.get("tokens", 0))
        nan = float("nan")
        val_last = float(evals[-1]["val_loss"]) if evals else nan
        unigram = self.extra.get("unigram_val_loss")
        unigram = float(unigram) if isinstance(unigram, (int, float)) else nan
        return {
            "name": self.label,
            "status": self.status,
            "steps": int(last.get("step", 0)),
            "tokens": tokens,
            "seconds": seconds,
            "tokens_per_second": tokens / seconds if seconds > 0 else nan,
            "flops_measured": float(last.get("flops", 0.0)),
            "flops_analytic": float(last.get("flops_analytic", 0.0)),
            "train_loss_first": float(steps[0]["train_loss"]) if steps else nan,
            "train_loss_last": float(last["train_loss"]) if steps else nan,
            "val_loss_first": float(evals[0]["val_loss"]) if evals else nan,
            "val_loss_last": val_last,
            "val_accuracy_last": float(evals[-1]["val_accuracy"]) if evals else nan,
            # a model that knows only word frequencies scores `unigram_val_loss`; how far below it
            # the run ended (nats) is what it learned from context (negative: still on the plateau)
            "unigram_val_loss": unigram,
            "context_gain": unigram - val_last,
            "cached": bool((self.extra.get("cache") or {}).get("loaded", False)),
            "device": self.device,
            "profile": self.config.profile,
            "techniques": [t["name"] for t in self.techniques],
            "message": self.message,
        }

    def summary_line(self) -> str:
        """One line: "baseline s0: completed · 300 steps · 12.1s · val loss 7.630 → 6.220 · 7,400 tokens/s
        · context gain 0.98 nats" (+ " · loaded from the run cache" for a cached run)."""
        s = self.summary()
        gain = s["context_gain"]
        return (f"{s['name']}: {s['status']} · {s['steps']} steps · {s['seconds']:.1f}s · "
                f"val loss {s['val_loss_first']:.3f} → {s['val_loss_last']:.3f} · {s['tokens_per_second']:,.0f} tokens/s"
                + (f" · context gain {gain:.2f} nats" if math.isfinite(gain) else "")
                + (" · loaded from the run cache" if s["cached"] else "")
                + (f" · {s['message']}" if s["message"] else ""))

    # -- saving (history and settings; the model goes in a checkpoint) ---------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": "effitrain-run-v1", "name": self.name, "config": self.config.to_dict(),
                "techniques": self.techniques, "history": self.history.to_dict(), "status": self.status,
                "message": self.message, "device": self.device, "started": self.started,
                "extra": _jsonable(self.extra)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Run":
        if not isinstance(d, dict) or d.get("format") != "effitrain-run-v1":
            raise ValueError("not an effitrain run (expected format 'effitrain-run-v1')")
        return cls(config=Config.from_dict(d["config"]), techniques=list(d.get("techniques", [])),
                   history=History.from_dict(d["history"]), status=d.get("status", "completed"),
                   message=d.get("message", ""), device=d.get("device", ""), name=d.get("name", ""),
                   started=d.get("started", ""), extra=dict(d.get("extra", {})))

    @classmethod
    def load(cls, path: str | Path) -> "Run":
        return cls.from_dict(read_json(path, "run file"))


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """Numbers, strings, booleans and (nested) dicts/lists of them; non-finite floats become None."""
    def value(v: Any) -> tuple[bool, Any]:
        if isinstance(v, (int, str, bool)) or v is None:
            return True, v
        if isinstance(v, float):
            return True, v if math.isfinite(v) else None
        if isinstance(v, dict):
            return True, _jsonable(v)
        if isinstance(v, (list, tuple)):
            kept = [value(x) for x in v]
            return True, [x for ok, x in kept if ok]
        return False, None

    out = {}
    for k, v in d.items():
        ok, x = value(v)
        if ok:
            out[str(k)] = x
    return out


def read_json(path: str | Path, what: str) -> Any:
    """The JSON in `path`; a missing file raises FileNotFoundError, bad JSON a one-line ValueError."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path} is not valid JSON ({str(exc).splitlines()[0]})") from None


def finite_or_none(value: Any) -> Any:
    """NaN and ±inf → None, recursively, so `json.dumps` writes valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value
