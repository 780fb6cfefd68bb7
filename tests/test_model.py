import pytest
import torch

from effitrain.config import ModelConfig
from effitrain.data import PAD
from effitrain.model import BertForClassification, BertForMLM, analytic_flops, count_parameters, matmul_parameters


@pytest.mark.parametrize("preset, low, high", [("tiny", 1e6, 2e6), ("mini", 3e6, 8e6), ("base", 80e6, 120e6)])
def test_preset_sizes(preset, low, high):
    model = BertForMLM(ModelConfig(preset=preset), 8192)
    assert low < count_parameters(model) < high


def test_base_matches_bert_base_block_size():
    # 12 layers × (4·768² + 2·768·3072) = 84.9 M weights in the blocks, as BERT-base
    assert matmul_parameters(ModelConfig(preset="base")) == 12 * (4 * 768 * 768 + 2 * 768 * 3072)


@pytest.mark.parametrize("kw", [dict(norm="post"), dict(norm="pre"), dict(ffn_kind="glu"), dict(bias=False),
                                dict(tie_embeddings=False), dict(dropout=0.2)])
def test_variants_give_sparse_logits(kw):
    torch.manual_seed(0)
    model = BertForMLM(ModelConfig(preset="tiny", **kw), 512)
    ids = torch.randint(5, 512, (3, 16))
    positions = torch.tensor([1, 5, 20, 47])
    logits = model(ids, positions)
    assert logits.shape == (4, 512)
    logits.sum().backward()
    assert model.encoder.tok.weight.grad is not None
    assert (model.head.decoder.weight is model.encoder.tok.weight) == kw.get("tie_embeddings", True)


def test_glu_keeps_parameter_count_close():
    gelu = count_parameters(BertForMLM(ModelConfig(preset="mini"), 1000))
    glu = count_parameters(BertForMLM(ModelConfig(preset="mini", ffn_kind="glu"), 1000))
    assert abs(glu - gelu) / gelu < 0.01


def test_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    model = BertForMLM(ModelConfig(preset="tiny", dropout=0.0), 300).eval()
    ids = torch.randint(5, 300, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 8:] = False
    a, b = ids.clone(), ids.clone()
    a[0, 8:], b[0, 8:] = PAD, 7  # different content behind the mask
    h_a = model.encoder(a, mask)[0, :8]
    h_b = model.encoder(b, mask)[0, :8]
    torch.testing.assert_close(h_a, h_b)


def test_classifier_on_pretrained_encoder_shares_nothing_by_accident():
    mlm = BertForMLM(ModelConfig(preset="tiny"), 300)
    clf = BertForClassification(mlm.cfg, 300, 4, mlm.encoder)
    out = clf(torch.randint(5, 300, (2, 10)))
    assert out.shape == (2, 4)


def test_analytic_flops_scale():
    cfg = ModelConfig(preset="tiny")
    one = analytic_flops(cfg, 1000, 1, 64, 10)
    two = analytic_flops(cfg, 1000, 2, 64, 20)
    assert two == pytest.approx(2 * one)


# -- position encodings ------------------------------------------------------------------------
from effitrain.config import ConfigError  # noqa: E402
from effitrain.model.bert import alibi_bias, alibi_slopes, apply_rotary, rotary_tables  # noqa: E402


@pytest.mark.parametrize("position", ["learned", "rotary", "alibi"])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_positions_give_sparse_logits_and_gradients(position, norm):
    torch.manual_seed(0)
    model = BertForMLM(ModelConfig(preset="tiny", position=position, norm=norm), 400)
    ids = torch.randint(5, 400, (3, 16))
    logits = model(ids, torch.tensor([0, 7, 30, 47]))
    assert logits.shape == (4, 400)
    logits.sum().backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert (model.encoder.pos is not None) == (position == "learned")


