"""A compact BERT encoder, written to be read top to bottom.

    ids (B, T) ─ token + position embeddings ─ LN ─ dropout ─ N × Block ─ [final LN if pre-LN] ─ h (B, T, H)
    position = "learned" (BERT): a learned vector per position is added to the token embeddings;
               "rotary" (RoPE, Su et al. 2021): no position vectors, q and k of every head are rotated
               by angles proportional to their position, so q·k depends on the offset i − j;
               "alibi" (Press et al. 2022, symmetric for an encoder): no position vectors, every head h
               adds −m_h·|i − j| to its attention scores (a float attn_mask), a prior towards nearby tokens
    Block, post-LN (BERT):  x = LN(x + drop(Attn(x)));       x = LN(x + drop(FFN(x)))
    Block, pre-LN:          x = x + drop(Attn(LN(x)));       x = x + drop(FFN(LN(x)))
    Block, norm "none":     x = x + drop(Attn(x));           x = x + drop(FFN(x))
           (no LayerNorm anywhere in the encoder: not in the blocks, not after the embeddings, no final
           LN; the MLM head keeps its own. The embedding LN's one job at initialisation, bringing token
           vectors of std init_std to unit scale, is done by a constant factor 1 / init_std instead:
           without it the residual stream starts 50× smaller than any normalised model's and attention
           sees almost no signal. For a norm-free model trained with a standardization loss,
           `effitrain.techniques.standardization`)
    GroupBlock (model.groupbert, Chelombiev et al. 2021): four residual sublayers, each wrapped as above,
           Conv → GroupedFFN → Attn → GroupedFFN
        Conv:        Linear H→2H, GLU, zero the padding, grouped Conv1d over T (kernel k, 'same', H/16
                     groups), LN, SiLU, Linear H→H
        GroupedFFN:  Linear H→F, GELU, grouped Linear F→H (g blocks on the diagonal), Linear H→H
    MLM head (sparse):      logits only at the M predicted positions, (M, V), decoder tied to embeddings
                            (model.sparse_head=False: at all B·T positions, as BERT, then the M read)
    classifier:             h[:, 0] ([CLS]) → dense → tanh → dropout → (B, classes)

Attention (`ModelConfig.attention`):
    "sdpa": `F.scaled_dot_product_attention` (fused kernels on CPU and GPU; flash-style ones recompute
            the scores in the backward instead of keeping the (B, h, T, T) probabilities)
    "math": the same numbers written out, `softmax(q·kᵀ/√d + mask) · v` (softmax in fp32): every op is a
            plain matmul or elementwise op, and the probabilities are kept for the backward (more memory,
            no recompute)

Regions of the forward are labelled for `torch.profiler` ("effitrain/embeddings", "effitrain/attention",
"effitrain/ffn", "effitrain/conv" (GroupBERT), "effitrain/head"; see `effitrain.lab.profile`); with no profiler running they cost
nothing (`region`).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from torch.profiler import record_function

from effitrain.config import ModelConfig


def region(name: str) -> contextlib.AbstractContextManager:
    """`torch.profiler.record_function(name)` while a profiler records, else nothing (a label costs
    several µs even with no profiler; under torch.compile dynamo would drop it with a warning)."""
    if torch.compiler.is_compiling() or not torch.autograd._profiler_enabled():
        return contextlib.nullcontext()
    return record_function(name)


# -- position encodings other than learned vectors ----------------------------------------------
def rotary_tables(seq_len: int, dim: int, device: torch.device | None = None,
                  base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T, d) for RoPE: pair (i, i + d/2) of a head turns by angle t·base^(−2i/d) at position t."""
    inv_freq = base ** (-torch.arange(0, dim // 2, device=device, dtype=torch.float32) * 2 / dim)  # (d/2,)
    angles = torch.arange(seq_len, device=device, dtype=torch.float32)[:, None] * inv_freq  # (T, d/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, d)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, h, T, d) by the tables (T, d): x·cos + rotate_half(x)·sin, in x's dtype."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def alibi_slopes(heads: int) -> torch.Tensor:
    """The ALiBi head slopes m_h: 2^(−8h/n) for n heads, n a power of two; otherwise the nearest
    power's slopes plus every other slope of the next power (as in Press et al.'s code)."""
    def power_of_two(n: int) -> list[float]:
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]
    if math.log2(heads).is_integer():
        return torch.tensor(power_of_two(heads))
    closest = 2 ** math.floor(math.log2(heads))
    return torch.tensor(power_of_two(closest) + power_of_two(2 * closest)[0::2][: heads - closest])


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                   dropout_p: float = 0.0) -> torch.Tensor:
    """SDPA written out: softmax(q·kᵀ/√d + mask) · v for q, k, v (B, h, T, d); the same numbers as
    `F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p)` (dropout aside: another random stream).

    attn_mask: bool (True = may attend; False becomes −inf) or float (added to the scores), broadcast to
    (B, h, T, T). The softmax runs in fp32 and the probabilities are cast back to v's dtype (bf16 under
    autocast); dropout drops probabilities, as SDPA's does. Autograd keeps them for the backward.
    """
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, h, T, T)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
    if dropout_p > 0:
        probs = F.dropout(probs, dropout_p)
    return probs @ v  # (B, h, T, d)


