"""Lesson tables, all built on one engine (`effitrain.lab.compare`: grouping, target, intervals).

    sweep(config, data, ...)   pruning: train the baseline and every (score, keep fraction) over seeds
    sweep_table(runs)          pruning: time to target per (score, keep, fraction), and net of scoring
    curriculum_table(runs)     the lecture's curriculum table: time and FLOPs relative to the baseline
    cost_table(results), agreement(results)   what pruning scores cost, and whether they agree
    junk_table(results, train, f)   which scores find the junk of a noisy corpus (precision, recall)
    side_by_side({name: sweep_table})   pruning sweeps on different data, next to each other
    work_table(runs)           lesson 07: FLOPs and seconds per step vs the baseline, time and FLOPs to target
    distillation_table(d, task, E)   a distilled set against real subsets of the same size
    teacher_costs(runs)        what a distillation teacher cost next to its student
    downstream_groups(groups, tasks)   pre-trained groups judged downstream: FLOPs, parameters,
                               accuracy ± interval over pre-training seeds, FLOPs speed-up to match

Each `format_*` gives strings for display; `to_text` (from compare) renders any of them as text.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from effitrain.config import Config
from effitrain.data import PretrainData
from effitrain.data.downstream import ClassificationTask
from effitrain.stats import DEFAULT_RESOLVE, difference_ci, difference_verdict
from effitrain.lab.compare import NOT_REACHED, compare, mean_ci, fmt_pm, fmt_ratio, group_runs, ratio_ci, to_text
from effitrain.techniques.base import Technique
from effitrain.techniques.dataset_distillation import DistilledSet, random_subset, train_on
from effitrain.techniques.pruning import Prune
from effitrain.train.history import time_to_target
from effitrain.train.run import Run
from effitrain.train.runcache import cached_train


# -- pruning --------------------------------------------------------------------------------------------
def run_label(score: str, keep: str, keep_fraction: float) -> str:
    return f"{score} {keep} {keep_fraction:g}"


def sweep(config: Config, data: PretrainData, scores: Sequence[str], fractions: Sequence[float],
          seeds: int = 2, keep: "str | dict[str, str]" = "easy", baseline: bool = True, verbose: bool = True,
          force: bool = False, **params: Any) -> list[Run]:
    """Train the baseline and every (score, keep fraction) `seeds` times; return all runs.

    keep: one end for every score, or {score: end}. Runs are named "<score> <keep> <fraction>
    s<seed>" (the baseline "baseline s<seed>"), so `compare` groups them by setting. `params` go
    to the technique (ref_steps, el2n_runs, ...). Prints one summary line per run. Runs go
    through the run cache (`cached_train`): a run trained before, in any lesson, is loaded with
    its measured seconds; force=True trains every one again.
    """
    ends = keep if isinstance(keep, dict) else {s: keep for s in scores}
    plan: list[tuple[str, list[Technique]]] = [("baseline", [])] if baseline else []
    plan += [(run_label(s, ends[s], f), [Prune(score=s, keep_fraction=f, keep=ends[s], **params)])
             for s in scores for f in fractions]
    runs = []
    for label, techniques in plan:
        for seed in range(seeds):
            cfg = config.replace(**{"run.seed": config.run.seed + seed, "run.name": f"{label} s{seed}"})
            run = cached_train(cfg, [type(t)(t.params) for t in techniques], data=data, progress=False, force=force)
            runs.append(run)
            if verbose:
                print(run.summary_line(), flush=True)  # says "loaded from the run cache" when it was
    return runs



def _prune_params(run: Run) -> dict | None:
    for t in run.techniques:
        if t["name"] == "prune" and t["params"].get("keep_fraction", 1.0) < 1.0:
            return t["params"]
    return None


def scoring_cost(run: Run, axis: str) -> float:
    """What the run's pruning scores cost, on a speed-up axis ("flops" or "seconds"; 0 otherwise)."""
    stats = run.extra.get("techniques", {}).get("prune", {})
    return float(stats.get({"flops": "score_flops", "seconds": "score_seconds"}.get(axis, ""), 0.0))


def _number(value: Any) -> float:
    return math.nan if isinstance(value, str) else float(value)


