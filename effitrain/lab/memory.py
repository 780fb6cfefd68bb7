"""Training under a memory budget (lesson 09): what each setting holds, what it costs in time, what fits.

    settings = {"checkpointing": [et.technique("checkpointing")],
                "accumulate 4": ({"batch_size": 8, "grad_accum": 4}, [])}
    memory_table(cfg, settings, data=data, budget="40MB", rounds=5)   # bytes by kind, s/step × baseline
    footprint_figure(table, budget="40MB"); memory_scatter(table, budget="40MB")
    finetune_table(run.model, task, {"full": {}, "lora": {"rank": 8}, "bias": {}, "last": {"last": 1}})

Bytes come from `effitrain.train.footprint.estimate_footprint` (exact against a measured step: weights,
a gradient per trainable weight, the optimizer state, one micro-batch's saved activations); seconds per
step from `effitrain.lab.speed.step_cost` (short real runs, settings alternating round by round, the
ratio to the baseline paired by round). The fine-tuning table measures the same parts for a classifier
whose `update` trains only some parameters (`effitrain.train.sparse_update`): with frozen weights autograd
keeps fewer activations too (a frozen linear layer needs no copy of its input), which is the point of
bias-only and last-layers updates on small devices (TinyTL).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import pandas as pd
import plotly.graph_objects as go
import torch

from effitrain.config import Config, parse_bytes
from effitrain.lab.plot import PALETTE
from effitrain.lab.speed import setting_parts, step_cost
from effitrain.stats import difference_ci, difference_verdict
from effitrain.train.footprint import (build_model_and_optimizer, estimate_footprint, measure_peak,
                                       saved_activation_bytes, tensor_bytes)

PARTS = ("weights", "gradients", "optimizer state", "activations")
MB = 1e6


def _applied(config: Config, setting: Any) -> "tuple[Config, list[Any]]":
    """The config with a setting's changes, and fresh copies of its techniques."""
    changes, techniques = setting_parts(setting)
    return (config.replace(**changes) if changes else config), copy.deepcopy(techniques)


def setting_footprint(config: Config, setting: Any, vocab_size: int | None = None):
    """`estimate_footprint` of `config` with a setting ([techniques] or (changes, [techniques]))."""
    cfg, techniques = _applied(config, setting)
    vocab = vocab_size or cfg.data.vocab_size
    model, optimizer = build_model_and_optimizer(cfg, vocab, cfg.run.seed, techniques)
    return estimate_footprint(model, optimizer, cfg, vocab)


def budget_for(config: Config, vocab_size: int | None = None, slack: float = 1.1) -> str:
    """A memory budget for a lesson: what one training step of `config` needs, × `slack`, rounded up to
    a whole MB (e.g. "45MB")."""
    need = setting_footprint(config, [], vocab_size).total * slack
    return f"{math.ceil(need / MB)}MB"


def footprint_row(fp, budget: int | None = None) -> dict[str, Any]:
    """A table row of a Footprint: MB by kind, the total, and whether it fits `budget` (bytes)."""
    row = {"weights": fp.parameters / MB, "gradients": fp.gradients / MB, "optimizer state": fp.optimizer / MB,
           "activations": fp.activations / MB, "total MB": fp.total / MB}
    if budget is not None:
        row["fits"] = fp.total <= budget
    return row


def setting_peak(config: Config, setting: Any, vocab_size: int | None = None) -> tuple[int, str]:
    """`measure_peak` of `config` with a setting ([techniques] or (changes, [techniques]))."""
    cfg, techniques = _applied(config, setting)
    return measure_peak(cfg, vocab_size or cfg.data.vocab_size, cfg.run.seed, techniques)


