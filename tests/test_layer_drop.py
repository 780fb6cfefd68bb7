"""Progressive layer dropping: the schedule, the draw, skipped blocks cost nothing, eval runs every block,
post-LN is refused, the FLOP meter follows the kept blocks, and theta_bar = 1 is the plain run."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import effitrain as et
from effitrain.data import mask_tokens
from effitrain.model import BertForMLM
from effitrain.techniques import StepContext
from tests.test_contract import _stop_at, timeless
from effitrain.techniques.layer_drop import (DroppableBlock, LayerDropTechnique, draw_kept, expected_kept_fraction,
                                             keep_probabilities, theta)
from effitrain.train.flops import count_flops
from effitrain.train.step import TrainStep, make_optimizer


def short(cfg, steps: int = 6, **kw):
    return cfg.replace(budget=f"{steps}steps", evals=1, log_every=1, **kw)


def curve(run) -> list:
    return [(r["train_loss"], r["flops"], r["tokens"]) for r in run.history.steps] + \
        [r["val_loss"] for r in run.history.evals]


def deep(cfg, layers: int = 4):
    return cfg.replace(**{"model.layers": layers})


def a_batch(cfg, data, rows: int = 4, seed: int = 0):
    return mask_tokens(data.train.ids[:rows], cfg.data.mask_prob, data.vocab_size, torch.Generator().manual_seed(seed))


def test_theta_and_keep_probabilities_follow_the_formulas():
    assert theta(0.0, 0.5, 10.0) == 1.0
    for t in (0.0, 0.1, 0.37, 1.0):
        for tb, g in ((0.5, 10.0), (0.2, 3.0), (1.0, 10.0)):
            th = (1 - tb) * math.exp(-g * t) + tb
            assert theta(t, tb, g) == pytest.approx(th, abs=1e-15)
            L = 6
            p = keep_probabilities(t, L, tb, g)
            assert p == pytest.approx([1 - (l / L) * (1 - th) for l in range(L)], abs=1e-15)  # l = 0 … L−1
            assert p[0] == 1.0 and all(a >= b for a, b in zip(p, p[1:]))
            # the expected kept share is the mean of p_l (DeepSpeed's indexing: (L − 1)/(2L), not (L + 1)/(2L))
            assert sum(p) / L == pytest.approx(expected_kept_fraction(th, L), abs=1e-12)
            assert expected_kept_fraction(th, L) == pytest.approx(1 - (1 - th) * (L - 1) / (2 * L))
    assert theta(0.5, 0.5, 10.0) - 0.5 < 0.004  # the default γ: settled by half the budget


def test_measured_kept_share_over_many_draws_is_the_expected_one():
    L, n = 12, 20_000
    g = torch.Generator().manual_seed(0)
    probs = keep_probabilities(1.0, L, 0.5, 10.0)
    draws = torch.tensor([draw_kept(probs, g) for _ in range(n)], dtype=torch.float64)  # (n, L)
    e = expected_kept_fraction(theta(1.0, 0.5, 10.0), L)
    sd = math.sqrt(sum(p * (1 - p) for p in probs)) / L / math.sqrt(n)
    assert abs(draws.mean().item() - e) < 5 * sd
    per_layer = draws.mean(0)
    assert per_layer[0] == 1.0
    for l in range(1, L):
        assert abs(per_layer[l].item() - probs[l]) < 5 * math.sqrt(probs[l] * (1 - probs[l]) / n)
    # keep-everything draws nothing from the generator
    state = g.get_state()
    assert draw_kept([1.0] * L, g) == [True] * L and torch.equal(g.get_state(), state)


def _model_with(cfg, data, technique, kept, probs):
    torch.manual_seed(0)
    model = technique.on_model(BertForMLM(cfg.model, data.vocab_size), StepContext.standalone(cfg))
    technique.mask.set(kept, probs)
    return model


def _step_flops(model, cfg, batch) -> int:
    step = TrainStep(model, make_optimizer(model, cfg, torch.device("cpu")), cfg, torch.device("cpu"))
    return count_flops(lambda: step.micro_step(batch, StepContext.standalone(cfg), None, 1))


def test_k_kept_blocks_cost_exactly_a_k_block_model_and_skipped_blocks_never_run(smoke):
    cfg, data = smoke
    cfg4 = deep(cfg, 4)
    batch = a_batch(cfg, data)
    t = LayerDropTechnique(theta_bar=0.5)
    kept = [True, False, True, False]
    model = _model_with(cfg4, data, t, kept, [1.0, 0.8, 0.6, 0.4])
    calls = [0] * 4
    for i, b in enumerate(model.encoder.blocks):
        assert type(b) is DroppableBlock
        for sub in (b.attn, b.ffn):
            sub.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
    measured = _step_flops(model, cfg4, batch)
    assert calls == [2, 0, 2, 0]  # attention and FFN of each kept block, nothing of the skipped ones
    torch.manual_seed(0)
    two = BertForMLM(deep(cfg, 2).model, data.vocab_size)
    assert measured == _step_flops(two, deep(cfg, 2), batch)
    assert measured < _step_flops(BertForMLM(cfg4.model, data.vocab_size), cfg4, batch)
    assert t.flops_key(StepContext.standalone(cfg4)) == ("kept_blocks", 2)
    t.mask.set([True, True, True, False], [1.0, 0.8, 0.6, 0.4])
    assert t.flops_key(StepContext.standalone(cfg4)) == ("kept_blocks", 3)


def test_a_kept_block_scales_each_residual_branch_by_one_over_p(smoke):
    cfg, data = smoke
    t = LayerDropTechnique(theta_bar=0.5)
    model = _model_with(deep(cfg, 2), data, t, [True, True], [1.0, 0.5])
    block = model.encoder.blocks[1]
    x = torch.randn(2, 8, cfg.model.hidden)
    a = block.attn(block.ln1(x), None)
    h = x + a / 0.5
    expected = h + block.ffn(block.ln2(h)) / 0.5
    torch.testing.assert_close(block(x), expected)
    plain = x + a
    plain = plain + block.ffn(block.ln2(plain))
    assert not torch.allclose(block(x), plain)
    t.mask.set([True, False], [1.0, 0.5])
    assert block(x) is x  # skipped: the input itself


def test_evaluation_runs_every_block_unscaled(smoke):
    cfg, data = smoke
    cfg4 = deep(cfg, 4)
    torch.manual_seed(0)
    reference = BertForMLM(cfg4.model, data.vocab_size)
    model = copy.deepcopy(reference)
    t = LayerDropTechnique(theta_bar=0.2)
    model = t.on_model(model, StepContext.standalone(cfg4))
    t.mask.set([True, False, True, False], [1.0, 0.5, 0.5, 0.5])  # a training step's draw, still set
    batch = a_batch(cfg, data)
    calls = []
    for b in model.encoder.blocks:
        b.attn.register_forward_hook(lambda *_a: calls.append(1))
    args = (batch.input_ids, batch.positions, batch.attention_mask)
    reference.eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(*args), reference(*args))
    assert len(calls) == 4
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(*args), reference(*args))  # in training the draw applies
    t.after_step(model, StepContext.standalone(cfg4))  # outside a step: every block, also in train mode
    with torch.no_grad():
        assert torch.equal(model(*args), reference.train()(*args))
    assert model.state_dict().keys() == reference.state_dict().keys()  # the same keys: checkpoints load


def test_post_ln_is_refused_in_one_line(smoke):
    cfg, data = smoke
    with pytest.raises(et.ConfigError) as exc:
        et.train(short(cfg, 2, norm="post"), [et.technique("layer_drop")], data=data, progress=False)
    message = str(exc.value)
    assert "\n" not in message and "layer_drop" in message and "model.norm" in message and "'post'" in message


def test_a_norm_free_model_drops_blocks_too(smoke):
    """norm "none": a block is x + f(x) as in pre-LN, so skipping it is allowed, and it saves work."""
    cfg, data = smoke
    cfg = deep(short(cfg, 8, norm="none"))
    plain = et.train(cfg, data=data, progress=False)
    drop = et.train(cfg, [et.technique("layer_drop", gamma=100.0)], data=data, progress=False)
    assert drop.status == "completed"
    assert drop.summary()["flops_measured"] < plain.summary()["flops_measured"]
    assert min(r["term_kept_layer_fraction"] for r in drop.history.steps) < 1.0


def test_identity_setting_is_the_baseline_exactly(smoke):
    cfg, data = smoke
    baseline = et.train(short(cfg, 4), data=data, progress=False)
    same = et.train(short(cfg, 4), [et.technique("layer_drop", theta_bar=1.0)], data=data, progress=False)
    assert curve(same) == curve(baseline)
    assert timeless(same.history.steps) == timeless(baseline.history.steps)  # no extra terms either
    assert same.summary()["flops_measured"] == baseline.summary()["flops_measured"]


def test_the_run_counts_the_flops_of_the_kept_blocks_and_logs_the_share(smoke):
    cfg, data = smoke
    c = short(deep(cfg, 4), 6)
    t = LayerDropTechnique(theta_bar=0.2, gamma=50.0)
    run = et.train(c, [t], data=data, progress=False)
    every = et.Trainer(c, [LayerDropTechnique(theta_bar=0.2, gamma=50.0)], data=data, progress=False,
                       flops_every_step=True).fit()
    assert curve(run) == curve(every)  # the meter's cache, keyed by the kept count, reads the counted FLOPs
    steps = run.history.steps
    kept = [round(r["term_kept_layer_fraction"] * 4) for r in steps]
    assert len(set(kept)) > 1 and kept[0] == 4  # at t = 0 θ = 1: the full model; later blocks drop
    assert [r["term_theta"] for r in steps][0] == 1.0 and steps[-1]["term_theta"] == pytest.approx(0.2, abs=1e-3)
    flops = [b["flops"] - a["flops"] for a, b in zip([{"flops": 0.0}] + steps, steps)]
    analytic = [b["flops_analytic"] - a["flops_analytic"] for a, b in zip([{"flops_analytic": 0.0}] + steps, steps)]
    assert flops == pytest.approx(analytic, rel=1e-9)  # measured = the formula with (kept/L) of the blocks
    by_k = {}
    for k, f in zip(kept, flops):
        by_k.setdefault(k, set()).add(f)
    ks = sorted(by_k)
    assert all(max(by_k[a]) < min(by_k[b]) for a, b in zip(ks, ks[1:]))  # fewer blocks, fewer FLOPs
    s = run.extra["techniques"]["layer_drop"]
    assert s["steps"] == 6 and s["kept_blocks"] == sum(kept)


def test_resuming_mid_run_is_the_uninterrupted_run(smoke, tmp_path):
    cfg, data = smoke
    c = short(deep(cfg, 4), 6)
    make = lambda: LayerDropTechnique(theta_bar=0.2, gamma=50.0)  # noqa: E731
    full = et.train(c, [make()], data=data, progress=False)
    ck, stop = tmp_path / "half.pt", _stop_at(3)
    et.train(c, [make()], data=data, progress=False, checkpoint=str(ck), stop=stop, callbacks=[stop])
    resumed = et.train(c, [make()], data=data, progress=False, resume=str(ck))
    assert timeless(resumed.history.steps) == timeless(full.history.steps)
    assert len({r["term_kept_layer_fraction"] for r in full.history.steps}) > 1