def sweep_table(runs: Sequence[Run], target_val_loss: float | None = None,
                resolve: float = DEFAULT_RESOLVE) -> pd.DataFrame:
    """Time to target per (score, keep, keep fraction), over seeds, against the baseline (no pruning).

    Built on `compare` (same groups, target and intervals): the target is `target_val_loss`, else the
    highest final val loss among the baseline's seeds. Columns: FLOPs / seconds to target (mean and
    95% half-width; NaN when a seed missed it), final val loss, speed-ups by FLOPs and seconds
    [95% interval], the score's cost, and the speed-ups once that cost is charged to the pruned runs
    ("net"): t_base / (t_pruned + cost), each with `compare`'s verdict at ×/÷`resolve` (paired by
    seed when the groups share seeds).
    """
    runs = [r for r in runs if r.status != "failed"]
    groups = group_runs(runs)
    base = next((label for label, members in groups.items() if _prune_params(members[0]) is None), None)
    if base is None:
        raise ValueError("sweep_table needs baseline runs (no pruning, or keep_fraction=1.0)")
    tables = {(axis, net): compare(runs, target_val_loss, baseline=base, speedup_by=axis,
                                   charge=scoring_cost if net else None, resolve=resolve)
              for axis in ("flops", "seconds") for net in (False, True)}
    main = tables[("flops", False)]
    rows = []
    for label, members in groups.items():
        p = _prune_params(members[0])
        stats = [r.extra.get("techniques", {}).get("prune", {}) for r in members]
        c = main.loc[label]
        row = {"score": p["score"] if p else "none", "keep": p["keep"] if p else "all",
               "keep_fraction": float(p["keep_fraction"]) if p else 1.0, "seeds": len(members),
               "reached": int(str(c["reached"]).split("/")[0]),
               "kept": int(np.mean([s.get("kept", r.extra.get("train_examples", 0)) for s, r in zip(stats, members)])),
               "final_val_loss": c["final_val_loss"], "final_val_loss_ci": c["final_val_loss_ci"],
               "score_flops": float(np.mean([scoring_cost(r, "flops") for r in members])),
               "score_seconds": float(np.mean([scoring_cost(r, "seconds") for r in members]))}
        row["flops_to_target"], row["flops_to_target_ci"] = _number(c["flops"]), c["flops_ci"]
        row["s_to_target"], row["s_to_target_ci"] = _number(c["time_s"]), c["time_s_ci"]
        for axis, unit in (("flops", "flops"), ("seconds", "s")):
            for tag, net in (("speedup", False), ("net_speedup", True)):
                r = tables[(axis, net)].loc[label]
                row[f"{tag}_{unit}"], row[f"{tag}_{unit}_lo"], row[f"{tag}_{unit}_hi"] = (
                    _number(r["speedup"]), r["speedup_lo"], r["speedup_hi"])
                row[f"{tag}_{unit}_verdict"] = r["verdict"]
        rows.append(row)
    df = pd.DataFrame(rows)
    df["_pruned"] = df["score"] != "none"  # the baseline first
    df = df.sort_values(["_pruned", "score", "keep", "keep_fraction"]).drop(columns="_pruned").reset_index(drop=True)
    df.attrs.update(target_val_loss=main.attrs["target_val_loss"], unigram_val_loss=main.attrs.get("unigram_val_loss"),
                    resolve=resolve,
                    notes=[n for n in main.attrs["notes"] if not n.startswith("speedup =")] + [
                        "speedup = baseline ÷ pruned time to target; net = baseline ÷ (pruned + the score's cost)"])
    return df


def format_sweep_table(df: pd.DataFrame) -> pd.DataFrame:
    """`sweep_table` as readable strings: "1.2e11 ± 3e10", "1.05× [0.91, 1.21]"."""
    def pm(v: float, h: float, spec: str) -> str:
        return fmt_pm(v, h, spec, missing=NOT_REACHED)

    def ratio(v: float, lo: float, hi: float) -> str:
        return fmt_ratio(v, lo, hi, missing=NOT_REACHED)

    out = pd.DataFrame({"score": df["score"], "keep": df["keep"], "keep fraction": df["keep_fraction"],
                        "rows kept": df["kept"], "reached": [f"{r}/{s}" for r, s in zip(df["reached"], df["seeds"])]})
    out["FLOPs to target"] = [pm(v, h, ".3g") for v, h in zip(df["flops_to_target"], df["flops_to_target_ci"])]
    out["s to target"] = [pm(v, h, ".3g") for v, h in zip(df["s_to_target"], df["s_to_target_ci"])]
    out["final val loss"] = [pm(v, h, ".3f") for v, h in zip(df["final_val_loss"], df["final_val_loss_ci"])]
    for unit, word in (("flops", "FLOPs"), ("s", "seconds")):
        out[f"speedup ({word})"] = [ratio(*t) for t in zip(
            df[f"speedup_{unit}"], df[f"speedup_{unit}_lo"], df[f"speedup_{unit}_hi"])]
        out[f"net of scoring ({word})"] = [ratio(*t) for t in zip(
            df[f"net_speedup_{unit}"], df[f"net_speedup_{unit}_lo"], df[f"net_speedup_{unit}_hi"])]
    out["verdict (FLOPs)"] = df["speedup_flops_verdict"].fillna("")
    out["verdict net of scoring (FLOPs)"] = df["net_speedup_flops_verdict"].fillna("")
    out["score FLOPs"] = [f"{v:.3g}" for v in df["score_flops"]]
    out.attrs.update(df.attrs)
    return out


