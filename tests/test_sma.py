"""Crossbow's synchronous model averaging (issue 16): k = 1 with no pull is plain training, the central
model is the replicas' mean with pull 1 and no momentum, the vmapped replicas are k separate models
step for step, and the pairs it cannot serve are refused in one line."""
from __future__ import annotations

import copy
import threading

import pytest
import torch

import effitrain as et
from effitrain.bench import synthetic_batches
from effitrain.model import BertForMLM
from effitrain.techniques.base import StepContext
from effitrain.lab.scaling import auto_replicas, replica_throughput
from effitrain.techniques.sma import SMATechnique, sma_average, stack_batches
from effitrain.train.step import TrainStep, make_optimizer, param_groups


def _cfg(smoke, steps=6, **changes):
    cfg, data = smoke
    return cfg.replace(budget=f"{steps}steps", evals=2, log_every=1, **changes), data


def test_one_replica_without_pull_is_plain_training(smoke):
    cfg, data = _cfg(smoke)
    plain = et.train(cfg, data=data, progress=False)
    one = et.train(cfg, [et.technique("sma", replicas=1, pull=0.0)], data=data, progress=False)
    assert len(one.history.steps) == len(plain.history.steps)
    for a, b in zip(plain.history.steps, one.history.steps):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert (b["tokens"], b["flops"]) == (a["tokens"], a["flops"])
    # pull 0: the central model never moves, so it is still the initial model
    torch.manual_seed(cfg.run.seed)  # the trainer's initial model
    init = BertForMLM(cfg.model, data.vocab_size).state_dict()
    assert all(torch.equal(v, init[k]) for k, v in one.model.state_dict().items())


def test_sma_average_by_hand():
    torch.manual_seed(0)
    w = {"a": torch.randn(3, 4)}
    z = {"a": torch.randn(4)}
    prev = {"a": torch.randn(4)}
    w0, z0, p0 = w["a"].clone(), z["a"].clone(), prev["a"].clone()
    sma_average(w, z, prev, alpha=0.25, momentum=0.5)
    c = 0.25 * (w0 - z0)
    assert torch.allclose(w["a"], w0 - c)
    assert torch.allclose(z["a"], z0 + c.sum(0) + 0.5 * (z0 - p0))
    assert torch.equal(prev["a"], z0)


def test_with_full_pull_and_no_momentum_the_central_model_is_the_replicas_mean(smoke):
    cfg, data = _cfg(smoke, steps=3, batch_size=16)
    sma = et.technique("sma", replicas=2, pull=1.0, momentum=0.0)
    seen = []
    average = sma.average

    def spy():  # the replicas after their optimizer step, before the pull
        seen.append({n: w.detach().clone() for n, w in sma.replicas.items()})
        average()

    sma.average = spy
    run = et.train(cfg, [sma], data=data, progress=False)
    assert run.status == "completed" and len(seen) == 3
    central = dict(run.model.named_parameters())
    for name, w in seen[-1].items():
        assert torch.allclose(central[name], w.mean(0), atol=1e-6), name
    assert run.extra["techniques"]["sma"]["replica_spread"] > 0  # the replicas were apart


