"""effitrain.lab: LivePlot, Panel, compare (synthetic runs, plus a few 5-step trainings on `smoke`)."""
from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import dataclass

import ipywidgets as widgets
import pytest

import effitrain as et
from effitrain.lab import (LivePlot, Panel, aggregate_curves, common_target, compare, display_frame, load_runs,
                           save_runs, styled)
from effitrain.lab.compare import NOT_REACHED, PlateauError, PlateauWarning
from effitrain.lab.panel import has_frontend
from effitrain.techniques.base import REGISTRY, Technique, param, register

T975 = {1: 12.706204736174698, 2: 4.302652729911275, 4: 2.7764451051977987, 10: 2.2281388519649385}


# -- two tiny techniques, registered for this module only --------------------------------------
@dataclass(frozen=True)
class ScaleParams:
    scale: float = param(1.0, range=(0.5, 2.0), help="multiply the loss")
    mode: str = param("plain", choices=("plain", "twice"), help="a choice")
    repeats: int = param(2, range=(1, 4))
    lr_like: float = param(1e-3, range=(1e-5, 1e-1))
    on: bool = param(True)


class ZzScale(Technique):
    """Scale the loss (a test technique)."""
    name = "zz_scale"
    Params = ScaleParams

    def loss(self, out, ctx):
        return out.loss * self.params.scale


@dataclass(frozen=True)
class FailParams:
    where: str = param("model", choices=("model", "block"))


RELEASE = threading.Event()


class ZzFail(Technique):
    """Raises in on_model, or (where="block") waits for the test before training starts."""
    name = "zz_fail"
    Params = FailParams

    def on_model(self, model, ctx):
        if self.params.where == "model":
            raise RuntimeError("boom: exploded on purpose\nsecond line must not show")
        RELEASE.wait(30)
        return model


@pytest.fixture(scope="module", autouse=True)
def techniques():
    register(ZzScale)
    register(ZzFail)
    yield
    REGISTRY.pop("zz_scale", None)
    REGISTRY.pop("zz_fail", None)


def smoke(**kw):
    return et.profile_config("smoke", **{"budget": "5steps", "evals": 2, **kw})


# -- synthetic runs ---------------------------------------------------------------------------
def fake_run(evals, techniques=(), seed=0, tokens_per_s=1000.0, status="completed"):
    """evals: [(seconds, val_loss)]; step = seconds, flops = seconds · 1e9."""
    steps, ev = [], []
    for i, (s, loss) in enumerate(evals):
        ev.append(dict(step=s, tokens=int(s * tokens_per_s), seconds=float(s), flops=s * 1e9, val_loss=loss,
                       val_accuracy=0.1))
        if s > 0:
            steps.append(dict(step=s, tokens=int(s * tokens_per_s), seconds=float(s), flops=s * 1e9,
                              flops_analytic=s * 1e9, train_loss=loss + 0.1, lr=1e-3))
    cfg = et.profile_config("smoke").replace(**{"run.seed": seed})
    return et.Run(config=cfg, techniques=[{"name": t, "params": {}} for t in techniques],
                  history=et.History(steps=steps, evals=ev), status=status)


def traces(plot, kind):
    return [t for t in plot.figure.data if (t.meta or {}).get("kind") == kind]


# -- LivePlot -----------------------------------------------------------------------------------
def test_plot_traces_per_run_and_live_points():
    plot = LivePlot(max_fps=0)
    run = fake_run([])
    cb = plot.add_run(run)
    assert [t.name for t in plot.figure.data] == ["baseline s0 (train)", "baseline s0", "baseline s0 reaches target"]
    assert plot.figure.data[1].x == ()
    for step in (1, 2, 3):
        row = run.history.log_step(step=step, tokens=step * 10, seconds=step * 0.5, flops=step * 1e9,
                                   flops_analytic=step * 1e9, train_loss=8.0 - step, lr=1e-3)
        cb("step", row, run)
        assert len(plot.figure.data[0].x) == step
    row = run.history.log_eval(step=3, tokens=30, seconds=1.5, flops=3e9, val_loss=5.5, val_accuracy=0.2)
    cb("eval", row, run)
    assert plot.figure.data[1].y == (5.5,)
    other = fake_run([(0, 8.0), (10, 6.0)], techniques=("zz_scale",))
    plot.add_run(other)
    assert len(plot.figure.data) == 6 and plot.figure.data[4].name == "zz_scale s0"
    colors = {t.line.color for t in traces(plot, "val")}
    assert len(colors) == 2  # one colour per run


