"""GroupBERT layers (model.groupbert): shapes, parameters by formula, padding, FLOPs, config errors, training."""
import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import effitrain as et
from effitrain.config import ConfigError, ModelConfig
from effitrain.data import PAD
from effitrain.model import BertForMLM, count_parameters, matmul_parameters
from effitrain.model.bert import (Block, GroupBlock, GroupedLinear, analytic_flops,
                                  groupbert_layer_matmul_parameters)
from effitrain.train.step import attention_recompute

V = 300


def test_groupbert_layer_is_conv_ffn_attention_ffn_with_the_shapes_of_the_paper():
    cfg = ModelConfig(preset="tiny", groupbert=True)  # H 128, F 512: conv groups 128 / 16 = 8, ffn groups 4
    model = BertForMLM(cfg, V)
    assert all(type(b) is GroupBlock for b in model.encoder.blocks)
    assert all(type(b) is Block for b in BertForMLM(ModelConfig(preset="tiny"), V).encoder.blocks)
    b = model.encoder.blocks[0]
    assert [n for n, _ in b.named_children()][:8] == ["ln_conv", "conv", "ln_ffn1", "ffn1", "ln1", "attn", "ln2", "ffn"]
    assert b.conv.inp.weight.shape == (256, 128)  # H → 2H, then the GLU halves it
    assert b.conv.conv.weight.shape == (128, 16, 7) and b.conv.conv.groups == 8  # 16 channels a group, kernel 7
    assert b.conv.out.weight.shape == (128, 128)
    for ffn in (b.ffn1, b.ffn):
        assert ffn.up.weight.shape == (512, 128)
        assert ffn.down.weight.shape == (4, 128, 32)  # 4 blocks of (F/4 → H/4): not a dense (H, F) with zeros
        assert ffn.out.weight.shape == (128, 128)
    x = torch.randn(2, 9, 128)
    assert b.conv(x).shape == b.ffn1(x).shape == b(x).shape == (2, 9, 128)


@pytest.mark.parametrize("norm, bias, position", [("post", True, "learned"), ("pre", False, "rotary"),
                                                  ("none", True, "learned")])
