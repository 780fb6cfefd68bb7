"""Lesson 07's package pieces: the work table (per-step cost and cost to target against the baseline),
`step_cost` (selective backprop's measured step against the FLOP model 1/3 + k), and the two figures."""
from __future__ import annotations

import pytest

import effitrain as et
from effitrain.lab import figures, tables
from effitrain.lab.speed import step_cost
from effitrain.techniques.layer_drop import expected_kept_fraction


@pytest.fixture(scope="module")
def pld_runs(smoke):
    cfg, data = smoke
    cfg = cfg.replace(budget="12steps", evals=2, layers=4)
    base = [et.train(cfg.replace(seed=s), data=data, progress=False, name=f"baseline s{s}") for s in (0, 1)]
    drop = [et.train(cfg.replace(seed=s), [et.technique("layer_drop")], data=data, progress=False,
                     name=f"drop s{s}") for s in (0, 1)]
    return base, drop


def _per_step_flops(runs):
    return sum(r.summary()["flops_measured"] / r.summary()["steps"] for r in runs) / len(runs)


def test_work_table_per_step_ratios_are_the_measured_ones(pld_runs):
    base, drop = pld_runs
    df = tables.work_table(base + drop, baseline="baseline", target_val_loss=base[0].history.evals[-1]["val_loss"] + 0.5)
    assert list(df.index) == ["baseline", "drop"]
    assert df.loc["baseline", "flops_per_step"] == pytest.approx(1.0)
    assert df.loc["drop", "flops_per_step"] == pytest.approx(_per_step_flops(drop) / _per_step_flops(base))
    assert df.loc["drop", "flops_per_step"] < 1.0  # blocks were skipped: fewer FLOPs per step
    lo, hi = df.loc["drop", "seconds_per_step_lo"], df.loc["drop", "seconds_per_step_hi"]
    assert lo <= df.loc["drop", "seconds_per_step"] <= hi
    assert df.loc["baseline", "speedup_seconds"] == 1.0 and df.loc["baseline", "speedup_flops"] == 1.0
    shown = tables.format_work_table(df)
    assert shown.loc["baseline", "FLOPs/step"].startswith("1.00×")
    assert "target val loss" in tables.work_text(df)


def test_layer_drop_figure_draws_schedule_and_measured_share(pld_runs):
    _, drop = pld_runs
    fig = figures.layer_drop_figure(drop, layers=4)
    names = [t.name for t in fig.data]
    assert names[0] == "θ(t)" and "expected kept share" in names[1] and len(names) == 2 + len(drop)
    assert fig.data[1].y[-1] == pytest.approx(expected_kept_fraction(fig.data[0].y[-1], 4))


def test_step_cost_of_selective_backprop_follows_the_flop_model(smoke):
    cfg, data = smoke
    fractions = (0.75, 0.25)
    settings = {f"keep {k}": [et.technique("selective_backprop", mode="percentile", keep_fraction=k)] for k in fractions}
    df = step_cost(cfg.replace(batch_size=16), settings, data=data, rounds=2, steps=3, warmup=1)
    assert list(df.index) == ["baseline", "keep 0.75", "keep 0.25"]
    assert df.loc["baseline", "× baseline FLOPs"] == pytest.approx(1.0)
    for k in fractions:  # scoring forward of every row (1/3) + forward and backward of the kept share
        assert df.loc[f"keep {k}", "× baseline FLOPs"] == pytest.approx(1 / 3 + k, rel=0.05)
    fig = figures.break_even_figure(df, fractions)
    assert [t.name for t in fig.data] == ["FLOP model 1/3 + k", "measured FLOPs", "measured seconds"]
    with pytest.raises(ValueError, match="baseline"):
        step_cost(cfg, {"baseline": []}, data=data)
