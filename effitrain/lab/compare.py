"""Compare runs honestly: group seeds, time-to-target with intervals, speedup against a baseline.

    df = compare(runs)                       # one row per group (same techniques + params + settings)
    styled(df)                               # "12.3 ± 1.1" strings, the baseline in bold, a caption
    curves = aggregate_curves(group_runs(runs)["baseline"], x="seconds")   # mean + band over seeds

Definitions (also in `df.attrs["notes"]`):

* A **group** is the runs that differ only in their seed (and name): same techniques with the
  same parameters, same data / model / optimizer / budget / run settings.
* **Time to target** is `effitrain.time_to_target(history, val_loss=target)`: training seconds
  (evaluation excluded) and measured FLOPs at which the validation curve first reaches the target,
  interpolated linearly between evaluations.
* **Default target**: the *highest* final validation loss among the baseline group's seeds. Every
  baseline seed ends at or below it, so the baseline reaches the default target by definition
  (with one seed this is simply the baseline's final val loss). A group whose seeds all end below
  it "finished the baseline's job" sooner when its time is shorter. `target_val_loss="common"`
  takes the highest final loss of all runs instead, which every run reaches.
* **mean ± half-width**: a 95% Student-t interval over seeds, `t(0.975, n-1) · s / √n`; with one
  seed there is no interval (NaN), not a guess.
* **Speedup** = baseline time ÷ group time, as a ratio of geometric means (the log scale, where
  2× faster and 2× slower are equally far from 1). Its 95% interval is a t-interval on log times
  (`effitrain.stats`, through `scipy.stats`): **paired** when the group and the baseline hold the
  same seeds (the same seed gives the same initial weights and data order, so the interval is
  over per-seed ratios: `ttest_rel`), else Welch's (`ttest_ind`, unequal variances). It needs at
  least two seeds. The baseline row is 1 by definition.
* **Power**: `width` is the interval as a ×/÷ factor, `mde` the smallest true effect (×/÷) these
  seeds find with 80% power, `seeds_needed` how many seeds give an interval within ×/÷`resolve`
  (default 1.15) at the measured spread. **Verdict**: "faster by [lo, hi]×", "slower by [lo, hi]×",
  "no effect beyond ±X% here" (the interval holds 1 and is within ×/÷`resolve`), or "undecided"
  (wider than that: flagged with a `WideIntervalWarning` and a note).
* A group where **any** seed does not reach the target shows the string ``"not reached"`` for its
  time, FLOPs and speedup: never a made-up number.
* Runs with status "failed" carry no measurement and are left out (listed in `df.attrs["excluded"]`).
* **Context gain** = the unigram val loss (`run.extra["unigram_val_loss"]`: a model that knows only
  word frequencies) − the final val loss, in nats, mean ± interval over seeds. A masked LM first
  falls to about the unigram loss, sits there (the *plateau*), and only later drops below it as
  attention uses context. A **target above the unigram line** is reached on the plateau, where no
  run has learned anything a technique could speed up: `compare` says so in `df.attrs["notes"]` and
  with a `PlateauWarning` (`on_plateau="error"` raises `PlateauError` instead).
* Runs loaded from the run cache keep the seconds they measured; when those were measured on
  another machine, the group's `other_machine` count says how many, its time is marked "†" and a
  note names the machines (compare by FLOPs or steps, or train again here).
"""
from __future__ import annotations

import json
import math
import re
import warnings
from typing import Callable, Any, Iterable, Sequence

import numpy as np
import pandas as pd

from effitrain.stats import DEFAULT_RESOLVE, LEVEL, Ratio, mean_ci, ratio_ci
from effitrain.train.history import time_to_target
from effitrain.train.run import Run
from effitrain.train.machine import host, measured_elsewhere, measured_on

NOT_REACHED = "not reached"
BASELINE_NOT_REACHED = "baseline not reached"
CI_METHOD = ("95% Student-t interval over seeds; speedup: ratio of geometric means with a t-interval on log "
             "times, paired over shared seeds (scipy.stats.ttest_rel) or else Welch (ttest_ind), ≥2 seeds")
