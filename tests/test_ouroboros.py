"""Ouroboros' delayed gradients (issue 16): a hand-computed two-group example, K = 1 is plain training,
the tied embedding's two parts, the first group waiting for its first gradient, exact resume, and the
time model's arithmetic."""
from __future__ import annotations

import copy
import dataclasses
import threading

import pytest
import torch
import torch.nn.functional as F

import effitrain as et
from effitrain.bench import synthetic_batches
from effitrain.model import BertForMLM
from effitrain.techniques.base import StepContext
from effitrain.lab.scaling import pipeline_time
from effitrain.techniques.ouroboros import DECODER_PART, EMBEDDING_PART, DelayedGradients, ouroboros_groups


def _cfg(smoke, steps=6, **changes):
    cfg, data = smoke
    return cfg.replace(budget=f"{steps}steps", evals=2, log_every=1, **changes), data


def test_two_groups_by_hand():
    # L = ½(w1 − 1)² + ½(w2 − 2)² + w1·w2 from w = (0, 0), SGD with lr 0.5; w1 is the first group
    # (delay 1), w2 the last (delay 0). ∇L = (w1 − 1 + w2, w2 − 2 + w1).
    # step 1: ∇ at (0, 0) = (−1, −2): w2 → 1, w1 waits                       → (0, 1)
    # step 2: ∇ at (0, 1) = (0, −1): w2 → 1.5, w1 takes step 1's −1 → 0.5     → (0.5, 1.5)
    # step 3: ∇ at (0.5, 1.5) = (1, 0): w2 stays, w1 takes step 2's 0          → (0.5, 1.5)
    w1, w2 = torch.zeros((), requires_grad=True), torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([w1, w2], lr=0.5)
    delayed = DelayedGradients([("w1", w1, 1), ("w2", w2, 0)])
    seen = []
    for _ in range(3):
        loss = 0.5 * (w1 - 1) ** 2 + 0.5 * (w2 - 2) ** 2 + w1 * w2
        loss.backward()
        delayed.apply()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen.append((w1.item(), w2.item()))
    assert seen == [(0.0, 1.0), (0.5, 1.5), (0.5, 1.5)]


def test_one_group_is_plain_training(smoke):
    cfg, data = _cfg(smoke)
    plain = et.train(cfg, data=data, progress=False)
    one = et.train(cfg, [et.technique("ouroboros", groups=1)], data=data, progress=False)
    assert [r["train_loss"] for r in one.history.steps] == [r["train_loss"] for r in plain.history.steps]
    assert [r["val_loss"] for r in one.history.evals] == [r["val_loss"] for r in plain.history.evals]


def test_groups_cover_every_parameter_and_refuse_too_many(smoke):
    cfg, data = smoke
    model = BertForMLM(dataclasses.replace(cfg.model, layers=4), data.vocab_size)
    where = ouroboros_groups(model, 4)
    assert where[EMBEDDING_PART] == 0 and where[DECODER_PART] == 3
    assert [where[f"encoder.blocks.{i}.ln1.weight"] for i in range(4)] == [0, 1, 2, 3]
    assert where["head.dense.weight"] == 3 and where["encoder.ln_final.weight"] == 3
    assert [ouroboros_groups(model, 2)[f"encoder.blocks.{i}.ln1.weight"] for i in range(4)] == [0, 0, 1, 1]
    with pytest.raises(et.ConfigError, match=r"ouroboros.groups must be an integer in \[1, 4\]"):
        ouroboros_groups(model, 5)