def alibi_bias(heads: int, seq_len: int, device: torch.device | None = None) -> torch.Tensor:
    """(h, T, T) float bias −m_h·|i − j| added to the attention scores (symmetric: an encoder looks both ways)."""
    pos = torch.arange(seq_len, device=device, dtype=torch.float32)
    distance = (pos[None, :] - pos[:, None]).abs()  # (T, T)
    return -alibi_slopes(heads).to(device)[:, None, None] * distance  # (h, T, T)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden, bias=cfg.bias)
        self.out = nn.Linear(cfg.hidden, cfg.hidden, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.kernel = F.scaled_dot_product_attention if cfg.attention == "sdpa" else math_attention

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """attn_mask: bool (True = may attend) or float (added to the scores), broadcast to (B, h, T, T);
        rotary: (cos, sin) tables (T, d) applied to q and k."""
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)  # 3 × (B, h, T, d)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)  # SDPA wants a float mask in the query's dtype (bf16 under autocast)
        y = self.kernel(q, k, v, attn_mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, H))


class FeedForward(nn.Module):
    """GELU MLP, or a gated GELU unit (GLU variant, Shazeer 2020) with the same parameter count."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gated = cfg.ffn_kind == "glu"
        inner = cfg.ffn * 2 // 3 if self.gated else cfg.ffn  # keep parameters equal to the GELU MLP
        self.up = nn.Linear(cfg.hidden, 2 * inner if self.gated else inner, bias=cfg.bias)
        self.down = nn.Linear(inner, cfg.hidden, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            a, b = self.up(x).chunk(2, dim=-1)
            return self.down(F.gelu(a) * b)
        return self.down(F.gelu(self.up(x)))


def layer_norm(cfg: ModelConfig) -> nn.Module:
    """The encoder's LayerNorm, or nothing for a norm-free model (model.norm "none")."""
    return nn.Identity() if cfg.norm == "none" else nn.LayerNorm(cfg.hidden, bias=cfg.bias)


