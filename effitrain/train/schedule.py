"""Learning-rate schedules as functions of the fraction of the budget used, f ∈ [0, 1].

Because they read f rather than a step count, a schedule ends exactly at the deadline whether the
budget is steps, tokens, seconds or FLOPs (Izsak et al. 2021; Geiping & Goldstein 2022). The
trainer sets each param group's lr from `lr_factor` once per step, which is why this is a plain
function instead of a `torch.optim.lr_scheduler` (those count steps, and a time budget has none).
"""
from __future__ import annotations

import math


def lr_factor(fraction: float, schedule: str, warmup: float, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at budget fraction f.

    warm-up (all but one-cycle): f / warmup for f < warmup.
    constant: 1.   linear: 1 → min_ratio.   cosine: min_ratio + (1 - min_ratio)·½(1 + cos πu),
    u = (f - warmup) / (1 - warmup).
    one-cycle (Smith 2018, torch's OneCycleLR): cosine from 1/25 up to 1 at f = warmup, then
    cosine down to 1/(25·10⁴).
    triangular (cramming, Geiping & Goldstein 2022): min(0.25 + f, 4 − 4f): from a quarter of the
    peak up to the peak at f = 0.75, then down to 0 at the deadline (warmup is not used).
    """
    f = min(max(fraction, 0.0), 1.0)
    if schedule == "triangular":
        return max(0.0, min(0.25 + f, 4.0 - 4.0 * f, 1.0))
    if schedule == "one-cycle":
        peak = warmup if warmup > 0 else 0.3
        start, end = 1 / 25, 1 / 25e4
        if f < peak:
            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * f / peak))
        u = (f - peak) / (1 - peak)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * u))
    if warmup > 0 and f < warmup:
        return f / warmup
    if schedule == "constant":
        return 1.0
    u = (f - warmup) / (1 - warmup) if warmup < 1 else 1.0
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * u
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1 + math.cos(math.pi * u))
    raise ValueError(f"optim.schedule must be one of constant, linear, cosine, one-cycle, triangular; got {schedule!r}")


def schedule_fraction(budget_fraction: float, step: int, plan_steps: int = 0) -> float:
    """Where the LR schedule is after `step` steps: the budget fraction, or (plan_steps > 0, a schedule
    planned in steps) step / plan_steps, which a deadline in seconds, tokens or FLOPs may cut off."""
    return budget_fraction if plan_steps == 0 else min(1.0, step / plan_steps)


def micro_batches_at(fraction: float, target: int, ramp: float) -> int:
    """Micro-batches per step at budget fraction f: 1 → `target` linearly over the first `ramp` of the
    budget (cramming's batch-size ramp, reached by accumulation), then `target`. ramp = 0: always `target`.
    """
    if ramp <= 0 or fraction >= ramp or target <= 1:
        return target
    return min(target, 1 + int((target - 1) * max(fraction, 0.0) / ramp))


def evals_due(fraction: float, evals: int) -> int:
    """How many of a run's `evals` evaluations are due by this budget fraction: one at every 1/evals
    (the trainer evaluates when this exceeds the ones done; a resumed run counts its done ones so)."""
    return min(evals, int(math.floor(fraction * evals + 1e-9)))
