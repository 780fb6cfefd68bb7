"""Looking at what ELECTRA learned (lesson 04): a few sentences through the discriminator (`examples`),
the RTD loss against the constant guess (`constant_guess_loss`, `rtd_gap`), what word-pair counts alone
detect (`count_detector`: the discriminator's plateau), and the per-run RTD table (`rtd_table`).

    from effitrain.lab import electra as EL
    EL.examples(run.model, data, rows=3)        # original, corrupted, replaced, the detector's guesses
    EL.count_detector(data)                     # {"rtd_loss", "accuracy", "constant_loss", ...}
    EL.rtd_table({"ELECTRA 100%": runs})        # mean ± 95% of the last evaluation's RTD metrics

The method itself is `effitrain.techniques.electra`; these helpers are kept out of it (its source is
part of the run cache's key, so a display change here retrains nothing).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from effitrain.config import ConfigError
from effitrain.data.tokenizer import MASK, SPECIAL_TOKENS
from effitrain.stats import mean_ci
from effitrain.techniques.electra import (Discriminator, detect, electra_masking, unigram_probs, unigram_tokens,
                                          unmask)


# -- looking at it ------------------------------------------------------------------------------------------
@torch.no_grad()
def examples(discriminator: "Discriminator", data: Any, rows: int = 3, seed: int = 0, tokens: int = 24,
             mask_prob: float = 0.15) -> "Any":
    """A few validation sentences through a trained ELECTRA (its discriminator, whose `.generator` is set).

    One row per sentence: the text the generator saw ([MASK] shown as ▢), what the discriminator
    read (a replaced token as [original→sample]), and its verdicts: the tokens it calls replaced
    (p > 0.5), marked ✓ where right and ✗ where wrong, plus the replaced tokens it missed.
    """
    import pandas as pd

    from effitrain.data.masking import mask_tokens
    from effitrain.data.tokenizer import decode_text

    if getattr(discriminator, "generator", None) is None:
        raise ValueError("examples needs an ELECTRA discriminator with its generator (run.model of an electra run)")
    g = torch.Generator().manual_seed(seed)
    first = data.val[0]  # the sentences come from the first validation batch
    original = unmask(first.input_ids, first.positions, first.labels)[:rows, :tokens]
    device = next(discriminator.parameters()).device
    batch = electra_masking(mask_tokens(original, mask_prob, data.vocab_size, g), g)
    was = discriminator.training
    discriminator.eval()
    _, corrupted, replaced, rtd_logits = detect(discriminator, batch.to(device), g)
    p = torch.sigmoid(rtd_logits).cpu()
    discriminator.train(was)
    word = lambda i: decode_text(data.tokenizer, [int(i)]) or "?"  # noqa: E731
    out = []
    for r in range(original.shape[0]):
        shown, read, verdict = [], [], []
        for t in range(1, original.shape[1]):
            o, c, m = int(original[r, t]), int(corrupted[r, t]), int(batch.input_ids[r, t])
            shown.append("▢" if m == MASK else word(o))
            read.append(f"[{word(o)}→{word(c)}]" if c != o else word(o))
            flagged, was_replaced = bool(p[r, t] > 0.5), bool(replaced[r, t])
            if flagged or was_replaced:
                verdict.append(f"{word(c)} {'✓' if flagged and was_replaced else '✗' if flagged else 'missed'}")
        out.append({"generator saw": " ".join(shown), "discriminator read": " ".join(read),
                    "flagged as replaced (✓ right, ✗ wrong) / missed": ", ".join(verdict) or "none"})
    return pd.DataFrame(out)


def constant_guess_loss(share: float) -> float:
    """The discriminator's plateau: the log loss of the best constant guess when `share` of the tokens
    are replaced, the binary entropy H(share) in nats (0 < share < 1)."""
    return -(share * math.log(share) + (1 - share) * math.log(1 - share))


def rtd_gap(row: dict) -> float:
    """Nats by which an evaluation's RTD loss is below the best constant guess (the binary entropy of
    the replaced share): 0 for a discriminator that has learned only how many tokens are replaced."""
    share = float(row["val_replaced_share"])
    if not 0 < share < 1:
        return math.nan
    return constant_guess_loss(share) - float(row["val_rtd_loss"])


def _pair_counts(ids: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pair codes a·V+b sorted, their counts, row totals (V,)) of adjacent word pairs in (N, T) `ids`
    (special tokens and [PAD] excluded), sparse: a V × V table would not fit for a large vocabulary."""
    a, b = ids[:, :-1].reshape(-1), ids[:, 1:].reshape(-1)
    ok = (a >= len(SPECIAL_TOKENS)) & (b >= len(SPECIAL_TOKENS))
    codes, counts = torch.unique(a[ok] * vocab_size + b[ok], return_counts=True)
    return codes, counts.double(), torch.bincount(a[ok], minlength=vocab_size).double()


