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
