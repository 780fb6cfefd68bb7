"""Where a step's bytes go (issue 33): the saved-tensor measurement against the formula, and the
weights, gradients and AdamW state counted from the tensors themselves."""
from __future__ import annotations

import pytest
import torch

import effitrain as et
from effitrain.model import count_parameters, BertForMLM
from effitrain.train.footprint import FORMULA_TOLERANCE, activation_formula, measure_footprint, saved_activation_bytes

SHAPES = [dict(batch_size=4, seq_len=32, hidden=64, heads=2, ffn=256, layers=2),
          dict(batch_size=8, seq_len=64, hidden=128, heads=4, ffn=512, layers=3)]


def _cfg(**kw):
    return et.profile_config("smoke", precision="fp32", vocab_size=512, **kw)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", [{}, {"ffn_kind": "glu"}, {"attention": "math"}, {"norm": "post"},
                                     {"norm": "none"}, {"position": "learned"}, {"sparse_head": False}])
def test_the_measured_activations_are_the_formulas(shape, variant):
    cfg = _cfg(**shape, **variant)
    fp = measure_footprint(cfg)
    want = activation_formula(cfg)
    blocks = [fp.by_part[f"block {i}"] for i in range(cfg.model.layers)]
    assert blocks[1:] == [want["block"]] * (cfg.model.layers - 1)  # to the byte
    assert blocks[0] == want["block"] + want["rotary tables"]  # the tables every block reads are saved once
    for part in ("embeddings", "head", "loss"):
        assert fp.by_part[part] == pytest.approx(want[part], rel=FORMULA_TOLERANCE)
    assert fp.activations == pytest.approx(want["total"], rel=FORMULA_TOLERANCE)


def test_weights_gradients_and_adamw_state_are_counted_from_the_tensors():
    cfg = _cfg(**SHAPES[0])
    fp = measure_footprint(cfg)
    model = BertForMLM(cfg.model, cfg.data.vocab_size)
    n, tensors = count_parameters(model), len(list(model.parameters()))
    assert fp.parameters == 4 * n and fp.gradients == 4 * n
    assert fp.optimizer == 8 * n + 4 * tensors  # AdamW: two fp32 moments per weight, a step counter per tensor
    assert fp.total == fp.parameters + fp.gradients + fp.optimizer + fp.activations


def test_activations_scale_with_the_micro_batch_and_weights_are_never_counted():
    small, large = (measure_footprint(_cfg(**{**SHAPES[0], "batch_size": b})) for b in (4, 8))
    assert large.by_part["block 1"] == 2 * small.by_part["block 1"]
    model = torch.nn.Linear(16, 16)
    x = torch.randn(3, 16)
    saved, parts, out = saved_activation_bytes(model, lambda: model(x).sum())
    assert saved == x.untyped_storage().nbytes() and parts == {"loss": saved}  # the input, not the weight


def test_the_formula_says_what_it_does_not_cover():
    with pytest.raises(ValueError, match="fp32 without dropout; not model.dropout > 0, run.precision='bf16'"):
        activation_formula(_cfg(dropout=0.1).replace(precision="bf16"))