def sweep_text(df: pd.DataFrame) -> str:
    """The formatted sweep table and its notes as plain text."""
    return to_text(format_sweep_table(df), notes=df.attrs.get("notes", []), index=False)


def side_by_side(parts: "dict[str, pd.DataFrame]", columns: Sequence[str]) -> pd.DataFrame:
    """Several `sweep_table`s next to each other: the (score, keep) settings every part has (one
    keep fraction each: the first), the keep fraction and `columns` of `format_sweep_table` under
    each part's name, and a last row with each part's target and how far it lies below the
    baseline's unigram line (nats)."""
    columns = ["keep fraction", *[c for c in columns if c != "keep fraction"]]
    formatted = {name: format_sweep_table(df).drop_duplicates(["score", "keep"]).set_index(["score", "keep"])
                 for name, df in parts.items()}
    common = [i for i in next(iter(formatted.values())).index if all(i in f.index for f in formatted.values())]
    out = pd.concat({name: f.loc[common, columns].astype(str) for name, f in formatted.items()}, axis=1)
    target = {(name, c): "" for name in parts for c in columns}
    for name, df in parts.items():
        t, u = df.attrs.get("target_val_loss", math.nan), df.attrs.get("unigram_val_loss", math.nan)
        target[(name, columns[1] if len(columns) > 1 else columns[0])] = f"target {t:.3f} (unigram − {u - t:.2f})"
    out.loc[("target", ""), :] = pd.Series(target)
    return out


def junk_table(results: dict[str, tuple[torch.Tensor, dict]], train: Any, keep_fraction: float,
               keep: "str | dict[str, str]" = "easy") -> pd.DataFrame:
    """Which scores find the junk of a noisy pool: one row per score, pruning `1 - keep_fraction` of it.

    Columns: end kept, removed rows, precision (share of the removed rows that are junk; random
    removal expects the base rate), recall (share of the junk rows removed), token recall, and the
    recall of each junk kind (`effitrain.data.noisy.junk_recall`).
    """
    from effitrain.data.noisy import junk_recall
    from effitrain.techniques.pruning import select_rows

    ends = keep if isinstance(keep, dict) else {name: keep for name in results}
    rows = {}
    for name, (scores, _) in results.items():
        r = junk_recall(train, select_rows(scores, keep_fraction, ends[name]))
        rows[name] = {"end kept": ends[name], "removed": r["removed"], "precision": r["precision"],
                      "recall": r["recall"], "token recall": r["token_recall"],
                      **{f"recall: {kind}": v["recall"] for kind, v in r["kinds"].items()}}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.attrs["base_rate"] = float((train.features["junk"] > 0).float().mean())  # random removal's precision
    return df


def cost_table(results: dict[str, tuple[torch.Tensor, dict]], run_flops: float | None = None) -> "pd.DataFrame":
    """One row per score: seconds, FLOPs (and FLOPs as a share of one training run), cached."""
    rows = {}
    for name, (scores, cost) in results.items():
        row = {"seconds": cost["seconds"], "FLOPs": cost["flops"]}
        if run_flops:
            row["FLOPs ÷ one training run"] = cost["flops"] / run_flops
        row.update({"cached": cost.get("cached", False), "min": float(scores.min()),
                    "median": float(scores.median()), "max": float(scores.max())})
        rows[name] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "score"
    return df


def agreement(results: dict[str, tuple[torch.Tensor, dict]]) -> pd.DataFrame:
    """Spearman rank correlation between every pair of scores: do they call the same rows hard?"""
    names = list(results)
    ranks = torch.stack([torch.argsort(torch.argsort(results[n][0], stable=True)).double() for n in names])
    return pd.DataFrame(torch.corrcoef(ranks).numpy().round(2), index=names, columns=names)


# -- curriculum ----------------------------------------------------------------------------------------------
def _ratio_columns(df: "pd.DataFrame", prefix: str) -> "pd.DataFrame":
    """Speed-up s [lo, hi] → time relative to the baseline 1/s [1/hi, 1/lo] (the lecture's 'Time')."""
    out = pd.DataFrame(index=df.index)
    rel, lo, hi = [], [], []
    for s, s_lo, s_hi in zip(df["speedup"], df["speedup_lo"], df["speedup_hi"]):
        if isinstance(s, str) or not math.isfinite(s) or s <= 0:
            rel.append(s if isinstance(s, str) else math.nan)
            lo.append(math.nan)
            hi.append(math.nan)
            continue
        rel.append(1.0 / s)
        lo.append(1.0 / s_hi if math.isfinite(s_hi) and s_hi > 0 else math.nan)
        hi.append(1.0 / s_lo if math.isfinite(s_lo) and s_lo > 0 else math.nan)
    out[prefix], out[f"{prefix}_lo"], out[f"{prefix}_hi"] = rel, lo, hi
    return out


