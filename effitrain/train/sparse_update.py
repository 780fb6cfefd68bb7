"""Which parameters a fine-tuning updates: all of them, low-rank adapters, the biases, or the last blocks.

    clf = BertForClassification(cfg, vocab, classes, copy.deepcopy(pretrained.encoder))
    info = apply_update(clf, "lora", rank=8)             # or "full", "bias", "last" (last=k blocks)
    info.trainable, info.total, info.fraction            # what the optimizer sees, of all parameters
    finetune(pretrained, task, update="lora")            # the same inside fine-tuning (train_classifier,
                                                         # evaluate_downstream(method="finetune"))

The classification head (`pool` and `classify`, initialised at fine-tuning) always trains. Of the encoder:
    full  every parameter (the default, and what fine-tuning did before `update` existed)
    lora  LoRA (Hu et al. 2021), through `peft`: every nn.Linear in the encoder's blocks (attention qkv
          and out, FFN up and down; in a GroupBERT block also the conv module's and the grouped FFNs'
          dense Linears, not the block-diagonal GroupedLinear) computes W·x + (α/r)·B·A·x, A (r, d_in),
          B (d_out, r) initialised to 0, so training starts from the pre-trained function; α = 2r, no
          dropout on the adapters. W, the biases, the norms and the embeddings are frozen.
    bias  BitFit (Ben Zaken et al. 2022): every bias of the encoder, the LayerNorms' β included (our
          choice: β is a bias added after the normalisation), i.e. every parameter named "bias"; the
          LayerNorm gains γ, the weight matrices and the embeddings are frozen. A model built with
          model.bias=False has no biases and is refused.
    last  the last k blocks (and the final LayerNorm of a pre-LN encoder); the embeddings and the blocks
          before L−k are frozen. TinyTL (Cai et al. 2020) observes that training memory is dominated by
          activations, not by parameters; updating only the top of the network ("sparse update", Lin et
          al. 2022) saves both, because the backward pass stops at block L−k.

Memory, per fp32 weight: 4 bytes for its value, and for a *trainable* one another 4 for its gradient and
8 for AdamW's two moments. N weights of which n train take 4·N + 12·n bytes (+ activations, + AdamW's
step counter per trainable tensor). LoRA adds r·(d_in + d_out) weights per adapted matrix (trainable)
and freezes its d_in·d_out: a block of hidden H and FFN F adapts qkv (H→3H), out (H→H), up (H→F) and
down (F→H), r·(8H + 2F) new weights against 4H² + 2HF frozen; for BERT-base (H 768, F 3072, r 8)
98,304 against 7,077,888, 1.4%. lora and bias still run the backward through every block (the
activations are kept; only the frozen weights' gradients are skipped); last runs it through k blocks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from effitrain.imports import quiet_import

UPDATES = ("full", "lora", "bias", "last")
HEAD = ("pool", "classify")  # BertForClassification's layers on top of the encoder, new at fine-tuning


@dataclass
class UpdateInfo:
    """What `apply_update` left trainable: parameter counts (each shared tensor once, adapters included)."""

    update: str
    trainable: int
    total: int
    trainable_names: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.trainable / max(1, self.total)

    def __str__(self) -> str:
        return f"{self.update}: {self.trainable:,} of {self.total:,} parameters train ({self.fraction:.2%})"


def apply_update(model: nn.Module, update: str, *, rank: int = 8, last: int = 1) -> UpdateInfo:
    """Prepare a freshly built `BertForClassification` so that only `update`'s parameters train (module
    docstring); in place, before the optimizer is built. "full" changes nothing and draws no random
    numbers; "lora" draws its A matrices from the global RNG. `rank`: LoRA's r (1..hidden); `last`: the
    number of top blocks "last" trains (1..layers)."""
    encoder = model.encoder
    check_update(update, rank=rank, last=last, layers=len(encoder.blocks), hidden=encoder.tok.embedding_dim)
    if getattr(model, "peft_config", None) is not None or not all(p.requires_grad for p in model.parameters()):
        raise ValueError("apply_update takes a freshly built classifier (every parameter trainable, no adapters)")
    if update == "lora":
        _inject_lora(model, rank)
    elif update != "full":
        keep = bias_names(encoder) if update == "bias" else last_names(encoder, last)
        if update == "bias" and not keep:
            raise ValueError("update='bias': this encoder has no biases (model.bias=False); use full, lora or last")
        for name, p in encoder.named_parameters():
            p.requires_grad_(name in keep)
    for name in HEAD:
        getattr(model, name).requires_grad_(True)
    return update_info(model, update)


def check_update(update: str, *, rank: int = 8, last: int = 1, layers: int, hidden: int) -> None:
    """Raise a one-line ValueError for an unknown `update`, or the `rank` / `last` it uses out of range."""
    if update not in UPDATES:
        raise ValueError(f"update must be one of {', '.join(UPDATES)}, got {update!r}")
    ok = lambda x, top: isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= top  # noqa: E731
    if update == "lora" and not ok(rank, hidden):
        raise ValueError(f"rank must be an integer in 1..{hidden} (the model's hidden size), got {rank!r}")
    if update == "last" and not ok(last, layers):
        raise ValueError(f"last must be an integer in 1..{layers} (the encoder's blocks), got {last!r}")


def update_info(model: nn.Module, update: str) -> UpdateInfo:
    """Counts of `model`'s trainable and all parameters (each shared tensor once)."""
    named = list(model.named_parameters())
    train = [(n, p) for n, p in named if p.requires_grad]
    return UpdateInfo(update, sum(p.numel() for _, p in train), sum(p.numel() for _, p in named),
                      [n for n, _ in train])


def lora_targets(model: nn.Module) -> list[str]:
    """Full names of the nn.Linear modules in `model.encoder`'s blocks: what "lora" adapts (ask before
    adapting: afterwards they are peft layers)."""
    return [f"encoder.{n}" for n, m in model.encoder.named_modules()
            if n.startswith("blocks.") and isinstance(m, nn.Linear)]


def bias_names(encoder: nn.Module) -> set[str]:
    """The encoder's parameters "bias" trains: every one named bias (Linear and LayerNorm)."""
    return {n for n, _ in encoder.named_parameters() if n.rsplit(".", 1)[-1] == "bias"}


def last_names(encoder: nn.Module, last: int) -> set[str]:
    """The encoder's parameters "last" trains: those of the last `last` blocks and of the final norm."""
    first = len(encoder.blocks) - last
    return {n for n, _ in encoder.named_parameters()
            if n.startswith("ln_final.") or (n.startswith("blocks.") and int(n.split(".")[1]) >= first)}


def _inject_lora(model: nn.Module, rank: int) -> None:
    peft = quiet_import("peft", "update='lora'", "pip install peft")  # imports transformers: seconds, so only when asked for
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=lora_targets(model),
                             bias="none")
    peft.inject_adapter_in_model(config, model)  # freezes every parameter but the adapters


__all__ = ["UPDATES", "HEAD", "UpdateInfo", "apply_update", "check_update", "update_info", "lora_targets",
           "bias_names", "last_names"]
