"""A compact BERT encoder, written to be read top to bottom.

    ids (B, T) ─ token + position embeddings ─ LN ─ dropout ─ N × Block ─ [final LN if pre-LN] ─ h (B, T, H)
    position = "learned" (BERT): a learned vector per position is added to the token embeddings;
               "rotary" (RoPE, Su et al. 2021): no position vectors, q and k of every head are rotated
               by angles proportional to their position, so q·k depends on the offset i − j;
               "alibi" (Press et al. 2022, symmetric for an encoder): no position vectors, every head h
               adds −m_h·|i − j| to its attention scores (a float attn_mask), a prior towards nearby tokens
    Block, post-LN (BERT):  x = LN(x + drop(Attn(x)));       x = LN(x + drop(FFN(x)))
    Block, pre-LN:          x = x + drop(Attn(LN(x)));       x = x + drop(FFN(LN(x)))
    MLM head (sparse):      logits only at the M predicted positions, (M, V), decoder tied to embeddings
    classifier:             h[:, 0] ([CLS]) → dense → tanh → dropout → (B, classes)

Attention (`ModelConfig.attention`):
    "sdpa": `F.scaled_dot_product_attention` (fused kernels on CPU and GPU; flash-style ones recompute
            the scores in the backward instead of keeping the (B, h, T, T) probabilities)
    "math": the same numbers written out, `softmax(q·kᵀ/√d + mask) · v` (softmax in fp32): every op is a
            plain matmul or elementwise op, and the probabilities are kept for the backward (more memory,
            no recompute)

Regions of the forward are labelled for `torch.profiler` ("effitrain/embeddings", "effitrain/attention",
"effitrain/ffn", "effitrain/head"; see `effitrain.lab.profile`); with no profiler running they cost
nothing (`region`).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
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


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pre_ln = cfg.norm == "pre"
        self.ln1 = nn.LayerNorm(cfg.hidden, bias=cfg.bias)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden, bias=cfg.bias)
        self.ffn = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.drop(self._attn(self.ln1(x), attn_mask, rotary))
            return x + self.drop(self._ffn(self.ln2(x)))
        x = self.ln1(x + self.drop(self._attn(x, attn_mask, rotary)))
        return self.ln2(x + self.drop(self._ffn(x)))

    # the two sublayers, labelled for the profiler (projections included; norms, dropout, residuals are not)
    def _attn(self, x: torch.Tensor, attn_mask: torch.Tensor | None,
              rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        with region("effitrain/attention"):
            return self.attn(x, attn_mask, rotary)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        with region("effitrain/ffn"):
            return self.ffn(x)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(vocab_size, cfg.hidden)
        self.position = cfg.position
        # learned: one vector per position; rotary and alibi have no position parameters
        self.pos = nn.Embedding(cfg.max_positions, cfg.hidden) if cfg.position == "learned" else None
        self.ln_emb = nn.LayerNorm(cfg.hidden, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_final = nn.LayerNorm(cfg.hidden, bias=cfg.bias) if cfg.norm == "pre" else nn.Identity()

    def forward(self, ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T), or `embeds` (B, T, H): token vectors used in place of `tok(ids)` (e.g. learned ones)."""
        with region("effitrain/embeddings"):
            tok = self.tok(ids) if embeds is None else embeds  # (B, T, H)
            B, T = tok.shape[:2]
            if self.pos is not None:
                tok = tok + self.pos(torch.arange(T, device=tok.device))
            x = self.drop(self.ln_emb(tok))  # (B, T, H)
        # SDPA takes a boolean mask where True = may attend; (B, 1, 1, T) broadcasts over heads and queries
        mask = None if attention_mask is None else attention_mask[:, None, None, :]
        rotary = None
        if self.position == "alibi":  # one float mask: the distance bias, and −inf where a key is padding
            bias = alibi_bias(self.cfg.heads, T, tok.device)[None]  # (1, h, T, T)
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))  # (B, h, T, T)
        elif self.position == "rotary":
            rotary = rotary_tables(T, self.cfg.hidden // self.cfg.heads, tok.device)
        for block in self.blocks:
            x = block(x, mask, rotary)
        return self.ln_final(x)


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


def _init(module: nn.Module, std: float) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class BertForMLM(nn.Module):
    """Encoder + sparse MLM head. `forward(ids, positions, mask)` returns (M, V) logits."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.encoder = Encoder(cfg, vocab_size)
        self.head = MLMHead(cfg, vocab_size)
        self.apply(lambda m: _init(m, cfg.init_std))
        if cfg.tie_embeddings:
            self.head.decoder.weight = self.encoder.tok.weight

    def forward(self, ids: torch.Tensor, positions: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encoder(ids, attention_mask)  # (B, T, H)
        with region("effitrain/head"):
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
            _init(m, cfg.init_std)
        if encoder is None:
            self.encoder.apply(lambda m: _init(m, cfg.init_std))

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
    """Weights that take part in a matmul for every token (the N of 6·N·tokens)."""
    inner = cfg.ffn * 2 // 3 if cfg.ffn_kind == "glu" else cfg.ffn
    ffn = cfg.hidden * inner * (3 if cfg.ffn_kind == "glu" else 2)
    return cfg.layers * (4 * cfg.hidden * cfg.hidden + ffn)


def analytic_flops_parts(cfg: ModelConfig, vocab_size: int, batch: int, seq_len: int, predicted: int,
                         attention_recompute: bool = True) -> dict[str, float]:
    """The terms of `analytic_flops`: {"blocks": 6·N·tokens, "attention": …, "head": …}."""
    tokens = batch * seq_len
    per_token_attn = 4 * seq_len * cfg.hidden * (3 + (0.5 if attention_recompute else 0))
    return {"blocks": float(6 * matmul_parameters(cfg) * tokens),
            "attention": float(cfg.layers * per_token_attn * tokens),
            "head": float(6 * predicted * (cfg.hidden * cfg.hidden + cfg.hidden * vocab_size))}


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


__all__ = ["BertForMLM", "BertForClassification", "Encoder", "Block", "count_parameters", "rotary_tables",
           "apply_rotary", "alibi_slopes", "alibi_bias", "math_attention",
           "matmul_parameters", "analytic_flops", "analytic_flops_parts"]