def curriculum_table(runs: Iterable["Run"], baseline: Any = None,
                     target_val_loss: float | None = None, resolve: float = DEFAULT_RESOLVE) -> "pd.DataFrame":
    """The lecture's curriculum table, measured: one row per group of seeds.

    time_rel / flops_rel: training seconds / measured FLOPs to reach the target val loss (default:
    the baseline seeds' highest final val loss, see `effitrain.lab.compare`) relative to the
    baseline (= 1.00; below 1 is faster), with the 95% interval of the ratio (paired by seed where
    the groups share seeds); "not reached" when a seed misses it. verdict_s / verdict_flops:
    `compare`'s verdict at ×/÷`resolve`. final_val_loss ± final_val_loss_ci: the quality at the
    end of the budget. `df.attrs` carries compare's target and notes.
    """
    runs = list(runs)
    by_s = compare(runs, target_val_loss=target_val_loss, baseline=baseline, speedup_by="seconds", resolve=resolve)
    by_f = compare(runs, target_val_loss=target_val_loss, baseline=baseline, speedup_by="flops", resolve=resolve)
    df = pd.concat([by_s[["seeds", "reached"]], _ratio_columns(by_s, "time_rel"), _ratio_columns(by_f, "flops_rel"),
                    by_s[["final_val_loss", "final_val_loss_ci", "time_s", "flops"]]], axis=1)
    df["verdict_s"], df["verdict_flops"] = by_s["verdict"], by_f["verdict"]
    df.attrs.update(by_s.attrs)
    df.attrs["notes"] = list(by_s.attrs.get("notes", [])[:2]) + [
        "time / FLOPs = the group's mean to target ÷ the baseline's (baseline 1.00, below 1 is faster), "
        "[95% interval of the ratio over seeds]"]
    return df


def format_curriculum_table(df: "pd.DataFrame") -> "pd.DataFrame":
    """`curriculum_table` as strings in the lecture's shape: one column per variant, rows Time, FLOPs, val loss."""
    rows = {
        "seeds": [str(s) for s in df["seeds"]],
        "time to target (rel.)": [fmt_ratio(*v, unit="") for v in zip(df["time_rel"], df["time_rel_lo"], df["time_rel_hi"])],
        "FLOPs to target (rel.)": [fmt_ratio(*v, unit="")
                                   for v in zip(df["flops_rel"], df["flops_rel_lo"], df["flops_rel_hi"])],
        "final val loss": [f"{m:.3f}" + (f" ± {c:.3f}" if math.isfinite(c) else "")
                           for m, c in zip(df["final_val_loss"], df["final_val_loss_ci"])],
    }
    if "verdict_flops" in df:  # phrased as a speed-up (baseline ÷ variant), as compare words it
        rows["verdict (FLOPs)"] = list(df["verdict_flops"])
        rows["verdict (seconds)"] = list(df["verdict_s"])
    return pd.DataFrame(rows, index=df.index).T


def curriculum_text(df: "pd.DataFrame") -> str:
    """The formatted curriculum table and its notes as plain text."""
    return to_text(format_curriculum_table(df), notes=df.attrs.get("notes", []))


# -- distillation ----------------------------------------------------------------------------------------------
def teacher_costs(runs: Sequence[Any]) -> pd.DataFrame:
    """Per run: the student's measured training FLOPs and seconds, and what its `distill` teacher cost."""
    rows = []
    for run in runs:
        s, t = run.summary(), run.extra.get("techniques", {}).get("distill", {})
        rows.append({"run": run.label, "student FLOPs": s["flops_measured"], "student seconds": s["seconds"],
                     "teacher": t.get("teacher", "none"), "teacher FLOPs": t.get("teacher_flops", 0.0),
                     "teacher seconds": t.get("teacher_seconds", 0.0), "teacher cached": t.get("cached", False),
                     "FLOPs incl. teacher": s["flops_measured"] + t.get("teacher_flops", 0.0)})
    return pd.DataFrame(rows)