def memory_table(config: Config, settings: "dict[str, Any]", *, data: Any = None, budget: str | None = None,
                 rounds: int = 3, steps: int = 8, warmup: int = 2, peak: bool = True) -> pd.DataFrame:
    """One row per setting (the plain run first, "baseline"): its footprint in MB by kind and in all,
    whether it fits `budget`, the measured peak of a whole step ("peak MB", `measure_peak`: transients
    included; `peak=False` skips it), and its seconds per step against the baseline's (`step_cost`:
    ratio and 95% interval over `rounds`, paired by round; `rounds=0` skips the timing)."""
    limit = parse_bytes(budget, "budget") if budget else None
    vocab = data.vocab_size if data is not None else None
    rows, kind = {}, ""
    for label, setting in {"baseline": [], **settings}.items():
        rows[label] = footprint_row(setting_footprint(config, setting, vocab), limit)
        if peak:
            measured, kind = setting_peak(config, setting, vocab)
            rows[label]["peak MB"] = measured / MB
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.attrs.update(peak_kind=kind)
    if rounds:
        cost = step_cost(config, settings, data=data, rounds=rounds, steps=steps, warmup=warmup)
        df = df.join(cost[["ms/step", "× baseline s", "s lo", "s hi"]])
    df.attrs.update(budget=budget, rounds=rounds, steps=steps)
    return df


def footprint_figure(df: pd.DataFrame, budget: str | None = None, title: str = "Where a step's memory goes") -> go.Figure:
    """Stacked bars of `memory_table`'s parts per setting, with the budget as a line."""
    fig = go.Figure()
    for i, part in enumerate(PARTS):
        fig.add_bar(name=part, x=list(df.index), y=df[part], marker_color=PALETTE[i % len(PALETTE)])
    if "peak MB" in df:
        fig.add_scatter(name="measured peak", x=list(df.index), y=df["peak MB"], mode="markers",
                        marker=dict(symbol="diamond", size=11, color="black"))
    if budget:
        fig.add_hline(y=parse_bytes(budget, "budget") / MB, line_dash="dash", annotation_text=f"budget {budget}")
    fig.update_layout(barmode="stack", title=title, yaxis_title="MB per training step", height=360,
                      margin=dict(l=60, r=20, t=50, b=40))
    return fig


def memory_scatter(df: pd.DataFrame, budget: str | None = None) -> go.Figure:
    """Measured peak MB (the estimate where no peak was measured) against seconds per step (× the
    baseline's, with its interval), the budget as a line."""
    err = dict(type="data", symmetric=False, array=df["s hi"] - df["× baseline s"],
               arrayminus=df["× baseline s"] - df["s lo"])
    y = "peak MB" if "peak MB" in df else "total MB"
    fig = go.Figure(go.Scatter(x=df["× baseline s"], y=df[y], mode="markers+text", text=list(df.index),
                               textposition="top center", error_x=err, marker=dict(size=10, color=PALETTE[0])))
    if budget:
        fig.add_hline(y=parse_bytes(budget, "budget") / MB, line_dash="dash", annotation_text=f"budget {budget}")
    fig.update_layout(title="Memory against time: each setting's price", xaxis_title="seconds per step × baseline",
                      yaxis_title="peak MB of a training step" if y == "peak MB" else "MB per training step", height=380, margin=dict(l=60, r=20, t=50, b=40))
    return fig


def preset_table(config: Config, budget: str, methods: Any, presets: Sequence[str] = ("tiny", "mini", "small"),
                 vocab_size: int | None = None) -> pd.DataFrame:
    """For each model preset: its parameters, its footprint in MB without and with `methods` (a setting:
    [techniques] or (changes, [techniques])) and whether each fits `budget`."""
    from effitrain.model import BertForMLM, count_parameters

    limit = parse_bytes(budget, "budget")
    changes, techniques = setting_parts(methods)
    rows = {}
    for preset in presets:
        cfg = config.replace(preset=preset)
        vocab = vocab_size or cfg.data.vocab_size
        with torch.device("meta"):
            n = count_parameters(BertForMLM(cfg.model, vocab))
        plain = setting_footprint(cfg, [], vocab).total
        under = setting_footprint(cfg, (changes, techniques), vocab).total
        rows[preset] = {"parameters (M)": n / 1e6, "plain MB": plain / MB, "fits plain": plain <= limit,
                        "with the methods MB": under / MB, "fits with them": under <= limit}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.attrs.update(budget=budget)
    return df