def test_vmapped_replicas_equal_separate_models_step_for_step(smoke):
    cfg, data = smoke
    cfg = cfg.replace(batch_size=8, grad_clip=0.5)
    k, pull, mu = 3, 0.6, 0.9
    device = torch.device("cpu")
    ctx = StepContext.standalone(cfg, device)
    torch.manual_seed(0)
    z = BertForMLM(cfg.model, data.vocab_size).train()
    separate = [copy.deepcopy(z) for _ in range(k)]
    central = copy.deepcopy(z)
    sma = SMATechnique(replicas=k, pull=pull, momentum=mu)
    step = sma.on_step(TrainStep(z, sma.on_optimizer(z, param_groups(z, cfg.optim.weight_decay), ctx), cfg, device), ctx)
    steps = [TrainStep(m, make_optimizer(m, cfg, device), cfg, device) for m in separate]
    previous = {n: p.detach().clone() for n, p in central.named_parameters()}
    batches = synthetic_batches(cfg, 4 * k, data.vocab_size, seed=1)
    for s in range(4):
        mine = batches[s * k:(s + 1) * k]
        result = step(mine, ctx)
        losses = [steps[j]([mine[j]], ctx).loss for j in range(k)]
        assert result.loss == pytest.approx(sum(losses) / k, abs=1e-5)
        with torch.no_grad():  # Crossbow's correction, written out on the separate models
            zs = dict(central.named_parameters())
            for name, zp in zs.items():
                ws = [dict(m.named_parameters())[name] for m in separate]
                cs = [pull / k * (w - zp) for w in ws]
                for w, c in zip(ws, cs):
                    w.sub_(c)
                new = zp + sum(cs) + mu * (zp - previous[name])
                previous[name] = zp.detach().clone()
                zp.copy_(new)
        for j, m in enumerate(separate):
            for name, p in m.named_parameters():
                assert torch.allclose(sma.replicas[name][j], p, atol=1e-5), (s, j, name)
        for name, p in central.named_parameters():
            assert torch.allclose(dict(z.named_parameters())[name], p, atol=1e-5), (s, name)


def test_stack_batches_pads_the_predicted_positions_with_zero_weight(smoke):
    cfg, data = smoke
    a, b = synthetic_batches(cfg, 2, data.vocab_size, seed=3)
    b = type(b)(b.input_ids, b.attention_mask, b.positions[:-5], b.labels[:-5])
    ids, mask, pos, labels, weight = stack_batches([a, b])
    M = a.labels.numel()
    assert ids.shape[0] == 2 and pos.shape == (2, M) and weight[1, -5:].sum() == 0 and weight[0].sum() == M
    assert torch.equal(labels[1, :M - 5], b.labels)


def test_resume_continues_the_replicas_exactly(smoke, tmp_path):
    cfg, data = _cfg(smoke, steps=6, batch_size=16)
    timeless = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    full = et.train(cfg, [et.technique("sma", replicas=2)], data=data, progress=False)
    stop, ck = threading.Event(), tmp_path / "half.pt"

    def stop_at_3(kind, row, run):
        if kind == "step" and row["step"] >= 3:
            stop.set()

    et.train(cfg, [et.technique("sma", replicas=2)], data=data, progress=False, checkpoint=str(ck), stop=stop,
             callbacks=[stop_at_3])
    resumed = et.train(cfg, [et.technique("sma", replicas=2)], data=data, progress=False, resume=str(ck))
    assert resumed.status == "completed"
    assert timeless(resumed.history.steps) == timeless(full.history.steps)
    assert timeless(resumed.history.evals) == timeless(full.history.evals)


@pytest.mark.parametrize("partner", ["layer_drop", "distill", "selective_backprop", "standardization_loss", "electra", "lowprec_accumulation"])
def test_partners_that_change_the_step_are_refused_naming_both(smoke, partner):
    cfg, data = _cfg(smoke)
    with pytest.raises(et.ConfigError, match=rf"^sma and {partner} cannot train together") as exc:
        et.Trainer(cfg, [et.technique("sma"), et.technique(partner)], data=data)
    assert "\n" not in str(exc.value)


def test_data_techniques_compose(smoke):
    cfg, data = _cfg(smoke, steps=4, batch_size=16)
    run = et.train(cfg, [et.technique("curriculum"), et.technique("sma", replicas=2)], data=data, progress=False)
    assert run.status == "completed"
    assert run.extra["techniques"]["curriculum"]["batches_drawn"] == 8  # 2 replicas × 4 steps
    assert run.extra["techniques"]["sma"]["averaging_steps"] == 4


def test_compile_is_refused_in_one_line(smoke):
    cfg, data = smoke
    model = BertForMLM(cfg.model, data.vocab_size)
    ctx = StepContext.standalone(cfg.replace(compile=True), "cpu")
    with pytest.raises(et.ConfigError, match=r"^sma and run.compile cannot train together"):
        SMATechnique(replicas=2).on_optimizer(model, param_groups(model, 0.0), ctx)