PLATEAU_CHOICES = ("warn", "error")


class PlateauWarning(UserWarning):
    """The comparison's target lies above the unigram baseline: it is made on the plateau."""


class PlateauError(ValueError):
    """`compare(..., on_plateau="error")` with a target above the unigram baseline."""


# -- grouping ----------------------------------------------------------------------------------
_SEED_SUFFIX = re.compile(r"\s*\bs\d+$")


def group_key(run: Run) -> str:
    cfg = run.config.to_dict()
    cfg["run"] = {k: v for k, v in cfg["run"].items() if k not in ("seed", "name")}
    return json.dumps({"techniques": run.techniques, "config": cfg}, sort_keys=True, default=str)


def _base_label(run: Run) -> str:
    if run.name:
        return _SEED_SUFFIX.sub("", run.name) or run.name
    return run.setting


def _flat(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in run.techniques:
        for k, v in (t.get("params") or {}).items():
            out[f"{t['name']}.{k}"] = v
    cfg = run.config.to_dict()
    for section, values in cfg.items():
        if isinstance(values, dict):
            for k, v in values.items():
                if section == "run" and k in ("seed", "name"):
                    continue
                out[k if k not in out else f"{section}.{k}"] = v
        else:
            out[section] = values
    return out


def group_runs(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs grouped by everything but the seed, in first-seen order, keyed by a readable label.

    The label is the techniques joined by "+" (or "baseline", or the run name without its
    " s<seed>" suffix); groups that would share a label get the settings that tell them apart
    appended, e.g. ``"baseline (budget=40steps)"``.
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    by_label: dict[str, list[str]] = {}
    for key, members in groups.items():
        by_label.setdefault(_base_label(members[0]), []).append(key)
    labels: dict[str, str] = {}
    for label, keys in by_label.items():
        if len(keys) == 1:
            labels[keys[0]] = label
            continue
        flats = [_flat(groups[k][0]) for k in keys]
        names = sorted({n for f in flats for n in f})
        differing = [n for n in names if len({json.dumps(f.get(n), default=str) for f in flats}) > 1]
        for key, flat in zip(keys, flats):
            extra = ", ".join(f"{n}={flat.get(n)}" for n in differing[:3])
            labels[key] = f"{label} ({extra})"
        if len({labels[k] for k in keys}) < len(keys):  # still ambiguous: number them
            for i, key in enumerate(keys, 1):
                labels[key] = f"{labels[key]} #{i}"
    return {labels[k]: members for k, members in groups.items()}


def _find_baseline(groups: dict[str, list[Run]], baseline: Any) -> str:
    if baseline is None:
        for label, members in groups.items():
            if not members[0].techniques:
                return label
        return next(iter(groups))
    if isinstance(baseline, str):
        if baseline in groups:
            return baseline
        raise ValueError(f"baseline {baseline!r} is not a group; groups: {', '.join(groups)}")
    wanted = [baseline] if isinstance(baseline, Run) else list(baseline)
    for label, members in groups.items():
        if any(m is w for m in members for w in wanted):
            return label
    raise ValueError("the baseline run is not among the runs being compared")


# -- the table ------------------------------------------------------------------------------------
def _final_val_loss(run: Run) -> float:
    evals = run.history.evals
    return float(evals[-1]["val_loss"]) if evals else math.nan


def unigram_val_loss(run: Run) -> float:
    """The run's unigram baseline (val loss from word frequencies alone); NaN when not recorded."""
    v = run.extra.get("unigram_val_loss")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else math.nan


def context_gain(run: Run) -> float:
    """Unigram val loss − final val loss (nats): what the run learned beyond word frequencies."""
    return unigram_val_loss(run) - _final_val_loss(run)


def common_target(runs: Iterable[Run]) -> float:
    """The highest final validation loss over all `runs`: the hardest target that every run reaches.

    `compare`'s default target (the baseline's worst final seed) asks "who gets to the baseline's
    quality?"; a technique that ends worse then reads "not reached" and has no speed-up. At this
    looser target every group has a time and a ratio, which says who got *there* first: a
    technique can be faster early and still end worse, and the speed-up depends on the target.
    """
    finals = [_final_val_loss(r) for r in runs if r.status != "failed"]
    finals = [f for f in finals if math.isfinite(f)]
    if not finals:
        raise ValueError("common_target needs at least one run with a finite validation loss")
    return max(finals)


COLUMNS = ["seeds", "reached", "time_s", "time_s_ci", "flops", "flops_ci", "final_val_loss", "final_val_loss_ci",
           "context_gain", "context_gain_ci", "tokens_per_s", "tokens_per_s_ci", "speedup", "speedup_lo", "speedup_hi",
           "paired", "width", "mde", "seeds_needed", "verdict", "other_machine", "status"]


SPEEDUP_AXES = ("seconds", "flops", "tokens", "step")
_AXIS_WORDS = {"seconds": "training seconds", "flops": "FLOPs", "tokens": "tokens", "step": "steps"}
TARGET_CHOICES = ("baseline", "common")


class WideIntervalWarning(UserWarning):
    """A speed-up's interval is wider than the comparison is meant to resolve: it decides nothing."""


def seed_of(run: Run) -> int:
    return int(run.config.run.seed)


def pairing(base: Sequence[Run], group: Sequence[Run]) -> list[tuple[Run, Run]] | None:
    """The runs of two groups matched by seed, when both hold the same seeds once each (≥ 2); else None."""
    b, g = {seed_of(r): r for r in base}, {seed_of(r): r for r in group}
    if len(b) != len(base) or len(g) != len(group) or set(b) != set(g) or len(b) < 2:
        return None
    return [(b[s], g[s]) for s in sorted(b)]


def _warm_label(run: Run) -> str:
    w = run.extra.get("warm_start")
    return f"warm start at step {w['step']} of seed {w.get('seed', 0)}" if w else "from scratch"


def since_warm_start(run: Run, hit: dict | None) -> dict | None:
    """A `time_to_target` result counted from the run's warm start (`run.extra["warm_start"]`): the
    prefix every warm-started run shares would only dilute a ratio toward 1. A target the run had
    reached before its warm start is refused: the comparison would measure the shared baseline."""
    warm = run.extra.get("warm_start")
    if hit is None or not warm:
        return hit
    if hit["step"] <= warm["step"]:
        raise ValueError(f"{run.label} reached the target at step {hit['step']:g}, before its warm start at step "
                         f"{warm['step']}: that is the shared baseline's progress; choose a lower target")
    return {**hit, **{axis: hit[axis] - warm[axis] for axis in ("seconds", "flops", "tokens", "step")}}


def compare(runs: Iterable[Run], target_val_loss: float | str | None = None, baseline: Any = None,
            speedup_by: str = "seconds", on_plateau: str = "warn",
            charge: Callable[[Run, str], float] | None = None, paired: Any = "auto",
            resolve: float = DEFAULT_RESOLVE) -> pd.DataFrame:
    """One row per group of seeds; see the module docstring for every definition.

    runs: finished (or stopped) `Run`s. target_val_loss: the validation loss to reach; None or
    "baseline" (default): the highest final val loss among the baseline's seeds (the baseline
    reaches it by definition); "common": the highest final val loss of *all* runs (`common_target`:
    every run reaches it, so every group gets a ratio). baseline: a group label, a `Run` of the
    baseline group, or None (the group without techniques, else the first group). speedup_by: what
    the speed-up is a ratio of, at the target: "seconds" (default; training wall time), "flops"
    (measured FLOPs: immune to a busy machine, blind to kernels that are faster per FLOP), "tokens"
    or "step". on_plateau: what a target above the baseline's unigram val loss does: "warn" (a note
    and a `PlateauWarning`) or "error" (`PlateauError`).
    charge(run, axis): a cost added to each run's time to target on the speed-up's axis before the
    ratio is taken (e.g. the FLOPs or seconds spent scoring the data), for speed-ups "net of" it.
    paired: "auto" (default) pairs a group with the baseline by seed when both hold the same
    seeds (the same seed = the same initial weights and data order), True insists on it, False
    never pairs. resolve: the ×/÷ interval width the comparison is designed to resolve; a wider
    interval is flagged with a `WideIntervalWarning` and the verdict says how many seeds would do.

    Columns: seeds, reached ("k/n"), time_s ± time_s_ci, flops ± flops_ci (to target),
    final_val_loss ± final_val_loss_ci, context_gain ± context_gain_ci (unigram − final val loss,
    nats), tokens_per_s ± tokens_per_s_ci, speedup [speedup_lo, speedup_hi] (ratio of geometric
    means), paired, width (the interval as ×/÷), mde (smallest ×/÷ effect found with 80% power),
    seeds_needed (for ×/÷`resolve` at this spread), verdict, other_machine (seeds whose seconds were
    measured on another host), status. `df.attrs` holds target_val_loss, target_source, baseline,
    unigram_val_loss (the baseline's), plateau (True: target above it), resolve, wide (groups whose
    interval is wider than `resolve`), ci_method, excluded and notes.
    """
    _check_options(speedup_by, on_plateau, paired, resolve, target_val_loss)
    runs = list(runs)
    kept = [r for r in runs if r.status != "failed" and r.history.evals]
    kept_ids = {id(r) for r in kept}
    excluded = [f"{r.label}: {r.status}" + (f" ({r.message})" if r.message else "")
                for r in runs if id(r) not in kept_ids]
    if not kept:
        empty = pd.DataFrame(columns=COLUMNS)
        empty.attrs.update(target_val_loss=target_val_loss, target_source="none", baseline=None,
                           ci_method=CI_METHOD, excluded=excluded, notes=[], speedup_by=speedup_by,
                           unigram_val_loss=math.nan, plateau=False, resolve=resolve, wide=[])
        return empty
    starts = {_warm_label(r) for r in kept}
    if len(starts) > 1:
        raise ValueError(f"runs with different warm starts cannot be compared ({'; '.join(sorted(starts))}): their "
                         "times count from different points; give every run the same run.warm_start and run.warm_seed")
    groups = group_runs(kept)
    base_label = _find_baseline(groups, baseline)
    target, source = _target(target_val_loss, groups[base_label], kept, base_label)
    unigram, _ = mean_ci([unigram_val_loss(r) for r in groups[base_label]])
    plateau_note = _plateau_note(target, unigram)
    if plateau_note and on_plateau == "error":
        raise PlateauError(plateau_note)
    if plateau_note:
        warnings.warn(plateau_note, PlateauWarning, stacklevel=2)

    reach: dict[int, dict | None] = {
        id(r): since_warm_start(r, time_to_target(r.history, val_loss=target)) if math.isfinite(target) else None
        for members in groups.values() for r in members}
    cost = (lambda r: 0.0) if charge is None else (lambda r: float(charge(r, speedup_by)))  # noqa: E731
    to_target = lambda r: reach[id(r)][speedup_by] + cost(r)  # noqa: E731
    base_runs = groups[base_label]
    base_reached = all(reach[id(r)] is not None for r in base_runs)
    rows, wide = {}, []
    for label, members in groups.items():
        row = _group_row(members, [reach[id(r)] for r in members])
        if row["reached"] == f"{len(members)}/{len(members)}" and base_reached and label != base_label:
            if _speedup(row, label, members, base_label, base_runs, to_target, paired, resolve):
                wide.append(label)
        elif row["reached"] == f"{len(members)}/{len(members)}":
            base = label == base_label and base_reached
            row["speedup"] = 1.0 if base else BASELINE_NOT_REACHED
            row["verdict"] = "baseline" if base else BASELINE_NOT_REACHED
        rows[label] = row
    df = pd.DataFrame.from_dict(rows, orient="index")[COLUMNS]
    df.index.name = "group"
    notes = _notes(plateau_note, target, source, speedup_by, resolve, kept, wide, unigram)
    df.attrs.update(
        target_val_loss=target, target_source=source, baseline=base_label, ci_method=CI_METHOD, excluded=excluded,
        speedup_by=speedup_by, unigram_val_loss=unigram, plateau=bool(plateau_note), resolve=resolve, wide=wide,
        notes=notes)
    return df


def _check_options(speedup_by: str, on_plateau: str, paired: Any, resolve: Any, target_val_loss: Any) -> None:
    if speedup_by not in SPEEDUP_AXES:
        raise ValueError(f"speedup_by must be one of {', '.join(SPEEDUP_AXES)}; got {speedup_by!r}")
    if on_plateau not in PLATEAU_CHOICES:
        raise ValueError(f"on_plateau must be one of {', '.join(PLATEAU_CHOICES)}; got {on_plateau!r}")
    if not (paired is True or paired is False or paired == "auto"):
        raise ValueError(f"paired must be 'auto', True or False; got {paired!r}")
    if isinstance(resolve, bool) or not isinstance(resolve, (int, float)) or not resolve > 1.0:
        raise ValueError(f"resolve must be a ×/÷ width above 1 (e.g. 1.15); got {resolve!r}")
    if isinstance(target_val_loss, str) and target_val_loss not in TARGET_CHOICES:
        raise ValueError(f"target_val_loss must be a number, 'baseline' or 'common'; got {target_val_loss!r}")


def _target(target_val_loss: Any, base_runs: Sequence[Run], kept: Sequence[Run], base_label: str) -> tuple[float, str]:
    """The target val loss and where it comes from (see `compare`)."""
    if target_val_loss is None or target_val_loss == "baseline":
        finals = [f for f in (_final_val_loss(r) for r in base_runs) if math.isfinite(f)]
        return (max(finals) if finals else math.nan,
                f"highest final val loss of the baseline '{base_label}' seeds (reached by the baseline by definition)")
    if target_val_loss == "common":
        return common_target(kept), "highest final val loss of all runs (common_target: every run reaches it)"
    return float(target_val_loss), "given"


def _plateau_note(target: float, unigram: float) -> str:
    """A line when the target sits above the unigram line (the plateau), else ""."""
    if not (math.isfinite(target) and math.isfinite(unigram) and target > unigram):
        return ""
    return (f"the target val loss {target:.4g} is above the unigram baseline {unigram:.4g} (word "
            "frequencies alone): it is reached on the plateau, before any run uses context, so this "
            "comparison says nothing about a technique; train the baseline longer or give a target "
            "below the unigram line")


def _group_row(members: Sequence[Run], hits: Sequence[dict | None]) -> dict[str, Any]:
    """A group's row without its speed-up: seeds, reached, time and FLOPs to target, final val loss, context
    gain, tokens/s, statuses (the speed-up columns say "not reached" when a seed missed)."""
    n, k = len(members), sum(h is not None for h in hits)
    row: dict[str, Any] = {"seeds": n, "reached": f"{k}/{n}"}
    if k == n:
        row["time_s"], row["time_s_ci"] = mean_ci([h["seconds"] for h in hits])
        row["flops"], row["flops_ci"] = mean_ci([h["flops"] for h in hits])
    else:
        row["time_s"], row["time_s_ci"] = NOT_REACHED, math.nan
        row["flops"], row["flops_ci"] = NOT_REACHED, math.nan
    row["final_val_loss"], row["final_val_loss_ci"] = mean_ci([_final_val_loss(r) for r in members])
    row["context_gain"], row["context_gain_ci"] = mean_ci([context_gain(r) for r in members])
    row["other_machine"] = sum(measured_elsewhere(r) for r in members)
    row["tokens_per_s"], row["tokens_per_s_ci"] = mean_ci([r.summary()["tokens_per_second"] for r in members])
    row.update(paired=False, width=math.nan, mde=math.nan, seeds_needed=math.nan,
               speedup=NOT_REACHED, speedup_lo=math.nan, speedup_hi=math.nan,
               verdict=f"not reached by {n - k} of {n} seeds" if k < n else "")
    statuses: dict[str, int] = {}
    for r in members:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    row["status"] = ", ".join(f"{c} {s}" if n > 1 else s for s, c in statuses.items())
    return row


def _speedup(row: dict[str, Any], label: str, members: Sequence[Run], base_label: str, base_runs: Sequence[Run],
             to_target: Callable[[Run], float], paired: Any, resolve: float) -> bool:
    """Fill the row's speed-up columns against the baseline; True when its interval is too wide to decide."""
    pairs = pairing(base_runs, members) if paired is not False else None
    if paired is True and pairs is None:
        raise ValueError(f"paired=True, but '{label}' and the baseline '{base_label}' do not hold the same "
                         "seeds (at least two, once each)")
    if pairs is not None:
        ratio = Ratio.of([to_target(b) for b, _ in pairs], [to_target(g) for _, g in pairs], paired=True)
    else:
        ratio = Ratio.of([to_target(b) for b in base_runs], [to_target(g) for g in members])
    need = ratio.seeds_for(resolve)
    row.update(speedup=ratio.ratio, speedup_lo=ratio.lo, speedup_hi=ratio.hi, paired=ratio.paired, width=ratio.width,
               mde=ratio.mde, seeds_needed=math.nan if need is None else need, verdict=ratio.verdict(resolve))
    return not ratio.decides(resolve)


def _notes(plateau_note: str, target: float, source: str, speedup_by: str, resolve: float, kept: Sequence[Run],
           wide: Sequence[str], unigram: float) -> list[str]:
    notes = ([f"⚠ on the plateau: {plateau_note}"] if plateau_note else []) + [
        f"target val loss {target:.4g}: {source}",
        "time = training seconds to reach the target (evaluation excluded), interpolated between evaluations",
        f"± = {CI_METHOD}",
        f"speedup = baseline {_AXIS_WORDS[speedup_by]} to target ÷ group's (geometric means; per seed when paired); "
        "'not reached' when any seed misses the target",
        f"width = the interval as ×/÷ around the speed-up; mde = the smallest ×/÷ effect these seeds find with 80% "
        f"power; seeds needed = for an interval within ×/÷{resolve:g} at this spread"]
    if kept[0].extra.get("warm_start"):  # every run has the same start (checked in compare)
        notes.append(f"every run starts from the baseline's {_warm_label(kept[0])}: time, FLOPs, tokens and steps "
                     "to target are counted from there (the shared prefix would only dilute a ratio toward 1)")
    if wide:
        wide_note = (f"⚠ too wide to decide: {', '.join(wide)}: the speed-up's interval is wider than ×/÷{resolve:g} "
                     "and holds 1, so it cannot tell faster from slower from no effect; see 'seeds needed', pair the "
                     "seeds, or warm-start from a shared baseline (docs/power.md)")
        notes.insert(0, wide_note)
        warnings.warn(wide_note, WideIntervalWarning, stacklevel=3)
    if math.isfinite(unigram):
        notes.append(f"context gain = unigram val loss (word frequencies alone; {unigram:.4g} for the baseline) "
                     "− final val loss, in nats; below 0: still on the plateau")
    return notes + _machine_notes(kept, speedup_by)


def _machine_notes(runs: Sequence[Run], speedup_by: str) -> list[str]:
    """Where seconds were measured, when that is not (only) here."""
    notes = []
    elsewhere = [r for r in runs if measured_elsewhere(r)]
    if elsewhere:
        machines = sorted({f"{m.get('host')} ({m.get('device') or '?'})" for m in map(measured_on, elsewhere) if m})
        notes.append(f"† seconds measured on another machine: {len(elsewhere)} run{'s' if len(elsewhere) != 1 else ''} "
                     f"loaded from the run cache were timed on {', '.join(machines)}, not here ({host()}); their "
                     "seconds compare machines as well as techniques: compare by FLOPs or steps, or train them again")
    devices = sorted({r.device for r in runs if r.device})
    if len(devices) > 1 and speedup_by == "seconds":
        notes.append(f"runs were timed on different devices ({'; '.join(devices)}): seconds compare the devices too")
    return notes


# -- display ---------------------------------------------------------------------------------------
def fmt_pm(value: Any, half: Any, spec: str, missing: str = "–") -> str:
    """"12.3 ± 1.1" (`spec` formats both); a string passes through, a missing value gives `missing`."""
    if isinstance(value, str):
        return value
    if value is None or not math.isfinite(value):
        return missing
    text = format(value, spec)
    if half is not None and isinstance(half, float) and math.isfinite(half):
        text += " ± " + format(half, spec)
    return text


def fmt_ratio(value: Any, lo: float, hi: float, missing: str = "–", unit: str = "×") -> str:
    """"1.85× [1.21, 2.83]"; a string (e.g. "not reached") passes through, a missing value gives `missing`."""
    if isinstance(value, str):
        return value
    if value is None or not math.isfinite(value):
        return missing
    return f"{value:.2f}{unit}" + (f" [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) and math.isfinite(hi) else "")


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The table as readable strings: "12.3 ± 1.1", "1.85× [1.21, 2.83]"."""
    out = pd.DataFrame(index=df.index)
    out["seeds"] = df["seeds"]
    out["reached target"] = df["reached"]
    elsewhere = df["other_machine"] if "other_machine" in df else [0] * len(df)
    out["time to target (s)"] = [fmt_pm(v, h, ".3g") + (" †" if k else "")
                                 for v, h, k in zip(df["time_s"], df["time_s_ci"], elsewhere)]
    out["FLOPs to target"] = [fmt_pm(v, h, ".3g") for v, h in zip(df["flops"], df["flops_ci"])]
    out["final val loss"] = [fmt_pm(v, h, ".4f") for v, h in zip(df["final_val_loss"], df["final_val_loss_ci"])]
    if "context_gain" in df:
        out["context gain (nats)"] = [fmt_pm(v, h, "+.3f") for v, h in zip(df["context_gain"], df["context_gain_ci"])]
    out["tokens/s"] = [fmt_pm(v, h, ",.0f") for v, h in zip(df["tokens_per_s"], df["tokens_per_s_ci"])]
    out["speedup"] = [fmt_ratio(*v) for v in zip(df["speedup"], df["speedup_lo"], df["speedup_hi"])]
    if "verdict" in df:
        out["verdict"] = df["verdict"]
    out["status"] = df["status"]
    return out


def styled(df: pd.DataFrame):
    """A pandas Styler for notebooks: strings with intervals, the baseline in bold, notes as caption."""
    shown = display_frame(df)
    base = df.attrs.get("baseline")
    notes = [f"<b style='color:#cf222e'>{n}</b>" if n.startswith("⚠") else n for n in df.attrs.get("notes", [])]
    caption = "<br>".join(notes + ["green / red speedup: its whole 95% interval lies above / below 1"])
    if df.attrs.get("excluded"):
        caption += "<br>left out: " + "; ".join(df.attrs["excluded"])

    def bold_baseline(row: pd.Series) -> list[str]:
        return ["font-weight: bold" if row.name == base else "" for _ in row]

    def colour_speedup(value: Any) -> str:
        # green / red only when the whole interval is above / below 1: a mean alone is not evidence
        if value in (NOT_REACHED, BASELINE_NOT_REACHED):
            return "color: #888"
        interval = re.search(r"\[([-\d.eE+]+), ([-\d.eE+]+)\]", value) if isinstance(value, str) else None
        if interval:
            lo, hi = float(interval.group(1)), float(interval.group(2))
            return "color: #1a7f37" if lo > 1.0 else ("color: #cf222e" if hi < 1.0 else "")
        return ""

    styler = shown.style.apply(bold_baseline, axis=1)
    cellwise = getattr(styler, "map", None) or styler.applymap  # pandas < 2.1 calls it applymap
    styler = cellwise(colour_speedup, subset=["speedup", "time to target (s)", "FLOPs to target"])
    return styler.set_caption(caption).set_table_styles(
        [{"selector": "caption", "props": "caption-side: bottom; text-align: left; font-size: 85%; color: #555"}])


def to_text(df: pd.DataFrame, notes: Sequence[str] | None = None, index: bool = True) -> str:
    """A table and its notes as plain text (scripts, nbmake logs): the one text renderer of the lab.

    A `compare` table is shown as `display_frame` shows it; any other table (a lesson's formatted
    table) as it is. notes: default `df.attrs["notes"]`.
    """
    if df.empty:
        return "no finished runs to compare" + (
            "; left out: " + "; ".join(df.attrs["excluded"]) if df.attrs.get("excluded") else "")
    shown = display_frame(df) if set(COLUMNS) <= set(df.columns) else df
    with pd.option_context("display.width", 250, "display.max_columns", 24, "display.max_colwidth", 40):
        text = shown.to_string(index=index)
    notes = list(df.attrs.get("notes", []) if notes is None else notes)
    if df.attrs.get("excluded"):
        notes.append("left out: " + "; ".join(df.attrs["excluded"]))
    return text + "\n" + "\n".join(notes)


# -- curves over seeds ----------------------------------------------------------------------------
def _curve(run: Run, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    rows = list(run.history.evals if y.startswith("val_") else run.history.steps)
    pts = [(float(r[x]), float(r[y])) for r in rows
           if r.get(x) is not None and r.get(y) is not None and math.isfinite(float(r[y]))]
    if not pts:
        return np.empty(0), np.empty(0)
    xs, ys = map(np.asarray, zip(*pts))
    return xs, ys


def aggregate_curves(runs: Iterable[Run], x: str = "step", y: str = "val_loss", band: str = "minmax") -> pd.DataFrame:
    """Mean curve over seeds and a band: columns x, mean, std, lo, hi, n.

    x: "step", "seconds", "flops" or "tokens". y: "val_loss", "val_accuracy" (evaluations) or
    "train_loss" (logged steps). band: "minmax" (lo/hi = min/max over seeds) or "std"
    (mean ± one standard deviation). When the runs share their x values (the same step budget)
    they are used as they are; otherwise every curve is linearly interpolated onto the union of
    the x values inside the range that all runs cover (so no curve is extrapolated).
    """
    if x not in ("step", "seconds", "flops", "tokens"):
        raise ValueError(f"x must be step, seconds, flops or tokens; got {x!r}")
    if band not in ("minmax", "std"):
        raise ValueError(f"band must be 'minmax' or 'std'; got {band!r}")
    curves = [c for c in (_curve(r, x, y) for r in runs) if c[0].size]
    columns = [x, "mean", "std", "lo", "hi", "n"]
    if not curves:
        return pd.DataFrame(columns=columns)
    same = all(c[0].shape == curves[0][0].shape and np.allclose(c[0], curves[0][0]) for c in curves)
    if same:
        grid = curves[0][0]
        ys = np.stack([c[1] for c in curves])
    else:
        start, stop = max(c[0].min() for c in curves), min(c[0].max() for c in curves)
        if start > stop:
            return pd.DataFrame(columns=columns)
        grid = np.unique(np.concatenate([c[0][(c[0] >= start) & (c[0] <= stop)] for c in curves]))
        ys = np.stack([np.interp(grid, *_sorted(c)) for c in curves])
    mean = ys.mean(axis=0)
    std = ys.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
    lo, hi = (ys.min(axis=0), ys.max(axis=0)) if band == "minmax" else (mean - std, mean + std)
    return pd.DataFrame({x: grid, "mean": mean, "std": std, "lo": lo, "hi": hi, "n": len(curves)})


def _sorted(curve: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(curve[0], kind="stable")
    return curve[0][order], curve[1][order]
