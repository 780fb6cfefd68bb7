"""Checkpoints: model, optimizer, trainer position, random states and history in one file.

Written atomically (temporary file + rename): a crash while saving leaves the previous
checkpoint intact. Loading checks the format and that the model settings match.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from effitrain.config import Config, ConfigError
from effitrain.data.cache import atomic_path

FORMAT = "effitrain-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed; the message is one line."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | Path, config: Config | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}); is it an effitrain checkpoint?") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an effitrain checkpoint (expected format {FORMAT})")
    missing = {"config", "model", "optimizer", "trainer", "history"} - set(state)
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(sorted(missing))}")
    if config is not None:
        try:
            saved = Config.from_dict(state["config"])
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint {path} holds an invalid config: {exc}") from None
        for section in ("model", "data"):
            a, b = getattr(saved, section), getattr(config, section)
            if a != b:
                diff = next(k for k in a.__dataclass_fields__ if getattr(a, k) != getattr(b, k))
                raise CheckpointError(f"checkpoint {path} was made with {section}.{diff}={getattr(a, diff)!r}; "
                                      f"this run has {getattr(b, diff)!r}")
    return state


# what a resumed run may change (a longer budget, where it evaluates and logs, the machine it runs on);
# any other field would change the curve the checkpoint's history belongs to
RESUME_MAY_CHANGE = ("budget", "run.evals", "run.log_every", "run.threads", "run.device", "run.compile", "run.name")


def _curve_changes(saved: dict, config: Config) -> dict[str, tuple[Any, Any]]:
    """{"section.field": (saved value, this run's)} for every field outside RESUME_MAY_CHANGE that differs."""
    now = config.to_dict()
    out: dict[str, tuple[Any, Any]] = {}
    for section, fields in now.items():
        if not isinstance(fields, dict):
            continue
        old = saved.get(section, {}) if isinstance(saved.get(section), dict) else {}
        for field, value in fields.items():
            key = f"{section}.{field}"
            if key not in RESUME_MAY_CHANGE and field in old and old[field] != value:
                out[key] = (old[field], value)
    return out


def check_resume(state: dict[str, Any], config: Config, techniques: list[dict[str, Any]], path: str | Path) -> None:
    """A checkpoint `state` can be resumed by a run of `config` with `techniques` (`Run.techniques`): the
    same seed, the same curve (only RESUME_MAY_CHANGE may differ) and the same techniques; else a
    one-line CheckpointError naming what differs."""
    saved_seed = state["config"].get("run", {}).get("seed")
    if saved_seed != config.run.seed:
        raise CheckpointError(f"checkpoint {path} was made with run.seed={saved_seed!r}; this run has "
                              f"{config.run.seed!r}")
    changed = _curve_changes(state["config"], config)
    if changed:
        key, (was, now) = next(iter(changed.items()))
        raise CheckpointError(f"checkpoint {path} was made with {key}={was!r}; this run has {now!r} (a resumed run "
                              f"continues the same curve: only {', '.join(RESUME_MAY_CHANGE)} may change)")
    if state["techniques"] != techniques:
        names = lambda ts: ", ".join(f"{t['name']}{t['params']}" for t in ts) or "none"  # noqa: E731
        raise CheckpointError(f"checkpoint {path} was made with techniques [{names(state['techniques'])}]; "
                              f"this run has [{names(techniques)}]")
