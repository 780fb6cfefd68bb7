"""Same math, less time: measure what a setting does to the seconds of a step, and that it leaves the
loss of a step alone (lesson 06).

    speed = toggle_speed(cfg, {"bf16": {"run.precision": "bf16"}, ...}, baseline={"run.precision": "fp32"})
    parity = loss_parity({"bf16": run_b, ...}, baseline=[run_fp32_s0, run_fp32_s1])

`toggle_speed` times training steps (`effitrain.bench.bench_training_step`, synthetic batches of the
config's shape) of the baseline and of each setting in turn, round after round (alternating, so a
machine that slows down or speeds up during the measurement slows every setting alike), and gives
tokens/s with a 95% interval over rounds and the ratio to the baseline with its interval, paired by
round (a round's two timings share the machine's state at that moment, which cancels), and a
verdict: faster by [lo, hi], slower by [lo, hi], or no effect beyond ±X% here.
`loss_parity` says whether the settings trained the same curve: the largest gap of the validation
loss from the baseline's at the same step, next to the gap between two baseline seeds (the noise
a difference must beat to mean anything).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from effitrain.config import Config
from effitrain.lab.compare import mean_ci
from effitrain.stats import DEFAULT_RESOLVE, Ratio, ratio_ci
from effitrain.train.run import Run


def toggle_speed(config: Config, settings: "dict[str, dict[str, Any]]", *, baseline: "dict[str, Any] | None" = None,
                 rounds: int = 3, steps: int = 10, warmup: int = 3, resolve: float = DEFAULT_RESOLVE,
                 verbose: bool = False) -> pd.DataFrame:
    """Tokens/s of the baseline and of each setting, alternating, `rounds` times; ratios with intervals.

    settings: {label: config changes} (each applied on top of the baseline); baseline: the changes
    that make the baseline from `config` (default none). Each round times `steps` steps after
    `warmup` (where torch.compile compiles: its seconds are the "compile s" column, never in the
    step times). Columns: tokens/s and ± (95% over rounds), "× baseline" with its interval (lo, hi)
    paired by round, "verdict" (`Ratio.verdict` at ×/÷`resolve`; "rounds needed" for that width),
    ms/step, peak memory (MiB; on a CPU the growth of the process's peak RSS, so read it on a GPU),
    compile s, and "break-even steps" for a compiled setting: its compile seconds ÷ the seconds it
    saves per step against the baseline (inf where it saves none).
    """
    from effitrain.bench import bench_training_step

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"toggle_speed: rounds must be a positive integer, got {rounds!r}")
    if "baseline" in settings:
        raise ValueError("toggle_speed: 'baseline' is the name of the baseline row; give the setting another label")
    base_cfg = config.replace(**(baseline or {}))
    configs = {"baseline": base_cfg, **{label: base_cfg.replace(**changes) for label, changes in settings.items()}}
    results: dict[str, list[Any]] = {label: [] for label in configs}
    for r in range(rounds):
        for label, cfg in configs.items():
            res = bench_training_step(cfg, steps=steps, warmup=warmup, seed=cfg.run.seed + r, peak_flops=1.0,
                                      count=False)
            results[label].append(res)
            if verbose:
                print(f"round {r + 1}/{rounds} {label}: {res.tokens_per_second:,.0f} tokens/s", flush=True)
    base_tps = [x.tokens_per_second for x in results["baseline"]]
    base_step = float(np.mean([x.median_step_seconds for x in results["baseline"]]))
    rows = {}
    for label, res in results.items():
        tps = [x.tokens_per_second for x in res]
        mean, half = mean_ci(tps)
        # setting ÷ baseline (above 1 is faster), paired by round; the baseline row is 1 by definition
        r = Ratio.of(tps, base_tps, paired=True) if label != "baseline" else None
        step = float(np.mean([x.median_step_seconds for x in res]))
        comp = float(np.mean([x.compile_seconds for x in res]))
        saved = base_step - step
        rows[label] = {"tokens/s": mean, "tokens/s ±": half, "× baseline": r.ratio if r else 1.0,
                       "lo": r.lo if r else math.nan, "hi": r.hi if r else math.nan,
                       "verdict": r.verdict(resolve) if r else "",
                       "rounds needed": (r.seeds_for(resolve) if r else None) or math.nan,
                       "ms/step": step * 1e3, "peak memory MiB": float(np.mean([x.peak_memory_bytes for x in res])) / 2**20,
                       "compile s": comp,
                       "break-even steps": (comp / saved if saved > 0 else math.inf) if comp > 0 else math.nan}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.attrs.update(rounds=rounds, steps=steps, resolve=resolve, device=results["baseline"][0].device,
                    memory_kind=results["baseline"][0].peak_memory_kind)
    return df


def _val_curve(run: Run) -> dict[int, float]:
    return {int(e["step"]): float(e["val_loss"]) for e in run.history.evals}


def max_gap(a: Run, b: Run) -> float:
    """The largest |validation loss of a − of b| over the evaluation steps both have (NaN if none)."""
    ca, cb = _val_curve(a), _val_curve(b)
    common = sorted(set(ca) & set(cb))
    return max((abs(ca[s] - cb[s]) for s in common), default=math.nan)


def loss_parity(runs: "dict[str, Run]", baseline: Sequence[Run]) -> pd.DataFrame:
    """Did each setting train the baseline's curve? One row per run in `runs`, against baseline[0].

    Columns: "max gap" (nats, the largest |Δ val loss| at a common step), "seed noise" (the largest
    gap between baseline[0] and each other baseline seed: what the same recipe moves by), "within
    noise" (max gap <= seed noise), final val loss. With one baseline run the noise is NaN.
    """
    base = list(baseline)
    if not base:
        raise ValueError("loss_parity needs at least one baseline run (two to know the seed noise)")
    noise = max((max_gap(base[0], other) for other in base[1:]), default=math.nan)
    rows = {}
    for label, run in runs.items():
        gap = max_gap(run, base[0])
        rows[label] = {"max gap": gap, "seed noise": noise,
                       "within noise": bool(gap <= noise) if math.isfinite(noise) else None,
                       "final val loss": float(run.history.evals[-1]["val_loss"])}
    return pd.DataFrame.from_dict(rows, orient="index")


def setting_parts(setting: Any) -> "tuple[dict[str, Any], list[Any]]":
    """(config changes, techniques) of a setting given as [techniques] or (changes, [techniques])."""
    if isinstance(setting, tuple) and len(setting) == 2 and isinstance(setting[0], dict):
        return dict(setting[0]), list(setting[1])
    return {}, list(setting)


def step_cost(config: Config, settings: "dict[str, Sequence[Any]]", *, data: Any = None, rounds: int = 3,
              steps: int = 12, warmup: int = 2) -> pd.DataFrame:
    """Seconds and FLOPs per step of short real training runs with technique lists, against the plain run.

    For techniques that change the work of a step (selective backprop, layer dropping), where
    `toggle_speed`'s config changes cannot express them. settings: {label: [techniques]}, or {label:
    (config changes, [techniques])} for a setting that changes the config too (each run gets fresh deep
    copies, so no state carries from one run to the next); the plain run is the row
    "baseline". Each round trains every setting
    for `warmup` + `steps` steps on real batches of `data` (in turn, rounds alternating; seed =
    config seed + round), and the per-step seconds and FLOPs of the last `steps` steps are compared
    with the baseline's. Columns: s/step (ms), "× baseline s" [lo, hi] (95% over rounds, paired by
    round), FLOPs/step,
    "× baseline FLOPs" [lo, hi].
    """
    from effitrain.train.trainer import train

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"step_cost: rounds must be a positive integer, got {rounds!r}")
    if "baseline" in settings:
        raise ValueError("step_cost: 'baseline' is the name of the plain run's row; give the setting another label")
    total = warmup + steps
    cfg = config.replace(budget=f"{total}steps", evals=1, log_every=1)
    every = {"baseline": ({}, []), **{label: setting_parts(s) for label, s in settings.items()}}
    seconds: dict[str, list[float]] = {label: [] for label in every}
    flops: dict[str, list[float]] = {label: [] for label in every}
    for r in range(rounds):
        for label, (changes, techniques) in every.items():
            run = train(cfg.replace(**{**changes, "seed": config.run.seed + r}), copy.deepcopy(techniques), data=data,
                        progress=False)
            rows = {int(row["step"]): row for row in run.history.steps}
            first, last = rows.get(warmup, {"seconds": 0.0, "flops": 0.0}), rows[total]
            seconds[label].append((last["seconds"] - first["seconds"]) / steps)
            flops[label].append((last["flops"] - first["flops"]) / steps)
    out = {}
    for label in every:
        # label ÷ baseline, paired by round (the same seed and the same moment of the machine)
        s_ratio, s_lo, s_hi = ratio_ci(seconds[label], seconds["baseline"], paired=True)
        f_ratio, f_lo, f_hi = ratio_ci(flops[label], flops["baseline"], paired=True)
        out[label] = {"ms/step": float(np.mean(seconds[label])) * 1e3, "× baseline s": s_ratio, "s lo": s_lo, "s hi": s_hi,
                      "FLOPs/step": float(np.mean(flops[label])), "× baseline FLOPs": f_ratio, "FLOPs lo": f_lo,
                      "FLOPs hi": f_hi}
    df = pd.DataFrame.from_dict(out, orient="index")
    df.attrs.update(rounds=rounds, steps=steps)
    return df


__all__ = ["toggle_speed", "loss_parity", "max_gap", "setting_parts", "step_cost"]
