"""ELECTRA (effitrain.techniques.electra): the generator's shape, ELECTRA's masking, labels that mark
exactly the replaced tokens, gradients, shared embeddings, FLOPs measured vs analytic, learning on the
smoke corpus, reproducibility and resuming, and what a run logs and hands back."""
from __future__ import annotations

import math

import pytest
import torch

import effitrain as et
from effitrain.config import ModelConfig
from effitrain.data import mask_tokens
from effitrain.data.tokenizer import MASK, SPECIAL_TOKENS
from effitrain.model import BertForMLM, count_parameters
from effitrain.techniques import StepContext
from effitrain.techniques.electra import (Discriminator, Electra, ElectraTechnique, electra_flops, electra_masking,
                                          generator_config, replace_tokens, sample_tokens, unmask)
from effitrain.train.flops import count_flops
from effitrain.train.step import TrainStep, attention_recompute, make_optimizer, mlm_loss_inputs

TERMS = ("mlm", "rtd", "rtd_accuracy", "replaced_share")


def small(cfg, steps: int, **kw):
    """A cheap run: 8 rows per step (what these tests check does not depend on the batch size)."""
    return cfg.replace(**{"budget": f"{steps}steps", "evals": 2, "log_every": 1, "batch_size": 8, **kw})


def setup(cfg, data, rows: int = 8, **params):
    """(technique, Electra model, a masked batch after on_masked_batch, a context) outside the trainer."""
    torch.manual_seed(0)
    t = ElectraTechnique(**params)
    ctx = StepContext.standalone(cfg)
    model = t.on_model(BertForMLM(cfg.model, data.vocab_size), ctx)
    raw = mask_tokens(data.train.ids[:rows], cfg.data.mask_prob, data.vocab_size, torch.Generator().manual_seed(0))
    return t, model, t.on_masked_batch(raw, model, ctx), ctx


