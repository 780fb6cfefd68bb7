"""ELECTRA: a small generator fills the masked positions, the full-size model detects replaced tokens.

    run = et.train(cfg, [et.technique("electra", generator_width=0.25, rtd_weight=50)])

The functional core comes first (the generator's size, ELECTRA's masking, sampling, the
replaced-token labels and loss, the analytic FLOPs); then the modules (`Generator`,
`Discriminator`, `Electra`, which holds both); then the hook `ElectraTechnique` (registered as
``electra``). What it learns is looked at in `effitrain.lab.electra` (examples, the count detector,
the RTD table). How it uses the trainer's events:

    on_masked_batch   re-corrupt the trainer's masked positions: 85 % [MASK], 15 % unchanged
                      (mask_replace="electra"); "bert" keeps the trainer's 80/10/10
    on_model          BertForMLM(config.model) → Electra(generator, discriminator): the trainer's
                      encoder becomes the discriminator's; the generator shares its embeddings
    forward           the trainer's `model(ids, positions, mask)` runs the generator: its MLM logits
    loss              sample the generator at the masked positions (ctx.rng, no gradient), run the
                      discriminator on the corrupted ids, add λ·RTD; terms mlm, rtd, rtd_accuracy,
                      replaced_share
    eval_model        the discriminator (what is saved and fine-tuned); its forward is the generator's
                      MLM view, so the trainer's val_loss is the generator's MLM loss
    on_eval           val_rtd_loss, val_rtd_accuracy, val_replaced_share on the validation batches
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from effitrain.config import ConfigError, ModelConfig
from effitrain.data import MaskedBatch
from effitrain.data.tokenizer import MASK, SPECIAL_TOKENS
from effitrain.model.bert import BertForMLM, Encoder, MLMHead, init_weights, analytic_flops_parts, count_parameters
from effitrain.techniques.base import LossInputs, StepContext, Technique, param, register
from effitrain.train.step import attention_recompute, autocast_for

MASK_REPLACE = ("electra", "bert")
REPLACEMENTS = ("generator", "random", "unigram")  # where the replacements come from (random, unigram: controls)
RTD_POSITIONS = ("all", "masked")  # where the discriminator's loss is taken (masked: a control)
EVAL_SEED = 20200323  # fixed noise for the validation RTD metrics (the same draws at every evaluation)


# -- the generator's size -------------------------------------------------------------------------------
def generator_config(cfg: ModelConfig, width: float) -> ModelConfig:
    """The generator: the discriminator's depth, `width` × its hidden size and FFN size.

    Heads keep the discriminator's head size where they can (as ELECTRA's hidden // 64): heads =
    max(1, hidden_g // head_size), lowered until they divide hidden_g (and give an even head size
    for rotary positions). width = 1 gives the discriminator's own shape.
    """
    if not 0 < width <= 1:
        raise ConfigError(f"electra.generator_width must be in (0, 1]; got {width!r}")
    if width == 1:
        return cfg
    hidden = max(1, round(cfg.hidden * width))
    if cfg.position == "rotary" and hidden % 2:
        hidden += 1
    heads = max(1, hidden // (cfg.hidden // cfg.heads))
    while hidden % heads or (cfg.position == "rotary" and (hidden // heads) % 2):
        heads -= 1
    return dataclasses.replace(cfg, hidden=hidden, heads=heads, ffn=max(1, round(cfg.ffn * width)))


# -- masking, sampling, labels, loss ---------------------------------------------------------------------
def unmask(input_ids: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, T) the original ids: the masked input with the labels put back at the predicted positions."""
    ids = input_ids.clone()
    ids.view(-1)[positions] = labels
    return ids


