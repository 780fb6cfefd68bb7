"""A shared warm start: every run of a comparison begins from the same baseline state past the plateau.

    cfg = et.profile_config("cpu", budget="2000steps", seed=0).replace(warm_start=600)
    base = et.cached_train(cfg)                                         # the baseline, continued from step 600
    tech = et.cached_train(cfg, [et.technique("layer_drop")])           # the technique, from the same state

Why: from scratch, when a masked LM leaves the unigram plateau behaves like a chaotic event; the
time to a target spreads by ~14% of its mean over seeds at every depth, and a technique that
changes anything in the first hundred steps reshuffles that event (docs/power.md). A claim about
the main phase of training (precision, pruning or curricula over the remaining budget, layer
dropping, selective backprop, …) need not pay that noise: with `run.warm_start=S` the first S
steps are the baseline's (the same config without techniques, the same seed), loaded from one
checkpoint that every setting and every lesson shares, and the techniques act from step S on.

What is carried over: weights, optimizer state, the position in the budget (step, tokens,
seconds, FLOPs: the schedule continues where the baseline was), the random generators, the
history up to S, and the data order when the techniques keep the training set and its sampler.
A technique that builds its own optimizer or replaces the model (`on_model`) cannot continue
the baseline's state and is refused in one line. The baseline continued from its own warm start
is the uninterrupted baseline, step for step (tested).

The state is `prefix_state(config, data)`: the baseline trained to step S and checkpointed, kept in
the cache (`cache_dir("runs")/warm/`) under the baseline's run-cache key, so it is trained once
per seed on a machine. `effitrain.lab.compare` measures a warm-started run's time and FLOPs to
target from the warm start (`run.extra["warm_start"]`), so the shared prefix does not dilute a
ratio toward 1.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

from effitrain.config import Config
from effitrain.train import runcache

WARM_DIR = "warm"


class WarmStartWarning(UserWarning):
    """The warm-start state could not be kept in the cache (it trains again next time)."""


def prefix_config(config: Config) -> Config:
    """The config whose first `run.warm_start` steps every warm-started run shares: the same, from scratch."""
    return config.replace(warm_start=0, name="")


def state_path(config: Config, data: Any) -> Path:
    """Where the warm-start state of `config` (at `config.run.warm_start`) is kept in the cache."""
    key = runcache.run_key(prefix_config(config), (), data)
    return runcache.cache_root() / WARM_DIR / f"{key.folder}-step{config.run.warm_start}.pt"


def prefix_state(config: Config, data: Any, make_trainer: Callable[..., Any], progress: bool = False) -> Path:
    """The checkpoint of the baseline at step `config.run.warm_start`: from the cache, else trained now.

    make_trainer(config, data=, until_step=, checkpoint=, progress=, name=) builds the
    trainer of the prefix (the trainer module passes its own class, so this module imports no
    trainer). A cache that cannot be written (read-only, full, turned off) costs the cache, never
    the run: the state is then trained into a temporary folder.
    """
    path = state_path(config, data) if runcache.enabled() else None
    if path is not None and path.exists():
        return path
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return _train_prefix(config, data, make_trainer, progress, path)
        except (OSError, RuntimeError) as exc:  # torch.save on a full disk raises RuntimeError
            if path.exists():
                return path
            warnings.warn(f"warm start: cannot keep the state in {path.parent} ({str(exc).splitlines()[0]}); "
                          "training it in a temporary folder", WarmStartWarning, stacklevel=3)
    temp = Path(tempfile.mkdtemp(prefix="effitrain-warm-")) / f"step{config.run.warm_start}.pt"
    return _train_prefix(config, data, make_trainer, progress, temp)


def _train_prefix(config: Config, data: Any, make_trainer: Callable[..., Any], progress: bool, path: Path) -> Path:
    step = config.run.warm_start
    run = make_trainer(prefix_config(config), data=data, until_step=step, checkpoint=str(path), progress=progress,
                       name=f"warm start to step {step}").fit()
    last = run.history.steps[-1]["step"] if run.history.steps else 0
    if last < step or not path.exists():
        raise ValueError(f"run.warm_start={step}: the baseline ended at step {last} ({run.status}) before "
                         "reaching it; give a step inside the budget")
    return path
