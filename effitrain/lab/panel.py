"""`Panel`: pick techniques and settings, press Run, watch the curves, read the comparison.

    panel = Panel(base_config=et.profile_config("cpu"))
    panel                                   # a notebook cell ending in `panel` shows the controls
    panel.run_now()                         # the same as pressing Run (scripts, nbmake: trains here)

Every registered technique gets a checkbox and one widget per parameter, made from its `Params`
dataclass: "choices" → dropdown; bool → checkbox; int/float with a "range" → slider (a float range
spanning ≥ 100× on positive numbers → log slider); other numbers → number boxes; anything else →
a text box read as a Python literal. Sliders clamp to their range; everything else is validated
when Run is pressed and a bad value is reported in the panel, one line, no traceback.

Run trains one run per seed (seed, seed+1, …) with the selected techniques, one after another in
ONE background thread, so the notebook stays responsive and Stop is heard: Stop ends the current
run after its step (status "stopped"; the partial curve and history are kept) and skips the seeds
not yet started. Without a notebook frontend (a script, pytest, nbmake, or `EFFITRAIN_FOREGROUND=1`)
the same call trains in the foreground with a progress bar and prints a text summary.

In JupyterLab `run_now()` returns at once; a later cell that needs the results calls
`panel.wait()` first.

Profile: the base config is used as given while the dropdown shows its profile; picking another
profile starts from `profile_config(that profile)`. Budget, seeds, precision and compile apply on top.

Run cache: with "use cached runs" ticked (the default) a run identical to one trained before (same
settings, techniques, seed, data and code; see `effitrain.train.runcache`) loads from disk and its
curve is drawn at once, with the seconds it measured then. Untick it to train again; the new run
replaces the stored one.
"""
from __future__ import annotations

import ast
import dataclasses
import html
import math
import os
import re
import threading
import time
import typing
from typing import Any, Iterable

import ipywidgets as widgets

from effitrain.config import PRECISIONS, PROFILES, Budget, Config, ConfigError, parse_assignment, profile_config
from effitrain.data import PretrainData
from effitrain.lab.compare import compare, styled, to_text
from effitrain.lab.plot import LivePlot
from effitrain.techniques.base import REGISTRY, registered, resolve
from effitrain.train import runcache
from effitrain.train.run import Run
from effitrain.recipes import RECIPE_NAMES, recipe

MAX_SEEDS = 5