# -- shape and masking ---------------------------------------------------------------------------------------
def test_generator_has_the_depth_and_a_fraction_of_the_width():
    base = ModelConfig(preset="base")
    g = generator_config(base, 0.25)
    assert (g.hidden, g.layers, g.heads, g.ffn) == (192, 12, 3, 768)  # ELECTRA: heads = hidden // 64
    tiny = ModelConfig(preset="tiny", position="rotary")
    g = generator_config(tiny, 0.25)
    assert (g.hidden, g.layers, g.heads, g.ffn) == (32, 2, 1, 128)
    assert generator_config(tiny, 1.0) == tiny
    odd = generator_config(ModelConfig(preset="mini", position="rotary"), 0.3)  # 77 → 78, heads dividing it, even size
    assert odd.hidden % odd.heads == 0 and (odd.hidden // odd.heads) % 2 == 0


def test_electra_masking_keeps_positions_and_uses_no_random_tokens(smoke):
    cfg, data = smoke
    raw = mask_tokens(data.train.ids[:64], cfg.data.mask_prob, data.vocab_size, torch.Generator().manual_seed(1))
    out = electra_masking(raw, torch.Generator().manual_seed(2))
    original = unmask(raw.input_ids, raw.positions, raw.labels)
    assert torch.equal(out.positions, raw.positions) and torch.equal(out.labels, raw.labels)
    at = out.input_ids.view(-1)[out.positions]
    assert bool(((at == MASK) | (at == out.labels)).all())  # [MASK] or the original, never a random token
    assert 0.80 < float((at == MASK).float().mean()) < 0.90  # 85 % [MASK]
    elsewhere = torch.ones(original.numel(), dtype=torch.bool)
    elsewhere[out.positions] = False
    assert torch.equal(out.input_ids.view(-1)[elsewhere], original.view(-1)[elsewhere])
    t = ElectraTechnique(mask_replace="bert")
    assert t.on_masked_batch(raw, None, StepContext.standalone(cfg)) is raw  # the trainer's 80/10/10, untouched


def test_sampling_follows_the_softmax_and_the_generator():
    logits = torch.log(torch.tensor([[0.5, 0.5, 0.0, 1e-30]])).repeat(4000, 1)
    draws = sample_tokens(logits, torch.Generator().manual_seed(0))
    assert set(draws.tolist()) <= {0, 1} and 0.45 < float((draws == 0).float().mean()) < 0.55
    again = sample_tokens(logits, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    assert not logits.requires_grad or sample_tokens(logits.requires_grad_(), torch.Generator()).grad_fn is None


# -- labels, gradients, sharing --------------------------------------------------------------------------------
def test_labels_mark_exactly_the_replaced_tokens(smoke):
    cfg, data = smoke
    original = data.train.ids[:2].clone()
    positions = torch.tensor([3, 5, 70, 71])
    flat = original.view(-1)
    sampled = torch.tensor([int(flat[3]), 17, int(flat[70]), 18])  # two samples equal the original
    corrupted, replaced = replace_tokens(original, positions, sampled)
    expected = torch.zeros_like(original, dtype=torch.bool)
    expected.view(-1)[positions] = sampled != flat[positions]
    expected.view(-1)[positions[sampled == flat[positions]]] = False
    assert torch.equal(replaced, expected) and int(replaced.sum()) == int((sampled != flat[positions]).sum())
    assert torch.equal(corrupted.view(-1)[positions], sampled)

    # through the loss event: the share it logs is the share of samples that differ from the label
    t, model, batch, ctx = setup(cfg, data)
    out = mlm_loss_inputs(model, batch)
    state = ctx.rng.get_state()
    t.loss(out, ctx)
    ctx.rng.set_state(state)
    draws = sample_tokens(out.logits, ctx.rng)
    n = batch.input_ids.numel() if batch.attention_mask is None else int(batch.attention_mask.sum())
    assert float(out.terms["replaced_share"]) == pytest.approx(int((draws != batch.labels).sum()) / n)
    assert set(TERMS) <= set(out.terms)


def test_rtd_loss_sends_no_gradient_into_the_generators_own_weights(smoke):
    cfg, data = smoke
    t, model, batch, ctx = setup(cfg, data)
    out = mlm_loss_inputs(model, batch)
    out.loss = out.loss * 0.0  # keep only λ·RTD from the event
    t.loss(out, ctx).backward()
    own = model.generator_own_parameters()
    assert own and all(p.grad is None or not p.grad.any() for p in own)
    assert model.discriminator.encoder.tok.weight.grad.abs().sum() > 0  # it reaches the shared embeddings
    assert all(p.grad is not None for p in model.discriminator.rtd.parameters())


def test_generator_and_discriminator_share_one_embedding_tensor(smoke):
    cfg, data = smoke
    _, model, _, _ = setup(cfg, data)
    tok = model.discriminator.encoder.tok.weight
    assert model.generator.tok.weight.data_ptr() == tok.data_ptr()
    assert model.generator.head.decoder.weight.data_ptr() == tok.data_ptr()  # the generator decodes with it
    assert model.generator.ln_emb.weight.data_ptr() == model.discriminator.encoder.ln_emb.weight.data_ptr()
    shared = sum(p.numel() for p in model.shared_parameters())
    assert count_parameters(model) == count_parameters(model.generator) + count_parameters(model.discriminator) - shared
    params = [p for g in make_optimizer(model, cfg, torch.device("cpu")).param_groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))  # one optimizer, each once


# -- FLOPs ------------------------------------------------------------------------------------------------------
def test_measured_flops_match_analytic(smoke):
    cfg, data = smoke
    width = 0.25
    t, model, batch, ctx = setup(cfg, data, rows=16, generator_width=width)
    step = TrainStep(model, make_optimizer(model, cfg, torch.device("cpu")), cfg, torch.device("cpu"), [t])
    measured = count_flops(lambda: step.micro_step(batch, ctx, None, 1))
    B, T = batch.input_ids.shape
    recompute = attention_recompute(cfg, torch.device("cpu"))
    analytic = electra_flops(cfg.model, data.vocab_size, width, B, T, batch.labels.numel(), recompute)
    assert abs(measured / analytic - 1) < 0.03, (measured, analytic)

    run = et.train(small(cfg, 2, evals=1), [ElectraTechnique(generator_width=width)], data=data, progress=False)
    per_step = run.summary()["flops_measured"] / 2
    rows = data.train.ids[:512]
    M = float(torch.clamp((rows >= len(SPECIAL_TOKENS)).sum(1).float().mul(cfg.data.mask_prob).round(), min=1).mean()) * 8
    analytic = electra_flops(cfg.model, data.vocab_size, width, 8, cfg.data.seq_len, round(M), recompute)
    assert abs(per_step / analytic - 1) < 0.03, (per_step, analytic)  # the trainer's meter counts both models
    s = run.summary()  # and the trainer's analytic column is ELECTRA's formula, not the baseline's
    assert abs(s["flops_analytic"] / s["flops_measured"] - 1) < 0.03, (s["flops_analytic"], s["flops_measured"])
    baseline = et.train(small(cfg, 2, evals=1), data=data, progress=False).summary()["flops_measured"] / 2
    assert per_step > baseline


# -- the trainer: what a run logs, reproduces and hands back --------------------------------------------------------
def test_same_seed_same_curve_and_resume_is_bit_identical(smoke, tmp_path):
    from tests.test_contract import _stop_at, timeless

    cfg, data = smoke
    c = small(cfg, 6)
    full = et.train(c, [et.technique("electra")], data=data, progress=False)
    again = et.train(c, [et.technique("electra")], data=data, progress=False)
    assert timeless(full.history.steps) == timeless(again.history.steps)
    assert timeless(full.history.evals) == timeless(again.history.evals)
    ck = tmp_path / "half.pt"
    stop = _stop_at(3)
    et.train(c, [et.technique("electra")], data=data, progress=False, checkpoint=str(ck), stop=stop, callbacks=[stop])
    resumed = et.train(c, [et.technique("electra")], data=data, progress=False, resume=str(ck))
    assert resumed.status == "completed"
    assert timeless(resumed.history.steps) == timeless(full.history.steps)
    assert timeless(resumed.history.evals) == timeless(full.history.evals)
    assert resumed.extra["techniques"]["electra"]["rtd_batches"] == 6

    for row in full.history.steps:  # the terms, logged as term_<name>
        assert all(f"term_{name}" in row for name in TERMS), row
        assert row["train_loss"] == pytest.approx(row["term_mlm"] + 50.0 * row["term_rtd"], rel=1e-5)
        assert 0.0 <= row["term_replaced_share"] <= cfg.data.mask_prob + 0.02
    for row in full.history.evals:
        assert {"val_rtd_loss", "val_rtd_accuracy", "val_replaced_share"} <= set(row)

    model = full.model  # the discriminator is what is handed back (and fine-tuned)
    assert isinstance(model, Discriminator) and not isinstance(model, Electra)
    assert not any(k.startswith("generator") for k in model.state_dict())
    assert model.cfg == cfg.model and model.encoder is model.encoder and model.vocab_size == data.vocab_size
    # val_loss is the generator's MLM loss on the trainer's fixed validation masks
    from effitrain.train.trainer import evaluate
    from effitrain.train.step import autocast_for

    metrics = evaluate(model, data.val, torch.device("cpu"), autocast_for(cfg, torch.device("cpu")))
    assert metrics["val_loss"] == full.history.evals[-1]["val_loss"]


def test_refuses_distill_in_one_line_naming_both(smoke):
    cfg, data = smoke
    with pytest.raises(et.ConfigError, match=r"^electra and distill cannot train together: [^\n]+$"):
        et.Trainer(small(cfg, 2), [et.technique("electra"), et.technique("distill")], data=data)


@pytest.mark.slow
def test_the_discriminator_beats_predicting_original_everywhere(smoke):
    """After the smoke budget (300 steps) the discriminator knows more than the share of replaced tokens.

    On this corpus the generator is still near the unigram plateau at 300 steps (its samples are
    plausible words), so the discriminator's accuracy is only just above "original everywhere"
    (0.7710 vs 0.7709 when this was written; 0.77100 vs 0.77112 in a later CI run of the same
    code). So accuracy is held only to "not below all-original by more than 0.001";
    the margin tested is the log loss, below that of the best constant guess (the entropy of the
    replaced share).
    """
    cfg, data = smoke
    run = et.train(cfg.replace(budget="300steps", evals=1, log_every=50), [et.technique("electra")], data=data,
                   progress=False)
    last = run.history.evals[-1]
    share = last["val_replaced_share"]
    constant = -(share * math.log(share) + (1 - share) * math.log(1 - share))
    assert last["val_rtd_accuracy"] >= 1.0 - share - 0.001, (last["val_rtd_accuracy"], 1.0 - share)
    assert last["val_rtd_loss"] < constant - 0.005, (last["val_rtd_loss"], constant)
    from effitrain.lab.electra import rtd_table

    table = rtd_table({"electra": [run, run]})
    assert table.loc["electra", "RTD loss below constant (nats)"] == pytest.approx(constant - last["val_rtd_loss"])
    assert table.loc["electra", "all-original accuracy"] == pytest.approx(1 - share)
    assert table.loc["electra", "runs"] == 2 and table.loc["electra", "discriminator accuracy ±"] == 0
    mlm = et.train(cfg.replace(budget="2steps", evals=1), data=data, progress=False)
    with pytest.raises(ValueError, match="'mlm' has runs without"):
        rtd_table({"mlm": [mlm]})


# -- the controls -----------------------------------------------------------------------------------------
def test_random_replacements_are_uniform_real_tokens_and_almost_all_replaced(smoke):
    from effitrain.techniques.electra import random_tokens

    cfg, data = smoke
    g = torch.Generator().manual_seed(0)
    toks = random_tokens(20000, data.vocab_size, g)
    assert int(toks.min()) >= len(SPECIAL_TOKENS) and int(toks.max()) < data.vocab_size
    counts = torch.bincount(toks, minlength=data.vocab_size)[len(SPECIAL_TOKENS):].float()
    assert counts.std() / counts.mean() < 0.35  # uniform: ~10 draws per token, Poisson spread
    run = et.train(small(cfg, 3), [et.technique("electra", replacements="random")], data=data, progress=False)
    share = [r["term_replaced_share"] for r in run.history.steps]
    # nearly every masked position gets a different token: the replaced share is about the masked share
    plain = et.train(small(cfg, 3), [et.technique("electra")], data=data, progress=False)
    assert min(share) > max(r["term_replaced_share"] for r in plain.history.steps) * 0.9
    assert run.summary()["flops_measured"] == pytest.approx(plain.summary()["flops_measured"], rel=1e-6)


def test_unigram_replacements_follow_the_corpus_frequencies(smoke):
    """The frequency-matched control: replacements drawn by unigram frequency, never a special token;
    a frequent word is drawn about as often as it occurs, so the share replaced stays below the
    uniform control's (a common word often replaces itself)."""
    from effitrain.techniques.electra import unigram_probs, unigram_tokens

    cfg, data = smoke
    g = torch.Generator().manual_seed(0)
    p = unigram_probs(data.unigram_counts)
    assert float(p[:len(SPECIAL_TOKENS)].sum()) == 0 and float(p.sum()) == pytest.approx(1.0)
    assert torch.equal(p[len(SPECIAL_TOKENS):] > 0, data.unigram_counts[len(SPECIAL_TOKENS):] > 0)
    toks = unigram_tokens(50000, p, g)
    assert int(toks.min()) >= len(SPECIAL_TOKENS)
    top = torch.topk(p, 5).indices
    drawn = torch.bincount(toks, minlength=data.vocab_size).double()[top] / 50000
    torch.testing.assert_close(drawn, p[top], rtol=0.1, atol=0.0)
    run = et.train(small(cfg, 3), [et.technique("electra", replacements="unigram")], data=data, progress=False)
    uniform = et.train(small(cfg, 3), [et.technique("electra", replacements="random")], data=data, progress=False)
    assert run.history.evals[-1]["val_replaced_share"] < uniform.history.evals[-1]["val_replaced_share"]
    assert run.summary()["flops_measured"] == pytest.approx(uniform.summary()["flops_measured"], rel=1e-6)


def test_rtd_at_masked_positions_only_weights_exactly_those(smoke):
    from effitrain.techniques.electra import loss_weights, rtd_loss

    cfg, data = smoke
    t, model, batch, ctx = setup(cfg, data)
    w = loss_weights(batch.attention_mask, batch.positions, batch.input_ids.shape, "masked")
    assert int(w.sum()) == batch.positions.numel() and torch.equal(w.view(-1).nonzero().flatten().sort().values,
                                                                  batch.positions.sort().values)
    assert loss_weights(batch.attention_mask, batch.positions, batch.input_ids.shape, "all") is batch.attention_mask
    logits = torch.randn(batch.input_ids.shape, requires_grad=True)
    replaced = torch.rand(batch.input_ids.shape) < 0.1
    loss, _, _ = rtd_loss(logits, replaced, w)
    loss.backward()
    untouched = torch.ones_like(w, dtype=torch.bool)
    untouched.view(-1)[batch.positions] = False
    assert bool((logits.grad[untouched] == 0).all()) and bool((logits.grad.view(-1)[batch.positions] != 0).any())
    run = et.train(small(cfg, 3), [et.technique("electra", rtd_positions="masked")], data=data, progress=False)
    assert run.status == "completed" and all(math.isfinite(r["term_rtd"]) for r in run.history.steps)
    # at masked positions far more tokens are replaced than over all tokens
    assert run.history.steps[-1]["term_replaced_share"] > 0.3
    full = et.train(small(cfg, 3), [et.technique("electra")], data=data, progress=False)
    # validation scores every real token for both settings, so the two runs' rows compare
    assert run.history.evals[-1]["val_replaced_share"] == pytest.approx(full.history.evals[-1]["val_replaced_share"],
                                                                        abs=0.05)
    assert run.history.evals[-1]["val_replaced_share"] < 0.3


def test_bad_control_values_name_the_field():
    for field, value in (("replacements", "uniform"), ("rtd_positions", "some")):
        with pytest.raises(et.ConfigError, match=f"electra.{field}"):
            et.technique("electra", **{field: value})


def test_examples_show_the_replacements_and_the_verdicts(smoke):
    from effitrain.lab.electra import examples

    cfg, data = smoke
    run = et.train(small(cfg, 3), [et.technique("electra")], data=data, progress=False)
    df = examples(run.model, data, rows=2, tokens=20)
    assert len(df) == 2 and list(df.columns)[:2] == ["generator saw", "discriminator read"]
    for saw, read, verdict in df.itertuples(index=False):
        assert "▢" in saw  # ELECTRA's masking shows [MASK] at most predicted positions
        replaced = read.count("→")
        assert verdict == "none" or verdict.count("✓") + verdict.count("missed") <= replaced
        assert verdict.count("✓") + verdict.count("missed") == replaced
    with pytest.raises(ValueError, match="generator"):
        examples(BertForMLM(cfg.model, data.vocab_size), data)


def test_count_detector_finds_the_context_that_word_pairs_give_and_none_in_shuffled_text(smoke):
    """The discriminator's context line: on real text the bigram counts spot unigram replacements well
    above the constant guess; on the same tokens shuffled (no word-pair structure) they cannot."""
    from dataclasses import replace
    from types import SimpleNamespace

    from effitrain.config import ConfigError
    from effitrain.data import MaskedBatch
    from effitrain.lab.electra import count_detector

    _, data = smoke
    out = count_detector(data)
    assert out == count_detector(data)  # deterministic
    assert out["gap"] > 0.1 and out["accuracy"] > out["all_original_accuracy"] + 0.03
    assert abs(out["replaced_share"] - data.config.mask_prob) < 0.05  # a few samples equal the original
    assert math.isclose(out["constant_loss"] - out["loss"], out["gap"])

    def shuffled(ids: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        ids = ids.clone()
        real = ids >= len(SPECIAL_TOKENS)
        words = ids[real]
        ids[real] = words[torch.randperm(len(words), generator=g)]
        return ids

    g = torch.Generator().manual_seed(0)
    val = [unmask(b.input_ids, b.positions, b.labels) for b in data.val]
    noise = SimpleNamespace(config=data.config, unigram_counts=data.unigram_counts,
                            train=replace(data.train, ids=shuffled(data.train.ids, g)),
                            val=[MaskedBatch(shuffled(v, g), b.attention_mask, b.positions[:0], b.labels[:0])
                                 for v, b in zip(val, data.val)])
    flat = count_detector(noise)
    assert abs(flat["gap"]) < 0.02 < out["gap"] - 0.08
    with pytest.raises(ConfigError, match="mask_prob"):
        count_detector(data, mask_prob=1.5)
