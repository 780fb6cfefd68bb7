"""The run facade: `cached_train` (train, or load the same run from the run cache), `train` (train now
and keep it) and `train_now` (one process or several, never from the cache). The keys and the entries
on disk are `effitrain.train.runstore` (its docstring says what is in a key and what is stored);
its public names are re-exported here.

    run = cached_train(cfg, [et.technique("prune", keep_fraction=0.5)], data=data)  # trains, stores
    run = cached_train(cfg, [et.technique("prune", keep_fraction=0.5)], data=data)  # loads it
    run.extra["cache"]    # {"loaded": True, "machine": {"host", "device"}, "path", "stored", ...}
    cached_train(cfg, force=True)                                  # train again; the new run replaces it
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from effitrain.config import Config, ConfigError
from effitrain.data.cache import WRITE_ERRORS
from effitrain.data.cache import first_line as _first_line
from effitrain.train.machine import host, measured_elsewhere, measured_on, this_machine
from effitrain.train.run import Run
from effitrain.train.runstore import (DEFAULT_GB, ENV_SIZE, ENV_SWITCH, FORMAT, MODEL_EVENTS, RunCacheWarning, RunKey,
                                      _size, cache_root, code_fingerprint, enabled, lookup, replay, run_key, size_limit,
                                      store, trim, why_not_cached)

# the facade, and the store's names it re-exports (`os`: tests reach the store's file calls through it)
__all__ = ["cached_train", "train", "train_now", "train_frozen", "DEFAULT_GB", "ENV_SIZE", "ENV_SWITCH", "FORMAT",
           "MODEL_EVENTS", "RunCacheWarning", "RunKey", "_size", "cache_root", "code_fingerprint", "enabled", "host",
           "lookup", "measured_elsewhere", "measured_on", "os", "replay", "run_key", "size_limit", "store",
           "this_machine", "trim", "why_not_cached"]

if TYPE_CHECKING:
    from effitrain.data import PretrainData


def train(config: Config, techniques: Iterable[Any] = (), **train_kwargs: Any) -> Run:
    """Train `config` with `techniques` now (a cached run is never loaded) and keep the finished run in
    the run cache, so an identical `cached_train` call afterwards loads it instead of training again.

    This is `effitrain.train`; `effitrain.train.trainer.train` trains and keeps nothing. A run the cache
    cannot hold (see `why_not_cached`), or any run with EFFITRAIN_RUN_CACHE=0, is trained and not kept."""
    return cached_train(config, techniques, force=True, **train_kwargs)


def train_now(config: Config, techniques: Sequence[Any], *, world_size: int = 1, **train_kwargs: Any) -> Run:
    """Train now, never from the cache: in this process (`trainer.train`) or, with world_size=N > 1,
    over N processes in the layout the techniques ask for (`effitrain.parallel.layout`: data parallel,
    or Ouroboros' pipeline); rank 0's Run comes back."""
    from effitrain.train import trainer  # looked up at call time: the trainer module may be patched

    if world_size == 1:
        return trainer.train(config, techniques, **train_kwargs)
    if config.run.warm_start:
        raise ConfigError(f"run.warm_start and world_size={world_size} cannot train together yet: warm-start "
                          "one process (world_size=1)")
    from effitrain.parallel.layout import train_parallel  # on use: torch.distributed and the pipeline

    return train_parallel(config, techniques, world_size=world_size, **train_kwargs)


def cached_train(config: Config, techniques: Iterable[Any] = (), *, force: bool = False, cache: bool = True,
                 **train_kwargs: Any) -> Run:
    """`effitrain.train(config, techniques, **train_kwargs)`, or the same run loaded from the run cache.

    force: train even when the run is cached; the new run replaces the entry. cache: False trains
    and stores nothing (so does EFFITRAIN_RUN_CACHE=0). train_kwargs go to `train` (data, stop,
    callbacks, progress, name, …); without `data` the config's data is prepared (from the disk
    cache) to read its fingerprint. See the module docstring for the key and what is stored.
    """
    techniques = list(techniques)
    if not cache or why_not_cached(techniques, train_kwargs) is not None:
        return train_now(config, techniques, **train_kwargs)
    size_limit()  # a bad EFFITRAIN_RUN_CACHE_GB is refused before training, not after
    if train_kwargs.get("data") is None:
        from effitrain.data import prepare_data
        train_kwargs["data"] = prepare_data(config.data)
    key = run_key(config, techniques, train_kwargs["data"])
    bad = False
    if not force:
        run, problem = lookup(key, config, name=train_kwargs.get("name") or "")
        if run is not None:
            if train_kwargs.get("progress") is not False:
                m = run.extra["cache"].get("machine") or {}
                print(f"run cache: {run.label} loaded from {run.extra['cache']['path']} "
                      f"(trained {run.extra['cache'].get('stored', '?')} on {m.get('host', '?')}, {m.get('device', '?')})",
                      file=sys.stderr, flush=True)
            return replay(run, train_kwargs.get("callbacks") or ())
        bad = problem is not None
    run = train_now(config, techniques, **train_kwargs)
    try:
        store(run, key, replace=force or bad)
    except WRITE_ERRORS as exc:  # a full or read-only disk costs the cache, never the run
        # (torch.save raises RuntimeError when the disk fills up mid-write)
        warnings.warn(f"run cache: could not store {run.label} ({_first_line(exc)})", RunCacheWarning, stacklevel=2)
    return run


def train_frozen(config: Config, data: PretrainData, what: str, cache: bool = False, **kwargs: Any) -> Run:
    """Train a helper model (a pruning reference, a distillation teacher) and freeze it.

    The global RNG is left as it was, so the run that asked for the helper starts exactly as it
    would have without it. A run that does not complete raises RuntimeError naming `what`.
    The run's model comes back in eval mode with gradients off. cache=True: through the run cache
    (`cached_train`), so a helper trained in an earlier session loads, model and measured cost.
    """
    from effitrain.train import trainer  # looked up at call time, as cached_train does
    from effitrain.train.step import keep_rng

    device = config.run.resolved_device()
    with keep_rng(device):
        if cache:
            run = cached_train(config, data=data, progress=False, **kwargs)
        else:
            run = trainer.train(config, data=data, progress=False, **kwargs)
    if run.status != "completed":
        raise RuntimeError(f"{what} did not complete: {run.status} {run.message}")
    run.model.eval()
    for p in run.model.parameters():
        p.requires_grad_(False)
    return run
