"""`LivePlot`: loss curves that grow while runs train, several runs overlaid.

    plot = LivePlot()                                   # x = optimizer steps
    display(plot.widget)                                # toggles for x (step / seconds / FLOPs) and log y
    run = et.train(cfg, callbacks=[plot.callback()])    # points appear live (≤ 10 redraws/s)
    plot.set_x("seconds"); plot.set_target(5.5)         # a dashed target line, ★ where each run reaches it

One figure: each run has one colour; its training loss is a thin faint line and its validation
loss a thicker line with markers (the legend entry). Clicking a legend entry hides both. A grey
dashed "unigram" line marks the val loss of predicting every masked token from word frequencies
alone (`run.extra["unigram_val_loss"]`, one line per distinct value among the runs shown): curves
fall to it, sit on it for a while (the plateau) and drop below it once attention uses context.
`plot.figure` is a plotly `FigureWidget`: it redraws live in JupyterLab, also when updated from a
background thread, and can be inspected without a frontend (`plot.figure.data`).
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import ipywidgets as widgets
import plotly.colors
import plotly.graph_objects as go

from effitrain.train.history import time_to_target
from effitrain.train.run import Run

X_AXES = {
    "step": "optimizer steps",
    "seconds": "training seconds (evaluation excluded)",
    "flops": "FLOPs (measured, cumulative)",
    "tokens": "tokens trained on (cumulative; samples × sequence length)",
}
PALETTE = tuple(plotly.colors.qualitative.Plotly) + tuple(plotly.colors.qualitative.Dark24)
BASELINE_COLOR = "#222222"


@dataclass
class _Entry:
    run: Run
    label: str
    color: str
    train: Any = None  # trace objects inside the FigureWidget
    val: Any = None
    reach: Any = None
    evals_seen: int = -1
    reach_key: Any = None


@dataclass
class _Band:
    runs: list
    label: str
    color: str
    traces: list = field(default_factory=list)


class LivePlot:
    """Live train/val loss curves of several runs (see the module docstring).

    x: "step", "seconds", "flops" or "tokens". log_y: logarithmic loss axis. target: a val loss to draw.
    show_train: draw the training loss too. max_fps: redraws per second while training.
    color_by: "run" (every run its own colour; runs without techniques are near-black) or
    "group" (seeds of the same configuration share a colour).
    """

    def __init__(self, x: str = "step", log_y: bool = False, target: float | None = None, *,
                 show_train: bool = True, max_fps: float = 10.0, height: int = 420, color_by: str = "run",
                 title: str = "MLM loss"):
        _check_x(x)
        if color_by not in ("run", "group"):
            raise ValueError(f"color_by must be 'run' or 'group'; got {color_by!r}")
        self.x, self.log_y, self.target = x, bool(log_y), None
        self.show_train, self.color_by = show_train, color_by
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self._entries: dict[int, _Entry] = {}
        self._bands: list[_Band] = []
        self._colors: dict[str, str] = {}
        self._unigram: dict[float, Any] = {}  # unigram val loss → its dashed line (a trace)
        self._marks: dict[str, list[tuple[float, str]]] = {}  # x axis → dotted vertical lines (`mark_x`)
        self._lock = threading.RLock()
        self._last_draw = 0.0
        self._pending: set[int] = set()
        self.figure = go.FigureWidget(layout=dict(
            title=dict(text=title, x=0.01, xanchor="left"), height=height, template="plotly_white",
            margin=dict(l=60, r=20, t=50, b=50), hovermode="closest", uirevision=x,
            xaxis=dict(title=dict(text=X_AXES[x])), yaxis=dict(title=dict(text="loss"), type="log" if log_y else "linear"),
            legend=dict(title=dict(text="runs (● val, thin line: train)" if show_train else "runs (● val)"))))
        self._x_toggle = widgets.ToggleButtons(options=[("step", "step"), ("seconds", "seconds"), ("FLOPs", "flops"), ("tokens", "tokens")],
                                               value=x, description="x axis", style={"button_width": "80px"})
        self._log_box = widgets.Checkbox(value=self.log_y, description="log loss axis", indent=False)
        self._x_toggle.observe(lambda ch: self.set_x(ch["new"]), names="value")
        self._log_box.observe(lambda ch: self.set_log_y(ch["new"]), names="value")
        self.widget = widgets.VBox([widgets.HBox([self._x_toggle, self._log_box]), self.figure])
        if target is not None:
            self.set_target(target)

    # -- runs ----------------------------------------------------------------------------------
    @property
    def runs(self) -> list[Run]:
        return [e.run for e in self._entries.values()]

    def add_run(self, run: Run | None = None, label: str | None = None) -> Callable[[str, dict, Run], None]:
        """Show `run` (its history so far) and return a trainer callback that keeps it live.

        With `run=None` the callback adopts whichever run calls it first:
        ``et.train(cfg, callbacks=[plot.add_run()])``.
        """
        if run is not None:
            self._ensure(run, label)
            self.update(run)

        def callback(kind: str, row: dict, r: Run) -> None:
            self._on_event(kind, r, label)

        return callback

    def callback(self) -> Callable[[str, dict, Run], None]:
        """A trainer callback that adds the run it is called for: ``callbacks=[plot.callback()]``."""
        return self.add_run(None)

    def update(self, run: Run | None = None) -> None:
        """Redraw one run from its history (adding it if new), or every run and band."""
        with self._lock:
            if run is None:
                entries = list(self._entries.values())
            else:
                entries = [self._ensure(run)]
            with self.figure.batch_update():
                for e in entries:
                    self._draw(e, force_reach=True)
                if run is None:
                    for b in self._bands:
                        self._draw_band(b)
                self._draw_unigram()
            self._last_draw = time.monotonic()

    def remove(self, run: Run) -> None:
        with self._lock:
            e = self._entries.pop(id(run), None)
            if e is not None:
                drop = {id(t) for t in (e.train, e.val, e.reach)}
                self.figure.data = [t for t in self.figure.data if id(t) not in drop]
                with self.figure.batch_update():
                    self._draw_unigram()

    def clear(self, keep: Iterable[Run] = ()) -> None:
        """Remove every run (but those in `keep`, e.g. a baseline) and every band."""
        keep_ids = {id(r) for r in keep}
        with self._lock:
            self._entries = {k: e for k, e in self._entries.items() if k in keep_ids}
            self._bands = []
            alive = {id(t) for e in self._entries.values() for t in (e.train, e.val, e.reach)}
            alive |= {id(t) for t in self._unigram.values()}
            self.figure.data = [t for t in self.figure.data if id(t) in alive]
            with self.figure.batch_update():
                self._draw_unigram()

    def add_band(self, runs: Iterable[Run], label: str | None = None, band: str = "minmax") -> None:
        """The mean validation curve over seeds with a shaded band (see `aggregate_curves`)."""
        from effitrain.lab.compare import group_runs
        runs = list(runs)
        if not runs:
            raise ValueError("add_band needs at least one run")
        label = label or next(iter(group_runs(runs)))
        with self._lock:
            b = _Band(runs, label, self._color_for(runs[0], label))
            b.band = band  # type: ignore[attr-defined]
            fill = _rgba(b.color, 0.18)
            self.figure.add_scatter(x=[], y=[], mode="lines", line=dict(width=0, color=b.color), showlegend=False,
                                    hoverinfo="skip", legendgroup=f"band:{label}",
                                    meta={"run": label, "kind": "band_hi"})
            hi = self.figure.data[-1]
            self.figure.add_scatter(x=[], y=[], mode="lines", line=dict(width=0, color=b.color), fill="tonexty",
                                    fillcolor=fill, showlegend=False, hoverinfo="skip", legendgroup=f"band:{label}",
                                    meta={"run": label, "kind": "band_lo"})
            lo = self.figure.data[-1]
            self.figure.add_scatter(x=[], y=[], mode="lines", line=dict(width=3, color=b.color),
                                    name=f"{label} (mean of {len(runs)})", legendgroup=f"band:{label}",
                                    meta={"run": label, "kind": "band_mean"})
            b.traces = [hi, lo, self.figure.data[-1]]
            self._bands.append(b)
            with self.figure.batch_update():
                self._draw_band(b)
                self._draw_unigram()

    # -- view --------------------------------------------------------------------------------------
    def set_x(self, x: str) -> None:
        """Plot against "step", "seconds" (training time), "flops" or "tokens" (samples × sequence length)."""
        _check_x(x)
        with self._lock:
            self.x = x
            if self._x_toggle.value != x:
                self._x_toggle.value = x  # calls back here; harmless
            with self.figure.batch_update():
                self.figure.layout.xaxis.title.text = X_AXES[x]
                self.figure.layout.uirevision = x  # a new x resets the zoom
            self._draw_shapes()
            self.update()

    def set_log_y(self, on: bool = True) -> None:
        with self._lock:
            self.log_y = bool(on)
            if self._log_box.value != self.log_y:
                self._log_box.value = self.log_y
            self.figure.layout.yaxis.type = "log" if self.log_y else "linear"

    def set_target(self, val_loss: float | None) -> None:
        """Draw a horizontal target line (None removes it) and mark where each run first reaches it."""
        if val_loss is not None and not (isinstance(val_loss, (int, float)) and math.isfinite(val_loss)):
            raise ValueError(f"target must be a finite number or None; got {val_loss!r}")
        with self._lock:
            self.target = None if val_loss is None else float(val_loss)
            self._draw_shapes()
            self.update()

    def mark_x(self, value: float, label: str = "deadline", x: str | None = None) -> None:
        """A dotted vertical line at `value` on axis `x` (default: the current one), e.g. a budget's deadline
        in seconds; it shows whenever that axis is."""
        x = x or self.x
        _check_x(x)
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"mark_x needs a finite number; got {value!r}")
        with self._lock:
            self._marks.setdefault(x, []).append((float(value), str(label)))
            self._draw_shapes()

    def _draw_shapes(self) -> None:
        shapes = [dict(type="line", xref="x", x0=v, x1=v, yref="paper", y0=0, y1=1,
                       line=dict(color="#444", width=1.2, dash="dot"),
                       label=dict(text=text, textposition="end", font=dict(size=11)))
                  for v, text in self._marks.get(self.x, [])]
        if self.target is not None:
            shapes.append(dict(
                type="line", xref="paper", x0=0, x1=1, yref="y", y0=self.target, y1=self.target,
                line=dict(color="#555", width=1.5, dash="dash"), name="target",
                label=dict(text=f"target {self.target:.3f}", textposition="end", font=dict(size=11))))
        with self.figure.batch_update():
            self.figure.layout.shapes = shapes

    def _ipython_display_(self) -> None:  # `plot` alone in a cell shows the widget
        from IPython.display import display
        display(self.widget)

    # -- internals ---------------------------------------------------------------------------------
    def _on_event(self, kind: str, run: Run, label: str | None) -> None:
        with self._lock:
            e = self._ensure(run, label)
            now = time.monotonic()
            if kind == "step" and now - self._last_draw < self.min_interval:
                self._pending.add(id(run))
                return
            with self.figure.batch_update():
                self._draw(e, force_reach=kind != "step")
                for key in list(self._pending):  # catch up other throttled runs
                    if key in self._entries and key != id(run):
                        self._draw(self._entries[key])
                self._pending.clear()
                self._draw_unigram()
            self._last_draw = now

    def _color_for(self, run: Run, label: str) -> str:
        if self.color_by == "group":
            from effitrain.lab.compare import group_key
            key = group_key(run)
        else:
            key = f"run:{id(run)}:{label}"
        if key not in self._colors:
            if not run.techniques and self.color_by == "run" and BASELINE_COLOR not in self._colors.values():
                self._colors[key] = BASELINE_COLOR
            else:
                used = set(self._colors.values())
                free = [c for c in PALETTE if c not in used]
                self._colors[key] = free[0] if free else PALETTE[len(self._colors) % len(PALETTE)]
        return self._colors[key]

    def _unique_label(self, label: str) -> str:
        taken = {e.label for e in self._entries.values()}
        if label not in taken:
            return label
        i = 2
        while f"{label} ({i})" in taken:
            i += 1
        return f"{label} ({i})"

    def _ensure(self, run: Run, label: str | None = None) -> _Entry:
        key = id(run)
        if key in self._entries:
            return self._entries[key]
        label = self._unique_label(label or run.label)
        e = _Entry(run=run, label=label, color=self._color_for(run, label))
        group = f"run:{key}"
        safe = label.replace("<", "&lt;").replace("%{", "% {")
        hover = safe + " · %s<br>x = %{x:.4~g}<br>loss = %{y:.4f}<extra></extra>"
        self.figure.add_scatter(x=[], y=[], mode="lines", name=f"{label} (train)", legendgroup=group,
                                showlegend=False, visible=True if self.show_train else False,
                                line=dict(color=e.color, width=1), opacity=0.35, hovertemplate=hover.replace(" · %s", " · train"),
                                meta={"run": label, "kind": "train"})
        e.train = self.figure.data[-1]
        self.figure.add_scatter(x=[], y=[], mode="lines+markers", name=label, legendgroup=group,
                                line=dict(color=e.color, width=2.5), marker=dict(size=7, color=e.color),
                                hovertemplate=hover.replace(" · %s", " · val"), meta={"run": label, "kind": "val"})
        e.val = self.figure.data[-1]
        self.figure.add_scatter(x=[], y=[], mode="markers", name=f"{label} reaches target", legendgroup=group,
                                showlegend=False, hovertemplate=safe + " reaches the target at x = %{x:.4~g}<extra></extra>",
                                marker=dict(symbol="star", size=16, color=e.color, line=dict(color="white", width=1)),
                                meta={"run": label, "kind": "reach"})
        e.reach = self.figure.data[-1]
        self._entries[key] = e
        return e

    def _draw(self, e: _Entry, force_reach: bool = False) -> None:
        x = self.x
        steps = list(e.run.history.steps)  # snapshots: the trainer thread may be appending
        evals = list(e.run.history.evals)
        if self.show_train:
            e.train.x, e.train.y = _xy(steps, x, "train_loss")
        e.val.x, e.val.y = _xy(evals, x, "val_loss")
        key = (x, self.target, len(evals))
        if force_reach or key != e.reach_key:
            e.reach_key = key
            hit = time_to_target(e.run.history, val_loss=self.target) if self.target is not None and evals else None
            if hit is None:
                e.reach.x, e.reach.y = (), ()
            else:
                e.reach.x, e.reach.y = (hit[x],), (self.target,)

    def unigram_values(self) -> list[float]:
        """The distinct unigram val losses (`run.extra["unigram_val_loss"]`) of the runs and bands shown."""
        from effitrain.lab.compare import unigram_val_loss
        runs = [e.run for e in self._entries.values()] + [r for b in self._bands for r in b.runs]
        return sorted({round(v, 6) for v in map(unigram_val_loss, runs) if math.isfinite(v)})

    def _x_span(self) -> tuple[float, float]:
        """The smallest and largest x of any curve shown (histories grow monotonically in x)."""
        xs = []
        runs = [e.run for e in self._entries.values()] + [r for b in self._bands for r in b.runs]
        for run in runs:
            for rows in (run.history.steps, run.history.evals):
                for row in (rows[0], rows[-1]) if rows else ():
                    if row.get(self.x) is not None:
                        xs.append(float(row[self.x]))
        return (min(xs), max(xs)) if xs else (0.0, 0.0)

    def _draw_unigram(self) -> None:
        """One dashed horizontal line per unigram value, across the curves, labelled at its right end."""
        values = self.unigram_values()
        stale = [v for v in self._unigram if v not in values]
        if stale:
            drop = {id(self._unigram.pop(v)) for v in stale}
            self.figure.data = [t for t in self.figure.data if id(t) not in drop]
        lo, hi = self._x_span()
        for v in values:
            line = self._unigram.get(v)
            if line is None:
                self.figure.add_scatter(
                    x=[], y=[], mode="lines+text", name=f"unigram {v:.3f}", showlegend=False,
                    line=dict(color="#888888", width=1.5, dash="dash"), textposition="top left",
                    textfont=dict(size=11, color="#666666"), meta={"kind": "unigram", "value": v},
                    hovertemplate=f"unigram baseline {v:.3f}: the val loss of word frequencies alone<extra></extra>")
                line = self._unigram[v] = self.figure.data[-1]
            line.x, line.y, line.text = (lo, hi), (v, v), ("", f"unigram {v:.3f}")

    def _draw_band(self, b: _Band) -> None:
        from effitrain.lab.compare import aggregate_curves
        df = aggregate_curves(b.runs, x=self.x, y="val_loss", band=getattr(b, "band", "minmax"))
        hi, lo, mean = b.traces
        xs = tuple(float(v) for v in df[self.x]) if len(df) else ()
        hi.x = lo.x = mean.x = xs
        hi.y = tuple(float(v) for v in df["hi"]) if len(df) else ()
        lo.y = tuple(float(v) for v in df["lo"]) if len(df) else ()
        mean.y = tuple(float(v) for v in df["mean"]) if len(df) else ()


def _xy(rows: list[dict], x: str, y: str) -> tuple[tuple, tuple]:
    xs, ys = [], []
    for r in rows:
        xv, yv = r.get(x), r.get(y)
        if xv is None or yv is None:
            continue
        yv = float(yv)
        if math.isfinite(yv):
            xs.append(float(xv))
            ys.append(yv)
    return tuple(xs), tuple(ys)


def _check_x(x: str) -> None:
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}; got {x!r}")


def _rgba(color: str, alpha: float) -> str:
    r, g, b = plotly.colors.hex_to_rgb(color) if color.startswith("#") else plotly.colors.unlabel_rgb(color)
    return f"rgba({int(r)}, {int(g)}, {int(b)}, {alpha})"