def _lookup(codes: torch.Tensor, counts: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """The count of each `query` code in the sorted (`codes`, `counts`) of `_pair_counts`, 0 where absent."""
    idx = torch.searchsorted(codes, query).clamp(max=len(codes) - 1)  # codes is never empty here
    return torch.where(codes[idx] == query, counts[idx], torch.zeros((), dtype=counts.dtype))


def count_detector(data: Any, mask_prob: float | None = None, seed: int = 0, smoothing: float = 10.0,
                   fit_share: float = 0.1) -> dict[str, float]:
    """What word-pair counts alone tell a replaced-token detector: the discriminator's "context line".

    The unigram line says what a masked LM gets with no context; this says what a detector gets
    with the *least* context, the two neighbours. Replacements are drawn by corpus frequency
    (`unigram_tokens`, what a generator on its plateau samples) at `mask_prob` of the real tokens
    (default: the data's), neighbours included, so a neighbour may be a replacement too. The
    detector: a logistic regression on the left and right pointwise mutual information of each
    token with its (possibly replaced) neighbours, log P(b|a) − log q(b) and log P(c|b) − log q(c)
    from the bigram counts of the training split (add-`smoothing` towards the unigram q), their
    squares and product, and log q(b). The counts come from the training rows but a `fit_share`
    of them, which fits the regression; it is scored on the validation rows, over tokens whose
    two neighbours are words (not special tokens). Deterministic for a seed.

    Returns replaced_share, constant_loss (the plateau: binary entropy of the share), loss, gap
    (constant_loss − loss, nats; compare `rtd_gap`), accuracy and all_original_accuracy.
    """
    p = data.config.mask_prob if mask_prob is None else mask_prob
    if not (isinstance(p, (int, float)) and 0 < p < 1):
        raise ConfigError(f"count_detector: mask_prob must be in (0, 1); got {mask_prob!r}")
    if not (0 < fit_share < 1) or not smoothing > 0:
        raise ConfigError(f"count_detector: fit_share must be in (0, 1) and smoothing > 0; got {fit_share!r}, "
                          f"{smoothing!r}")
    V = int(data.unigram_counts.shape[0])
    ids = data.train.ids
    n_fit = max(1, int(ids.shape[0] * fit_share))
    codes, counts, rows = _pair_counts(ids[n_fit:], V)
    if len(codes) == 0:
        raise ValueError("count_detector: too little text to count word pairs in the training split")
    q = unigram_probs(data.unigram_counts)
    log_q = q.clamp(min=1e-12).log()

    def log_pmi(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # log P(b | a) − log q(b)
        return ((_lookup(codes, counts, a * V + b) + smoothing * q[b]) / (rows[a] + smoothing)).log() - log_q[b]

    def features(original: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        real = original >= len(SPECIAL_TOKENS)
        picked = (torch.rand(original.shape, generator=g) < p) & real
        seen = original.clone()
        seen[picked] = unigram_tokens(int(picked.sum()), q, g)
        x, b, a, c = original[:, 1:-1], seen[:, 1:-1], seen[:, :-2], seen[:, 2:]
        keep = (x >= len(SPECIAL_TOKENS)) & (a >= len(SPECIAL_TOKENS)) & (c >= len(SPECIAL_TOKENS))
        a, b, c = a[keep], b[keep], c[keep]
        left, right = log_pmi(a, b), log_pmi(b, c)
        f = torch.stack([left, right, log_q[b], left ** 2, right ** 2, left * right], 1).float()
        return f, (b != x[keep]).float()

    g = torch.Generator().manual_seed(seed)
    fx, fy = features(ids[:n_fit], g)
    val = torch.cat([unmask(v.input_ids, v.positions, v.labels) for v in data.val])
    vx, vy = features(val, g)
    if len(fy) == 0 or len(vy) == 0 or not (0 < float(vy.mean()) < 1):
        raise ValueError("count_detector: too little text to fit or score a detector (no token with two word "
                         "neighbours, or none replaced)")
    mu, sd = fx.mean(0), fx.std(0).clamp(min=1e-6)
    fx, vx = (fx - mu) / sd, (vx - mu) / sd
    w = torch.zeros(fx.shape[1], requires_grad=True)
    b0 = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b0], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(fx @ w + b0, fy)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        logits = vx @ w + b0
        loss = float(F.binary_cross_entropy_with_logits(logits, vy))
        share = float(vy.mean())
        accuracy = float(((logits > 0).float() == vy).float().mean())
    constant = constant_guess_loss(share)
    return {"replaced_share": share, "constant_loss": constant, "loss": loss, "gap": constant - loss,
            "accuracy": accuracy, "all_original_accuracy": 1 - share}


def rtd_table(groups: "dict[str, Any]") -> "Any":
    """How far each group of ELECTRA runs' discriminators got: {label: [Run, ...]} → a DataFrame with
    the final validation RTD accuracy, the all-original accuracy (1 − replaced share), and `rtd_gap`
    (its plateau: 0 nats is a discriminator that uses no context), each a mean ± 95% interval over the
    runs. A group without ELECTRA evaluations is refused with its label."""
    import pandas as pd


    rows = {}
    for label, runs in groups.items():
        last = [r.history.evals[-1] for r in runs if r.history.evals]
        if not last or any("val_rtd_loss" not in e for e in last):
            raise ValueError(f"rtd_table: group {label!r} has runs without ELECTRA's validation RTD metrics")
        row: dict[str, float] = {"runs": len(last)}
        for name, values in (("discriminator accuracy", [e["val_rtd_accuracy"] for e in last]),
                             ("all-original accuracy", [1 - e["val_replaced_share"] for e in last]),
                             ("RTD loss below constant (nats)", [rtd_gap(e) for e in last])):
            row[name], row[f"{name} ±"] = mean_ci(values)
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")
