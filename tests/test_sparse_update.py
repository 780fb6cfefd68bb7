"""Which parameters fine-tuning updates (effitrain.train.sparse_update): full, LoRA through peft, bias-only
(BitFit), the last k blocks; on a tiny encoder and a synthetic two-class task."""
import sys

import pytest
import torch

from effitrain.config import ModelConfig
from effitrain.data.downstream import ClassificationTask
from effitrain.model import BertForClassification
from effitrain.train.finetune import evaluate_downstream, finetune, random_init, train_classifier
from effitrain.train.sparse_update import HEAD, UPDATES, apply_update, bias_names

CFG = ModelConfig(hidden=64, layers=3, heads=2, ffn=128, norm="pre")
VOCAB = 60
RUN = {"steps": 6, "batch_size": 8, "lr": 1e-2, "seed": 0}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest)


@pytest.fixture(scope="module")
def pretrained():
    """A stand-in for a pre-trained BertForMLM: which weights move does not depend on what they hold."""
    return random_init((CFG, VOCAB), seed=0)


@pytest.fixture(scope="module")
def task():
    """Token 7 or 8 at position 3 decides the class; the rest is noise, PAD after position 12."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, VOCAB, (96, 16), generator=g)
    y = torch.arange(96) % 2
    ids[:, 0], ids[:, 3], ids[:, 12:] = 2, 7 + y, 0
    return ClassificationTask("synthetic", ["a", "b"], ids[:64], y[:64], ids[64:], y[64:], [""] * 64, [""] * 32)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _head(model) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.split(".")[0] in HEAD}


def test_lora_through_peft_trains_the_adapters_and_the_head_only(pretrained, task):
    before = _state(pretrained.encoder)
    start, _ = train_classifier(pretrained, task, **{**RUN, "steps": 0}, update="lora", rank=4)
    clf, _ = train_classifier(pretrained, task, **RUN, update="lora", rank=4)
    assert type(clf.encoder.blocks[0].attn.qkv).__module__.startswith("peft.")  # peft's layer, not ours
    lora = {n for n, _ in clf.named_parameters() if ".lora_" in n}
    adapted = {n.split(".lora_")[0] for n in lora}
    assert adapted == {f"encoder.blocks.{i}.{m}" for i in range(CFG.layers)
                       for m in ("attn.qkv", "attn.out", "ffn.up", "ffn.down")}
    assert {n for n, p in clf.named_parameters() if p.requires_grad} == lora | _head(clf)
    params = dict(clf.named_parameters())
    assert finetune(pretrained, task, **RUN, update="lora", rank=4).trainable_params == \
        sum(params[n].numel() for n in lora | _head(clf))
    # every original encoder weight is bit-identical to the pre-trained one; the pre-trained model is untouched
    for name, value in clf.encoder.state_dict().items():
        if ".lora_" not in name:
            assert torch.equal(value, before[name.replace(".base_layer", "")]), name
    assert all(torch.equal(v, before[k]) for k, v in pretrained.encoder.state_dict().items())
    # B starts at 0 (the adapted model is the pre-trained one); training moved every A and B, and the head
    initial = dict(start.named_parameters())
    assert all(not initial[n].any() for n in lora if ".lora_B." in n)
    assert all(not torch.equal(params[n], initial[n]) for n in lora | _head(clf))
    full, _ = train_classifier(pretrained, task, **{**RUN, "steps": 0})
    x = task.test_ids[:4]
    with torch.no_grad():
        assert torch.allclose(start.eval()(x, x != 0), full.eval()(x, x != 0), atol=1e-6)


def test_bias_only_moves_the_biases_and_nothing_else(pretrained, task):
    before = _state(pretrained.encoder)
    clf, _ = train_classifier(pretrained, task, **RUN, update="bias")
    biases = bias_names(clf.encoder)
    assert "blocks.0.ln1.bias" in biases and "blocks.0.ln1.weight" not in biases  # LayerNorm β trains, γ does not
    assert {n for n, p in clf.named_parameters() if p.requires_grad} == {f"encoder.{b}" for b in biases} | _head(clf)
    for name, value in clf.encoder.state_dict().items():
        assert torch.equal(value, before[name]) != (name in biases), name  # biases moved, the rest did not


def test_last_k_leaves_the_blocks_below_unchanged(pretrained, task):
    before = _state(pretrained.encoder)
    clf, _ = train_classifier(pretrained, task, **RUN, update="last", last=2)
    for name, value in clf.encoder.state_dict().items():
        moved = name.startswith(("blocks.1.", "blocks.2.", "ln_final."))
        assert torch.equal(value, before[name]) != moved, name
    assert all(p.requires_grad == n.startswith(("encoder.blocks.1.", "encoder.blocks.2.", "encoder.ln_final.", *HEAD))
               for n, p in clf.named_parameters())


def test_full_is_the_default_bit_for_bit(pretrained, task):
    a = finetune(pretrained, task, **RUN)
    b = finetune(pretrained, task, **RUN, update="full", rank=3, last=2)  # rank and last are not used by full
    assert (a.accuracy, a.train_accuracy, a.trainable_params, a.optimizer_bytes) == \
        (b.accuracy, b.train_accuracy, b.trainable_params, b.optimizer_bytes)
    ma, _ = train_classifier(pretrained, task, **RUN)
    mb, _ = train_classifier(pretrained, task, **RUN, update="full")
    assert all(torch.equal(v, mb.state_dict()[k]) for k, v in ma.state_dict().items())
    n, tensors = sum(p.numel() for p in ma.parameters()), len(list(ma.parameters()))
    assert a.trainable_params == n and 8 * n <= a.optimizer_bytes <= 8 * n + 8 * tensors  # 2 moments + a step


def test_trainable_fraction_and_optimizer_state_shrink(pretrained, task):
    def info(update, **kw):
        torch.manual_seed(0)
        return apply_update(BertForClassification(CFG, VOCAB, 2), update, **kw)

    full, lora, bias, last = (info(u) for u in UPDATES)
    assert full.fraction == 1 and full.trainable == full.total
    assert max(lora.fraction, bias.fraction) < last.fraction < full.fraction
    r = 8  # the default rank; r·(d_in + d_out) per adapted matrix: qkv, out, up, down
    assert lora.total == full.total + CFG.layers * r * ((64 + 192) + (64 + 64) + (64 + 128) + (128 + 64))
    assert "lora:" in str(lora) and len(lora.trainable_names) == 4 * CFG.layers * 2 + 4
    small = {u: finetune(pretrained, task, **{**RUN, "steps": 2}, update=u) for u in UPDATES}
    assert small["lora"].trainable_params == lora.trainable and small["bias"].trainable_params == bias.trainable
    assert small["lora"].optimizer_bytes < small["last"].optimizer_bytes < small["full"].optimizer_bytes
    assert small["bias"].optimizer_bytes < small["full"].optimizer_bytes


def test_evaluate_downstream_passes_the_update_through(pretrained, task):
    r = evaluate_downstream(pretrained, task, method="finetune", seeds=(0,), steps=3, batch_size=8, lr=1e-3,
                            update="lora", rank=4, progress=False)
    assert r.settings["update"] == "lora" and r.settings["rank"] == 4
    assert r.per_seed == [finetune(pretrained, task, steps=3, batch_size=8, lr=1e-3, update="lora", rank=4).accuracy]
    plain = evaluate_downstream(pretrained, task, method="finetune", seeds=(0,), steps=3, batch_size=8, lr=1e-3,
                                progress=False)
    assert "update" not in plain.settings
    with pytest.raises(ValueError, match=r"update='bias': the probe") as err:
        evaluate_downstream(pretrained, task, method="probe", update="bias")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kw, words", [
    ({"update": "lowrank"}, ["update", "'lowrank'", "full, lora, bias, last"]),
    ({"update": "lora", "rank": 0}, ["rank", "1..64", "got 0"]),
    ({"update": "lora", "rank": 65}, ["rank", "1..64", "got 65"]),
    ({"update": "lora", "rank": 2.0}, ["rank", "got 2.0"]),
    ({"update": "last", "last": 0}, ["last", "1..3", "got 0"]),
    ({"update": "last", "last": 4}, ["last", "1..3", "got 4"]),
])
def test_bad_arguments_are_refused_in_one_line(pretrained, task, kw, words):
    for call in (lambda: apply_update(BertForClassification(CFG, VOCAB, 2), **kw),
                 lambda: train_classifier(pretrained, task, steps=1, **kw),
                 lambda: evaluate_downstream(pretrained, task, seeds=(0,), steps=1, progress=False, **kw)):
        with pytest.raises(ValueError) as err:
            call()
        assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_what_cannot_be_updated_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="no biases"):
        apply_update(BertForClassification(ModelConfig(hidden=64, layers=2, heads=2, ffn=128, bias=False), VOCAB, 2),
                     "bias")
    twice = BertForClassification(CFG, VOCAB, 2)
    apply_update(twice, "last")
    with pytest.raises(ValueError, match="freshly built"):
        apply_update(twice, "lora")
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    with pytest.raises(ImportError, match="pip install peft") as err:
        apply_update(BertForClassification(CFG, VOCAB, 2), "lora")
    assert "\n" not in str(err.value)
