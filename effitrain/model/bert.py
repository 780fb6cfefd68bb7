"""A compact BERT encoder, written to be read top to bottom.

    ids (B, T) ─ token + position embeddings ─ LN ─ dropout ─ N × Block ─ [final LN if pre-LN] ─ h (B, T, H)
    Block, post-LN (BERT):  x = LN(x + drop(Attn(x)));       x = LN(x + drop(FFN(x)))
    Block, pre-LN:          x = x + drop(Attn(LN(x)));       x = x + drop(FFN(LN(x)))
    MLM head (sparse):      logits only at the M predicted positions, (M, V), decoder tied to embeddings
    classifier:             h[:, 0] ([CLS]) → dense → tanh → dropout → (B, classes)

Attention is `F.scaled_dot_product_attention` (fused kernels on CPU and GPU).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from effitrain.config import ModelConfig


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden, bias=cfg.bias)
        self.out = nn.Linear(cfg.hidden, cfg.hidden, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)  # 3 × (B, h, T, d)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
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

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.drop(self.attn(self.ln1(x), attn_mask))
            return x + self.drop(self.ffn(self.ln2(x)))
        x = self.ln1(x + self.drop(self.attn(x, attn_mask)))
        return self.ln2(x + self.drop(self.ffn(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(vocab_size, cfg.hidden)
        self.pos = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.ln_emb = nn.LayerNorm(cfg.hidden, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_final = nn.LayerNorm(cfg.hidden, bias=cfg.bias) if cfg.norm == "pre" else nn.Identity()

    def forward(self, ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T), or `embeds` (B, T, H): token vectors used in place of `tok(ids)` (e.g. learned ones)."""
        tok = self.tok(ids) if embeds is None else embeds  # (B, T, H)
        B, T = tok.shape[:2]
        x = self.drop(self.ln_emb(tok + self.pos(torch.arange(T, device=tok.device))))  # (B, T, H)
        # SDPA takes a boolean mask where True = may attend; (B, 1, 1, T) broadcasts over heads and queries
        mask = None if attention_mask is None else attention_mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_final(x)


class MLMHead(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.hidden, bias=cfg.bias)
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
    counter counts that recompute, so the cross-check includes it.
    """
    return sum(analytic_flops_parts(cfg, vocab_size, batch, seq_len, predicted, attention_recompute).values())


__all__ = ["BertForMLM", "BertForClassification", "Encoder", "Block", "count_parameters",
           "matmul_parameters", "analytic_flops", "analytic_flops_parts"]