def test_learned_is_the_previous_encoder():
    # position="learned" is the default and computes exactly what the encoder always did:
    # LN(tok + pos) → blocks (bool padding mask, no rotary) → final LN
    torch.manual_seed(0)
    model = BertForMLM(ModelConfig(preset="tiny", dropout=0.0), 300).eval()
    assert ModelConfig(preset="tiny").position == "learned"
    enc = model.encoder
    ids = torch.randint(5, 300, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    x = enc.ln_emb(enc.tok(ids) + enc.pos(torch.arange(12)))
    for block in enc.blocks:
        x = block(x, mask[:, None, None, :])
    assert torch.equal(enc(ids, mask), enc.ln_final(x))
    torch.manual_seed(0)
    again = BertForMLM(ModelConfig(preset="tiny", dropout=0.0, position="learned"), 300)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("position", ["rotary", "alibi"])
def test_rotary_and_alibi_change_the_output(position):
    torch.manual_seed(0)
    learned = BertForMLM(ModelConfig(preset="tiny", dropout=0.0), 300).eval()
    torch.manual_seed(0)
    other = BertForMLM(ModelConfig(preset="tiny", dropout=0.0, position=position), 300).eval()
    other.load_state_dict({k: v for k, v in learned.state_dict().items() if k != "encoder.pos.weight"})
    learned.encoder.pos.weight.data.zero_()  # the same weights, no position information in `learned`
    ids = torch.randint(5, 300, (2, 12))
    assert not torch.allclose(learned.encoder(ids), other.encoder(ids), atol=1e-4)
    # with no position information the encoder ignores order; rotary and alibi do not
    perm = torch.randperm(12)
    torch.testing.assert_close(learned.encoder(ids[:, perm]), learned.encoder(ids)[:, perm])
    assert not torch.allclose(other.encoder(ids[:, perm]), other.encoder(ids)[:, perm], atol=1e-4)


def test_rotary_scores_depend_only_on_the_offset():
    torch.manual_seed(0)
    cos, sin = rotary_tables(40, 8)
    assert cos.shape == sin.shape == (40, 8)
    q, k = torch.randn(8), torch.randn(8)
    def score(i, j):
        qi = apply_rotary(q.expand(1, 1, 40, 8), cos, sin)[0, 0, i]
        kj = apply_rotary(k.expand(1, 1, 40, 8), cos, sin)[0, 0, j]
        return float(qi @ kj)
    assert score(3, 1) == pytest.approx(score(30, 28), abs=1e-4)
    assert score(5, 5) == pytest.approx(float(q @ k), abs=1e-4)  # no offset, no rotation
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
    x = torch.randn(2, 3, 40, 8)  # a rotation keeps norms
    torch.testing.assert_close(apply_rotary(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_alibi_bias_shapes_and_slopes():
    assert torch.allclose(alibi_slopes(4), torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]))
    assert len(alibi_slopes(6)) == 6 and (alibi_slopes(6) > 0).all()
    bias = alibi_bias(2, 5)
    assert bias.shape == (2, 5, 5)
    assert torch.equal(bias, bias.transpose(1, 2))  # symmetric: an encoder looks both ways
    assert bias[0, 0, 3] == -3 / 16 and bias[1, 4, 0] == -4 / 256 and (bias.diagonal(dim1=1, dim2=2) == 0).all()


def test_alibi_matches_attention_written_out():
    torch.manual_seed(0)
    model = BertForMLM(ModelConfig(preset="tiny", dropout=0.0, position="alibi", layers=1), 300).eval()
    attn, x = model.encoder.blocks[0].attn, torch.randn(1, 6, 128)
    q, k, v = attn.qkv(x).view(1, 6, 3, 2, 64).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 8 + alibi_bias(2, 6), dim=-1)
    expected = attn.out((weights @ v).transpose(1, 2).reshape(1, 6, 128))
    torch.testing.assert_close(attn(x, alibi_bias(2, 6)[None]), expected)


@pytest.mark.parametrize("position", ["rotary", "alibi"])
def test_padding_keeps_real_positions_with(position):
    torch.manual_seed(0)
    model = BertForMLM(ModelConfig(preset="tiny", dropout=0.0, position=position), 300).eval()
    ids = torch.randint(5, 300, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 8:] = False
    a, b = ids.clone(), ids.clone()
    a[0, 8:], b[0, 8:] = PAD, 7
    torch.testing.assert_close(model.encoder(a, mask)[0, :8], model.encoder(b, mask)[0, :8])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the float mask follows q's dtype
        assert model.encoder(a, mask).isfinite().all()


@pytest.mark.parametrize("kw, words", [(dict(position="sinusoidal"), "model.position must be one of"),
                                       (dict(position="rotary", hidden=120, heads=8), "even head size")])