def has_frontend() -> bool:
    """True inside a Jupyter kernel that a live frontend (JupyterLab, VS Code…) is talking to.

    False in plain Python, IPython in a terminal, pytest, nbmake (its kernels inherit
    PYTEST_CURRENT_TEST from the pytest process) and whenever EFFITRAIN_FOREGROUND is set to
    anything but 0/false/no. Headless executors that look like a frontend from inside the
    kernel (`jupyter nbconvert --execute`, papermill) need EFFITRAIN_FOREGROUND=1 or an explicit
    `run_now(blocking=True)`.
    """
    flag = os.environ.get("EFFITRAIN_FOREGROUND", "").strip().lower()
    if flag and flag not in ("0", "false", "no", "off"):
        return False
    if os.environ.get("PYTEST_CURRENT_TEST"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell" and getattr(shell, "kernel", None) is not None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# -- widgets from Params -----------------------------------------------------------------------------
def _field_type(params_cls: type, f: dataclasses.Field) -> str:
    """'bool' | 'int' | 'float' | 'str' | 'other', from the annotation or else the default's type."""
    try:
        hint = typing.get_type_hints(params_cls).get(f.name, f.type)
    except Exception:  # string annotations naming things not importable here
        hint = f.type
    name = hint if isinstance(hint, str) else getattr(hint, "__name__", str(hint))
    name = name.strip()
    if name in ("bool", "int", "float", "str"):
        return name
    default = f.default if f.default is not dataclasses.MISSING else None
    for t in (bool, int, float, str):  # bool before int: True is an int
        if isinstance(default, t):
            return t.__name__
    return "other"


def param_widget(params_cls: type, f: dataclasses.Field) -> widgets.Widget:
    """The widget for one technique parameter (see the module docstring for the rules)."""
    meta, kind = f.metadata, _field_type(params_cls, f)
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
    common = dict(description=f.name, tooltip=meta.get("help", ""), style={"description_width": "initial"})
    if "choices" in meta:
        choices = tuple(meta["choices"])
        return widgets.Dropdown(options=[(str(c), c) for c in choices],
                                value=default if default in choices else choices[0], **common)
    if kind == "bool":
        return widgets.Checkbox(value=bool(default), indent=False, **common)
    if kind == "int":
        if "range" in meta:
            lo, hi = meta["range"]
            return widgets.IntSlider(min=int(lo), max=int(hi), step=int(meta.get("step") or 1),
                                     value=int(default), continuous_update=False, **common)
        return widgets.IntText(value=int(default or 0), **common)
    if kind == "float":
        if "range" in meta:
            lo, hi = (float(v) for v in meta["range"])
            if lo > 0 and hi / lo >= 100 and "step" not in meta:
                llo, lhi = math.log10(lo), math.log10(hi)
                return widgets.FloatLogSlider(base=10, min=llo, max=lhi, step=(lhi - llo) / 100, value=float(default),
                                              readout_format=".3g", continuous_update=False, **common)
            # a round step (0.01, 0.001, …) so values dragged in the browser read as typed: 0.5, not 0.5085
            step = float(meta.get("step") or 10 ** math.floor(math.log10((hi - lo) / 100)))
            return widgets.FloatSlider(min=lo, max=hi, step=step, value=float(default), readout_format=".3g",
                                       continuous_update=False, **common)
        return widgets.FloatText(value=float(default or 0.0), **common)
    if kind == "str":
        return widgets.Text(value="" if default is None else str(default), **common)
    return widgets.Text(value=repr(default), **common)  # read back with ast.literal_eval


def _read_param(technique: str, f: dataclasses.Field, w: widgets.Widget, kind: str) -> Any:
    if isinstance(w, widgets.Text) and kind == "other":
        try:
            return ast.literal_eval(w.value)
        except (ValueError, SyntaxError):
            raise ConfigError(f"{technique}.{f.name}: cannot read {w.value!r} as a Python value") from None
    value = w.value
    if kind == "float" and isinstance(value, (int, float)) and not math.isfinite(value):
        raise ConfigError(f"{technique}.{f.name} must be a finite number; got {value!r}")
    return value


# -- the panel -----------------------------------------------------------------------------------------
class Panel:
    """Controls generated from the technique registry, a live plot and a comparison table.

    base_config: the starting `Config` (default: `profile_config()`). techniques: names to offer
    (default: every registered technique). plot: a `LivePlot` to draw into (default: a new one).
    data: a `PretrainData` the runs train on when their `config.data` matches it (e.g. the
    lesson's own, already prepared); otherwise each run prepares its data (cached on disk).
    Attributes: `widget`, `runs` (every run started here, in order), `plot`, and the widgets
    `technique_boxes[name]`, `param_widgets[name][field]`, `profile`, `budget`, `seeds`,
    `precision`, `compile`, `warm_start`, `recipe` (a named recipe or the lesson's config), `changes` (FIELD=VALUE, …),
    `target`, `use_cache`, `run_button`, `stop_button`, `status`, `errors`, `table`.
    """

    kind = "panel"  # names the panel in its error lines

    def __init__(self, base_config: Config | None = None, techniques: Iterable[str] | None = None,
                 plot: LivePlot | None = None, data: PretrainData | None = None):
        self.base_config = base_config if base_config is not None else profile_config()
        self.data = data  # used by runs whose data settings are the ones it was prepared with
        names = registered() if techniques is None else list(techniques)
        unknown = [n for n in names if n not in REGISTRY]
        if unknown:
            raise ConfigError(f"unknown technique {unknown[0]!r}; registered: {', '.join(registered()) or 'none'}")
        self.technique_names = names
        self.plot = plot if plot is not None else LivePlot()
        self.runs: list[Run] = []
        self.table_frame = None  # the last `compare(...)` DataFrame
        self.error_messages: list[str] = []
        self._field_errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None
        self._last_status = 0.0
        self._build()

    # -- widgets ------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.base_config
        self.technique_boxes: dict[str, widgets.Checkbox] = {}
        self.param_widgets: dict[str, dict[str, widgets.Widget]] = {}
        self._param_kinds: dict[str, dict[str, str]] = {}
        rows = []
        for name in self.technique_names:
            cls = REGISTRY[name]
            card = cls.card().splitlines()[0] if cls.card() else ""
            box = widgets.Checkbox(value=False, description=name, indent=False, tooltip=cls.card(),
                                   layout=widgets.Layout(width="auto"))
            fields = dataclasses.fields(cls.Params)
            ws = {f.name: param_widget(cls.Params, f) for f in fields}
            self._param_kinds[name] = {f.name: _field_type(cls.Params, f) for f in fields}
            helps = [widgets.HTML(f"<small>{html.escape(f.metadata.get('help', ''))}</small>")
                     if f.metadata.get("help") else None for f in fields]
            params_box = widgets.VBox([widgets.HBox([w, h] if h else [w]) for w, h in zip(ws.values(), helps)],
                                      layout=widgets.Layout(margin="0 0 0 24px", display="none"))
            box.observe(lambda ch, pb=params_box: setattr(pb.layout, "display", "" if ch["new"] else "none"),
                        names="value")
            self.technique_boxes[name], self.param_widgets[name] = box, ws
            head = [box] + ([widgets.HTML(f"<small style='color:#666'>{html.escape(card)}</small>")] if card else [])
            rows.append(widgets.VBox([widgets.HBox(head), params_box]))
        if not rows:
            rows.append(widgets.HTML("<i>no techniques registered: Run trains the baseline</i>"))

        profiles = list(PROFILES)
        if cfg.profile not in profiles:
            profiles.insert(0, cfg.profile)
        wide = {"description_width": "initial"}
        self.profile = widgets.Dropdown(options=profiles, value=cfg.profile, description="profile", style=wide)
        self.budget = widgets.Text(value=str(cfg.budget), description="budget", placeholder="200steps, 60s, 1e12flops",
                                   continuous_update=False, style=wide, layout=widgets.Layout(width="220px"))
        self.seeds = widgets.IntSlider(value=1, min=1, max=MAX_SEEDS, description="seeds", style=wide)
        self.precision = widgets.Dropdown(options=list(PRECISIONS), value=cfg.run.precision, description="precision",
                                          style=wide, layout=widgets.Layout(width="180px"))
        self.compile = widgets.Checkbox(value=cfg.run.compile, description="torch.compile", indent=False)
        self.recipe = widgets.Dropdown(options=[("(the lesson's config)", "")] + [(n, n) for n in RECIPE_NAMES], value="",
                                       description="recipe", style=wide, layout=widgets.Layout(width="260px"),
                                       tooltip="et.recipe(name): bert, 24h-bert or cramming on top of the profile")
        self.changes = widgets.Text(value="", description="changes", placeholder="model.norm=post, optim.lr=3e-4",
                                    continuous_update=False, style=wide, layout=widgets.Layout(width="420px"),
                                    tooltip="config fields set after the recipe (comma-separated FIELD=VALUE)")
        self.warm_start = widgets.BoundedIntText(
            value=cfg.run.warm_start, min=0, max=10**9, description="warm start (step)", style=wide,
            layout=widgets.Layout(width="190px"),
            tooltip="start every run from the baseline's state at this step (0: from scratch); docs/power.md")
        self.target = widgets.Text(value="", description="target val loss", placeholder="auto: baseline's final",
                                   style=wide, layout=widgets.Layout(width="260px"))
        self.use_cache = widgets.Checkbox(
            value=True, description="use cached runs", indent=False,
            tooltip="a run identical to one trained before loads from disk; untick to train it again")
        self.run_button = widgets.Button(description="Run", button_style="success", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.status = widgets.Label(value="ready")
        self.errors = widgets.HTML(value="")
        self.table = widgets.HTML(value="")
        self.budget.observe(lambda ch: self._check_budget(), names="value")
        self.target.observe(lambda ch: self._target_or_none(), names="value")
        self.run_button.on_click(lambda _b: self.run_now())
        self.stop_button.on_click(lambda _b: self.stop())
        self.widget = widgets.VBox([
            widgets.HTML("<b>Techniques</b>"), *rows,
            widgets.HTML("<b>Run settings</b>"),
            widgets.HBox([self.profile, self.budget, self.precision, self.compile]),
            widgets.HBox([self.recipe, self.changes]),
            widgets.HBox([self.seeds, self.warm_start, self.target, self.use_cache]),
            widgets.HBox([self.run_button, self.stop_button, self.status]),
            self.errors, self.plot.widget, self.table,
        ])

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)

    # -- messages -------------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.status.value = text

    def _error(self, text: str) -> None:
        self.error_messages.append(text)
        self._render_errors()

    def _clear_errors(self) -> None:
        self.error_messages = []
        self._render_errors()

    def _field_error(self, field: str, text: str | None) -> None:
        if text:
            self._field_errors[field] = text
        else:
            self._field_errors.pop(field, None)
        self._render_errors()

    def _render_errors(self) -> None:
        lines = list(self._field_errors.values()) + self.error_messages[-5:]
        self.errors.value = "<br>".join(f"<span style='color:#cf222e'>⚠ {html.escape(m)}</span>" for m in lines)

    def _check_budget(self) -> Budget | None:
        try:
            budget = Budget.parse(self.budget.value)
        except ConfigError as exc:
            self._field_error("budget", str(exc))
            return None
        self._field_error("budget", None)
        return budget

    def _check_target(self) -> float | None:
        text = self.target.value.strip()
        value = None
        if text:
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value <= 0:
                message = f"target val loss must be a positive number (or empty for the default); got {text!r}"
                self._field_error("target", message)
                raise ConfigError(message)
        self._field_error("target", None)
        return value

    # -- what Run would train ---------------------------------------------------------------------------
    def selected(self) -> list[tuple[str, Any]]:
        """[(technique name, Params instance)] for the ticked techniques; a bad value raises ConfigError."""
        out = []
        for name in self.technique_names:
            if not self.technique_boxes[name].value:
                continue
            cls = REGISTRY[name]
            values = {}
            for f in dataclasses.fields(cls.Params):
                values[f.name] = _read_param(name, f, self.param_widgets[name][f.name], self._param_kinds[name][f.name])
            try:
                params = cls.Params(**values)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{name}: {exc}") from None
            cls(params)  # validates ranges and choices
            out.append((name, params))
        return out

    def configs(self) -> list[Config]:
        """One config per seed, from the base config (or the chosen profile) and the run settings."""
        budget = Budget.parse(self.budget.value)
        if self.recipe.value:
            cfg = recipe(self.recipe.value, self.profile.value if self.profile.value in PROFILES else None)
        else:
            cfg = (self.base_config if self.profile.value == self.base_config.profile
                   else profile_config(self.profile.value))
        changes = dict(parse_assignment(c) for c in self.changes.value.split(",") if c.strip())
        cfg = cfg.replace(**changes) if changes else cfg
        cfg = cfg.replace(budget=budget, **{"run.precision": self.precision.value, "run.compile": self.compile.value,
                                            "run.warm_start": int(self.warm_start.value)})
        first = cfg.run.seed
        return [cfg.replace(**{"run.seed": first + i}) for i in range(int(self.seeds.value))]

    # -- running --------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    def stop(self) -> None:
        """End the current run after its step (its history is kept) and skip the remaining seeds."""
        if self._running:
            self._stop.set()
            self._say("stopping after the current step…")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a background Run is done; False if still running after `timeout` seconds."""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return not self._running

    def run_now(self, blocking: bool | None = None) -> list[Run]:
        """Press Run: train the selection once per seed. Returns the list the new runs go into.

        blocking: True trains here and returns when done (with a progress bar and a printed
        summary); False trains in a background thread (the list fills as runs start);
        None: background only when a notebook frontend is attached (see `has_frontend`).
        While a Run is in progress a second one is refused with a message and returns [].
        """
        with self._lock:
            if self._running:
                self._say("already running: wait, or press Stop first")
                return []
            try:
                specs = self.selected()
                resolve([REGISTRY[name](params) for name, params in specs])  # a pair that cannot compose: refused here
                configs = self.configs()
                target = self._check_target()
            except (ConfigError, ValueError) as exc:
                self.error_messages = []
                if not any(str(exc) == m for m in self._field_errors.values()):
                    self._error(str(exc))
                else:
                    self._render_errors()
                self._say("not started: fix the value above")
                return []
            self._running = True
        self._stop.clear()
        self._clear_errors()
        self.stop_button.disabled = False
        self.run_button.description = "Running…"
        if blocking is None:
            blocking = not has_frontend()
        new_runs: list[Run] = []
        if blocking:
            self._guarded(configs, specs, target, new_runs, True)
        else:
            self._thread = threading.Thread(target=self._guarded, args=(configs, specs, target, new_runs, False),
                                            name="effitrain-panel", daemon=True)
            self._thread.start()
        return new_runs

    def add_runs(self, runs: Iterable[Run]) -> None:
        """Show runs trained elsewhere (or `load_runs(...)`) in the plot and the table."""
        for run in runs:
            self.runs.append(run)
            self.plot.add_run(run)
        self._refresh_table(self._target_or_none())

    def _target_or_none(self) -> float | None:
        try:
            return self._check_target()
        except ConfigError:
            return None

    def _guarded(self, configs: list[Config], specs: list[tuple[str, Any]], target: float | None,
                 new_runs: list[Run], foreground: bool) -> None:
        """`_work`, with whatever it raises reported as one line, and the panel never left "running"."""
        try:
            self._work(configs, specs, target, new_runs, foreground)
        except Exception as exc:  # a bug here must not leave the panel stuck in "running"
            self._error(f"{self.kind}: {one_line(exc)}")
            self._say("stopped by an error (see above)")
        finally:
            self._running = False
            self.stop_button.disabled = True
            self.run_button.description = "Run"

    def _work(self, configs: list[Config], specs: list[tuple[str, Any]], target: float | None,
              new_runs: list[Run], foreground: bool) -> None:
        """One press of Run: train each config in turn, drawing and tabulating as runs arrive (inside
        `_guarded`, which reports what it raises and resets the buttons)."""
        n, done, twins = len(configs), 0, []
        for i, cfg in enumerate(configs):
            if self._stop.is_set():
                break
            prefix = f"run {i + 1}/{n}" if n > 1 else "run"
            trained = self._train_one(prefix, cfg, specs, target, new_runs, foreground)
            if trained is None:  # could not start: reported
                break
            run, failed, twin = trained
            if twin is not None:
                twins.append(twin)
            done += 1
            if failed or run.status in ("stopped", "interrupted"):
                break
        skipped = n - done
        last = new_runs[-1].status if new_runs else "not started"
        tail = f"; {skipped} seed{'s' if skipped != 1 else ''} not run" if skipped else ""
        if twins:
            tail += (f"; {len(twins)} not added: the same run{'s' if len(twins) > 1 else ''} as "
                     f"{', '.join(repr(t) for t in twins)}, already shown (same settings, seed, data and code)")
        self._say(f"done: {done} run{'s' if done != 1 else ''}, last {last}{tail}")
        if foreground and self.table_frame is not None:
            print(to_text(self.table_frame), flush=True)

    def _train_one(self, prefix: str, cfg: Config, specs: list[tuple[str, Any]], target: float | None,
                   new_runs: list[Run], foreground: bool) -> tuple[Run, bool, str | None] | None:
        """Train (or load) one config, shown live from its first event. Returns (run, failed, the label
        of an identical run already shown, if any), or None when it could not start (reported)."""
        self._say(f"{prefix}: preparing data and model…")
        try:
            techniques = [REGISTRY[name](params) for name, params in specs]
        except Exception as exc:
            self._error(f"{prefix} could not start: {one_line(exc)}")
            return None
        data = self.data if self.data is not None and self.data.config == cfg.data else None
        adopted: list[Run] = []
        drawers: list = []

        def adopt(kind: str, row: dict, r: Run) -> None:
            # the first event (the first evaluation, a cached run's replay, or a failed
            # setup's "end") hands over the run: from then on the panel shows it
            if not adopted:
                adopted.append(r)
                self.runs.append(r)
                new_runs.append(r)
                drawers.append(self.plot.add_run(r, label=settings_label(r, self.base_config)))
            drawers[0](kind, row, r)

        failed = False
        try:
            run = runcache.cached_train(cfg, techniques, force=not self.use_cache.value, data=data,
                                        stop=self._stop, progress=foreground,
                                        callbacks=[adopt, self._progress_callback(prefix, cfg)])
        except Exception as exc:
            if not adopted:  # bad data path, out of memory, …: report, keep earlier runs
                self._error(f"{prefix} could not start: {one_line(exc)}")
                return None
            run, failed = adopted[0], True
            if run.status != "failed":  # raised during setup (on_dataset / on_model), before the loop
                run.status, run.message = "failed", one_line(exc)
            self._error(f"{run.label} failed: {one_line(exc)}")
        finally:
            for r in adopted:
                self.plot.update(r)
            if adopted:
                self._refresh_table(target)
        twin = self._shown_twin(run)
        if twin is not None:  # a cache hit of a run already shown would count one seed twice
            for where in (self.runs, new_runs):
                if any(r is run for r in where):
                    where[:] = [r for r in where if r is not run]
            self.plot.remove(run)
            self._refresh_table(target)
        if foreground:
            print(run.summary_line() if twin is None else
                  f"{prefix}: the same run as {twin.label!r} (already shown): not added again", flush=True)
        return run, failed, None if twin is None else twin.label

    def _shown_twin(self, run: Run) -> Run | None:
        """A run the panel already holds that is this one (the same run cache entry), when `run` was loaded."""
        info = run.extra.get("cache") or {}
        if not info.get("loaded") or not info.get("id"):
            return None
        return next((r for r in self.runs if r is not run and (r.extra.get("cache") or {}).get("id") == info["id"]),
                    None)

    def _progress_callback(self, prefix: str, cfg: Config):
        budget = cfg.budget

        def callback(kind: str, row: dict, run: Run) -> None:
            now = time.monotonic()
            if kind == "step" and now - self._last_status < 0.25:
                return
            self._last_status = now
            if kind == "end":
                cached = " (loaded from the run cache)" if (run.extra.get("cache") or {}).get("loaded") else ""
                self._say(f"{prefix} {run.label}: {run.status}{cached}")
                return
            used = row.get(budget.unit, 0.0)
            frac = min(1.0, float(used) / budget.amount) if budget.amount else 0.0
            loss = row.get("train_loss", row.get("val_loss"))
            what = "val loss" if kind == "eval" else "loss"
            loss_text = f" · {what} {loss:.3f}" if isinstance(loss, (int, float)) else ""
            self._say(f"{prefix} {run.label}: step {int(row.get('step', 0))}{loss_text} · {frac:.0%} of {budget}")

        return callback

    def _refresh_table(self, target: float | None) -> None:
        try:
            df = compare(self.runs, target_val_loss=target)
        except Exception as exc:  # the table must never take the panel down
            self._error(f"comparison table: {one_line(exc)}")
            return
        self.table_frame = df
        if df.empty:
            self.table.value = ""
            return
        t = df.attrs.get("target_val_loss")
        if isinstance(t, float) and math.isfinite(t):
            self.plot.set_target(t)
        self.table.value = styled(df).to_html()


def settings_label(run: Run, base: Config) -> str:
    """The run's label with the panel settings that differ from `base`: "baseline (bf16) s0".

    Without it a bf16 run and an fp32 run of the same seed would both read "baseline s0" in a legend.
    """
    cfg, diffs = run.config, []
    if cfg.profile != base.profile:
        diffs.append(f"profile {cfg.profile}")
    if cfg.run.precision != base.run.precision:
        diffs.append(cfg.run.precision)
    if cfg.run.compile != base.run.compile:
        diffs.append("compiled" if cfg.run.compile else "not compiled")
    if str(cfg.budget) != str(base.budget):
        diffs.append(f"budget {cfg.budget}")
    if not diffs:
        return run.label
    head, seed = re.fullmatch(r"(.*?)((?: s\d+)?)", run.label).groups()
    return f"{head} ({', '.join(diffs)}){seed}"
