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
