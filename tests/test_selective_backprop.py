"""Selective backprop: row scores, re-indexed batches, the kept share in both modes, no gradient from the
rows left out, the scoring forward charged in FLOPs, and beta = 0 / keep_fraction = 1 as the plain run."""
from __future__ import annotations

import time

import pytest
import torch

import effitrain as et
from effitrain.data import MaskedBatch, mask_tokens
from effitrain.model import BertForMLM
from effitrain.techniques import StepContext
from effitrain.techniques.selective_backprop import (SelectiveBackpropTechnique, keep_cdf, keep_top, row_losses,
                                                     select_rows)
from effitrain.train.flops import count_flops
from effitrain.train.step import TrainStep, make_optimizer, mlm_loss_inputs


def short(cfg, steps: int = 4, **kw):
    return cfg.replace(budget=f"{steps}steps", evals=1, log_every=1, **kw)


def curve(run) -> list:
    return [(r["train_loss"], r["flops"], r["tokens"]) for r in run.history.steps] + \
        [r["val_loss"] for r in run.history.evals]


def a_batch(cfg, data, rows: int = 8, seed: int = 0) -> MaskedBatch:
    return mask_tokens(data.train.ids[:rows], cfg.data.mask_prob, data.vocab_size, torch.Generator().manual_seed(seed))


def test_row_losses_and_selected_rows_keep_their_own_positions_and_labels(smoke):
    cfg, data = smoke
    batch = a_batch(cfg, data, rows=6)
    B, T = batch.input_ids.shape
    tl = torch.rand(batch.labels.numel(), dtype=torch.float64)
    rows = batch.positions // T
    expected = torch.stack([tl[rows == r].mean() for r in range(B)])
    torch.testing.assert_close(row_losses(tl, batch.positions, (B, T)), expected)
    assert row_losses(tl[rows != 2], batch.positions[rows != 2], (B, T))[2] == float("-inf")  # nothing predicted
    keep = torch.tensor([1, 3, 4])
    sub = select_rows(batch, keep)
    assert torch.equal(sub.input_ids, batch.input_ids[keep])
    old = torch.cat([batch.positions[rows == r] for r in keep.tolist()])
    assert torch.equal(sub.input_ids.flatten()[sub.positions], batch.input_ids.flatten()[old])
    assert torch.equal(sub.positions % T, old % T) and torch.equal(sub.positions // T, torch.repeat_interleave(
        torch.arange(3), torch.tensor([int((rows == r).sum()) for r in keep.tolist()])))
    assert torch.equal(sub.labels, torch.cat([batch.labels[rows == r] for r in keep.tolist()]))


def test_percentile_mode_keeps_exactly_the_top_share():
    g = torch.Generator().manual_seed(0)
    losses = torch.rand(32, generator=g, dtype=torch.float64)
    for share, k in ((0.5, 16), (0.25, 8), (0.1, 3), (1.0, 32), (0.0, 1)):
        kept = keep_top(losses, share)
        assert kept.numel() == k and torch.equal(kept, kept.sort().values)
        assert set(kept.tolist()) == set(losses.topk(k).indices.tolist())
    assert keep_top(torch.tensor([float("-inf"), 1.0, 2.0, float("-inf")]), 0.5).tolist() == [1, 2]


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_cdf_mode_keeps_about_one_over_one_plus_beta(beta):
    t = SelectiveBackpropTechnique(beta=beta, history=512)
    scores, rng = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    kept = rows = 0
    for _ in range(300):
        losses = torch.randn(32, generator=scores, dtype=torch.float64) + 5.0  # a stationary stream
        n = t.choose(losses, rng).numel()
        assert n >= 1
        kept, rows = kept + n, rows + 32
    assert len(t.history) == 512
    assert kept / rows == pytest.approx(1.0 / (1.0 + beta), abs=0.03)


def test_cdf_mode_prefers_high_losses_and_keeps_at_least_one_row():
    history = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    assert keep_cdf(torch.tensor([-1.0, -2.0, -0.5]), history, 1.0, g).tolist() == [2]  # CDF 0 everywhere
    assert keep_cdf(torch.tensor([2.0, 3.0]), history, 5.0, g).tolist() == [0, 1]  # CDF 1: always kept
    counts = torch.zeros(2)
    for _ in range(2000):
        kept = keep_cdf(torch.tensor([0.2, 0.8]), history, 1.0, g)
        counts[kept] += 1
    # CDF(0.2) = 21/101, CDF(0.8) = 81/101; when neither is drawn (79/101 · 20/101), the higher loss is kept
    p0, p1 = 21 / 101, 81 / 101
    assert counts[0] / 2000 == pytest.approx(p0, abs=0.03)
    assert counts[1] / 2000 == pytest.approx(p1 + (1 - p0) * (1 - p1), abs=0.03)