def test_bad_position_is_a_one_line_config_error(kw, words):
    with pytest.raises(ConfigError, match=words) as e:
        ModelConfig(preset="tiny", **kw)
    assert "\n" not in str(e.value)


# -- attention written out ("math") vs SDPA ----------------------------------------------------------
import effitrain as et  # noqa: E402


def _padded_batch(vocab: int = 300):
    ids = torch.randint(5, vocab, (3, 16))
    mask = torch.ones(3, 16, dtype=torch.bool)
    mask[1, 11:], mask[2, 6:] = False, False  # two padded rows
    ids[~mask] = PAD
    return ids, mask, torch.tensor([1, 5, 20, 23, 33, 40])


@pytest.mark.parametrize("position", ["learned", "rotary", "alibi"])  # alibi: a float mask with −inf at padding
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_math_attention_equals_sdpa(position, norm):
    torch.manual_seed(0)
    sdpa = BertForMLM(ModelConfig(preset="tiny", dropout=0.0, position=position, norm=norm), 300)
    math_ = BertForMLM(ModelConfig(preset="tiny", dropout=0.0, position=position, norm=norm, attention="math"), 300)
    math_.load_state_dict(sdpa.state_dict())
    ids, mask, positions = _padded_batch()
    out_sdpa, out_math = sdpa(ids, positions, mask), math_(ids, positions, mask)
    torch.testing.assert_close(out_math, out_sdpa, rtol=1e-5, atol=1e-5)
    out_sdpa.square().mean().backward()
    out_math.square().mean().backward()
    for (name, p), q in zip(sdpa.named_parameters(), math_.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_math_attention_kernel_matches_sdpa_with_both_masks():
    from effitrain.model.bert import math_attention
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8) for _ in range(3))
    keep = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    keep[1, ..., 4:] = False
    bias = torch.randn(1, 3, 7, 7)
    for mask in (None, keep, bias, bias.masked_fill(~keep, float("-inf"))):
        torch.testing.assert_close(math_attention(q, k, v, mask),
                                   torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # softmax in fp32, cast back to v's dtype
        assert math_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), keep).dtype == torch.bfloat16


def test_math_attention_dropout_drops_probabilities_in_training_only():
    torch.manual_seed(0)
    model = BertForMLM(ModelConfig(preset="tiny", dropout=0.5, attention="math", layers=1), 300)
    ids, mask, positions = _padded_batch()
    model.train()
    assert not torch.equal(model(ids, positions, mask), model(ids, positions, mask))
    model.eval()
    assert torch.equal(model(ids, positions, mask), model(ids, positions, mask))


def test_math_attention_measured_flops_match_analytic(smoke):
    # as tests/test_trainer.py::test_measured_flops_match_analytic: no recompute in the math path's backward
    cfg, data = smoke
    cfg = cfg.replace(attention="math", budget="3steps", evals=2)
    from effitrain.train.step import attention_recompute
    assert attention_recompute(cfg, torch.device("cpu")) is False
    assert attention_recompute(cfg.replace(attention="sdpa"), torch.device("cpu")) is True
    s = et.train(cfg, data=data, progress=False).summary()
    assert s["flops_measured"] > 0
    assert abs(s["flops_measured"] / s["flops_analytic"] - 1) < 0.03, (s["flops_measured"], s["flops_analytic"])


def test_bad_attention_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"model\.attention must be one of sdpa, math; got 'flash'") as e:
        ModelConfig(preset="tiny", attention="flash")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"model\.attention"):
        et.profile_config("smoke").replace(attention="eager")


def test_math_attention_trains_the_same_curve_as_sdpa(smoke):
    cfg, data = smoke
    runs = {a: et.train(cfg.replace(budget="5steps", evals=1, attention=a, seed=3), data=data, progress=False)
            for a in ("sdpa", "math")}
    curves = {a: [r["train_loss"] for r in run.history.steps] for a, run in runs.items()}
    assert len(curves["math"]) == 5
    assert curves["math"] == pytest.approx(curves["sdpa"], abs=1e-3)
    from effitrain.model.bert import math_attention
    assert runs["math"].model.encoder.blocks[0].attn.kernel is math_attention  # really the written-out path
    assert runs["sdpa"].model.encoder.blocks[0].attn.kernel is torch.nn.functional.scaled_dot_product_attention