class GroupedLinear(nn.Module):
    """A block-diagonal Linear: the input's `groups` slices each map to their own slice of the output,
    as one batched matmul (weight (g, in/g, out/g)); in·out/g weights, not in·out."""

    def __init__(self, in_features: int, out_features: int, groups: int, bias: bool = True):
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(groups, in_features // groups, out_features // groups))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.groups, x.shape[-1] // self.groups).transpose(0, 1)  # (g, N, in/g)
        y = torch.bmm(x, self.weight).transpose(0, 1).reshape(*lead, -1)  # (g, N, out/g) → (..., out)
        return y if self.bias is None else y + self.bias.to(y.dtype)


class GroupedFeedForward(nn.Module):
    """GroupBERT's FFN: dense up-projection H→F, GELU, grouped down-projection F→H, dense H→H that
    mixes the groups."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.hidden, cfg.ffn, bias=cfg.bias)
        self.down = GroupedLinear(cfg.ffn, cfg.hidden, cfg.ffn_groups, bias=cfg.bias)
        self.out = nn.Linear(cfg.hidden, cfg.hidden, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.down(F.gelu(self.up(x))))


class ConvModule(nn.Module):
    """GroupBERT's convolution sublayer: Linear H→2H, GLU (sigmoid gate), padding zeroed, grouped Conv1d
    over the sequence (kernel k, 'same' padding, H / conv_group_size groups), LayerNorm (none for norm
    "none"), SiLU, Linear H→H."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inp = nn.Linear(cfg.hidden, 2 * cfg.hidden, bias=cfg.bias)
        self.conv = nn.Conv1d(cfg.hidden, cfg.hidden, cfg.conv_kernel, padding=cfg.conv_kernel // 2,
                              groups=cfg.hidden // cfg.conv_group_size, bias=cfg.bias)
        self.ln = layer_norm(cfg)
        self.out = nn.Linear(cfg.hidden, cfg.hidden, bias=cfg.bias)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, H); keep (B, T) bool, True = real token: padded positions are zeroed before the
        convolution, so they add nothing to the real tokens they neighbour."""
        y = F.glu(self.inp(x), dim=-1)  # (B, T, H): first half · sigmoid(second half)
        if keep is not None:
            y = y * keep[..., None].to(y.dtype)
        y = self.conv(y.transpose(1, 2)).transpose(1, 2)  # (B, T, H); its FLOPs: effitrain.train.flops
        return self.out(F.silu(self.ln(y)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = cfg.norm
        self.pre_ln = cfg.norm == "pre"
        self.ln1 = layer_norm(cfg)
        self.attn = SelfAttention(cfg)
        self.ln2 = layer_norm(cfg)
        self.ffn = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def residual(self, x: torch.Tensor, ln: nn.Module, sublayer) -> torch.Tensor:
        """One residual sublayer as model.norm says: pre  x + drop(f(LN(x))), post  LN(x + drop(f(x))),
        none  x + drop(f(x))."""
        if self.norm == "pre":
            return x + self.drop(sublayer(ln(x)))
        if self.norm == "post":
            return ln(x + self.drop(sublayer(x)))
        return x + self.drop(sublayer(x))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.residual(x, self.ln1, lambda h: self._attn(h, attn_mask, rotary))
        return self.residual(x, self.ln2, self._ffn)

    # the two sublayers, labelled for the profiler (projections included; norms, dropout, residuals are not)
    def _attn(self, x: torch.Tensor, attn_mask: torch.Tensor | None,
              rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        with region("effitrain/attention"):
            return self.attn(x, attn_mask, rotary)

    def _ffn(self, x: torch.Tensor, ffn: nn.Module | None = None) -> torch.Tensor:
        with region("effitrain/ffn"):
            return (ffn or self.ffn)(x)


class GroupBlock(Block):
    """A GroupBERT layer: conv module, grouped FFN, attention, grouped FFN; four residual sublayers,
    each normalised as model.norm says (as `Block`)."""

    def __init__(self, cfg: ModelConfig):
        nn.Module.__init__(self)
        self.norm = cfg.norm
        self.pre_ln = cfg.norm == "pre"
        self.ln_conv, self.conv = layer_norm(cfg), ConvModule(cfg)
        self.ln_ffn1, self.ffn1 = layer_norm(cfg), GroupedFeedForward(cfg)
        self.ln1, self.attn = layer_norm(cfg), SelfAttention(cfg)
        self.ln2, self.ffn = layer_norm(cfg), GroupedFeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """keep: (B, T) bool padding mask (True = real token) for the convolution; None = no padding."""
        x = self.residual(x, self.ln_conv, lambda h: self._conv(h, keep))
        x = self.residual(x, self.ln_ffn1, lambda h: self._ffn(h, self.ffn1))
        x = self.residual(x, self.ln1, lambda h: self._attn(h, attn_mask, rotary))
        return self.residual(x, self.ln2, self._ffn)

    def _conv(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        with region("effitrain/conv"):
            return self.conv(x, keep)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(vocab_size, cfg.hidden)
        self.position = cfg.position
        # learned: one vector per position; rotary and alibi have no position parameters
        self.pos = nn.Embedding(cfg.max_positions, cfg.hidden) if cfg.position == "learned" else None
        self.ln_emb = layer_norm(cfg)  # norm "none": no LayerNorm after the embeddings either,
        # only the unit scale it would give the token vectors at initialisation (a constant, not learned)
        self.embed_scale = 1.0 / cfg.init_std if cfg.norm == "none" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList((GroupBlock if cfg.groupbert else Block)(cfg) for _ in range(cfg.layers))
        self.ln_final = nn.LayerNorm(cfg.hidden, bias=cfg.bias) if cfg.norm == "pre" else nn.Identity()
        # activation checkpointing (the `checkpointing` technique sets these): blocks whose forward runs
        # again in the backward instead of keeping what it saved, and how many times one did
        self.checkpointed: frozenset[int] = frozenset()
        self.recomputed = 0

    def run_block(self, i: int, x: torch.Tensor, *args: Any, **extra: Any) -> torch.Tensor:
        """Block i on x; checkpointed (`torch.utils.checkpoint`, non-reentrant, random state preserved)
        when i is in `checkpointed` and the model trains with gradients on."""
        block = self.blocks[i]
        if i not in self.checkpointed or not (self.training and torch.is_grad_enabled()):
            return block(x, *args, **extra)

        @contextlib.contextmanager
        def recomputing() -> Iterator[None]:
            self.recomputed += 1
            yield

        return torch.utils.checkpoint.checkpoint(block, x, *args, use_reentrant=False,
                                                 context_fn=lambda: (contextlib.nullcontext(), recomputing()), **extra)

    def embed(self, ids: torch.Tensor | None = None, *, embeds: torch.Tensor | None = None,
              dropout: bool = True) -> torch.Tensor:
        """The embedding stage: tok(ids) (or `embeds`) + learned positions, LN (norm "none": × 1 / init_std),
        dropout → (B, T, H),
        the first block's input (`dropout=False`: before the dropout, no random draw)."""
        tok = self.tok(ids) if embeds is None else embeds  # (B, T, H)
        if self.pos is not None:
            tok = tok + self.pos(torch.arange(tok.shape[1], device=tok.device))
        x = self.ln_emb(tok) if self.embed_scale is None else tok * self.embed_scale
        return self.drop(x) if dropout else x

    def forward(self, ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T), or `embeds` (B, T, H): token vectors used in place of `tok(ids)` (e.g. learned ones)."""
        with region("effitrain/embeddings"):
            x = self.embed(ids, embeds=embeds)  # (B, T, H)
        args, extra = self.block_args(x.shape[1], attention_mask, x.device)
        for i in range(len(self.blocks)):
            x = self.run_block(i, x, *args, **extra)
        return self.ln_final(x)

    def block_args(self, T: int, attention_mask: torch.Tensor | None,
                   device: torch.device) -> tuple[tuple, dict]:
        """What every block takes besides x: ((mask, rotary), extra) for sequences of length T."""
        # SDPA takes a boolean mask where True = may attend; (B, 1, 1, T) broadcasts over heads and queries
        mask = None if attention_mask is None else attention_mask[:, None, None, :]
        rotary = None
        if self.position == "alibi":  # one float mask: the distance bias, and −inf where a key is padding
            bias = alibi_bias(self.cfg.heads, T, device)[None]  # (1, h, T, T)
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))  # (B, h, T, T)
        elif self.position == "rotary":
            rotary = rotary_tables(T, self.cfg.hidden // self.cfg.heads, device)
        extra = {"keep": attention_mask} if self.cfg.groupbert else {}  # the convolution's padding mask
        return (mask, rotary), extra


class MLMHead(nn.Module):
    """dense (in_hidden → H), GELU, LayerNorm, decoder H → V. in_hidden defaults to H; a smaller model
    predicting through a wider, shared embedding (ELECTRA's generator) gives its own width."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, in_hidden: int | None = None):
        super().__init__()
        self.dense = nn.Linear(in_hidden or cfg.hidden, cfg.hidden, bias=cfg.bias)
        self.ln = nn.LayerNorm(cfg.hidden, bias=cfg.bias)
        self.decoder = nn.Linear(cfg.hidden, vocab_size, bias=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.ln(F.gelu(self.dense(h))))


def init_weights(module: nn.Module, std: float) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding, GroupedLinear, nn.Conv1d)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, (nn.Linear, GroupedLinear, nn.Conv1d)) and module.bias is not None:
        nn.init.zeros_(module.bias)


