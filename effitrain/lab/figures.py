"""Figures of the lessons (plotly): the pruning sweep, curriculum difficulties, the live distillation objective,
where a step's time goes (`profile_figure` of `effitrain.lab.profile_steps`), accumulation errors,
progressive layer dropping's schedule (`layer_drop_figure`), selective backprop's break-even (`break_even_figure`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from effitrain.lab.plot import PALETTE
from effitrain.techniques.curriculum import COMPETENCES, DIFFICULTIES, admitted_share, competence, difficulty, difficulty_cdf

if TYPE_CHECKING:  # pragma: no cover
    from effitrain.config import Config
    from effitrain.data import PretrainData


def plot_sweep(df: pd.DataFrame) -> go.Figure:
    """FLOPs to target, seconds to target and final val loss against the keep fraction, one line per score.

    Error bars are the 95% half-widths over seeds; the baseline (no pruning) is the dashed line.
    A setting that missed the target has no point in the first two panels.
    """
    panels = (("flops_to_target", "FLOPs to target"), ("s_to_target", "seconds to target"),
              ("final_val_loss", "final val loss"))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in panels])
    base = df[df["score"] == "none"].iloc[0]
    groups = [g for g in df[df["score"] != "none"].groupby(["score", "keep"], sort=False)]
    for i, ((score, keep), g) in enumerate(groups):
        g = g.sort_values("keep_fraction")
        color = PALETTE[i % len(PALETTE)]
        for col, (y, _) in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(
                x=list(g["keep_fraction"]) + [1.0], y=list(g[y]) + [base[y]], mode="lines+markers",
                name=f"{score} ({keep})", legendgroup=f"{score}{keep}", showlegend=col == 1,
                line=dict(color=color), error_y=dict(type="data", array=list(g[f"{y}_ci"]) + [base[f"{y}_ci"]],
                                                     visible=True)), row=1, col=col)
    for col, (y, _) in enumerate(panels, start=1):
        if math.isfinite(base[y]):
            fig.add_hline(y=base[y], line=dict(dash="dash", color="#222"), row=1, col=col)
        fig.update_xaxes(title_text="keep fraction", row=1, col=col)
    fig.update_layout(height=380, margin=dict(t=70, b=40, l=50, r=10),  # room for the title above the panels' titles
                      title=dict(text=f"pruning sweep (target val loss {df.attrs.get('target_val_loss', math.nan):.3f}; "
                                      "dashed: no pruning)", font=dict(size=13), y=0.97))
    return fig


def plot_difficulty(data: "PretrainData", c0: float = 0.01, duration: float = 0.5) -> go.Figure:
    """Left: the raw difficulty distributions; right: the share of examples each curriculum admits over the budget."""
    fig = make_subplots(rows=1, cols=3, column_widths=[0.3, 0.3, 0.4], subplot_titles=(
        "length (real tokens)", "rarity −Σ log p̂(w)", f"admitted share of examples (c0={c0}, T={duration})"))
    t = np.linspace(0, 1, 201)
    for col, kind in enumerate(DIFFICULTIES, start=1):
        raw = difficulty(data.train, kind, data.unigram_counts)
        fig.add_trace(go.Histogram(x=raw.numpy(), nbinsx=40, name=kind, showlegend=False), row=1, col=col)
        cdf = difficulty_cdf(raw)
        for sched, dash in zip(COMPETENCES, ("solid", "dot")):
            fig.add_trace(go.Scatter(x=t, y=admitted_share(cdf, competence(sched, t, duration, c0)), mode="lines",
                                     name=f"{kind}, c_{sched}", line=dict(dash=dash)), row=1, col=3)
    fig.update_xaxes(title_text="fraction of the training budget", row=1, col=3)
    fig.update_layout(height=340, margin=dict(t=40, b=40, l=40, r=10), legend=dict(x=1.02, y=0.5))
    return fig


def profile_figure(df: pd.DataFrame, title: str | None = None, height: int = 300) -> go.Figure:
    """Milliseconds per training step by operator group, one horizontal bar per group (largest on top),
    from `effitrain.lab.profile_steps`; the hover adds the share of the step and the backward part.
    The wall time of a step is in the title (the bars sum to it)."""
    from effitrain.lab.profile import WALL

    groups = df.drop(index=WALL, errors="ignore").iloc[::-1]  # plotly draws the first category at the bottom
    wall_ms = float(df.loc[WALL, "ms"]) if WALL in df.index else float(groups["ms"].sum())
    a = df.attrs
    title = title if title is not None else (
        f"where a step's time goes: {a.get('model', '')}, {a.get('batch', '')}, attention {a.get('attention', '')}")
    backward_ms = groups["backward seconds"] * 1e3 if "backward seconds" in groups else groups["ms"] * float("nan")
    fig = go.Figure(go.Bar(
        x=groups["ms"], y=list(groups.index), orientation="h", marker_color=PALETTE[0],
        text=[f"{ms:.1f} ms ({share:.0%})" for ms, share in zip(groups["ms"], groups["share"])], textposition="auto",
        customdata=np.stack([groups["share"], backward_ms], axis=-1),
        hovertemplate="%{y}: %{x:.2f} ms per step, %{customdata[0]:.1%} of the step"
                      "<br>of which backward: %{customdata[1]:.2f} ms<extra></extra>"))
    kind = a.get("time_kind", "")
    fig.update_layout(
        title=dict(text=f"{title}<br><sup>{wall_ms:.1f} ms per step (wall) over {a.get('steps', '?')} profiled steps"
                        f"{'; ' + kind if kind else ''}; {a.get('device', '')}</sup>", x=0.01, xanchor="left",
                   font=dict(size=13)),
        height=height, template="plotly_white", margin=dict(l=130, r=20, t=70, b=45),
        xaxis=dict(title=dict(text="ms per step"), rangemode="tozero"), yaxis=dict(automargin=True), showlegend=False)
    return fig


def accumulation_figure(df: pd.DataFrame, x: str, title: str, x_title: str) -> go.Figure:
    """Relative error (log-log) of naive and chunked low-precision sums against `x`, from
    `effitrain.train.chunked.dot_error_curve` / `accumulation_error` (several frames concatenated: one
    colour per (kind, dtype) found in the frame, solid = naive, dashed = chunked)."""
    keys = [c for c in ("kind", "dtype") if c in df.columns]
    groups = list(df.groupby(keys, sort=False)) if keys else [((), df)]
    fig = go.Figure()
    for i, (key, part) in enumerate(groups):
        name = " ".join(map(str, key if isinstance(key, tuple) else (key,)))
        for mode, dash in (("naive", "solid"), ("chunked", "dash")):
            fig.add_scatter(x=part[x], y=part[mode], mode="lines+markers", name=f"{name} {mode}".strip(),
                            line=dict(color=PALETTE[i % len(PALETTE)], dash=dash))
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=13)), template="plotly_white", height=340,
                      margin=dict(l=60, r=20, t=50, b=50), xaxis=dict(type="log", title=dict(text=x_title)),
                      yaxis=dict(type="log", title=dict(text="relative error (vs fp64)")))
    return fig


class ObjectivePlot:
    """The outer loss of `distill_dataset` per step, drawn live: pass `plot.callback` as its callback.

    `plot.figure` is a plotly FigureWidget (redrawn every `every` steps); display the object itself.
    """

    def __init__(self, title: str = "dataset distillation: loss of the trained learner on real data",
                 every: int = 10, height: int = 320):
        self.every, self.steps, self.losses = every, [], []
        self.figure = go.FigureWidget(layout=dict(
            title=dict(text=title, x=0.01), height=height, template="plotly_white", margin=dict(l=60, r=20, t=50, b=50),
            xaxis=dict(title=dict(text="outer step (a fresh learner each)")), yaxis=dict(title=dict(text="loss"))))
        self.figure.add_scatter(x=[], y=[], mode="lines", name="outer loss")

    def callback(self, step: int, loss: float) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        if step % self.every == 0:
            with self.figure.batch_update():
                self.figure.data[0].x, self.figure.data[0].y = list(self.steps), list(self.losses)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.figure)


def layer_drop_figure(runs: Sequence[Any], layers: int | None = None, window: int = 20) -> go.Figure:
    """Progressive layer dropping over a run: θ(t), the expected kept share E(θ) = 1 − (1−θ)(L−1)/(2L),
    and each run's measured share of blocks kept (the step term ``kept_layer_fraction``, a rolling mean
    over `window` steps), against the fraction of the budget used. θ̄, γ and (by default) L are the
    first run's: its layer_drop parameters and model.layers."""
    from effitrain.techniques.layer_drop import LayerDropParams, expected_kept_fraction, theta

    first = runs[0]
    params = next((t.get("params") or {} for t in first.techniques if t["name"] == "layer_drop"), {})
    defaults = LayerDropParams()
    theta_bar, gamma = params.get("theta_bar", defaults.theta_bar), params.get("gamma", defaults.gamma)
    layers = layers or first.config.model.layers
    t = np.linspace(0.0, 1.0, 201)
    th = [theta(x, theta_bar, gamma) for x in t]
    fig = go.Figure()
    fig.add_scatter(x=t, y=th, mode="lines", name="θ(t)", line=dict(color=PALETTE[0], dash="dot"))
    fig.add_scatter(x=t, y=[expected_kept_fraction(v, layers) for v in th], mode="lines",
                    name=f"expected kept share E (L = {layers})", line=dict(color=PALETTE[1], width=3))
    for i, run in enumerate(runs):
        steps = run.history.frame("steps")
        if "term_kept_layer_fraction" not in steps or steps.empty:
            continue
        frac = steps["step"] / float(steps["step"].max())
        kept = steps["term_kept_layer_fraction"].rolling(window, min_periods=1).mean()
        fig.add_scatter(x=frac, y=kept, mode="lines", name=f"{run.label}: measured (mean of {window} steps)",
                        line=dict(color=PALETTE[(i + 2) % len(PALETTE)], width=1))
    fig.update_layout(title=dict(text="progressive layer dropping: keep schedule and blocks kept", x=0.01, font=dict(size=13)),
                      template="plotly_white", height=340, margin=dict(l=60, r=20, t=50, b=50),
                      xaxis=dict(title=dict(text="fraction of the budget used")),
                      yaxis=dict(title=dict(text="share of blocks / θ"), range=[0.0, 1.05]))
    return fig