def distillation_table(distilled: DistilledSet, task: ClassificationTask, embedding_matrix: torch.Tensor,
                       seeds: Sequence[int] = (0, 1, 2), *, steps: int | None = None, lr: float | None = None,
                       long_steps: int = 0) -> pd.DataFrame:
    """Test accuracy (mean ± 95% interval over learner seeds) of: the distilled set; the real examples
    it started from (init="real"); random real subsets of the same size (a new subset per seed); the
    full training split (same steps and lr, batches of the same size); the majority class. With the
    seconds spent distilling and training. long_steps > 0 adds the full split trained that many
    steps with batches of 32 (a stronger, costlier reference). `steps`/`lr`: the recipe (default:
    the one the set was distilled for)."""
    s = distilled.settings
    steps, lr = steps or s["inner_steps"], lr or s["inner_lr"]
    n = len(distilled)
    rows = []
    cases = [(f"distilled ({distilled.per_class}/class)", lambda seed: distilled, distilled.seconds, steps, n),
             (f"random real ({distilled.per_class}/class)",
              lambda seed: random_subset(task, distilled.per_class, 1000 + seed), 0.0, steps, n),
             (f"full training split, batches of {n}", lambda seed: None, 0.0, steps, n)]
    if distilled.init_rows is not None:
        cases.insert(1, (f"the real examples it started from ({distilled.per_class}/class)",
                         lambda seed: distilled.init_rows, 0.0, steps, n))
    if long_steps:
        cases.append(("full training split, batches of 32", lambda seed: None, 0.0, long_steps, 32))
    for label, make, distil_s, n_steps, batch in cases:
        accs, secs = [], []
        for seed in seeds:
            t0 = time.perf_counter()
            accs.append(train_on(make(seed), task, embedding_matrix, seed=seed, batch_size=batch,
                                 steps=n_steps, lr=lr, learner=s["learner"]))
            secs.append(time.perf_counter() - t0)
        mean, half = mean_ci(accs)
        rows.append({"training data": label, "examples": n if make(0) is not None else len(task.train_ids),
                     "SGD steps": n_steps, "test accuracy": mean, "± 95%": half, "seeds": len(seeds),
                     "seconds distilling": distil_s, "seconds training (mean)": sum(secs) / len(secs)})
    rows.append({"training data": "majority class (no training)", "examples": 0, "SGD steps": 0,
                 "test accuracy": task.majority_accuracy(), "± 95%": float("nan"), "seeds": 0,
                 "seconds distilling": 0.0, "seconds training (mean)": 0.0})
    return pd.DataFrame(rows)


__all__ = ["recipe_table", "distillation_table", "run_label", "sweep", "agreement", "cost_table", "curriculum_table", "curriculum_text", "format_curriculum_table",
           "format_sweep_table", "scoring_cost", "sweep_table", "sweep_text", "teacher_costs"]


def _reference_group(groups: dict, name: str | None, caller: str, role: str) -> str:
    """The group the others are compared with: `name`, else the first; a clear error when absent."""
    labels = list(groups)
    if not labels:
        raise ValueError(f"{caller} needs at least one group")
    chosen = name if name is not None else labels[0]
    if chosen not in groups:
        raise ValueError(f"{role} {chosen!r} is not one of the groups: {', '.join(labels)}")
    return chosen


# -- pre-training judged downstream ------------------------------------------------------------------------
def _seed_difference(base: "dict[int, float]", group: "dict[int, float]", resolve: float,
                     what: str = "") -> tuple[str, str]:
    """group − base as "+d [lo, hi]" and its verdict, from {seed: value}: paired by seed when both hold
    the same seeds (more than one), else Welch (`stats.difference_ci`, `stats.difference_verdict`)."""
    keys = sorted(base)
    if keys == sorted(group) and len(keys) > 1:
        d, lo, hi = difference_ci([base[k] for k in keys], [group[k] for k in keys], paired=True)
    else:
        d, lo, hi = difference_ci(list(base.values()), list(group.values()))
    return (f"{d:+.3f}" + ("" if math.isnan(lo) else f" [{lo:+.3f}, {hi:+.3f}]"),
            difference_verdict(d, lo, hi, resolve, what))


