"""The comparison design every lesson shares: one baseline per profile, paired seeds, a warm start.

    d = design()                                        # the profile's design (EFFITRAIN_PROFILE, else by device)
    data = et.prepare_data(d.config().data)
    base = seed_runs(d.config(), [], d.seeds, data)     # the shared baseline: cached, so every lesson pays it once
    runs = seed_runs(d.warm(), [et.technique("layer_drop")], d.seeds, data)   # the same seeds, from its warm start
    compare(base + runs, target_val_loss=d.target(data), resolve=d.resolve)   # paired by seed; "faster by [lo, hi]"

Why this shape (measured in docs/power.md): from scratch, the step at which a masked LM leaves
its unigram plateau varies by ~14% over seeds and moves when anything changes early, so two
settings' times to a target spread like two independent draws, and 3 seeds resolve only about
×/÷1.6. With every setting continuing from the same baseline state past the plateau (the warm
start) and paired by seed, the per-seed ratio varies by a few percent instead.

* `config(**changes)` is the profile with the design's budget and evaluations: the shared baseline.
  Any lesson that builds its baseline this way, with the same seeds, loads the same cached runs.
* `warm(**changes)` is the same config starting at the warm-start step: for claims about the main
  phase of training (pruning or curricula over the remaining budget, layer dropping, selective
  backprop, precision). Claims about the start of training (ELECTRA, recipes, a curriculum's early
  phase) train from scratch with `config()` and more seeds.
* `target(data)` is `gap` nats below the unigram line: deep past the plateau, and reached by every
  seed of the baseline within the budget (`docs/power.md` lists the measured margin).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from effitrain.config import Config, default_profile, profile_config
from effitrain.stats import DEFAULT_RESOLVE
from effitrain.techniques.base import Technique
from effitrain.train.run import Run
from effitrain.train.runcache import cached_train


@dataclass(frozen=True)
class Design:
    """A profile's comparison design; see the module docstring."""

    profile: str
    budget: str
    evals: int
    seeds: tuple[int, ...]
    warm_start: int
    gap: float
    resolve: float = DEFAULT_RESOLVE

    def config(self, **changes: Any) -> Config:
        return profile_config(self.profile, **{"budget": self.budget, "evals": self.evals, **changes})

    def warm(self, **changes: Any) -> Config:
        return self.config(**{"warm_start": self.warm_start, **changes})

    def target(self, data: Any) -> float:
        """The target val loss: `gap` nats below the unigram line of `data`."""
        return float(data.unigram_val_loss()) - self.gap


DESIGNS: dict[str, Design] = {
    # CI: the same shape at a size that trains in seconds (its numbers decide nothing)
    "smoke": Design("smoke", budget="120steps", evals=12, seeds=(0, 1), warm_start=40, gap=0.2),
    "cpu": Design("cpu", budget="1000steps", evals=40, seeds=(0, 1, 2, 3, 4), warm_start=300, gap=1.5),
    "gpu": Design("gpu", budget="2000steps", evals=40, seeds=(0, 1, 2), warm_start=600, gap=2.0),
}


def design(profile: str | None = None) -> Design:
    """The comparison design of `profile` (default: `default_profile()`)."""
    name = profile or default_profile()
    if name not in DESIGNS:
        raise ValueError(f"no comparison design for profile {name!r}; designs: {', '.join(DESIGNS)}")
    return DESIGNS[name]


def seed_runs(config: Config, techniques: Iterable[Technique], seeds: Sequence[int], data: Any, *,
              name: str = "", callbacks: Iterable[Callable] = (), verbose: bool = True, **train_kwargs: Any) -> list[Run]:
    """`config` with `techniques`, once per seed, through the run cache (a run trained before, in any
    lesson, loads). Each seed gets fresh technique objects (their state is per run); runs are named
    "<name> s<seed>" so `compare` groups them. Prints one summary line per run when `verbose`."""
    techniques = list(techniques)
    label = name or "+".join(t.name for t in techniques) or "baseline"
    runs = []
    for seed in seeds:
        fresh = [type(t)(t.params) for t in techniques]
        run = cached_train(config.replace(seed=seed), fresh, data=data, name=f"{label} s{seed}", progress=False,
                           callbacks=list(callbacks), **train_kwargs)
        runs.append(run)
        if verbose:
            print(run.summary_line(), flush=True)
    return runs