def test_the_tied_weights_two_parts_are_the_embedding_and_decoder_gradients(smoke):
    cfg, data = smoke
    torch.manual_seed(0)
    model = BertForMLM(cfg.model, data.vocab_size).train()
    untied = copy.deepcopy(model)
    untied.head.decoder.weight = torch.nn.Parameter(untied.encoder.tok.weight.detach().clone())
    batch = synthetic_batches(cfg, 1, data.vocab_size, seed=2)[0]
    t = et.technique("ouroboros", groups=2)
    ctx = StepContext.standalone(cfg)
    t.on_model(model, ctx)
    for m in (model, untied):
        F.cross_entropy(m(batch.input_ids, batch.positions, batch.attention_mask), batch.labels).backward()
    assert torch.allclose(t.embedding_grad, untied.encoder.tok.weight.grad, atol=1e-6)
    assert torch.allclose(model.encoder.tok.weight.grad - t.embedding_grad, untied.head.decoder.weight.grad,
                          atol=1e-6)


def test_the_first_group_waits_for_its_first_gradient(smoke):
    cfg, data = _cfg(smoke, steps=1, warmup=0.0)  # no warm-up: the first step has a learning rate
    torch.manual_seed(cfg.run.seed)
    init = BertForMLM(cfg.model, data.vocab_size).state_dict()
    run = et.train(cfg, [et.technique("ouroboros", groups=2)], data=data, progress=False)
    after = run.model.state_dict()
    assert torch.equal(after["encoder.blocks.0.attn.qkv.weight"], init["encoder.blocks.0.attn.qkv.weight"])
    assert torch.equal(after["encoder.ln_emb.weight"], init["encoder.ln_emb.weight"])
    assert not torch.equal(after["encoder.blocks.1.attn.qkv.weight"], init["encoder.blocks.1.attn.qkv.weight"])
    # the tied weight moved by its decoder part only (the embedding part waits a step)
    assert not torch.equal(after["encoder.tok.weight"], init["encoder.tok.weight"])
    assert run.extra["techniques"]["ouroboros"]["stale_steps"] == 1


def test_resume_continues_the_queues_exactly(smoke, tmp_path):
    cfg, data = _cfg(smoke, steps=6)
    timeless = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    full = et.train(cfg, [et.technique("ouroboros", groups=2)], data=data, progress=False)
    stop, ck = threading.Event(), tmp_path / "half.pt"

    def stop_at_3(kind, row, run):
        if kind == "step" and row["step"] >= 3:
            stop.set()

    et.train(cfg, [et.technique("ouroboros", groups=2)], data=data, progress=False, checkpoint=str(ck),
             stop=stop, callbacks=[stop_at_3])
    resumed = et.train(cfg, [et.technique("ouroboros", groups=2)], data=data, progress=False, resume=str(ck))
    assert timeless(resumed.history.steps) == timeless(full.history.steps)
    assert timeless(resumed.history.evals) == timeless(full.history.evals)


def test_pipeline_time_model():
    rows = [{"forward_s": 1.0, "backward_s": 2.0, "activation_bytes": 100},
            {"forward_s": 2.0, "backward_s": 3.0, "activation_bytes": 0}]
    t = pipeline_time(rows, steps=9, bandwidth=100.0)
    assert t["one_device_s_per_step"] == 8.0 and t["communication_s"] == 2.0
    assert t["k_devices_s_per_step"] == 7.0 and t["bubble_steps"] == 1
    assert t["speedup"] == pytest.approx(9 * 8.0 / (10 * 7.0))
    # with a barrier per step the forward chain stays in it: max(F0 + B0, F0 + send + F1 + B1) = max(3, 7)
    assert t["barrier_s_per_step"] == 7.0 and t["barrier_speedup"] == pytest.approx(9 * 8.0 / (10 * 7.0))
    slow_top = [dict(rows[0], forward_s=3.0, backward_s=1.0), dict(rows[1], forward_s=0.5, backward_s=1.0)]
    t = pipeline_time(slow_top, steps=9, bandwidth=100.0)  # max(3 + 1, 3 + 1 + 0.5 + 1) = 5.5 against max(4, 1.5) + 2
    assert (t["barrier_s_per_step"], t["k_devices_s_per_step"]) == (5.5, 6.0)
    assert pipeline_time(rows[:1], steps=5)["speedup"] == pytest.approx(1.0)
