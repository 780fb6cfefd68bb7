"""Activation checkpointing (issue 33): the same curve, fewer saved activations, one more forward of the
checkpointed blocks in FLOPs, and a run the cache keeps."""
from __future__ import annotations

import pytest
import torch

import effitrain as et
from effitrain.model import BertForMLM
from effitrain.techniques.checkpointing import checkpointed_blocks
from effitrain.train import runcache
from effitrain.train.footprint import activation_formula, saved_activation_bytes
from effitrain.train.step import mlm_loss_inputs


def _cfg(smoke, steps=5, **kw):
    cfg, data = smoke
    return cfg.replace(budget=f"{steps}steps", evals=2, log_every=1, precision="fp32", **kw), data


def curve(run):
    return [r["train_loss"] for r in run.history.steps] + [r["val_loss"] for r in run.history.evals]


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_the_curve_is_the_plain_runs(smoke, dropout):
    cfg, data = _cfg(smoke, dropout=dropout)
    plain = runcache.cached_train(cfg, data=data, progress=False, cache=False)
    ckpt = runcache.cached_train(cfg, [et.technique("checkpointing")], data=data, progress=False, cache=False)
    assert curve(ckpt) == curve(plain)  # dropout: the recompute draws the same masks
    stats = ckpt.extra["techniques"]["checkpointing"]
    layers = cfg.model.layers
    assert stats["checkpointed_blocks"] == layers
    assert stats["recomputed_blocks"] >= 5 * layers  # every block, every step (and the FLOP-counting pass)


def test_a_checkpointed_block_keeps_only_its_input(smoke):
    cfg, data = _cfg(smoke)
    from effitrain.bench import synthetic_batches

    model = BertForMLM(cfg.model, data.vocab_size)
    batch = synthetic_batches(cfg, 1, data.vocab_size)[0]
    plain, parts, _ = saved_activation_bytes(model, lambda: mlm_loss_inputs(model, batch).loss)
    model.encoder.checkpointed = checkpointed_blocks(cfg.model.layers, 1)
    kept, kept_parts, loss = saved_activation_bytes(model, lambda: mlm_loss_inputs(model, batch).loss)
    B, T, H = cfg.run.batch_size, cfg.data.seq_len, cfg.model.hidden
    for i in range(1, cfg.model.layers):
        assert kept_parts[f"block {i}"] == 4 * B * T * H  # its input, nothing inside it
    assert parts["block 1"] == activation_formula(cfg, data.vocab_size)["block"]
    assert kept < plain and kept_parts["head"] == parts["head"]
    loss.backward()  # and the backward still runs, recomputing
    assert model.encoder.recomputed == cfg.model.layers


def test_flops_rise_by_the_blocks_forward_and_the_formula_follows(smoke):
    cfg, data = _cfg(smoke, steps=2)
    plain = runcache.cached_train(cfg, data=data, progress=False, cache=False)
    ckpt = runcache.cached_train(cfg, [et.technique("checkpointing")], data=data, progress=False, cache=False)
    p, c = plain.history.steps[-1], ckpt.history.steps[-1]
    assert 1.1 < c["flops"] / p["flops"] < 1.4  # one more forward of the blocks, not of the head
    assert c["flops"] / c["flops_analytic"] == pytest.approx(p["flops"] / p["flops_analytic"], rel=0.02)


def test_every_other_block_and_none():
    assert checkpointed_blocks(4, 1) == {0, 1, 2, 3}
    assert checkpointed_blocks(4, 2) == {0, 2}
    assert checkpointed_blocks(4, 0) == frozenset()


def test_a_checkpointed_run_is_cached_and_electras_encoders_are_both_checkpointed(smoke):
    assert runcache.why_not_cached([et.technique("checkpointing")], {}) is None
    cfg, data = _cfg(smoke, steps=2)
    run = runcache.cached_train(cfg, [et.technique("electra"), et.technique("checkpointing")], data=data,
                                progress=False, cache=False)
    assert run.status == "completed"
    assert run.extra["techniques"]["checkpointing"]["checkpointed_blocks"] >= 2 * 1  # generator and discriminator