def test_plot_throttles_redraws_but_ends_complete():
    plot = LivePlot()  # ≤ 10 redraws / s
    run = fake_run([])
    cb = plot.add_run(run)
    draws = []
    original = plot._draw
    plot._draw = lambda e, force_reach=False: (draws.append(1), original(e, force_reach))
    for step in range(1, 201):
        row = run.history.log_step(step=step, tokens=step, seconds=step * 1e-3, flops=step, flops_analytic=step,
                                   train_loss=5.0, lr=1e-3)
        cb("step", row, run)
    assert len(draws) <= 3
    cb("end", run.summary(), run)
    assert len(plot.figure.data[0].x) == 200


def test_plot_x_toggle_log_target_and_reach_marker():
    plot = LivePlot(max_fps=0)
    fast = fake_run([(0, 8.0), (10, 6.0), (20, 5.0)])
    slow = fake_run([(0, 8.0), (10, 7.0), (20, 6.5)], techniques=("zz_scale",))
    plot.add_run(fast)
    plot.add_run(slow)
    val = traces(plot, "val")[0]
    assert val.x == (0.0, 10.0, 20.0)  # step == seconds in fake runs
    plot.set_x("flops")
    assert traces(plot, "val")[0].x == (0.0, 1e10, 2e10)
    assert "FLOPs" in plot.figure.layout.xaxis.title.text
    plot.set_x("seconds")
    assert traces(plot, "val")[0].x == (0.0, 10.0, 20.0)
    with pytest.raises(ValueError, match="x must be one of"):
        plot.set_x("minutes")
    plot.set_log_y(True)
    assert plot.figure.layout.yaxis.type == "log"
    plot.set_target(5.5)
    assert plot.figure.layout.shapes[0].y0 == 5.5 == plot.figure.layout.shapes[0].y1
    reach = traces(plot, "reach")
    assert reach[0].x == (15.0,) and reach[0].y == (5.5,)  # interpolated between 10 s (6.0) and 20 s (5.0)
    assert reach[1].x == ()  # never reaches 5.5: no marker
    plot.set_x("flops")
    assert traces(plot, "reach")[0].x == (1.5e10,)
    plot.set_target(None)
    assert plot.figure.layout.shapes == () and traces(plot, "reach")[0].x == ()


def test_plot_band_from_seeds():
    a = fake_run([(0, 8.0), (10, 6.0)], seed=0)
    b = fake_run([(0, 8.0), (10, 7.0)], seed=1)
    df = aggregate_curves([a, b], x="step")
    assert list(df["mean"]) == [8.0, 6.5] and list(df["lo"]) == [8.0, 6.0] and list(df["hi"]) == [8.0, 7.0]
    plot = LivePlot()
    plot.add_band([a, b])
    assert traces(plot, "band_mean")[0].y == (8.0, 6.5)


# -- compare --------------------------------------------------------------------------------------
def baseline_and_fast():
    base = [fake_run([(0, 8.0), (10, 6.0), (20, 5.0)], seed=0, tokens_per_s=1000),
            fake_run([(0, 8.0), (8, 7.0), (16, 5.0), (24, 5.4)], seed=1, tokens_per_s=1200)]
    fast = [fake_run([(0, 8.0), (5, 6.0), (10, 5.0)], techniques=("fast",), seed=0),
            fake_run([(0, 8.0), (6, 6.0), (12, 5.5)], techniques=("fast",), seed=1)]
    return base, fast


