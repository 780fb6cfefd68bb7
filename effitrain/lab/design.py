"""The comparison design every lesson shares: one baseline per profile, paired seeds, a warm start.

    d = design()                                        # the profile's design (EFFITRAIN_PROFILE, else by device)
    data = et.prepare_data(d.config().data)
    warm = d.warm(data)                                 # from the warm seed's state past the plateau
    base = seed_runs(warm, [], d.seeds, data)           # the shared baseline: cached, so every lesson pays it once
    runs = seed_runs(warm, [et.technique("layer_drop")], d.seeds, data)   # the same seeds, from the same state
    compare(base + runs, target_val_loss=d.target(data), resolve=d.resolve)   # paired by seed; "faster by [lo, hi]"

Why this shape (measured in docs/power.md): from scratch, the step at which a masked LM leaves
its unigram plateau varies a lot over seeds (here by a third of the mean) and moves when anything
changes early, so two settings' times to a target spread like two independent draws. When every
seed and setting continues from one baseline state past the plateau (the warm start) and is
paired by seed, only what happens after it varies.

* `config(**changes)` is the profile with the design's budget and evaluations, from scratch: for
  claims about the start of training (ELECTRA, recipes, a curriculum's early phase).
* `warm(data, **changes)` is the same config starting from the warm seed's state at its first
  evaluation `warm_gap` nats below the unigram line: for claims about the main phase of training
  (pruning or curricula over the remaining budget, layer dropping, selective backprop). Every
  lesson that builds its baseline this way with the design's seeds loads the same cached runs.
* `target(data)` is `gap` nats below the unigram line: deep past the plateau.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import dataclasses

from effitrain.config import PROFILE_SIZES, Config, default_profile, profile_config, profile_size
from effitrain.stats import DEFAULT_RESOLVE
from effitrain.techniques.base import Technique
from effitrain.train.run import Run
from effitrain.train.runcache import cached_train


@dataclass(frozen=True)
class Design:
    """A profile's comparison design; see the module docstring.

    budget, evals: every run's. seeds: the seeds every setting trains (paired by seed). warm_seed,
    warm_gap: the warm start is the warm seed's baseline state at its first evaluation `warm_gap`
    nats below the unigram line (so it is past the plateau on any machine, whatever its precision).
    gap: the target, nats below the unigram line. resolve: the ×/÷ interval width aimed for.
    """

    profile: str
    budget: str
    evals: int
    seeds: tuple[int, ...]
    warm_gap: float
    gap: float
    warm_seed: int = 0
    resolve: float = DEFAULT_RESOLVE

    def config(self, **changes: Any) -> Config:
        """The profile with the design's budget and evaluations (from scratch)."""
        return profile_config(self.profile, **{"budget": self.budget, "evals": self.evals, **changes})

    def warm_step(self, data: Any, **changes: Any) -> int:
        """The step of the warm start: the warm seed's baseline (cached: every lesson shares it) at its
        first evaluation `warm_gap` nats below the unigram line."""
        cfg = self.config(**{**changes, "seed": self.warm_seed})
        run = cached_train(cfg, [], data=data, name=f"baseline s{self.warm_seed}", progress=False)
        line = float(data.unigram_val_loss()) - self.warm_gap
        for e in run.history.evals:
            if 0 < e["step"] < run.history.evals[-1]["step"] and e["val_loss"] <= line:
                return int(e["step"])
        raise ValueError(f"the warm seed's baseline ({cfg.budget}, seed {self.warm_seed}) never got {self.warm_gap:g} "
                         f"nats below the unigram line before its last evaluation (val loss {line:.3f}); lengthen the "
                         "budget or lower warm_gap")

    def warm(self, data: Any, **changes: Any) -> Config:
        """The design's config starting from the shared warm start (`run.warm_start`, `run.warm_seed`)."""
        return self.config(**{"warm_start": self.warm_step(data, **changes), "warm_seed": self.warm_seed, **changes})

    def target(self, data: Any) -> float:
        """The target val loss: `gap` nats below the unigram line of `data`."""
        return float(data.unigram_val_loss()) - self.gap


DESIGNS: dict[str, Design] = {
    # CI: the same shape at a size that trains in seconds; its runs stay near the plateau and decide nothing
    "smoke": Design("smoke", budget="40steps", evals=4, seeds=(0, 1), warm_gap=-1.0, gap=0.0),
    "cpu": Design("cpu", budget="1000steps", evals=40, seeds=(0, 1, 2, 3, 4), warm_gap=1.0, gap=1.5),
    "gpu": Design("gpu", budget="2000steps", evals=40, seeds=(0, 1, 2), warm_gap=1.5, gap=2.5),
}


def design(profile: str | None = None) -> Design:
    """The comparison design of `profile` (default: `default_profile()`)."""
    name = profile or default_profile()
    if name in DESIGNS:
        return DESIGNS[name]
    if name not in PROFILE_SIZES:
        raise ValueError(f"no comparison design for profile {name!r}; designs: {', '.join(DESIGNS)} "
                         f"(and the profiles that use their sizes: {', '.join(PROFILE_SIZES)})")
    return dataclasses.replace(DESIGNS[profile_size(name)], profile=name)  # gpu-smoke: smoke's design, its profile


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