def break_even_figure(df: pd.DataFrame, fractions: Sequence[float]) -> go.Figure:
    """Selective backprop's cost of a step against the share of rows kept: measured seconds and FLOPs per
    step relative to the plain run (`effitrain.lab.speed.step_cost`, rows in the order of `fractions`
    after the baseline), next to the FLOP model 1/3 + k (a scoring forward of every row, forward and
    backward of the kept share k). Where a curve is below 1 the step is cheaper; it must then also
    learn enough per step to win on time to target."""
    rows = df.drop(index="baseline")
    k = list(fractions)
    fig = go.Figure()
    fig.add_scatter(x=k, y=[1 / 3 + x for x in k], mode="lines", name="FLOP model 1/3 + k",
                    line=dict(color="#888", dash="dot"))
    for col, lo, hi, name, color in (("× baseline FLOPs", "FLOPs lo", "FLOPs hi", "measured FLOPs", PALETTE[0]),
                                     ("× baseline s", "s lo", "s hi", "measured seconds", PALETTE[1])):
        fig.add_scatter(x=k, y=rows[col], mode="lines+markers", name=name, line=dict(color=color),
                        error_y=dict(type="data", symmetric=False, array=(rows[hi] - rows[col]).fillna(0),
                                     arrayminus=(rows[col] - rows[lo]).fillna(0)))
    fig.add_hline(y=1.0, line=dict(color="#444", width=1), annotation_text="plain step", annotation_position="top left")
    fig.update_layout(title=dict(text="selective backprop: cost of a step against the share of rows kept", x=0.01,
                                 font=dict(size=13)), template="plotly_white", height=340,
                      margin=dict(l=60, r=20, t=50, b=50), xaxis=dict(title=dict(text="share of rows kept k")),
                      yaxis=dict(title=dict(text="× the plain step")))
    return fig