def test_rows_left_out_contribute_no_gradient(smoke):
    cfg, data = smoke
    torch.manual_seed(0)
    model = BertForMLM(cfg.model, data.vocab_size)
    batch = a_batch(cfg, data, rows=8)
    t = SelectiveBackpropTechnique(mode="percentile", keep_fraction=0.5)
    ctx = StepContext.standalone(cfg)
    final = t.on_masked_batch(batch, model, ctx)
    assert final.input_ids.shape[0] == 4
    step = TrainStep(model, make_optimizer(model, cfg, torch.device("cpu")), cfg, torch.device("cpu"))
    step.micro_step(final, ctx, None, 1)
    trained = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    # the full batch's forward, its loss restricted to the kept rows' tokens
    out = mlm_loss_inputs(model, batch)
    T = batch.input_ids.shape[1]
    kept_rows = torch.tensor([r for r in range(8) if (final.input_ids == batch.input_ids[r]).all(1).any()])
    assert kept_rows.numel() == 4
    on_kept = torch.isin(batch.positions // T, kept_rows)
    out.token_losses[on_kept].mean().backward()
    for a, p in zip(trained, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
    model.zero_grad(set_to_none=True)
    mlm_loss_inputs(model, batch).loss.backward()  # every row: another gradient
    assert not torch.allclose(trained[0], next(model.parameters()).grad, rtol=1e-3, atol=1e-6)
    # the kept rows are the ones with the highest scored losses
    with torch.no_grad():
        losses = row_losses(mlm_loss_inputs(model.eval(), batch).token_losses, batch.positions, (8, T))
    assert set(kept_rows.tolist()) == set(losses.topk(4).indices.tolist())


class Recording(SelectiveBackpropTechnique):
    """Remembers each micro-batch before and after selection (outside the FLOP-counting pass)."""

    def on_masked_batch(self, batch, model, ctx):
        final = super().on_masked_batch(batch, model, ctx)
        if not ctx.counting:
            self.seen.append((batch, final))
        return final


@pytest.mark.parametrize("mode", ["percentile", "cdf"])
def test_the_scoring_forward_is_charged_in_flops(smoke, mode):
    cfg, data = smoke
    t = Recording(mode=mode, keep_fraction=0.5, beta=1.0)
    t.seen = []
    run = et.train(short(cfg, 3), [t], data=data, progress=False)
    steps = run.history.steps
    per_step = [b["flops"] - a["flops"] for a, b in zip([{"flops": 0.0}] + steps, steps)]
    assert len(t.seen) == 3
    torch.manual_seed(0)
    model = BertForMLM(cfg.model, data.vocab_size)  # FLOPs do not depend on the weights
    step = TrainStep(model, make_optimizer(model, cfg, torch.device("cpu")), cfg, torch.device("cpu"))
    ctx = StepContext.standalone(cfg)
    for measured, (raw, final), row in zip(per_step, t.seen, steps):
        with torch.no_grad():
            scoring = count_flops(lambda: mlm_loss_inputs(model, raw))
        kept_only = count_flops(lambda: step.micro_step(final, ctx, None, 1))
        full = count_flops(lambda: step.micro_step(raw, ctx, None, 1))
        model.zero_grad(set_to_none=True)
        assert measured == scoring + kept_only  # the kept rows' training plus one no-grad forward of all rows
        assert scoring == pytest.approx(full / 3, rel=0.05)
        assert row["term_kept_row_fraction"] == final.input_ids.shape[0] / raw.input_ids.shape[0]
        assert row["flops_analytic"] - (steps[steps.index(row) - 1]["flops_analytic"] if steps.index(row) else 0) \
            == pytest.approx(measured, rel=1e-9)
    s = run.extra["techniques"]["selective_backprop"]
    assert s["rows_scored"] == 3 * cfg.run.batch_size and s["rows_kept"] == sum(f.input_ids.shape[0] for _, f in t.seen)
    if mode == "percentile":
        assert s["rows_kept"] == 3 * cfg.run.batch_size // 2


@pytest.mark.parametrize("params", [{"beta": 0.0}, {"mode": "percentile", "keep_fraction": 1.0}])
def test_identity_settings_are_the_baseline_exactly(smoke, params):
    cfg, data = smoke
    baseline = et.train(short(cfg), data=data, progress=False)
    same = et.train(short(cfg), [et.technique("selective_backprop", **params)], data=data, progress=False)
    assert curve(same) == curve(baseline)
    assert same.summary()["flops_measured"] == baseline.summary()["flops_measured"]


class SlowScoring(SelectiveBackpropTechnique):
    def on_masked_batch(self, batch, model, ctx):
        time.sleep(0.4)
        return super().on_masked_batch(batch, model, ctx)


def test_the_scoring_forward_is_charged_in_seconds(smoke):
    cfg, data = smoke
    run = et.train(short(cfg, 3), [SlowScoring(mode="percentile")], data=data, progress=False)
    assert run.history.steps[-1]["seconds"] >= 3 * 0.4
