"""A shared warm start: every run of a comparison begins from one baseline state past the plateau.

    cfg = et.profile_config("cpu", budget="1500steps", seed=1).replace(warm_start=650)   # warm_seed=0
    base = et.cached_train(cfg)                                         # the baseline, seed 1, from seed 0's step 650
    tech = et.cached_train(cfg, [et.technique("layer_drop")])           # the technique, from the same state

Why: from scratch, when a masked LM leaves the unigram plateau behaves like a chaotic event; the
time to a target spreads by a third of its mean over five seeds here, and a technique that changes
anything early reshuffles that event (docs/power.md). A claim about the main phase of training
(pruning or curricula over the remaining budget, layer dropping, selective backprop, …) need not
pay that noise: with `run.warm_start=S` the first S steps are one baseline run's (the same config
without techniques, seed `run.warm_seed`, default 0, in the profile's precision, kernels and
compile setting: `EXECUTION`), loaded from one checkpoint that every seed,
every setting and every lesson shares, and the techniques act from step S on.

What is carried over: weights, optimizer state, the position in the budget (step, tokens,
seconds, FLOPs: the schedule continues where the baseline was) and the history up to S. A run
whose seed is the warm seed also continues the warm run's random generators and data order (so
the baseline continued from its own warm start is the uninterrupted baseline, step for step:
tested); a run of another seed continues with its own (data order, masks, dropout), which is
what makes its seeds differ. Where a technique changes the training set or its sampler, its own
order starts at S. A technique whose model or optimizer cannot take the state is refused in one
line.

The state is `prefix_state(config, data)`: the warm seed's baseline trained to step S and
checkpointed, kept in the cache (`cache_dir("runs")/warm/`) under that baseline's run-cache key,
so it is trained once on a machine. `effitrain.lab.compare` counts a warm-started run's time and
FLOPs to target from the warm start (`run.extra["warm_start"]`), so the shared prefix does not
dilute a ratio toward 1, and refuses to compare runs with different warm starts.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

from effitrain.config import PROFILES, WARM_BASE_KEYS, Config, parse_warm_base, profile_config
from effitrain.data.cache import WRITE_ERRORS
from effitrain.train import runstore

WARM_DIR = "warm"


class WarmStartWarning(UserWarning):
    """The warm-start state could not be kept in the cache (it trains again next time)."""


# Settings that change how a step is computed, not what it computes (up to rounding): runs that differ
# only in them share one warm-start state, trained with the profile's own values, and the run's own
# values act from the warm start on, as its techniques do (lesson 06 times them this way).
EXECUTION = ("run.precision", "run.compile", "model.attention", "optim.kernel")


def prefix_config(config: Config) -> Config:
    """The config whose first `run.warm_start` steps every warm-started run shares: the same, from
    scratch, with seed `run.warm_seed` and (for a config of a known profile) that profile's
    execution settings (`EXECUTION`)."""
    changes: dict[str, Any] = dict(warm_start=0, seed=config.run.warm_seed, warm_seed=0, warm_base="", name="")
    if config.profile in PROFILES:
        own = profile_config(config.profile)
        changes.update({key: getattr(getattr(own, key.split(".")[0]), key.split(".")[1]) for key in EXECUTION})
    changes.update(parse_warm_base(config.run.warm_base))  # the baseline's batch size, lr, warm-up
    return config.replace(**changes)


def _main_phase(config: Config, key: str) -> Any:
    """The value of a `WARM_BASE_KEYS` setting (batch_size is the run's, lr and warmup the optimizer's)."""
    return getattr(config.run if key == "batch_size" else config.optim, key)


def variant(config: Config, **changes: Any) -> Config:
    """`config` with other batch size, learning rate or warm-up (and any other changes) that still
    continues `config`'s warm state: the baseline's values go to `run.warm_base`, so the prefix is
    the baseline's. From step `run.warm_start` on the run trains with its own values; with another
    batch size the budget must not be in steps (a step would mean other work), e.g.

        small = warm.variant(base, batch_size=8, lr=base.optim.lr / 2)   # base: warm-started, tokens budget
    """
    if not config.run.warm_start:
        return config.replace(**changes)
    base = {**parse_warm_base(config.run.warm_base)}
    for key in WARM_BASE_KEYS:
        if key in changes:
            base.setdefault(key, _main_phase(config, key))
    new = config.replace(**changes)
    base = {key: value for key, value in base.items() if value != _main_phase(new, key)}
    return new.replace(warm_base=",".join(f"{key}={value!r}" for key, value in base.items()))


def state_path(config: Config, data: Any) -> Path:
    """Where the warm-start state of `config` (at `config.run.warm_start`) is kept in the cache."""
    key = runstore.run_key(prefix_config(config), (), data)
    return runstore.cache_root() / WARM_DIR / f"{key.folder}-step{config.run.warm_start}.pt"


def prefix_state(config: Config, data: Any, make_trainer: Callable[..., Any], progress: bool = False) -> Path:
    """The checkpoint of the baseline at step `config.run.warm_start`: from the cache, else trained now.

    make_trainer(config, data=, until_step=, checkpoint=, progress=, name=) builds the
    trainer of the prefix (the trainer module passes its own class, so this module imports no
    trainer). A cache that cannot be written (read-only, full, turned off) costs the cache, never
    the run: the state is then trained into a temporary folder.
    """
    path = state_path(config, data) if runstore.enabled() else None
    if path is not None and path.exists():
        return path
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return _train_prefix(config, data, make_trainer, progress, path)
        except WRITE_ERRORS as exc:  # torch.save on a full disk raises RuntimeError
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