def test_replica_throughput_and_auto_replicas(smoke):
    cfg, _ = smoke
    cfg = cfg.replace(batch_size=4)
    rows = replica_throughput(cfg, (1, 2), steps=2, warmup=1, plain=True)
    assert [r["replicas"] for r in rows] == [1, 2] and all(r["samples/s"] > 0 for r in rows)
    assert rows[1]["rows/step"] == 8 and rows[1]["one model, batch k·b samples/s"] > 0
    k, measured = auto_replicas(cfg, max_replicas=2, threshold=1e9, steps=1, warmup=0)
    assert k == 1 and len(measured) == 2 and "gain" in measured[1]  # no gain beats an infinite threshold
    with pytest.raises(et.ConfigError, match="max_replicas"):
        auto_replicas(cfg, max_replicas=0)


def test_a_state_from_another_process_is_refused_in_one_line():
    # a checkpoint of a multi-process sma run holds rank 0's replicas only: never loaded elsewhere
    from effitrain.techniques.sma import SMATechnique

    with pytest.raises(et.ConfigError, match=r"replicas of rank 0 of 2 process\(es\), not of rank 0 of 1"):
        SMATechnique(replicas=2).load_state_dict({"replicas": {}, "previous": {}, "process": [0, 2]})


def test_crossbow_settings_train_on_equal_samples(smoke):
    from effitrain.lab.scaling import crossbow_settings

    cfg, _ = smoke
    settings, base = crossbow_settings(cfg, batch=8, replicas=4, steps=10)
    assert list(settings) == ["batch 8", "SMA 4 × 8", base, "batch 32, lr 4η, warm-up"] and base == "batch 32, lr η"
    assert {str(c.budget) for c, _ in settings.values()} == {str(settings[base][0].budget)}
    assert settings[base][0].budget.amount == 10 * 32 * cfg.data.seq_len
    assert settings["SMA 4 × 8"][1] == [("sma", {"replicas": 4})]
    assert settings["batch 32, lr 4η, warm-up"][0].optim.lr == pytest.approx(4 * settings[base][0].optim.lr)
    # from a warm start every setting continues the baseline's state, each with its own batch and rate
    from effitrain.train import warm
    warmed, base = crossbow_settings(cfg.replace(warm_start=4), batch=8, replicas=4, steps=10)
    assert {warm.prefix_config(c) for c, _ in warmed.values()} == {warm.prefix_config(warmed[base][0])}
    assert [c.run.batch_size for c, _ in warmed.values()] == [8, 8, 32, 32]
    assert [c.replace(warm_start=0, warm_base="") for c, _ in warmed.values()] == [c for c, _ in settings.values()]


def test_a_warm_start_gives_every_replica_the_baselines_weights_and_moments(smoke, fresh_cache):
    cfg, data = _cfg(smoke, steps=12)
    cfg = cfg.replace(warm_start=6, dropout=0.0, evals=3)
    plain = et.train(cfg, data=data, progress=False)
    one = et.train(cfg, [et.technique("sma", replicas=1, pull=0.0)], data=data, progress=False)
    assert one.extra["warm_start"] == plain.extra["warm_start"]
    after = lambda run: [r["train_loss"] for r in run.history.steps if r["step"] > 6]  # noqa: E731
    assert len(after(one)) == 6
    # a replica from the initial weights, or with fresh AdamW moments, would give other losses
    assert after(one) == pytest.approx(after(plain), abs=1e-5)


def test_a_warm_state_the_optimizer_cannot_take_is_refused_naming_the_technique(smoke, fresh_cache, monkeypatch):
    cfg, data = _cfg(smoke, steps=12)
    monkeypatch.setattr(SMATechnique, "on_warm_start", lambda self, model, state, ctx: state)  # moments unstacked
    with pytest.raises(et.ConfigError, match=r"run.warm_start and sma cannot train together: .*optimizer state"):
        et.train(cfg.replace(warm_start=6), [et.technique("sma", replicas=2)], data=data, progress=False)
