"""Low-bit optimizer state (issue 33): torchao's 8- and 4-bit AdamW through the trainer — the state it keeps
(measured and predicted), the learning-rate schedule it follows, a resume that continues exactly, training
past the unigram plateau, and the memory budget that refuses what does not fit."""
from __future__ import annotations

import pytest
import torch

import effitrain as et
from effitrain.train.footprint import (build_model_and_optimizer, estimate_footprint, measure_footprint, optimizer_state_bytes,
                                       optimizer_state_formula)


def _cfg(smoke, steps=6, **kw):
    cfg, data = smoke
    return cfg.replace(**{"budget": f"{steps}steps", "evals": 2, "log_every": 1, "precision": "fp32", **kw}), data


@pytest.mark.parametrize("bits", [8, 4])
def test_the_state_is_the_formulas_and_a_fraction_of_adamws(smoke, bits):
    cfg, _ = _cfg(smoke)
    adamw = measure_footprint(cfg)
    low = measure_footprint(cfg, techniques=[et.technique("lowbit_optimizer", bits=bits)])
    model, optimizer = build_model_and_optimizer(cfg, cfg.data.vocab_size, 0, [et.technique("lowbit_optimizer", bits=bits)])
    assert optimizer_state_formula(optimizer) == low.optimizer  # predicted before the first step, to the byte
    # 8 bytes per weight become about 2 (8-bit) or 1 (4-bit) plus block scales and the fp32 moments of
    # the small tensors (biases, norms)
    assert low.optimizer < adamw.optimizer * {8: 0.30, 4: 0.16}[bits]
    assert (low.parameters, low.gradients, low.activations) == (adamw.parameters, adamw.gradients, adamw.activations)
    assert not optimizer.state  # the prediction needs no step: nothing is allocated before the first update


def test_it_follows_the_schedule_resumes_exactly_and_reports_its_state(smoke, tmp_path):
    from tests.test_contract import _stop_at, timeless

    cfg, data = _cfg(smoke, steps=8, warmup=0.5)
    full = et.train(cfg, [et.technique("lowbit_optimizer")], data=data, progress=False)
    plain = et.train(cfg, data=data, progress=False)
    assert [r["lr"] for r in full.history.steps] == [r["lr"] for r in plain.history.steps]
    assert 0 < full.extra["techniques"]["lowbit_optimizer"]["state_bytes"] < 0.3 * 8 * full.extra["parameters"]
    losses = [r["train_loss"] for r in full.history.steps]
    assert losses != [r["train_loss"] for r in plain.history.steps]  # another optimizer, another curve
    assert losses[1:] != losses[:-1]  # a tensor learning rate that the schedule really moved
    ck = tmp_path / "half.pt"
    stop = _stop_at(4)
    et.train(cfg, [et.technique("lowbit_optimizer")], data=data, progress=False, checkpoint=str(ck), stop=stop,
             callbacks=[stop])
    resumed = et.train(cfg, [et.technique("lowbit_optimizer")], data=data, progress=False, resume=str(ck))
    assert resumed.status == "completed"
    assert timeless(resumed.history.steps) == timeless(full.history.steps)
    assert timeless(resumed.history.evals) == timeless(full.history.evals)


def test_bits_32_is_the_configs_adamw(smoke):
    cfg, data = _cfg(smoke)
    from effitrain.train.trainer import Trainer
    trainer = Trainer(cfg.replace(budget="1steps"), [et.technique("lowbit_optimizer", bits=32)], data=data,
                      progress=False)
    trainer.fit()
    assert type(trainer.optimizer) is torch.optim.AdamW


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_trains_past_the_plateau_on_smoke(smoke, bits):
    cfg, data = smoke
    run = et.train(cfg, [et.technique("lowbit_optimizer", bits=bits)], data=data, progress=False)
    below = run.extra["unigram_val_loss"] - run.history.evals[-1]["val_loss"]
    assert run.status == "completed" and below > 0.4, below