def electra_masking(batch: MaskedBatch, generator: torch.Generator, mask_share: float = 0.85) -> MaskedBatch:
    """ELECTRA's corruption of the same predicted positions: `mask_share` become [MASK], the rest keep
    their original token (no random tokens: the generator supplies the replacements)."""
    ids = unmask(batch.input_ids, batch.positions, batch.labels)
    action = torch.rand(batch.positions.shape[0], generator=generator).to(ids.device)
    ids.view(-1)[batch.positions[action < mask_share]] = MASK
    return MaskedBatch(ids, batch.attention_mask, batch.positions, batch.labels)


def sample_tokens(logits: torch.Tensor, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
    """(M,) one token per row drawn from softmax(logits / T), without gradient.

    Inverse-CDF sampling from M uniforms of `generator` (a CPU generator: only M numbers cross to the
    device, and the draws are the same on any device given the same logits).
    """
    with torch.no_grad():
        probs = torch.softmax(logits.detach().float() / temperature, dim=-1)
        cdf = probs.cumsum(dim=-1)
        u = torch.rand(logits.shape[0], 1, generator=generator).to(cdf.device)
        picked = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
        return picked.clamp_(max=logits.shape[-1] - 1)


def random_tokens(n: int, vocab_size: int, generator: torch.Generator, device: Any = None) -> torch.Tensor:
    """(n,) tokens drawn uniformly from the non-special vocabulary (ids len(SPECIAL_TOKENS) .. V-1):
    the "no generator" control's replacements."""
    low = len(SPECIAL_TOKENS)
    return torch.randint(low, vocab_size, (n,), generator=generator).to(device)


def unigram_probs(counts: torch.Tensor) -> torch.Tensor:
    """(V,) the training set's unigram frequencies from its token `counts`, special tokens at 0."""
    p = counts.double().clone()
    p[:len(SPECIAL_TOKENS)] = 0
    return p / p.sum()


def unigram_tokens(n: int, probs: torch.Tensor, generator: torch.Generator, device: Any = None) -> torch.Tensor:
    """(n,) tokens drawn from `unigram_probs`: the "frequency-matched" control's replacements, as common
    as the words they replace and chosen with no context at all (what a generator that never got past
    the unigram plateau would draw)."""
    return torch.multinomial(probs, n, replacement=True, generator=generator).to(device)


def loss_weights(attention_mask: torch.Tensor | None, positions: torch.Tensor, shape: torch.Size,
                 where: str = "all") -> torch.Tensor | None:
    """The (B, T) tokens the RTD loss is taken over: every real token ("all", the attention mask), or
    only the predicted positions ("masked", the control that learns from 15 % as a masked LM does)."""
    if where == "all":
        return attention_mask
    w = torch.zeros(shape, device=positions.device)
    w.view(-1)[positions] = 1.0
    return w


def replace_tokens(original: torch.Tensor, positions: torch.Tensor,
                   sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted ids, replaced) both (B, T): the samples written at the positions, and the RTD labels.

    A position is "replaced" only where the sampled token differs from the original; a sample that
    happens to be the original token is labelled original (as in ELECTRA).
    """
    corrupted = original.clone()
    corrupted.view(-1)[positions] = sampled
    return corrupted, corrupted != original


def rtd_loss(logits: torch.Tensor, replaced: torch.Tensor,
             attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, accuracy, replaced share) of replaced-token detection over every real (non-pad) token.

    loss: sigmoid cross-entropy of the (B, T) logits against the labels, averaged over real tokens;
    accuracy: share of real tokens where logit > 0 agrees with the label; the replaced share is what
    "original everywhere" gets wrong (its accuracy is 1 − share).
    """
    target = replaced.float()
    w = torch.ones_like(target) if attention_mask is None else attention_mask.float()
    n = w.sum().clamp(min=1.0)
    loss = (F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none") * w).sum() / n
    with torch.no_grad():
        accuracy = (((logits > 0) == replaced).float() * w).sum() / n
        share = (target * w).sum() / n
    return loss, accuracy, share


# -- analytic FLOPs ----------------------------------------------------------------------------------
def electra_flops_parts(cfg: ModelConfig, vocab_size: int, width: float, batch: int, seq_len: int, predicted: int,
                        attention_recompute: bool = True) -> dict[str, float]:
    """FLOPs of one ELECTRA forward+backward, by part (matmuls only, 2 per multiply-add, backward 2×).

    discriminator blocks and attention, as `analytic_flops_parts` (no MLM head); generator blocks
    and attention at its own size; the embedding projection H → H_g on every token (when H_g < H);
    the generator's MLM head on the M predicted positions, 6·(H_g·H + H·V) each (dense to the
    embedding size, then the tied decoder); the RTD head on every token, 6·(H² + H).
    """
    gen = generator_config(cfg, width)
    tokens = batch * seq_len
    d = analytic_flops_parts(cfg, vocab_size, batch, seq_len, 0, attention_recompute)
    g = analytic_flops_parts(gen, vocab_size, batch, seq_len, 0, attention_recompute)
    return {"discriminator_blocks": d["blocks"], "discriminator_attention": d["attention"],
            "generator_blocks": g["blocks"], "generator_attention": g["attention"],
            "embedding_projection": float(6 * tokens * cfg.hidden * gen.hidden) if gen.hidden != cfg.hidden else 0.0,
            "generator_head": float(6 * predicted * (gen.hidden * cfg.hidden + cfg.hidden * vocab_size)),
            "rtd_head": float(6 * tokens * (cfg.hidden * cfg.hidden + cfg.hidden))}


def electra_flops(cfg: ModelConfig, vocab_size: int, width: float, batch: int, seq_len: int, predicted: int,
                  attention_recompute: bool = True) -> float:
    """The sum of `electra_flops_parts`: generator + discriminator + RTD head, forward and backward."""
    return sum(electra_flops_parts(cfg, vocab_size, width, batch, seq_len, predicted, attention_recompute).values())


# -- the modules ------------------------------------------------------------------------------------------
class Generator(nn.Module):
    """A small masked LM on the discriminator's embeddings: `forward(ids, positions, mask)` → (M, V).

    The embedding stage (token and position embeddings, their LayerNorm) is the discriminator's own
    modules, shared; a linear projection takes it to the generator's width (ELECTRA's
    "embeddings_project"); the generator's blocks follow; its head projects back to the embedding
    size and decodes with the shared token embeddings.
    """

    def __init__(self, gen: ModelConfig, embeddings: Encoder, vocab_size: int):
        super().__init__()
        cfg = embeddings.cfg
        self.cfg, self.vocab_size = gen, vocab_size
        self.tok, self.pos, self.ln_emb, self.drop = embeddings.tok, embeddings.pos, embeddings.ln_emb, embeddings.drop
        self.embed_scale = embeddings.embed_scale  # norm "none": the constant in place of ln_emb
        self.project = nn.Linear(cfg.hidden, gen.hidden, bias=cfg.bias) if gen.hidden != cfg.hidden else nn.Identity()
        self.encoder = Encoder(gen, vocab_size)
        self.encoder.tok = self.encoder.pos = None  # its inputs come from the shared embeddings
        self.encoder.ln_emb, self.encoder.drop = nn.Identity(), nn.Identity()
        self.encoder.embed_scale = None
        self.head = MLMHead(cfg, vocab_size, in_hidden=gen.hidden)  # H_g → H, then the tied (V, H) decoder
        for m in (self.project, self.encoder, self.head):
            m.apply(lambda mod: init_weights(mod, gen.init_std))
        if cfg.tie_embeddings:
            self.head.decoder.weight = self.tok.weight

    def forward(self, ids: torch.Tensor, positions: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = Encoder.embed(self, ids)  # (B, T, H): the discriminator's embedding stage, on the shared modules
        h = self.encoder(embeds=self.project(x), attention_mask=attention_mask)  # (B, T, H_g)
        return self.head(h.flatten(0, 1).index_select(0, positions))  # (M, V)


class RTDHead(nn.Module):
    """Replaced-token detection: dense H → H, GELU, dense H → 1 logit per token (ELECTRA's head)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.hidden, bias=cfg.bias)
        self.out = nn.Linear(cfg.hidden, 1, bias=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.dense(h))).squeeze(-1)


class Discriminator(nn.Module):
    """The model ELECTRA keeps: the baseline's encoder + the RTD head.

    `rtd_logits(ids, mask)` → (B, T). It has `cfg`, `vocab_size` and `encoder` like `BertForMLM`, so
    `finetune` takes it as it is. It has no MLM head: its `forward(ids, positions, mask)` is the MLM
    view that the trainer's evaluation calls, and returns the *generator's* logits (the generator is
    referenced, not owned: it is not in this module's parameters or state_dict).
    """

    def __init__(self, encoder: Encoder, vocab_size: int):
        super().__init__()
        self.cfg, self.vocab_size = encoder.cfg, vocab_size
        self.encoder = encoder
        self.rtd = RTDHead(encoder.cfg)
        self.rtd.apply(lambda m: init_weights(m, encoder.cfg.init_std))
        self.__dict__["generator"] = None  # set by Electra; a plain attribute, not a submodule

    def rtd_logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.rtd(self.encoder(ids, attention_mask))

    def forward(self, ids: torch.Tensor, positions: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.generator is None:
            raise RuntimeError("this discriminator has no generator for the MLM view; use rtd_logits")
        return self.generator(ids, positions, attention_mask)

    def train(self, mode: bool = True) -> "Discriminator":
        super().train(mode)
        if self.generator is not None:
            self.generator.train(mode)  # evaluate() switches this module; the MLM view follows it
        return self


class Electra(nn.Module):
    """Generator + discriminator in one module (one optimizer trains both); forward = the generator's MLM."""

    def __init__(self, encoder: Encoder, vocab_size: int, generator_width: float):
        super().__init__()
        self.cfg, self.vocab_size = encoder.cfg, vocab_size
        self.discriminator = Discriminator(encoder, vocab_size)  # first: the embeddings are found as such
        self.generator = Generator(generator_config(encoder.cfg, generator_width), encoder, vocab_size)
        self.discriminator.__dict__["generator"] = self.generator

    def forward(self, ids: torch.Tensor, positions: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(ids, positions, attention_mask)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters both models use (the embedding stage)."""
        own = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.generator.parameters() if id(p) in own]

    def generator_own_parameters(self) -> list[nn.Parameter]:
        """The generator's parameters that the discriminator does not use."""
        own = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.generator.parameters() if id(p) not in own]


def detect(model: "Electra | Discriminator", batch: MaskedBatch, rng: torch.Generator,
           replace: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One no-training pass on an already ELECTRA-masked batch: (original ids, corrupted ids, replaced,
    RTD logits). `model` is an Electra or a discriminator with its generator; `replace(logits, rng)`
    draws the replacements (default: sampled from the generator)."""
    disc = model.discriminator if isinstance(model, Electra) else model
    logits = disc.generator(batch.input_ids, batch.positions, batch.attention_mask)
    original = unmask(batch.input_ids, batch.positions, batch.labels)
    corrupted, replaced = replace_tokens(original, batch.positions, (replace or sample_tokens)(logits, rng))
    return original, corrupted, replaced, disc.rtd_logits(corrupted, batch.attention_mask)


# -- the hook --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ElectraParams:
    generator_width: float = param(0.25, range=(0.05, 1.0), step=0.05,
                                   help="generator hidden and FFN size as a fraction of the discriminator's "
                                        "(same depth); ELECTRA found 1/4 to 1/2 best")
    rtd_weight: float = param(50.0, range=(0.0, 1000.0), step=1.0,
                              help="λ: weight of the replaced-token-detection loss (ELECTRA: 50)")
    mask_replace: str = param("electra", choices=MASK_REPLACE,
                              help="how masked positions are shown to the generator: 'electra' 85% [MASK] / "
                                   "15% unchanged; 'bert' 80% [MASK] / 10% random / 10% unchanged")
    replacements: str = param("generator", choices=REPLACEMENTS,
                              help="what fills the masked positions for the discriminator: the generator's "
                                   "samples; or, as controls (the generator still trains), uniformly random "
                                   "tokens or tokens drawn by corpus frequency (unigram)")
    rtd_positions: str = param("all", choices=RTD_POSITIONS,
                               help="where the discriminator learns: every real token, or only the masked "
                                    "positions (a control: as few targets as a masked LM)")


@register
class ElectraTechnique(Technique):
    """ELECTRA: a small generator fills in masked tokens; the model learns to spot the replaced ones.

    **What.** Two Transformers train together, with one optimizer. A *generator*, a small masked LM
    (the discriminator's depth, `generator_width` × its width and FFN), predicts the masked 15 % of the
    tokens; at each masked position a token is *sampled* from its softmax (temperature 1, no gradient
    through the sample). The *discriminator*, the baseline's model size, reads the corrupted text and
    says for every real token (not [PAD]; [CLS] and [SEP] included, as in the original) whether it
    was replaced. A sampled token equal to the original counts as original. Both share the embedding
    stage (token and position embeddings and their LayerNorm, one tensor each); the generator
    projects it to its width and decodes with the shared token embeddings. Masking: the trainer's
    positions, re-corrupted in `on_masked_batch` (before the forward, which must see them) as
    ELECTRA does: 85 % [MASK], 15 % unchanged, no random tokens (`mask_replace="bert"`: 80/10/10).
    After training the generator is thrown away: the run's model is the discriminator (with `cfg`,
    `vocab_size`, `encoder`, so `finetune` takes it), and fine-tuning is what it is for.

    **Why.** An MLM learns from the 15 % of tokens it predicts; the discriminator gets a loss on every
    token, so each step teaches it more, and it never sees [MASK], which fine-tuning never shows. The
    generator must be weak (a strong one makes replacements too hard to spot): ELECTRA found
    generators 1/4 to 1/2 of the discriminator's width best. The price: every step also runs the
    generator and the RTD head, about 10 % more FLOPs here, counted by the trainer's meter.

    **Math.** With masked positions $m$, generator $p_G$, corrupted input $\\hat x$ ($\\hat x_i \\sim
    p_G(\\cdot\\mid x^{masked})$ for $i\\in m$, else $x_i$) and discriminator logit $D_t$,
    $\\mathcal L = \\mathcal L_{MLM} + \\lambda\\,\\mathcal L_{RTD}$, $\\mathcal L_{MLM} = -\\tfrac{1}{|m|}
    \\sum_{i\\in m}\\log p_G(x_i\\mid x^{masked})$, $\\mathcal L_{RTD} = \\tfrac{1}{n}\\sum_{t}
    \\mathrm{BCE}(\\sigma(D_t), [\\hat x_t \\ne x_t])$ over the n real tokens; λ = 50 (`rtd_weight`)
    balances a binary loss on every token against a V-way loss on 15 %. Sampling is discrete, so the
    RTD loss reaches the generator only through the shared embeddings. Logged terms: `mlm`, `rtd`,
    `rtd_accuracy`, `replaced_share` (the share of real tokens replaced; predicting "original"
    everywhere scores 1 − replaced_share). FLOPs per step: `electra_flops`.

    **Settings.** generator_width 0.25, rtd_weight 50, mask_replace "electra" (the paper's small and
    base settings). Controls: generator_width 1.0 (a generator as strong as the discriminator makes
    the task too hard), replacements "random" (uniform tokens instead of the generator's samples:
    an easy task; the generator still trains, so the FLOPs stay the same), replacements "unigram"
    (tokens drawn by corpus frequency: as common as the words they replace, so only context gives them
    away; what a generator stuck on the unigram plateau would draw), rtd_positions "masked"
    (the discriminator learns only at the masked positions, as few targets as a masked LM). There is no setting that equals the baseline. *Losses are not comparable*:
    `train_loss` is the total $\\mathcal L_{MLM} + \\lambda\\mathcal L_{RTD}$, and `val_loss` is the
    **generator's** MLM loss on the trainer's fixed validation masks (the discriminator has no MLM
    head), a small model's, so it sits above the baseline's. `on_eval` adds `val_rtd_loss`,
    `val_rtd_accuracy` and `val_replaced_share`, over every real token for every setting (the
    "masked" control too, so its rows compare with the others). Judge ELECTRA by downstream accuracy after
    fine-tuning the discriminator at equal pre-training time or FLOPs (lesson 04 does that;
    `rtd_table` says how far each discriminator got past the constant guess).
    Does not train with `distill`.

    **Paper.** Clark, Luong, Le & Manning, "ELECTRA: Pre-training Text Encoders as Discriminators
    Rather Than Generators", ICLR 2020 (at the same 1.4e18 training FLOPs ELECTRA-Small scored 79.9 on
    GLUE against BERT-Small's 75.1, and 74.1 with 6.25 % of them).
    """

    name = "electra"
    Params = ElectraParams
    paper = "Clark, Luong, Le & Manning 2020, ELECTRA: Pre-training Text Encoders as Discriminators (ICLR)"
    identity_params = None  # no setting trains the baseline's MLM
    claims = ("eval_model",)
    conflicts = {"distill": "distill's teacher targets an MLM head, and electra's kept model (the discriminator) "
                            "has none; its MLM logits are the throwaway generator's"}

    def __init__(self, params: Any = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.model: Electra | None = None
        self._unigram: torch.Tensor | None = None  # unigram_probs of the training data, once

    # -- setup
    def on_model(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        if not isinstance(model, BertForMLM):
            raise ConfigError(f"electra builds its generator and discriminator from a BertForMLM; got "
                              f"{type(model).__name__} (from a technique before it)")
        self.model = Electra(model.encoder, model.vocab_size, self.params.generator_width)
        g = self.model.generator.cfg
        self.stats.update(generator={"hidden": g.hidden, "layers": g.layers, "heads": g.heads, "ffn": g.ffn},
                          generator_parameters=count_parameters(self.model.generator),
                          discriminator_parameters=count_parameters(self.model.discriminator),
                          rtd_batches=0)
        return self.model

    # -- each step
    def on_masked_batch(self, batch: MaskedBatch, model: nn.Module, ctx: StepContext) -> MaskedBatch:
        if self.params.mask_replace == "bert":
            return batch  # the trainer's 80/10/10 as it is
        return electra_masking(batch, ctx.rng)

    def loss(self, out: LossInputs, ctx: StepContext) -> torch.Tensor | None:
        model = getattr(out.model, "_orig_mod", out.model)
        model = model if isinstance(model, Electra) else self.model
        if model is None or out.input_ids is None:
            raise ConfigError("electra: run it through the trainer (its loss needs the Electra model and the "
                              "input ids)")
        original = unmask(out.input_ids, out.positions, out.labels)
        corrupted, replaced = replace_tokens(original, out.positions, self._replacements(out.logits, ctx.rng, ctx))
        logits = model.discriminator.rtd_logits(corrupted, out.attention_mask)
        rtd, accuracy, share = rtd_loss(logits, replaced, loss_weights(out.attention_mask, out.positions,
                                                                       original.shape, self.params.rtd_positions))
        out.terms.update(mlm=out.loss.detach(), rtd=rtd.detach(), rtd_accuracy=accuracy, replaced_share=share)
        self.stats["rtd_batches"] = self.stats.get("rtd_batches", 0) + 1  # the effect, as measured
        return out.loss + self.params.rtd_weight * rtd

    def _replacements(self, logits: torch.Tensor, rng: torch.Generator, ctx: StepContext) -> torch.Tensor:
        if self.params.replacements == "random":
            return random_tokens(logits.shape[0], logits.shape[-1], rng, logits.device)
        if self.params.replacements == "unigram":
            if ctx.data is None:
                raise ConfigError("electra.replacements 'unigram' needs the training data's unigram counts "
                                  "(run it through the trainer)")
            if self._unigram is None:
                self._unigram = unigram_probs(ctx.data.unigram_counts)
            return unigram_tokens(logits.shape[0], self._unigram, rng, logits.device)
        return sample_tokens(logits, rng)

    # -- evaluation
    def analytic_flops(self, parts: dict[str, float], batch: MaskedBatch, ctx: StepContext) -> dict[str, float]:
        """Generator + discriminator + RTD head (`electra_flops_parts`) in the trainer's three terms."""
        if ctx.data is None:  # no vocabulary to count the heads with
            return parts
        B, T = batch.input_ids.shape
        e = electra_flops_parts(ctx.config.model, ctx.data.vocab_size, self.params.generator_width, B, T,
                                int(batch.labels.numel()),
                                attention_recompute(ctx.config, ctx.device))
        return {"blocks": e["discriminator_blocks"] + e["generator_blocks"] + e["embedding_projection"],
                "attention": e["discriminator_attention"] + e["generator_attention"],
                "head": e["generator_head"] + e["rtd_head"]}

    def eval_model(self, model: nn.Module) -> nn.Module:
        return model.discriminator if isinstance(model, Electra) else model

    @torch.no_grad()
    def on_eval(self, metrics: dict[str, float], ctx: StepContext) -> dict[str, float]:
        if self.model is None or ctx.data is None or not ctx.data.val:
            return metrics
        m, was_training = self.model, self.model.training
        m.eval()
        rng = torch.Generator().manual_seed(EVAL_SEED)  # the same noise at every evaluation; ctx.rng untouched
        total = dict.fromkeys(("loss", "accuracy", "share", "n"), 0.0)
        autocast = autocast_for(ctx.config, ctx.device)
        for batch in ctx.data.val:
            b = batch.to(ctx.device)
            if self.params.mask_replace == "electra":
                b = electra_masking(b, rng)
            with autocast():
                original, _, replaced, rtd_logits = detect(m, b, rng, lambda lg, g: self._replacements(lg, g, ctx))
            # over every real token whatever rtd_positions trains on: the task, and comparable across settings
            loss, accuracy, share = rtd_loss(rtd_logits, replaced, b.attention_mask)
            n = float(b.num_tokens)
            for key, value in (("loss", loss), ("accuracy", accuracy), ("share", share)):
                total[key] += float(value) * n
            total["n"] += n
        m.train(was_training)
        n = max(total["n"], 1.0)
        return {**metrics, "val_rtd_loss": total["loss"] / n, "val_rtd_accuracy": total["accuracy"] / n,
                "val_replaced_share": total["share"] / n}

    # -- bookkeeping
    def state_dict(self) -> dict:
        return {"rtd_batches": self.stats.get("rtd_batches", 0)}

    def load_state_dict(self, state: dict) -> None:
        if "rtd_batches" in state:
            self.stats["rtd_batches"] = int(state["rtd_batches"])


__all__ = ["generator_config", "unmask", "electra_masking", "sample_tokens", "random_tokens",
           "unigram_probs", "unigram_tokens", "loss_weights",
           "replace_tokens", "rtd_loss", "detect",
           "electra_flops_parts", "electra_flops", "Generator", "RTDHead", "Discriminator",
           "Electra", "ElectraParams", "ElectraTechnique"]