# -- fine-tuning with a fraction of the parameters ---------------------------------------------------------------
def finetune_footprint(pretrained: Any, task: Any, update: str = "full", *, rows: int = 32, rank: int = 8,
                       last: int = 1) -> dict[str, Any]:
    """What one fine-tuning step of `pretrained` on `task` holds under `update`: trainable parameters,
    and MB of weights, gradients (trainable only), AdamW state (two fp32 moments per trainable weight)
    and the activations autograd saves for a micro-batch of `rows` training rows (measured)."""
    from effitrain.data.tokenizer import PAD
    from effitrain.model import BertForClassification
    from effitrain.train.sparse_update import apply_update

    model = BertForClassification(pretrained.cfg, pretrained.vocab_size, task.num_classes,
                                  copy.deepcopy(pretrained.encoder))
    info = apply_update(model, update, rank=rank, last=last)
    model.train()
    x, y = task.train_ids[:rows], task.train_y[:rows]
    with torch.random.fork_rng():
        saved, _, _ = saved_activation_bytes(model, lambda: torch.nn.functional.cross_entropy(model(x, x != PAD), y))
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = sum(p.numel() * p.element_size() for p in trainable)
    weights = tensor_bytes(model.parameters())
    return {"trainable": info.trainable, "trainable %": 100.0 * info.fraction, "weights": weights / MB,
            "gradients": grads / MB, "optimizer state": 2 * grads / MB, "activations": saved / MB,
            "total MB": (weights + 3 * grads + saved) / MB}


def finetune_table(pretrained: Any, task: Any, updates: "dict[str, dict[str, Any]]", *, seeds: Sequence[int] = (0, 1, 2),
                   resolve: float = 0.02, **evaluate_kw: Any) -> pd.DataFrame:
    """One row per update ({label: {"update": …, "rank": …, "last": …, and any `evaluate_downstream`
    setting of its own, e.g. "lr"}}; the label is the update where "update" is not given): trainable parameters, the fine-tuning step's memory (`finetune_footprint`),
    test accuracy ± 95% over `seeds` (`evaluate_downstream(method="finetune")`), seconds per seed, and
    the accuracy's difference from the first row's, paired by seed, with its verdict at ±`resolve`."""
    from effitrain.train.finetune import evaluate_downstream

    rows, per_seed = {}, {}
    for label, kw in updates.items():
        kw = {"update": label, **evaluate_kw, **kw}  # a row's own settings (e.g. its learning rates) win
        result = evaluate_downstream(pretrained, task, method="finetune", seeds=seeds, progress=False, **kw)
        fp = finetune_footprint(pretrained, task, kw["update"], rank=kw.get("rank", 8), last=kw.get("last", 1))
        per_seed[label] = result.per_seed
        rows[label] = {**fp, "accuracy": result.accuracy, "±": result.ci,
                       "s per seed": sum(result.seconds) / len(result.seconds)}
    first = next(iter(updates))
    for label in updates:
        d, lo, hi = difference_ci(per_seed[first], per_seed[label], paired=True)
        rows[label][f"Δ accuracy vs {first}"] = "" if label == first else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        rows[label]["verdict"] = "" if label == first else difference_verdict(d, lo, hi, resolve)
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.attrs.update(task=task.name, seeds=list(seeds), majority=result.majority)
    return df


__all__ = ["PARTS", "budget_for", "finetune_footprint", "finetune_table", "footprint_figure", "footprint_row", "memory_scatter",
           "memory_table", "preset_table", "setting_footprint", "setting_peak"]