# -- the memory budget -------------------------------------------------------------------------------------------
def test_a_run_over_its_memory_budget_is_refused_before_its_first_step(smoke):
    cfg, data = _cfg(smoke)
    model, optimizer = build_model_and_optimizer(cfg, data.vocab_size, 0, [])
    need = estimate_footprint(model, optimizer, cfg, data.vocab_size)
    budget = f"{need.total * 0.9 / 1e6:.3f}MB"
    with pytest.raises(et.ConfigError) as info:
        et.train(cfg.replace(memory_budget=budget), data=data, progress=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"run.memory_budget={budget!r}: this run needs an estimated ")
    assert "the biggest part activations" in message
    # checkpointing brings the same run under the same budget; the estimate is kept with the run
    run = et.train(cfg.replace(memory_budget=budget), [et.technique("checkpointing")], data=data, progress=False)
    assert run.status == "completed" and run.extra["memory_estimate"]["total"] < need.total * 0.9
    assert run.history.steps[0]["train_loss"] == et.train(cfg, data=data, progress=False).history.steps[0]["train_loss"]


@pytest.mark.parametrize("techniques,precision", [([], "fp32"), (["checkpointing"], "fp32"), ([], "bf16"),
                                                  (["lowbit_optimizer"], "fp32")])
def test_the_estimate_is_the_measured_step(smoke, techniques, precision):
    """Activations measured on 1 and 2 rows and extended to the micro-batch equal the measured step's."""
    cfg, _ = _cfg(smoke, precision=precision, batch_size=5)
    made = [et.technique(name) for name in techniques]
    measured = measure_footprint(cfg, techniques=made)
    model, optimizer = build_model_and_optimizer(cfg, cfg.data.vocab_size, 0, [et.technique(name) for name in techniques])
    estimate = estimate_footprint(model, optimizer, cfg)
    if "checkpointing" in techniques:  # + the insides of one block, which the backward holds while recomputing it
        plain = measure_footprint(cfg)
        recompute = estimate.by_part.pop("recompute")
        blocks = [f"block {i}" for i in range(cfg.model.layers)]
        assert recompute == max(plain.by_part[b] - measured.by_part[b] for b in blocks)
        estimate.activations -= recompute
    assert estimate.to_dict() == measured.to_dict()


@pytest.mark.parametrize("bad", ["200", "MB", "-1MB", "0GB", "2 parsecs"])
def test_a_bad_budget_is_named(bad):
    with pytest.raises(et.ConfigError, match=r"^run.memory_budget must be a positive size with a unit"):
        et.profile_config("smoke", memory_budget=bad)


def test_the_budget_is_not_part_of_the_run_cache_key(smoke):
    from effitrain.train.runcache import run_key
    cfg, data = smoke
    assert run_key(cfg, [], data).digest == run_key(cfg.replace(memory_budget="1GB"), [], data).digest
    assert optimizer_state_bytes(torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))])) == 0


def test_a_warm_start_continues_the_baselines_adamw_state_in_low_bits(smoke):
    """The baseline's fp32 moments are quantized into the low-bit state, not kept in fp32 (no silent drop)."""
    from effitrain.train.trainer import Trainer

    cfg, data = _cfg(smoke, steps=8)
    warm = cfg.replace(warm_start=4)
    trainer = Trainer(warm, [et.technique("lowbit_optimizer", bits=8)], data=data, progress=False)
    run = trainer.fit()
    assert run.status == "completed", run.message
    moments = [s["exp_avg"] for s in trainer.optimizer.state.values()]
    assert any(type(m).__name__ == "OptimState8bit" for m in moments)
    plain = measure_footprint(cfg).optimizer
    assert run.extra["techniques"]["lowbit_optimizer"]["state_bytes"] < 0.3 * plain
    assert all(isinstance(g["lr"], torch.Tensor) for g in trainer.optimizer.param_groups)