def downstream_groups(groups: "dict[str, Sequence[Any]]", tasks: Sequence[ClassificationTask],
                      methods: Sequence[str] = ("probe", "finetune"), baseline: str | None = None,
                      judge: tuple[str, str] | None = None, steps: "dict[str, int] | None" = None,
                      settings: "dict[str, dict] | None" = None, resolve: float = 0.03) -> pd.DataFrame:
    """One row per group of pre-trained models, judged by downstream accuracy.

    groups: {label: [Run or model, ...]}, one member per pre-training seed (a bare model, e.g. a
    random init, counts 0 training FLOPs). Each member is fine-tuned / probed once per task and
    method, with its own seed (a Run's config seed, else its index), so the ± is a 95% interval
    over *pre-training* seeds. baseline: the group the FLOPs and the speed-up are relative to
    (default: the first). judge: the (task name, method) the speed-up uses (default: the first task,
    the last method). steps: {method: steps} for `evaluate_downstream`; settings: {method: {steps, lr,
    batch_size}} for it in full (fine-tuning's default lr is a grid chosen on a validation split).

    Columns: seeds, train FLOPs (mean), FLOPs ÷ baseline, parameters (the kept model), seconds
    (pre-training, mean), "<task> <method>" and its "±", and "speed-up to match": baseline FLOPs ÷
    the group's when its mean judge accuracy is at least the baseline's, else "not matched";
    "Δ judge" and "verdict": the group's judge accuracy − the baseline's, paired by pre-training seed
    where the seeds are the same (else Welch), with its 95% interval, worded as higher / lower by
    [lo, hi], no effect beyond ±X (the interval within ±`resolve`), or undecided.
    """
    from effitrain.model import count_parameters
    from effitrain.train.finetune import DEFAULTS, evaluate_downstream

    labels = list(groups)
    base = _reference_group(groups, baseline, "downstream_groups", "baseline")
    judge = judge or (tasks[0].name, methods[-1])
    col = f"{judge[0]} {judge[1]}"
    if col not in {f"{t.name} {m}" for t in tasks for m in methods}:
        raise ValueError(f"judge {judge!r} is not a task and method of this table")
    per_method = {m: {**((settings or {}).get(m) or {}), **({"steps": steps[m]} if steps and m in steps else {})}
                  for m in methods}
    rows, chosen, judged = {}, {}, {}
    for label in labels:
        members = list(groups[label])
        runs = [m for m in members if isinstance(m, Run)]
        models = [m.model if isinstance(m, Run) else m for m in members]
        features: list[dict] = [{} for _ in members]  # each model's probe features, shared by the tasks
        row: dict[str, Any] = {"seeds": len(members)}
        row["train FLOPs"] = float(np.mean([r.summary()["flops_measured"] if isinstance(r, Run) else 0.0 for r in members]))
        row["parameters"] = count_parameters(models[0])
        row["seconds"] = float(np.mean([r.summary()["seconds"] for r in runs])) if runs else 0.0
        for task in tasks:
            for method in methods:
                results = [evaluate_downstream(model, task, method=method,
                                               seeds=[m.config.run.seed if isinstance(m, Run) else i],
                                               feature_cache=features[i], **per_method[method])
                           for i, (m, model) in enumerate(zip(members, models))]
                row[f"{task.name} {method}"], row[f"{task.name} {method} ±"] = mean_ci([r.accuracy for r in results])
                if f"{task.name} {method}" == col:
                    judged[label] = {(m.config.run.seed if isinstance(m, Run) else i): r.accuracy
                                     for i, (m, r) in enumerate(zip(members, results))}
                if method == "finetune":
                    chosen[(label, task.name)] = [lr for r in results for lr in r.chosen_lr]
        rows[label] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.insert(2, "FLOPs ÷ baseline", df["train FLOPs"] / df.loc[base, "train FLOPs"]
              if df.loc[base, "train FLOPs"] > 0 else math.nan)
    want, fb = df.loc[base, col], df.loc[base, "train FLOPs"]
    df["speed-up to match"] = [("1.00×" if label == base else
                                (f"{fb / f:.2f}×" if f > 0 and acc >= want else "not matched"))
                               for label, acc, f in zip(df.index, df[col], df["train FLOPs"])]
    deltas, verdicts = [], []
    for label in df.index:
        if label == base:
            deltas.append("0 (baseline)"), verdicts.append("baseline")
            continue
        delta, verdict = _seed_difference(judged[base], judged[label], resolve)
        deltas.append(delta), verdicts.append(verdict)
    df[f"Δ {col}"], df["verdict"] = deltas, verdicts
    df.attrs.update(baseline=base, judge=col, chosen_lr=chosen, notes=[
        f"accuracy: test accuracy, one {'/'.join(methods)} per pre-training seed; ± = 95% Student-t half-width "
        "over those seeds (NaN with one)",
        f"speed-up to match = {base}'s training FLOPs ÷ the group's, when the group's mean {col} accuracy is at "
        f"least {base}'s ({want:.3f}); read it with the ± columns",
        f"Δ {col} = the group's accuracy − {base}'s, [95% interval], paired by pre-training seed where the seeds "
        f"match (else Welch); verdict: higher / lower by [lo, hi], or no effect beyond ±{resolve:g} here"])
    if "finetune" in methods:
        grid = per_method["finetune"].get("lr", DEFAULTS["finetune"]["lr"])
        if isinstance(grid, (list, tuple)) and len(grid) > 1:
            df.attrs["notes"].append(
                f"fine-tuning: the learning rate is chosen per model from {', '.join(f'{x:g}' for x in grid)} on a "
                f"validation part of the training split (df.attrs['chosen_lr'] has the choices)")
    return df


# -- lesson 07: less work per step, or steps that learn more --------------------------------------------
def _per_step(run: Run, key: str) -> float:
    """The run's `key` ("seconds" or "flops_measured") per optimizer step, counted from its warm start
    when it has one (the shared prefix is the baseline's, and would pull every ratio toward 1)."""
    s = run.summary()
    warm = run.extra.get("warm_start") or {}
    steps = (s.get("steps") or 0) - warm.get("step", 0)
    spent = float(s[key]) - float(warm.get("seconds" if key == "seconds" else "flops", 0.0))
    return spent / steps if steps > 0 else math.nan


