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