def test_compare_arithmetic_and_speedup_interval():
    base, fast = baseline_and_fast()
    df = compare(base + fast, target_val_loss=6.0, paired=False)
    assert list(df.index) == ["baseline", "fast"] and df.attrs["baseline"] == "baseline"
    b, f = df.loc["baseline"], df.loc["fast"]
    assert b["seeds"] == 2 and b["reached"] == "2/2"
    # baseline reaches 6.0 at 10 s and 12 s (interpolated 8 s→16 s, 7.0→5.0): mean 11, s = √2
    assert b["time_s"] == pytest.approx(11.0)
    assert b["time_s_ci"] == pytest.approx(T975[1] * math.sqrt(2) / math.sqrt(2))
    assert b["flops"] == pytest.approx(11e9)
    assert b["final_val_loss"] == pytest.approx(5.2)
    assert b["final_val_loss_ci"] == pytest.approx(T975[1] * math.sqrt(0.08) / math.sqrt(2))
    assert b["tokens_per_s"] == pytest.approx(1100.0)
    assert b["speedup"] == 1.0
    assert f["time_s"] == pytest.approx(5.5)
    # speedup = geometric means √(10·12) / √(5·6) = 2; both groups' log times differ by log 1.2, so
    # Welch's df = 2 and se(log R) = √(2 · (log 1.2)² / 2 / 2) = log 1.2 / √2
    assert f["speedup"] == pytest.approx(2.0)
    assert not f["paired"]
    se = math.log(1.2) / math.sqrt(2)
    assert f["speedup_lo"] == pytest.approx(2.0 * math.exp(-T975[2] * se), rel=1e-6)
    assert f["speedup_hi"] == pytest.approx(2.0 * math.exp(T975[2] * se), rel=1e-6)
    html = styled(df).to_html()
    assert "2.00×" in html and "11 ± 12.7" in html
    # the same seeds, paired: each seed's fast run takes half its baseline's time, exactly
    paired = compare(base + fast, target_val_loss=6.0).loc["fast"]
    assert paired["paired"] and paired["speedup_lo"] == pytest.approx(2.0) and paired["speedup_hi"] == pytest.approx(2.0)
    assert paired["verdict"] == "faster by [2.00, 2.00]×"


def test_compare_not_reached_is_a_string():
    base, fast = baseline_and_fast()
    slow = [fake_run([(0, 8.0), (30, 5.9)], techniques=("slow",), seed=0),
            fake_run([(0, 8.0), (30, 6.5)], techniques=("slow",), seed=1)]
    df = compare(base + fast + slow, target_val_loss=6.0)
    s = df.loc["slow"]
    assert s["reached"] == "1/2"
    assert s["time_s"] == NOT_REACHED and s["flops"] == NOT_REACHED and s["speedup"] == NOT_REACHED
    assert math.isnan(s["speedup_lo"])
    assert s["final_val_loss"] == pytest.approx(6.2)  # still measured
    # a target the baseline misses: nobody gets a speedup number
    great = [fake_run([(0, 8.0), (5, 4.5)], techniques=("great",))]
    df = compare(base + great, target_val_loss=4.9)
    assert df.loc["baseline", "speedup"] == NOT_REACHED
    assert df.loc["great", "time_s"] == pytest.approx(5 * 3.1 / 3.5)
    assert df.loc["great", "speedup"] == "baseline not reached"


def test_compare_default_target_and_single_seed():
    base, fast = baseline_and_fast()
    df = compare(base + fast)
    # the highest final val loss among baseline seeds (5.4): every baseline seed reaches it
    assert df.attrs["target_val_loss"] == pytest.approx(5.4)
    assert df.loc["baseline", "reached"] == "2/2" and df.loc["fast", "reached"] == "1/2"
    df = compare([base[0], fast[0]])  # one seed each: target 5.0, no intervals
    assert df.attrs["target_val_loss"] == 5.0
    assert df.loc["fast", "speedup"] == pytest.approx(2.0)
    assert math.isnan(df.loc["fast", "speedup_lo"]) and math.isnan(df.loc["fast", "time_s_ci"])
    failed = fake_run([(0, 8.0)], techniques=("x",), status="failed")
    df = compare([base[0], failed])
    assert list(df.index) == ["baseline"] and df.attrs["excluded"]
    df = compare(base + fast, baseline="fast", target_val_loss=6.0)
    assert df.loc["baseline", "speedup"] == pytest.approx(0.5)