def work_table(runs: Iterable[Run], baseline: Any = None, target_val_loss: float | str | None = None,
               resolve: float = DEFAULT_RESOLVE) -> pd.DataFrame:
    """Techniques that change the math of a step, judged at equal quality: one row per group of seeds.

    flops_per_step / seconds_per_step: the group's mean per optimizer step (measured FLOPs, training
    seconds) ÷ the baseline's (below 1: a cheaper step); then compare's time and FLOPs to the target
    (default: the baseline seeds' highest final val loss) with their 95% intervals and the speed-ups
    by seconds and by FLOPs (above 1 is faster), final val loss and context gain with intervals. A
    cheaper step that needs more steps shows here as a per-step ratio below 1 and a speed-up below 1.
    `df.attrs` carries compare's target and notes.
    """
    runs = list(runs)
    by_s = compare(runs, target_val_loss=target_val_loss, baseline=baseline, speedup_by="seconds", resolve=resolve)
    with warnings.catch_warnings():  # the same target: by_s has warned already
        warnings.simplefilter("ignore")
        by_f = compare(runs, target_val_loss=target_val_loss, baseline=baseline, speedup_by="flops", resolve=resolve)
    groups = group_runs(r for r in runs if r.status != "failed" and r.history.evals)
    base = groups[by_s.attrs["baseline"]]
    rows = {}
    for label in by_s.index:
        row: dict[str, Any] = {"seeds": by_s.at[label, "seeds"], "reached": by_s.at[label, "reached"]}
        for key, name in (("flops_measured", "flops_per_step"), ("seconds", "seconds_per_step")):
            # ratio_ci(a, b) = mean(a) / mean(b): the group's per-step cost over the baseline's
            ratio, lo, hi = ratio_ci([_per_step(r, key) for r in groups[label]], [_per_step(r, key) for r in base])
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = ratio, lo, hi
        # compare gives seconds and FLOPs to target in every table; only its speed-up depends on the axis
        row["seconds_to_target"], row["seconds_to_target_ci"] = by_s.at[label, "time_s"], by_s.at[label, "time_s_ci"]
        row["flops_to_target"], row["flops_to_target_ci"] = by_s.at[label, "flops"], by_s.at[label, "flops_ci"]
        for src, axis in ((by_s, "seconds"), (by_f, "flops")):
            for col in ("speedup", "speedup_lo", "speedup_hi"):
                row[col.replace("speedup", f"speedup_{axis}")] = src.at[label, col]
            row[f"verdict_{axis}"] = src.at[label, "verdict"]
        for key in ("final_val_loss", "final_val_loss_ci", "context_gain", "context_gain_ci"):
            row[key] = by_s.at[label, key]
        rows[label] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "group"
    df.attrs.update(by_s.attrs)
    df.attrs["notes"] = [n for n in by_s.attrs.get("notes", []) if n.startswith("⚠")] + [
        n for n in by_s.attrs.get("notes", []) if n.startswith(("target val loss", "every run starts"))] + [
        "FLOPs/step, s/step = the group's mean per optimizer step ÷ the baseline's (below 1: a cheaper step), "
        "[95% interval of the ratio over seeds]; after the warm start where the runs have one",
        "speed-up = the baseline's mean seconds (FLOPs) to the target ÷ the group's (above 1: faster)"]
    return df


def format_work_table(df: pd.DataFrame) -> pd.DataFrame:
    """`work_table` as strings for display: one row per group."""
    out = pd.DataFrame(index=df.index)
    out["seeds"] = [str(s) for s in df["seeds"]]
    out["reached"] = df["reached"]
    out["FLOPs/step"] = [fmt_ratio(*v) for v in zip(df["flops_per_step"], df["flops_per_step_lo"], df["flops_per_step_hi"])]
    out["s/step"] = [fmt_ratio(*v) for v in zip(df["seconds_per_step"], df["seconds_per_step_lo"], df["seconds_per_step_hi"])]
    out["s to target"] = [fmt_pm(v, h, ".1f") for v, h in zip(df["seconds_to_target"], df["seconds_to_target_ci"])]
    out["speed-up (s)"] = [fmt_ratio(*v) for v in zip(df["speedup_seconds"], df["speedup_seconds_lo"], df["speedup_seconds_hi"])]
    out["FLOPs to target"] = [fmt_pm(v, h, ".3g") for v, h in zip(df["flops_to_target"], df["flops_to_target_ci"])]
    out["speed-up (FLOPs)"] = [fmt_ratio(*v) for v in zip(df["speedup_flops"], df["speedup_flops_lo"], df["speedup_flops_hi"])]
    if "verdict_seconds" in df:
        out["verdict (s)"] = df["verdict_seconds"]
        out["verdict (FLOPs)"] = df["verdict_flops"]
    out["final val loss"] = [fmt_pm(v, h, ".3f") for v, h in zip(df["final_val_loss"], df["final_val_loss_ci"])]
    out["context gain"] = [fmt_pm(v, h, ".2f") for v, h in zip(df["context_gain"], df["context_gain_ci"])]
    return out


def work_text(df: pd.DataFrame) -> str:
    """The formatted `work_table` and its notes as plain text."""
    return to_text(format_work_table(df), notes=df.attrs.get("notes", []))