def recipe_schedule_figure(configs: dict[str, "Config"], steps_in_budget: dict[str, int] | None = None,
                           points: int = 201) -> go.Figure:
    """Each config's learning rate (× its own peak, left) and rows per step (× the micro-batch, right)
    against the fraction of the budget used, from the trainer's own functions (`lr_factor`,
    `micro_batches_at`). A schedule planned in steps (`optim.plan_steps`) is drawn for a budget that
    holds `steps_in_budget[name]` steps (default: the plan), so a plan the deadline cuts off ends
    above 0; the dotted line is the deadline."""
    from effitrain.train.schedule import lr_factor, micro_batches_at, schedule_fraction

    f = np.linspace(0.0, 1.0, points)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("learning rate ÷ its peak", "rows per step ÷ micro-batch"))
    for i, (name, cfg) in enumerate(configs.items()):
        o, color = cfg.optim, PALETTE[i % len(PALETTE)]
        held = (steps_in_budget or {}).get(name, o.plan_steps)  # steps the budget holds (used by a step plan only)
        sched = [lr_factor(schedule_fraction(x, x * held, o.plan_steps), o.schedule, o.warmup, o.min_lr_ratio)
                 for x in f]
        label = f"{name} (planned for {o.plan_steps} steps, {held} fit)" if o.plan_steps else name
        fig.add_scatter(x=f, y=sched, mode="lines", name=label, line=dict(color=color), legendgroup=name, row=1, col=1)
        fig.add_scatter(x=f, y=[micro_batches_at(x, cfg.run.grad_accum, cfg.run.batch_ramp) for x in f],
                        mode="lines", name=name, line=dict(color=color, shape="hv"), legendgroup=name,
                        showlegend=False, row=1, col=2)
    for col in (1, 2):
        fig.add_vline(x=1.0, line=dict(color="#444", dash="dot"), row=1, col=col)
        fig.update_xaxes(title_text="fraction of the budget used", range=[0, 1.02], row=1, col=col)
    fig.update_layout(template="plotly_white", height=330, margin=dict(l=50, r=20, t=50, b=50),
                      legend=dict(orientation="h", y=-0.25))
    return fig


__all__ = ["ObjectivePlot", "accumulation_figure", "break_even_figure", "layer_drop_figure", "plot_difficulty",
           "plot_sweep", "profile_figure", "recipe_schedule_figure"]
