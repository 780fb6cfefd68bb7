"""model.norm "none" and the standardization_loss technique (Collins, Ballé & Shlens 2019, adapted)."""
import contextlib

import pytest
import torch

import effitrain as et
from effitrain.config import ConfigError, ModelConfig
from effitrain.model import BertForMLM, count_parameters
from effitrain.techniques.standardization import (residual_scale, residual_states, residual_stream,
                                                   standardization_penalty, token_standardization)
from effitrain.train.step import capture_hidden_states
from effitrain.train.trainer import evaluate


def standardized(shape) -> torch.Tensor:
    h = torch.randn(*shape)
    return (h - h.mean(-1, keepdim=True)) / h.std(-1, unbiased=False, keepdim=True)


def test_penalty_is_zero_for_standardized_activations_and_positive_otherwise():
    torch.manual_seed(0)
    h = standardized((3, 7, 64))
    assert float(standardization_penalty([h, h.clone()])) < 1e-6
    # μ = 0.5, σ = 2 for every token: 0.25 + (2 − 1)² = 1.25 per state, summed over the states
    assert float(standardization_penalty([2 * h + 0.5, h])) == pytest.approx(1.25, rel=1e-4)
    assert float(standardization_penalty([2 * h + 0.5] * 3)) == pytest.approx(3.75, rel=1e-4)
    assert token_standardization(0.1 * h).shape == (3, 7)
    assert torch.allclose(token_standardization(0.1 * h), torch.tensor(0.81), atol=1e-4)  # (0.1 − 1)²
    # only real tokens count: whatever sits at padded positions changes nothing
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[1, 4:] = keep[2, 2:] = False
    noisy = h.clone()
    noisy[~keep] = 50.0
    assert float(standardization_penalty([noisy], keep)) < 1e-6
    assert float(standardization_penalty([noisy])) > 100


def test_residual_states_are_every_block_input_and_the_encoder_output():
    torch.manual_seed(0)
    model = BertForMLM(ModelConfig(preset="tiny", dropout=0.0, norm="none", layers=3), 300)
    ids = torch.randint(5, 300, (2, 10))
    seen = []
    handles = [b.register_forward_pre_hook(lambda _m, args: seen.append(args[0])) for b in model.encoder.blocks]
    handles.append(model.encoder.register_forward_hook(lambda _m, _args, out: seen.append(out)))
    with capture_hidden_states(model) as outputs:
        model(ids, torch.arange(4))
    for h in handles:
        h.remove()
    states = residual_states(model, ids, outputs)
    assert len(states) == len(seen) == 4  # 3 block inputs, then what the MLM head reads
    for ours, real in zip(states, seen):
        torch.testing.assert_close(ours, real)


@pytest.mark.parametrize("position", ["rotary", "learned"])
@torch.no_grad()
def test_norm_none_starts_its_residual_stream_at_unit_scale_as_layernorm_would(position):
    """No LayerNorm after the embeddings: a constant 1 / init_std brings the token vectors to about unit
    scale instead (√2 with learned positions added), with no parameter of its own."""
    torch.manual_seed(0)
    ids = torch.randint(5, 300, (4, 32))
    free = BertForMLM(ModelConfig(preset="tiny", dropout=0.0, norm="none", position=position), 300)
    pre = BertForMLM(ModelConfig(preset="tiny", dropout=0.0, norm="pre", position=position), 300)
    vectors = free.encoder.tok(ids) + (free.encoder.pos(torch.arange(32)) if position == "learned" else 0)
    torch.testing.assert_close(free.encoder.embed(ids), vectors / free.cfg.init_std)
    assert float(free.encoder.embed(ids).std(-1).mean()) == pytest.approx(2 ** 0.5 if position == "learned" else 1.0,
                                                                          rel=0.1)
    norms = sum(p.numel() for m in pre.encoder.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters())
    assert count_parameters(free) == count_parameters(pre) - norms


def test_norm_none_has_no_layernorm_in_the_encoder():
    model = BertForMLM(ModelConfig(preset="tiny", norm="none"), 300)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.encoder.modules())
    assert isinstance(model.head.ln, torch.nn.LayerNorm)  # the MLM head keeps its own
    grouped = BertForMLM(ModelConfig(preset="tiny", norm="none", groupbert=True), 300)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in grouped.encoder.modules())
    with pytest.raises(ConfigError, match=r"model\.norm must be one of post, pre, none; got 'rms'"):
        ModelConfig(norm="rms")


@pytest.fixture(scope="module")
def runs(smoke):
    """norm "none" runs of 20 steps: without the technique, with λ = 0, with the default λ and with λ = 1."""
    cfg, data = smoke
    cfg = cfg.replace(norm="none", budget="20steps", evals=2)
    out = {"baseline": et.train(cfg, data=data, progress=False)}
    for label, weight in (("zero", 0.0), ("default", None), ("strong", 1.0)):
        kw = {} if weight is None else {"weight": weight}
        out[label] = et.train(cfg, [et.technique("standardization_loss", **kw)], data=data, progress=False)
    return out