def test_parameter_count_equals_the_formula(norm, bias, position):
    cfg = ModelConfig(preset="tiny", groupbert=True, norm=norm, bias=bias, position=position, layers=3,
                      conv_kernel=5, conv_group_size=32, ffn_groups=8)
    H, Fn, L, k, gs, g, P = 128, 512, 3, 5, 32, 8, 512
    b = int(bias)
    ln = 0 if norm == "none" else H + b * H  # a LayerNorm: weight (+ bias)
    conv = ln + (2 * H * H + b * 2 * H) + (H * gs * k + b * H) + ln + (H * H + b * H)  # residual LN, in, conv, LN, out
    ffn = ln + (H * Fn + b * Fn) + (Fn * H // g + b * H) + (H * H + b * H)  # residual LN, up, grouped down, out
    attn = ln + (3 * H * H + b * 3 * H) + (H * H + b * H)
    layer = conv + 2 * ffn + attn
    embeddings = V * H + (P * H if position == "learned" else 0) + ln
    final = ln if norm == "pre" else 0
    head = (H * H + b * H) + (H + b * H) + V  # dense, its LayerNorm (kept for every norm), decoder bias (tied)
    assert count_parameters(BertForMLM(cfg, V)) == embeddings + L * layer + final + head
    # the matmul weights of the FLOP formula: the same shapes, without biases and norms
    assert matmul_parameters(cfg) == L * (4 * H * H + 2 * H * H + H * gs * k + H * H + 2 * (H * Fn + Fn * H // g + H * H))
    assert groupbert_layer_matmul_parameters(cfg) == 3 * H * H + H * gs * k + 2 * (H * Fn + Fn * H // g + H * H)


def test_grouped_linear_is_block_diagonal():
    torch.manual_seed(0)
    lin = GroupedLinear(12, 8, groups=4)
    torch.nn.init.normal_(lin.weight)
    torch.nn.init.normal_(lin.bias)
    dense = torch.block_diag(*lin.weight)  # (12, 8): block g maps input slice g to output slice g
    x = torch.randn(2, 5, 12)
    torch.testing.assert_close(lin(x), x @ dense + lin.bias)
    assert sum(p.numel() for p in lin.parameters()) == 12 * 8 // 4 + 8


@pytest.mark.parametrize("groups", [1, 4])
def test_the_flop_counter_counts_a_grouped_convolutions_backward_once_per_branch(groups):
    """torch's formula counts a grouped conv's weight gradient `groups` times over; effitrain.train.flops
    corrects it: each backward branch (input and weight gradient) does the forward's multiply-adds."""
    from effitrain.train.flops import count_flops

    conv = torch.nn.Conv1d(32, 32, 5, padding=2, groups=groups)
    x = torch.randn(3, 32, 10, requires_grad=True)
    forward = count_flops(lambda: conv(x))
    assert forward == 2 * 3 * 10 * 32 * (32 // groups) * 5
    assert count_flops(lambda: conv(x).sum().backward()) == 3 * forward
    x.requires_grad_(False)  # no input gradient: the weight branch alone
    assert count_flops(lambda: conv(x).sum().backward()) == 2 * forward


@pytest.mark.parametrize("norm, position", [("post", "learned"), ("pre", "rotary"), ("none", "alibi")])
def test_appended_padding_does_not_change_real_positions(norm, position):
    torch.manual_seed(0)
    model = BertForMLM(ModelConfig(preset="tiny", dropout=0.0, groupbert=True, norm=norm, position=position), V).eval()
    real = torch.randint(5, V, (1, 8))
    outputs = []
    for pad, filler in ((3, PAD), (12, 7)):  # more padding, other content behind the mask
        ids = torch.cat([real, torch.full((1, pad), filler)], dim=1)
        mask = torch.cat([torch.ones(1, 8, dtype=torch.bool), torch.zeros(1, pad, dtype=torch.bool)], dim=1)
        outputs.append(model.encoder(ids, mask)[0, :8])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    # the masking is what keeps them apart: without it the convolution reads the padded neighbours
    conv = model.encoder.blocks[0].conv
    x = torch.randn(1, 12, 128)
    keep = torch.ones(1, 12, dtype=torch.bool)
    keep[0, 8:] = False
    assert not torch.allclose(conv(x, keep)[0, :8], conv(x)[0, :8], atol=1e-4)
    x2 = x.clone()
    x2[0, 8:] = 100.0
    torch.testing.assert_close(conv(x, keep)[0, :8], conv(x2, keep)[0, :8])


@pytest.mark.parametrize("attention", ["sdpa", "math"])
def test_counted_flops_of_one_step_equal_the_formula(attention):
    cfg = et.profile_config("smoke").replace(groupbert=True, attention=attention)
    recompute = attention_recompute(cfg, torch.device("cpu"))
    assert recompute is (attention == "sdpa")
    torch.manual_seed(0)
    model = BertForMLM(cfg.model, V)
    ids, positions = torch.randint(5, V, (2, 32)), torch.tensor([1, 5, 9, 40, 50])
    with FlopCounterMode(display=False) as counter:
        model(ids, positions, torch.ones(2, 32, dtype=torch.bool)).sum().backward()
    assert counter.get_total_flops() == pytest.approx(analytic_flops(cfg.model, V, 2, 32, 5, recompute), rel=1e-9)
    # the conv module and grouped FFNs are counted: the plain layer's formula would be far off
    plain = analytic_flops(dataclasses.replace(cfg.model, groupbert=False), V, 2, 32, 5, recompute)
    assert counter.get_total_flops() > 1.2 * plain


def test_measured_flops_match_analytic_in_training(smoke):
    # as tests/test_model.py::test_math_attention_measured_flops_match_analytic, for GroupBERT layers
    cfg, data = smoke
    s = et.train(cfg.replace(groupbert=True, budget="3steps", evals=2), data=data, progress=False).summary()
    assert s["flops_measured"] > 0
    assert abs(s["flops_measured"] / s["flops_analytic"] - 1) < 0.03, (s["flops_measured"], s["flops_analytic"])


@pytest.mark.parametrize("kw, words", [
    (dict(groupbert="yes"), r"model\.groupbert must be true or false"),
    (dict(groupbert=True, conv_kernel=4), r"model\.conv_kernel must be odd"),
    (dict(groupbert=True, conv_kernel=0), r"model\.conv_kernel must be a positive integer"),
    (dict(groupbert=True, conv_group_size=24), r"model\.conv_group_size must divide model\.hidden"),
    (dict(groupbert=True, conv_group_size=-16), r"model\.conv_group_size must be a positive integer"),
    (dict(groupbert=True, ffn_groups=3), r"model\.ffn_groups must divide model\.ffn and model\.hidden"),
    (dict(groupbert=True, ffn_groups=2.0), r"model\.ffn_groups must be a positive integer"),
    (dict(groupbert=True, ffn_kind="glu"), r"model\.groupbert needs model\.ffn_kind 'gelu'"),
])
def test_bad_groupbert_fields_are_one_line_config_errors(kw, words):
    with pytest.raises(ConfigError, match=words) as e:
        ModelConfig(preset="tiny", **kw)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=words):
        et.profile_config("smoke").replace(**kw)  # flat names through Config.replace


def test_group_sizes_are_only_checked_when_groupbert_is_on():
    ModelConfig(preset="tiny", hidden=120, heads=8, conv_group_size=16, ffn_groups=7)  # plain layers: not used
    assert ModelConfig(preset="base", groupbert=True).hidden // 16 == 48


def test_groupbert_smoke_run_trains(smoke):
    cfg, data = smoke
    run = et.train(cfg.replace(budget="20steps", groupbert=True, evals=1), data=data, progress=False)
    assert run.status == "completed", run.message
    assert isinstance(run.model.encoder.blocks[0], GroupBlock)
    losses = [row["train_loss"] for row in run.history.steps]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    assert run.history.evals[-1]["val_loss"] < run.history.evals[0]["val_loss"] - 0.5
    again = et.Config.from_dict(run.config.to_dict())  # the fields travel through the run file's dict
    assert again.model.groupbert is True and again.model.conv_kernel == 7