def test_common_target_gives_every_group_a_speedup():
    base, fast = baseline_and_fast()
    slow = [fake_run([(0, 8.0), (10, 6.4), (30, 5.9)], techniques=("slow",), seed=0),
            fake_run([(0, 8.0), (10, 6.6), (30, 6.5)], techniques=("slow",), seed=1)]
    runs = base + fast + slow
    assert compare(runs).loc["slow", "speedup"] == NOT_REACHED  # the baseline's target: slow misses it
    target = common_target(runs)
    assert target == pytest.approx(6.5)  # the worst final val loss of all runs
    df = compare(runs, target_val_loss=target)
    assert set(df["reached"]) == {"2/2"}
    assert all(isinstance(v, float) and v > 0 for v in df["speedup"])
    failed = fake_run([(0, 8.0), (5, 9.0)], techniques=("x",), status="failed")
    assert common_target(runs + [failed]) == pytest.approx(6.5)  # failed runs are left out
    with pytest.raises(ValueError, match="at least one run"):
        common_target([failed])


def test_save_and_load_runs(tmp_path):
    base, fast = baseline_and_fast()
    path = save_runs(base + fast, tmp_path / "runs.json")
    back = load_runs(path)
    assert [r.label for r in back] == [r.label for r in base + fast]
    assert back[1].history.evals == base[1].history.evals
    (tmp_path / "bad.json").write_text("[{\"format\": \"nope\"}]")
    with pytest.raises(ValueError, match="entry 0 is not a valid run") as err:
        load_runs(tmp_path / "bad.json")
    assert "\n" not in str(err.value)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_runs(tmp_path / "broken.json")


# -- Panel ----------------------------------------------------------------------------------------
def test_panel_lists_techniques_params_and_ranges():
    panel = Panel(base_config=smoke())
    assert set(REGISTRY) <= set(panel.technique_boxes)
    ws = panel.param_widgets["zz_scale"]
    assert set(ws) == {"scale", "mode", "repeats", "lr_like", "on"}
    assert isinstance(ws["scale"], widgets.FloatSlider) and (ws["scale"].min, ws["scale"].max) == (0.5, 2.0)
    assert ws["scale"].value == 1.0
    assert isinstance(ws["mode"], widgets.Dropdown) and list(ws["mode"].options) == [("plain", "plain"), ("twice", "twice")]
    assert isinstance(ws["repeats"], widgets.IntSlider) and (ws["repeats"].min, ws["repeats"].max) == (1, 4)
    assert isinstance(ws["lr_like"], widgets.FloatLogSlider)
    assert isinstance(ws["on"], widgets.Checkbox)
    ws["scale"].value = 5.0  # sliders clamp: out-of-range values cannot be set
    ws["repeats"].value = 99
    assert ws["scale"].value == 2.0 and ws["repeats"].value == 4
    panel.technique_boxes["zz_scale"].value = True
    [(name, params)] = panel.selected()
    assert name == "zz_scale" and params.scale == 2.0 and params.repeats == 4
    panel.seeds.value = 9
    assert panel.seeds.value == 5
    panel.budget.value = "12 parsecs"
    assert "budget unit" in panel.errors.value
    assert panel.run_now(blocking=True) == [] and "not started" in panel.status.value
    panel.budget.value = "5steps"
    assert panel.errors.value == ""
    assert not has_frontend()  # pytest: foreground


def test_panel_run_blocking_adds_runs_and_a_table_row(capsys):
    panel = Panel(base_config=smoke())
    panel.technique_boxes["zz_scale"].value = True
    panel.seeds.value = 2
    runs = panel.run_now(blocking=True)
    assert [r.status for r in runs] == ["completed", "completed"] and panel.runs == runs
    assert [r.config.run.seed for r in runs] == [0, 1]
    assert runs[0].techniques[0]["name"] == "zz_scale"
    assert len(runs[0].history.steps) == 5
    df = panel.table_frame
    assert list(df.index) == ["zz_scale"] and df.loc["zz_scale", "seeds"] == 2
    assert "zz_scale" in panel.table.value
    vals = traces(panel.plot, "val")
    assert len(vals) == 2 and all(len(t.x) == 3 for t in vals)  # eval before training + 2
    assert panel.plot.target == pytest.approx(df.attrs["target_val_loss"])
    out = capsys.readouterr().out
    assert "zz_scale s0: completed" in out and "speedup" in out
    assert not panel.running and panel.run_button.description == "Run"


