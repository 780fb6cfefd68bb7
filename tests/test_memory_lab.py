"""Lesson 09's tables (effitrain.lab.memory): bytes per setting, what fits a budget, and a fine-tuning step's
memory under each update."""
from __future__ import annotations

import pytest

import effitrain as et
from effitrain.lab.memory import budget_for, finetune_footprint, memory_table, preset_table
from effitrain.model import BertForMLM


@pytest.fixture(scope="module")
def cfg():
    return et.profile_config("smoke", precision="fp32", batch_size=8)


def test_each_method_removes_its_kind_of_bytes(cfg):
    settings = {"checkpointing": [et.technique("checkpointing")],
                "4-bit": [et.technique("lowbit_optimizer", bits=4)],
                "accumulate ×4": ({"batch_size": 2, "grad_accum": 4}, [])}
    df = memory_table(cfg, settings, budget="30MB", rounds=0)
    base = df.loc["baseline"]
    assert df.loc["checkpointing", "activations"] < 0.65 * base["activations"]  # inputs + one block recomputed
    assert df.loc["4-bit", "optimizer state"] < 0.2 * base["optimizer state"]
    assert df.loc["4-bit", "activations"] == base["activations"]
    per_row = base["activations"] / 8  # activations are affine in the rows: a quarter of them, plus the fixed part
    assert df.loc["accumulate ×4", "activations"] == pytest.approx(base["activations"] / 4, rel=0.1, abs=per_row)
    for label in df.index:
        row = df.loc[label]
        parts = row["weights"] + row["gradients"] + row["optimizer state"] + row["activations"]
        assert row["total MB"] == pytest.approx(parts) and row["fits"] == (row["total MB"] <= 30)


def test_a_budget_and_the_presets_that_fit_it():
    cfg = et.profile_config("smoke", precision="fp32")  # 32 rows: activations dominate, as in lesson 09
    budget = budget_for(cfg)
    assert budget.endswith("MB") and int(budget[:-2]) >= memory_table(cfg, {}, rounds=0).loc["baseline", "total MB"] * 1.1
    methods = ({"batch_size": 16, "grad_accum": 2}, [et.technique("checkpointing"), et.technique("lowbit_optimizer", bits=4)])
    df = preset_table(cfg, budget, methods, presets=("tiny", "mini"))
    assert bool(df.loc["tiny", "fits plain"]) and not bool(df.loc["mini", "fits plain"])
    assert bool(df.loc["mini", "fits with them"])
    assert df.loc["mini", "with the methods MB"] < df.loc["mini", "plain MB"]


def test_a_fine_tuning_step_under_each_update():
    from effitrain.data.downstream import ClassificationTask
    import torch

    mcfg = et.profile_config("smoke").model
    model = BertForMLM(mcfg, 300)
    ids = torch.randint(5, 300, (40, 16))
    task = ClassificationTask("toy", ["a", "b"], ids[:32], torch.randint(0, 2, (32,)), ids[32:], torch.randint(0, 2, (8,)),
                              ["t"] * 32, ["t"] * 8)
    rows = {u: finetune_footprint(model, task, u, rows=8) for u in ("full", "lora", "bias", "last")}
    assert rows["full"]["trainable %"] == 100.0
    assert rows["lora"]["trainable"] < rows["last"]["trainable"] < rows["full"]["trainable"]
    assert rows["bias"]["optimizer state"] < rows["lora"]["optimizer state"] < rows["full"]["optimizer state"]
    # a frozen linear layer keeps no copy of its input: fewer saved activations than full fine-tuning
    assert rows["bias"]["activations"] < rows["full"]["activations"]
    assert rows["last"]["activations"] < rows["full"]["activations"]


def test_the_measured_peak_holds_the_estimate_and_follows_the_methods(cfg):
    from effitrain.train.footprint import measure_peak

    plain, kind = measure_peak(cfg)
    df = memory_table(cfg, {"checkpointing": [et.technique("checkpointing")]}, rounds=0)
    estimate = df.loc["baseline", "total MB"] * 1e6
    assert kind == "cpu profiler allocations"
    # the estimate adds parts never all held at once (the backward frees activations as it makes gradients)
    # and leaves out the transients of the backward and the update: the two agree to a few tens of percent
    assert 0.8 * estimate <= plain <= 1.3 * estimate
    assert df.loc["baseline", "peak MB"] == pytest.approx(plain / 1e6)
    assert df.loc["checkpointing", "peak MB"] < 0.8 * df.loc["baseline", "peak MB"]