# -- lesson 05: recipes and the cramming ablation ----------------------------------------------------------
def recipe_table(groups: "dict[str, Sequence[Run]]", tasks: Sequence[ClassificationTask] = (),
                 reference: str | None = None, target_val_loss: float | None = None,
                 probe: "dict | None" = None, speedup_by: str = "seconds", resolve: float = DEFAULT_RESOLVE,
                 resolve_loss: float = 0.05) -> pd.DataFrame:
    """One row per group of seeds (a recipe, or a recipe with some ingredients swapped), each judged
    against the reference group (the first unless named) at the same budget.

    Columns: seeds, steps (mean), final val loss ± 95%, "Δ val loss" (the group's final val loss −
    the reference's, [95% interval], paired by seed where both hold the same seeds, else Welch) and
    its "loss verdict" (higher / lower by [lo, hi], no effect beyond ±`resolve_loss` nats here, or
    undecided), context gain (unigram − final, nats), each task's linear-probe accuracy ± over
    pre-training seeds, the time to `target_val_loss` on the `speedup_by` axis ("seconds", "tokens",
    "flops", "step"; default target: the reference's worst final loss) and the speed-up over the
    reference with `compare`'s verdict at ×/÷`resolve`.

    Runs are relabelled by their group, so groups that differ only in a setting `compare` would not
    name stay apart. `df.attrs`: target_val_loss, unigram_val_loss, plateau (the target lies above
    the unigram line: a time to it says nothing about using context), reference, notes.
    """
    import copy

    from effitrain.train.finetune import evaluate_downstream

    ref = _reference_group(groups, reference, "recipe_table", "reference")
    renamed = {}
    for label, runs in groups.items():
        renamed[label] = [copy.copy(r) for r in runs]
        for r in renamed[label]:
            r.name = f"{label} s{r.config.run.seed}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a target on the plateau or a wide interval is reported in the table
        cmp = compare([r for runs in renamed.values() for r in runs], target_val_loss=target_val_loss, baseline=ref,
                      speedup_by=speedup_by, resolve=resolve)
    finals = {label: {r.config.run.seed: r.summary()["val_loss_last"] for r in runs} for label, runs in groups.items()}
    unit = {"seconds": "s", "tokens": "tokens", "flops": "FLOPs", "step": "steps"}[speedup_by]
    rows = {}
    for label, runs in renamed.items():
        c = cmp.loc[label]
        row = {"seeds": len(runs), "steps": float(np.mean([r.summary()["steps"] for r in runs])),
               "final val loss": fmt_pm(c["final_val_loss"], c["final_val_loss_ci"], ".3f")}
        if label == ref:
            row["Δ val loss"], row["loss verdict"] = "0 (reference)", "reference"
        else:
            row["Δ val loss"], row["loss verdict"] = _seed_difference(finals[ref], finals[label], resolve_loss, " nats")
        row["context gain"] = fmt_pm(c["context_gain"], c["context_gain_ci"], ".2f")
        features: list[dict] = [{} for _ in runs]  # each run's probe features, shared by the tasks
        for task in tasks:
            accs = [evaluate_downstream(r.model, task, method="probe", seeds=[r.config.run.seed], feature_cache=cache,
                                        **(probe or {})).accuracy for r, cache in zip(runs, features)]
            row[f"{task.name} probe"] = fmt_pm(*mean_ci(accs), ".3f")
        hits = [time_to_target(r.history, val_loss=cmp.attrs["target_val_loss"]) for r in runs]
        spec = {"seconds": ".1f", "tokens": ",.0f", "step": ".0f", "flops": ".3g"}[speedup_by]
        row[f"{unit} to target"] = (fmt_pm(*mean_ci([h[speedup_by] for h in hits]), spec)
                                    if all(hits) else f"not reached ({c['reached']})")
        row[f"speed-up ({unit})"] = fmt_ratio(c["speedup"], c["speedup_lo"], c["speedup_hi"])
        row["verdict"] = "reference" if label == ref else c["verdict"]
        rows[label] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "recipe"
    target, unigram = cmp.attrs["target_val_loss"], cmp.attrs["unigram_val_loss"]
    df.attrs.update(target_val_loss=target, unigram_val_loss=unigram, plateau=bool(target > unigram), reference=ref,
                    notes=[f"target {target:.3f} ({ref}'s worst final val loss unless given), "
                           f"{unigram - target:+.2f} nats below the unigram line {unigram:.3f}"
                           + (": ON THE PLATEAU, a time to it says nothing about using context" if target > unigram
                              else ""),
                           f"Δ val loss: the row's final val loss − {ref}'s at the same budget, [95% interval], paired "
                           f"by seed where the seeds match (else Welch); verdicts resolve ±{resolve_loss:g} nats and "
                           f"×/÷{resolve:g}"])
    return df