def test_panel_stop_keeps_partial_history():
    panel = Panel(base_config=smoke(budget="400steps"))
    panel.seeds.value = 2
    panel.run_now(blocking=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (panel.runs and len(panel.runs[0].history.steps) >= 2):
        time.sleep(0.05)
    panel.stop_button.click()
    assert panel.wait(60)
    [run] = panel.runs  # the second seed never starts
    assert run.status == "stopped" and 2 <= len(run.history.steps) < 400
    assert run.history.evals[-1]["step"] == run.history.steps[-1]["step"]  # a last evaluation
    assert len(traces(panel.plot, "train")[0].x) == len(run.history.steps)
    assert "not run" in panel.status.value


def test_panel_failing_run_shows_one_line_and_keeps_others():
    panel = Panel(base_config=smoke())
    earlier = fake_run([(0, 8.0), (10, 6.0)])
    panel.add_runs([earlier])
    panel.technique_boxes["zz_fail"].value = True
    runs = panel.run_now(blocking=True)
    assert [r.status for r in runs] == ["failed"]
    assert "boom: exploded on purpose" in panel.errors.value
    assert "second line" not in panel.errors.value and "Traceback" not in panel.errors.value
    assert panel.runs[0] is earlier and earlier.status == "completed"
    assert list(panel.table_frame.index) == ["baseline"]


def test_panel_refuses_a_pair_that_cannot_compose_instead_of_running():
    class OwnsSamplerA(Technique):
        name = "zz_sampler_a"
        claims = ("sampler",)

    class OwnsSamplerB(Technique):
        name = "zz_sampler_b"
        claims = ("sampler",)

    for cls in (OwnsSamplerA, OwnsSamplerB):
        register(cls)
    try:
        panel = Panel(base_config=smoke())
        panel.technique_boxes["zz_sampler_a"].value = True
        panel.technique_boxes["zz_sampler_b"].value = True
        assert panel.run_now(blocking=True) == [] and panel.runs == []
        assert "zz_sampler_a and zz_sampler_b cannot train together: both take over the sampler" in panel.errors.value
    finally:
        for cls in (OwnsSamplerA, OwnsSamplerB):
            REGISTRY.pop(cls.name, None)


def test_panel_second_run_press_is_ignored():
    panel = Panel(base_config=smoke())
    panel.technique_boxes["zz_fail"].value = True
    panel.param_widgets["zz_fail"]["where"].value = "block"
    RELEASE.clear()
    try:
        started = panel.run_now(blocking=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not panel.runs:
            time.sleep(0.02)
        assert panel.running
        assert panel.run_now(blocking=False) == []
        panel.run_button.click()
        assert "already running" in panel.status.value
        panel.stop()
    finally:
        RELEASE.set()
    assert panel.wait(30)
    assert len(panel.runs) == 1 and started == panel.runs
    assert panel.runs[0].status == "stopped" and not panel.runs[0].history.steps


def test_panel_target_field_is_validated():
    panel = Panel(base_config=smoke())
    panel.target.value = "abc"
    assert "target val loss must be a positive number" in panel.errors.value
    assert panel.run_now(blocking=True) == []
    panel.target.value = "6.5"
    assert panel.errors.value == ""
    panel.add_runs([fake_run([(0, 8.0), (10, 6.0)])])
    assert panel.table_frame.attrs["target_val_loss"] == 6.5 and panel.plot.target == 6.5


# -- speed-up axis, colouring, labels, data sharing ---------------------------------------------------
def test_compare_speedup_by_another_axis():
    base, fast = baseline_and_fast()
    by_time = compare(base + fast, target_val_loss=6.0)
    by_steps = compare(base + fast, target_val_loss=6.0, speedup_by="step")
    assert by_steps.attrs["speedup_by"] == "step" and "steps to target" in " ".join(by_steps.attrs["notes"])
    # fake runs put step = seconds, so the ratio is the same number on both axes
    assert by_steps.loc["fast", "speedup"] == pytest.approx(by_time.loc["fast", "speedup"])
    with pytest.raises(ValueError, match="speedup_by must be one of seconds, flops, tokens, step; got 'days'"):
        compare(base + fast, speedup_by="days")


def test_styled_colours_only_intervals_that_exclude_one():
    base, fast = baseline_and_fast()
    html = styled(compare(base + fast, target_val_loss=6.0)).to_html()
    assert "#1a7f37" in html  # fast: its whole interval is above 1 → green
    same = [fake_run([(0, 8.0), (10, 5.9)], techniques=("same",), seed=0),
            fake_run([(0, 8.0), (12, 5.9)], techniques=("same",), seed=1)]
    df = compare(base + same, target_val_loss=6.0, paired=False)
    lo, hi = df.loc["same", "speedup_lo"], df.loc["same", "speedup_hi"]
    assert lo < 1 < hi
    cells = styled(df).to_html().split("<caption>")[0]  # the cells' styles (the caption's warning is red)
    assert "#1a7f37" not in cells and "#cf222e" not in cells  # an interval straddling 1 is not evidence
    slow = [fake_run([(0, 8.0), (40, 5.9)], techniques=("slow",), seed=0),
            fake_run([(0, 8.0), (42, 5.9)], techniques=("slow",), seed=1)]
    assert "#cf222e" in styled(compare(base + slow, target_val_loss=6.0)).to_html()


def test_settings_label_names_what_differs_from_the_panel_base():
    from effitrain.lab.panel import settings_label
    base = smoke()
    run = et.Run(config=base)
    assert settings_label(run, base) == "baseline s0"
    bf16 = et.Run(config=base.replace(precision="bf16", seed=2, budget="7steps"))
    assert settings_label(bf16, base) == "baseline (bf16, budget 7steps) s2"


def test_summary_line_and_flops_breakdown_of_a_real_run(smoke_data):
    from effitrain.train import flops_breakdown
    cfg, data = smoke_data
    run = et.train(cfg.replace(budget="4steps", evals=1), data=data, progress=False)
    line = run.summary_line()
    assert line.startswith("baseline s0: completed · 4 steps ·") and "val loss 7." in line
    df = flops_breakdown(run)
    parts = df["FLOPs"]
    assert parts.iloc[:3].sum() == pytest.approx(parts["analytic total"])
    assert parts["measured (FlopCounterMode)"] == pytest.approx(parts["analytic total"], rel=0.03)
    assert 0.5 < df["share of analytic"].iloc[0] < 1.0  # 6·N·D dominates a tiny model at seq 64
    again = et.Run.from_dict(run.to_dict())  # the terms survive saving
    assert flops_breakdown(again)["FLOPs"]["analytic total"] == pytest.approx(parts["analytic total"])
    with pytest.raises(ValueError, match="has no recorded FLOP terms"):
        flops_breakdown(et.Run(config=cfg))


def test_panel_trains_on_the_data_it_was_given(smoke_data, monkeypatch):
    import importlib
    trainer_module = importlib.import_module("effitrain.train.trainer")  # et.train is the function
    cfg, data = smoke_data
    calls = []
    monkeypatch.setattr(trainer_module, "prepare_data", lambda c: calls.append(c) or data)
    panel = Panel(base_config=cfg.replace(budget="2steps", evals=1), data=data)
    [run] = panel.run_now(blocking=True)
    assert run.status == "completed" and calls == []  # the given data, not prepared again
    panel.profile.value = "gpu"  # other data settings: the panel does not reuse the smoke data
    assert panel.configs()[0].data != data.config


# -- past the plateau: the unigram line, context gain, targets below the line ----------------------
def with_unigram(run, unigram=6.5):
    run.extra["unigram_val_loss"] = unigram
    return run


def test_summary_has_the_unigram_loss_and_the_context_gain():
    s = with_unigram(fake_run([(0, 8.0), (10, 6.0), (20, 5.25)])).summary()
    assert s["unigram_val_loss"] == 6.5 and s["context_gain"] == pytest.approx(1.25) and s["cached"] is False
    assert "context gain 1.25 nats" in with_unigram(fake_run([(0, 8.0), (20, 5.25)])).summary_line()
    assert math.isnan(fake_run([(0, 8.0)]).summary()["context_gain"])  # no unigram recorded: no gain


def test_plot_draws_a_dashed_unigram_line_across_the_curves():
    plot = LivePlot(max_fps=0)
    run = fake_run([])
    cb = plot.add_run(run)
    assert traces(plot, "unigram") == []  # no unigram value known yet
    with_unigram(run, 6.5)
    for step in (0, 5, 10):
        row = run.history.log_eval(step=step, tokens=step, seconds=step * 0.5, flops=step * 1e9, val_loss=8.0 - step / 4,
                                   val_accuracy=0.1)
        cb("eval", row, run)
    [line] = traces(plot, "unigram")
    assert line.y == (6.5, 6.5) and line.x == (0.0, 10.0) and line.line.dash == "dash"
    assert "unigram 6.500" in line.text[-1] and not line.showlegend  # labelled on the line, not in the legend
    plot.set_x("seconds")
    assert traces(plot, "unigram")[0].x == (0.0, 5.0)
    plot.add_run(with_unigram(fake_run([(0, 8.0), (30, 6.0)]), 6.5))  # same corpus: still one line, now wider
    assert [t.x for t in traces(plot, "unigram")] == [(0.0, 30.0)]
    plot.add_band([with_unigram(fake_run([(0, 8.0), (4, 7.0)], seed=s), 7.0) for s in (0, 1)])
    assert sorted(t.y[0] for t in traces(plot, "unigram")) == [6.5, 7.0]  # another vocabulary: its own line
    plot.clear(keep=[run])
    assert [t.y for t in traces(plot, "unigram")] == [(6.5, 6.5)]


def test_compare_warns_when_the_target_is_above_the_unigram_line():
    base, fast = baseline_and_fast()  # finals 5.0 / 5.4 and 5.0 / 5.5
    runs = [with_unigram(r, 5.2) for r in base + fast]
    with pytest.warns(PlateauWarning, match="above the unigram baseline 5.2"):
        df = compare(runs)  # default target: 5.4, above the line
    assert df.attrs["plateau"] and df.attrs["notes"][0].startswith("⚠ on the plateau")
    assert "on the plateau" in styled(df).to_html()
    with pytest.raises(PlateauError, match="above the unigram baseline"):
        compare(runs, on_plateau="error")
    with pytest.raises(ValueError, match="on_plateau must be one of warn, error"):
        compare(runs, on_plateau="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlateauWarning)
        df = compare(runs, target_val_loss=5.1)  # below the line: no warning
    assert not df.attrs["plateau"] and df.attrs["unigram_val_loss"] == pytest.approx(5.2)
    assert df.loc["baseline", "context_gain"] == pytest.approx(5.2 - 5.2)  # mean final 5.2
    assert df.loc["fast", "context_gain"] == pytest.approx(5.2 - 5.25)
    assert "context gain (nats)" in display_frame(df).columns
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlateauWarning)
        compare(sum(baseline_and_fast(), []))  # no unigram recorded: nothing to check


def test_compare_flags_seconds_measured_on_another_machine():
    from effitrain.train.runcache import host
    base, fast = baseline_and_fast()
    for r in fast:
        r.extra["cache"] = {"loaded": True, "machine": {"host": host() + "-elsewhere", "device": "NVIDIA H200"}}
    base[0].extra["cache"] = {"loaded": True, "machine": {"host": host(), "device": "cpu (2 threads)"}}
    df = compare(base + fast, target_val_loss=6.0)
    assert df.loc["fast", "other_machine"] == 2 and df.loc["baseline", "other_machine"] == 0
    note = next(n for n in df.attrs["notes"] if n.startswith("†"))
    assert f"{host()}-elsewhere (NVIDIA H200)" in note and "2 runs" in note
    shown = display_frame(df)
    assert shown.loc["fast", "time to target (s)"].endswith(" †")
    assert not shown.loc["baseline", "time to target (s)"].endswith("†")


def test_panel_warm_start_field_reaches_the_configs_and_is_refused_past_the_budget():
    panel = Panel(base_config=smoke().replace(budget="40steps"))
    panel.seeds.value = 2
    panel.warm_start.value = 20
    assert [c.run.warm_start for c in panel.configs()] == [20, 20] and [c.run.seed for c in panel.configs()] == [0, 1]
    panel.warm_start.value = 40
    with pytest.raises(et.ConfigError, match=r"run.warm_start \(40\) must be a step before the end of the budget"):
        panel.configs()