class BertForMLM(nn.Module):
    """Encoder + sparse MLM head. `forward(ids, positions, mask)` returns (M, V) logits."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.encoder = Encoder(cfg, vocab_size)
        self.head = MLMHead(cfg, vocab_size)
        self.apply(lambda m: init_weights(m, cfg.init_std))
        if cfg.tie_embeddings:
            self.head.decoder.weight = self.encoder.tok.weight

    def forward(self, ids: torch.Tensor, positions: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.predict(self.encoder(ids, attention_mask), positions)

    def predict(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The head on the encoder's output h (B, T, H): (M, V) logits at the flat `positions`."""
        with region("effitrain/head"):
            if not self.cfg.sparse_head:  # BERT's dense head: logits at every position, the loss reads M of them
                return self.head(h.flatten(0, 1)).index_select(0, positions)  # (B·T, V) → (M, V)
            h = h.flatten(0, 1).index_select(0, positions)  # (M, H): only where a token is to be predicted
            return self.head(h)  # (M, V)


class BertForClassification(nn.Module):
    """Encoder + [CLS] pooler + linear classifier; built fresh or from a pre-trained encoder."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, num_classes: int, encoder: Encoder | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else Encoder(cfg, vocab_size)
        self.pool = nn.Linear(cfg.hidden, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.classify = nn.Linear(cfg.hidden, num_classes)
        for m in (self.pool, self.classify):
            init_weights(m, cfg.init_std)
        if encoder is None:
            self.encoder.apply(lambda m: init_weights(m, cfg.init_std))

    def forward(self, ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encoder(ids, attention_mask, embeds=embeds)[:, 0]  # (B, H) at [CLS]; embeds: see Encoder
        return self.classify(self.drop(torch.tanh(self.pool(h))))  # (B, classes)


# -- counting --------------------------------------------------------------------------------
def count_parameters(model: nn.Module, embeddings: bool = True) -> int:
    """Unique trainable parameters (tied weights once); without embeddings if asked."""
    seen, total = set(), 0
    skip = set()
    if not embeddings:
        for m in model.modules():
            if isinstance(m, nn.Embedding):
                skip.add(id(m.weight))
    for p in model.parameters():
        if id(p) in seen or id(p) in skip or not p.requires_grad:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def matmul_parameters(cfg: ModelConfig) -> int:
    """Weights that take part in a matmul (or the convolution) for every token (the N of 6·N·tokens).

    A plain layer: 4·H² (q, k, v, out) + the FFN's 2·H·F (GLU: 3·H·⅔F). A GroupBERT layer
    (`groupbert_layer_matmul_parameters`): the same 4·H², two grouped FFNs and the conv module.
    """
    if cfg.groupbert:
        return cfg.layers * (4 * cfg.hidden * cfg.hidden + groupbert_layer_matmul_parameters(cfg))
    inner = cfg.ffn * 2 // 3 if cfg.ffn_kind == "glu" else cfg.ffn
    ffn = cfg.hidden * inner * (3 if cfg.ffn_kind == "glu" else 2)
    return cfg.layers * (4 * cfg.hidden * cfg.hidden + ffn)


def groupbert_layer_matmul_parameters(cfg: ModelConfig) -> int:
    """A GroupBERT layer's weights besides attention's 4·H², each used once per token:

        conv module   H·2H (in, before the GLU) + H·(H/groups)·k = H·conv_group_size·k (the grouped
                      convolution: each output channel sees its group's channels at k offsets) + H·H (out)
        grouped FFN   H·F (up) + F·H / ffn_groups (the block-diagonal down-projection) + H·H (out), twice

    A convolution costs 2 FLOPs per weight per output position like a matmul (padded positions
    included, as every token counts), and its backward twice that (input and weight gradients), so
    these weights join the 6·N·tokens of the blocks.
    """
    H, Fn = cfg.hidden, cfg.ffn
    conv = H * 2 * H + H * cfg.conv_group_size * cfg.conv_kernel + H * H
    ffn = H * Fn + Fn * H // cfg.ffn_groups + H * H
    return conv + 2 * ffn


def analytic_flops_parts(cfg: ModelConfig, vocab_size: int, batch: int, seq_len: int, predicted: int,
                         attention_recompute: bool = True) -> dict[str, float]:
    """The terms of `analytic_flops`: {"blocks": 6·N·tokens, "attention": …, "head": …}
    (N = `matmul_parameters(cfg)`, GroupBERT's conv module and grouped FFNs included). A dense head
    (`model.sparse_head=False`) runs on all B·T positions, not the M predicted ones."""
    tokens = batch * seq_len
    head_rows = predicted if cfg.sparse_head else tokens
    per_token_attn = 4 * seq_len * cfg.hidden * (3 + (0.5 if attention_recompute else 0))
    return {"blocks": float(6 * matmul_parameters(cfg) * tokens),
            "attention": float(cfg.layers * per_token_attn * tokens),
            "head": float(6 * head_rows * (cfg.hidden * cfg.hidden + cfg.hidden * vocab_size))}


def analytic_flops(cfg: ModelConfig, vocab_size: int, batch: int, seq_len: int, predicted: int,
                   attention_recompute: bool = True) -> float:
    """FLOPs of one forward+backward of BertForMLM, counting matmuls only (2 per multiply-add).

    6·N per token for the blocks (forward 2·N, backward 4·N), plus attention scores and mixing
    4·T·H per token per layer forward and twice that backward, plus the sparse head on the M
    predicted positions: 6·(H² + H·V) each. Flash-style kernels recompute the scores in the
    backward pass, one more 2·T·H per token per layer (`attention_recompute`); torch's FLOP
    counter counts that recompute, so the cross-check includes it. attention="math" keeps the
    probabilities instead and recomputes nothing (`effitrain.train.step.attention_recompute`).
    """
    return sum(analytic_flops_parts(cfg, vocab_size, batch, seq_len, predicted, attention_recompute).values())


__all__ = ["BertForMLM", "BertForClassification", "Encoder", "Block", "GroupBlock", "ConvModule", "GroupedLinear",
           "GroupedFeedForward", "groupbert_layer_matmul_parameters", "layer_norm", "count_parameters", "rotary_tables",
           "apply_rotary", "alibi_slopes", "alibi_bias", "math_attention",
           "matmul_parameters", "analytic_flops", "analytic_flops_parts"]