def curve(run):
    return [r["train_loss"] for r in run.history.steps] + [r["val_loss"] for r in run.history.evals]


def test_norm_none_model_trains(runs):
    losses = [r["train_loss"] for r in runs["baseline"].history.steps]
    assert runs["baseline"].status == "completed" and len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses


def test_zero_weight_is_the_baseline_exactly(runs):
    assert curve(runs["zero"]) == curve(runs["baseline"])
    assert runs["zero"].summary()["flops_measured"] == runs["baseline"].summary()["flops_measured"]
    assert "term_std" not in runs["zero"].history.steps[0]


def test_the_term_is_logged_added_to_the_training_loss_and_pulls_towards_standardized(runs):
    base, default, strong = runs["baseline"].history.steps, runs["default"].history.steps, runs["strong"].history.steps
    assert all(r["term_std"] > 0 for r in default)
    # step 1 starts from the same weights and batch: the losses differ by exactly λ·S
    assert default[0]["train_loss"] - base[0]["train_loss"] == pytest.approx(1e-2 * default[0]["term_std"], rel=1e-3)
    assert strong[0]["train_loss"] - base[0]["train_loss"] == pytest.approx(1.0 * strong[0]["term_std"], rel=1e-3)
    assert strong[-1]["term_std"] < default[-1]["term_std"]
    assert runs["default"].extra["techniques"]["standardization_loss"]["std_batches"] == 20


def stream_penalty(model, data) -> float:
    """S of `model`'s residual stream on the first validation batch."""
    batch = data.val[0]
    return float(standardization_penalty(residual_stream(model, batch), batch.attention_mask))


def test_the_stronger_the_weight_the_more_standardised_the_trained_stream(runs, smoke):
    _, data = smoke
    none, default, strong = (stream_penalty(runs[k].model, data) for k in ("baseline", "default", "strong"))
    assert strong < 0.5 * default and default < 0.8 * none, (none, default, strong)


def test_at_a_high_learning_rate_the_loss_stops_the_stream_blowing_up(smoke):
    """lr 1e-2, 20 steps, no LayerNorm: without the loss the residual stream grows by orders of
    magnitude (S ~ 1e7 measured); with the default λ it stays within a few units of standardised."""
    cfg, data = smoke
    cfg = cfg.replace(norm="none", lr=1e-2, budget="20steps", evals=1)
    free = stream_penalty(et.train(cfg, data=data, progress=False).model, data)
    held = stream_penalty(et.train(cfg, [et.technique("standardization_loss")], data=data, progress=False).model, data)
    assert free > 1e3 and held < 20, (free, held)


def test_residual_scale_reads_each_boundary_over_real_tokens(smoke):
    _, data = smoke
    torch.manual_seed(0)
    model = BertForMLM(ModelConfig(preset="tiny", dropout=0.0, norm="none", layers=3, position="rotary"),
                       data.vocab_size).train()
    batch = data.val[0]
    scale = residual_scale(model, batch)
    assert len(scale) == 4 and model.training  # L + 1 boundaries; the model's mode is left as it was
    assert scale[0] == pytest.approx(1.0, rel=0.1)  # the scaled embeddings
    with torch.no_grad(), capture_hidden_states(model) as outputs:
        model(batch.input_ids, batch.positions, batch.attention_mask)
    last = outputs[-1].std(-1, unbiased=False)[batch.attention_mask]
    assert scale[-1] == pytest.approx(float(last.mean()), rel=1e-5)


@pytest.mark.parametrize("label", ["default", "strong"])
def test_nothing_at_evaluation(runs, smoke, label):
    """The evals of a run with the technique are the plain MLM evaluation of its model: same keys
    as the baseline's rows, same values as evaluating the model with no technique at all."""
    _, data = smoke
    run = runs[label]
    assert [set(r) for r in run.history.evals] == [set(r) for r in runs["baseline"].history.evals]
    assert not any(k.startswith("term_") or "std" in k for r in run.history.evals for k in r)
    metrics = evaluate(run.model, data.val, torch.device("cpu"), contextlib.nullcontext)
    last = run.history.evals[-1]
    assert metrics["val_loss"] == pytest.approx(last["val_loss"], rel=1e-6)
    assert metrics["val_accuracy"] == pytest.approx(last["val_accuracy"], rel=1e-6)
    assert last["val_loss"] != runs["baseline"].history.evals[-1]["val_loss"]  # it did train differently


@pytest.mark.parametrize("weight", [-0.1, 21.0, float("inf"), float("nan"), "0.1"])
def test_bad_weight_is_refused_naming_the_field(weight):
    with pytest.raises(ConfigError, match=r"^standardization_loss\.weight must be ") as e:
        et.technique("standardization_loss", weight=weight)
    assert "\n" not in str(e.value)


def test_refused_with_electra_naming_both(smoke):
    cfg, data = smoke
    with pytest.raises(ConfigError, match=r"standardization_loss and electra cannot train together") as e:
        et.Trainer(cfg.replace(budget="2steps"), [et.technique("standardization_loss"), et.technique("electra")],
                   data=data, progress=False)
    assert "\n" not in str(e.value)
