"""Data pruning: score every training example, keep a fraction of them.

    scores, cost = score_rows("el2n", data.train, data, cfg, ref_steps=30)   # cached in-process
    idx = select_rows(scores, keep_fraction=0.5, keep="hard")                 # sorted row indices
    run = et.train(cfg, techniques=[et.technique("prune", score="el2n", keep_fraction=0.5, keep="hard")])

Every score is a tensor with one value per row of a `TrainSet`, **higher = harder / less typical**:

=================  ==============================================================================
random             uniform noise from a seeded generator: the control
compressibility    tokens per character (the cramming filter: text the tokenizer compresses badly)
perplexity         mean MLM loss of the row's masked tokens under a briefly trained reference model
el2n               mean ‖softmax − one-hot‖₂ at the masked tokens, averaged over a few short runs
prototype          1 − cosine to the nearest k-means centroid of the reference model's embeddings
oracle             the injected junk labels of a noisy corpus (``junk_share``): a perfect filter,
                   the upper bound a real score is measured against (noisy corpora only)
=================  ==============================================================================

Each scorer returns ``(scores, cost)`` where ``cost = {"seconds", "flops"}`` counts everything it
did: training the reference model(s), evaluating them, and the scoring passes. Reference models are
`tiny` BERTs trained with the package's own trainer on the pool being pruned, so their FLOPs are
the trainer's measured FLOPs; scoring passes are counted with `count_flops` once per batch shape.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from effitrain.config import Config, ConfigError
from effitrain.data.masking import mask_tokens
from effitrain.data.order import real_tokens, tokens_per_char
from effitrain.data.tokenizer import PAD, decode_text
from effitrain.techniques.base import StepContext, Technique, param, register
from effitrain.train.flops import count_flops
from effitrain.train.step import keep_rng
from effitrain.train.runcache import train_frozen

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from effitrain.data import PretrainData, TrainSet

SCORES = ("random", "compressibility", "perplexity", "el2n", "prototype")
LABEL_SCORES = ("oracle",)  # need the junk labels of a noisy corpus (`data.corpus="sotu-noisy"`)
KEEPS = ("easy", "hard", "middle")
REFERENCE_PRESET = "tiny"
SCORE_BATCH = 256  # rows per scoring forward pass
SCORE_MASK_SEED = 4321  # the fixed masks every model-based score is measured with
KMEANS_ITERS = 10

Cost = dict  # {"seconds": float, "flops": float}


# -- selection ------------------------------------------------------------------------------------
def select_rows(scores: torch.Tensor, keep_fraction: float, keep: str = "easy") -> torch.Tensor:
    """Indices of the `round(keep_fraction · N)` rows (at least 1) to keep, sorted ascending.

    keep="easy": the lowest scores; "hard": the highest; "middle": a band centred on the median.
    Ties are broken by row index. Sorted indices keep the rows' original order, so
    keep_fraction=1.0 selects every row in order (the identical TrainSet).
    """
    if keep not in KEEPS:
        raise ConfigError(f"keep must be one of {', '.join(KEEPS)}; got {keep!r}")
    if isinstance(keep_fraction, bool) or not isinstance(keep_fraction, (int, float)) or not 0 < keep_fraction <= 1:
        raise ConfigError(f"keep_fraction must be in (0, 1]; got {keep_fraction!r}")
    n_rows = int(scores.shape[0])
    n = min(n_rows, max(1, round(keep_fraction * n_rows)))
    order = torch.argsort(scores, stable=True)
    start = {"easy": 0, "hard": n_rows - n, "middle": (n_rows - n) // 2}[keep]
    return torch.sort(order[start:start + n]).values


# -- cheap scores ----------------------------------------------------------------------------------
def random_scores(train: "TrainSet", seed: int = 0) -> tuple[torch.Tensor, Cost]:
    """Uniform(0, 1) per row from a generator seeded with `seed`: the control every score must beat."""
    t0 = time.perf_counter()
    scores = torch.rand(len(train), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()
    return scores, {"seconds": time.perf_counter() - t0, "flops": 0.0}


def compressibility_scores(train: "TrainSet") -> tuple[torch.Tensor, Cost]:
    """Tokens per character: higher = the tokenizer compresses the text worse (names, numbers, junk).

    Uses the TrainSet's ``chars`` feature (characters of text the row's tokens cover, from the
    tokenizer's offsets, so exact for packed blocks and for paragraphs cut at seq_len) and counts
    the row's real tokens.
    The cramming filter (Geiping & Goldstein 2022) drops the rows with the highest value.
    """
    t0 = time.perf_counter()
    scores = tokens_per_char(train)  # the same measure as the cramming recipe's data.max_tokens_per_char
    return scores, {"seconds": time.perf_counter() - t0, "flops": 0.0}


def oracle_scores(train: "TrainSet") -> tuple[torch.Tensor, Cost]:
    """The share of each row's tokens that are injected junk (``junk_share`` of a noisy corpus).

    Not a score a real corpus has: it is the perfect filter, so `keep="easy"` at
    ``keep_fraction = 1 - junk share`` removes exactly the junk, the bound real scores are read against.
    """
    if "junk_share" not in train.features:
        raise ConfigError("score 'oracle' needs the junk labels of a noisy corpus (data.corpus='sotu-noisy'); "
                          f"this training set has the features {', '.join(sorted(train.features)) or 'none'}")
    t0 = time.perf_counter()
    scores = train.features["junk_share"].float().clone()
    return scores, {"seconds": time.perf_counter() - t0, "flops": 0.0}


# -- reference models ---------------------------------------------------------------------------------
def reference_config(config: Config, steps: int, seed: int) -> Config:
    """The run's config with a tiny model, a `steps` budget from scratch, one evaluation and the score's seed.

    Depends on neither the run's seed, its budget nor its warm start, so every run of a sweep shares
    the scores.
    """
    return config.replace(**{"model.preset": REFERENCE_PRESET, "budget": f"{steps}steps", "run.evals": 1,
                             "run.seed": seed, "run.name": f"prune reference s{seed}", "run.compile": False,
                             "run.warm_start": 0, "run.warm_seed": 0,
                             "run.log_every": max(1, steps)})


def fingerprint_rows(train: "TrainSet") -> str:
    """A short hash of the rows' ids and chars: the identity of a training pool."""
    h = hashlib.blake2b(digest_size=12)
    h.update(str(tuple(train.ids.shape)).encode())
    h.update(np.ascontiguousarray(train.ids.numpy()).tobytes())
    h.update(np.ascontiguousarray(train.features["chars"].numpy()).tobytes())
    return h.hexdigest()


_REFERENCES: dict[tuple, tuple[torch.nn.Module, Cost]] = {}


def reference_model(train: "TrainSet", data: "PretrainData", config: Config, steps: int,
                    seed: int) -> tuple[torch.nn.Module, Cost]:
    """A tiny BERT trained `steps` steps on `train` by `et.train`; cached; cost = its measured FLOPs."""
    ref_cfg = reference_config(config, steps, seed)
    key = (data.key, fingerprint_rows(train), json.dumps(ref_cfg.to_dict(), sort_keys=True, default=str))
    if key not in _REFERENCES:
        t0 = time.perf_counter()
        run = train_frozen(ref_cfg, dataclasses.replace(data, train=train), "the pruning reference model")
        s = run.summary()
        # training FLOPs are measured by the trainer; add the two evaluation passes on the validation set
        val_tokens = sum(b.input_ids.numel() for b in data.val)
        fwd_per_token = s["flops_measured"] / max(1, s["tokens"]) / 3  # forward ≈ 1/3 of forward+backward
        flops = s["flops_measured"] + len(run.history.evals) * val_tokens * fwd_per_token
        _REFERENCES[key] = (run.model, {"seconds": time.perf_counter() - t0, "flops": float(flops)})
    model, cost = _REFERENCES[key]
    return model, dict(cost)


def _chunks(n: int, size: int = SCORE_BATCH) -> Iterable[torch.Tensor]:
    for start in range(0, n, size):
        yield torch.arange(start, min(n, start + size))


@torch.no_grad()
def masked_token_stats(model: torch.nn.Module, train: "TrainSet", data: "PretrainData",
                       mask_seed: int = SCORE_MASK_SEED) -> tuple[dict[str, torch.Tensor], float]:
    """Per-row means over the masked tokens of the MLM loss and of EL2N, on fixed masks.

    loss  = −log softmax(z)_y                    (mean over the row's masked tokens: log-perplexity)
    el2n  = ‖softmax(z) − onehot(y)‖₂            (Paul et al. 2021, per masked token)
    Returns ({"loss", "el2n"} each (N,), FLOPs of the forward passes).
    """
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(mask_seed)
    loss, el2n = torch.zeros(len(train)), torch.zeros(len(train))
    flops_by_shape: dict[tuple, int] = {}
    flops = 0.0
    for idx in _chunks(len(train)):
        ids = train.batch(idx)
        batch = mask_tokens(ids, data.config.mask_prob, data.vocab_size, g).to(device)
        run_fwd = lambda b=batch: model(b.input_ids, b.positions, b.attention_mask)  # noqa: E731
        shape = tuple(ids.shape)
        if shape not in flops_by_shape:
            flops_by_shape[shape] = count_flops(run_fwd)
        flops += flops_by_shape[shape]
        logits = run_fwd().float()
        token_loss = F.cross_entropy(logits, batch.labels, reduction="none")
        probs = logits.softmax(-1)
        probs[torch.arange(len(batch.labels), device=device), batch.labels] -= 1.0
        token_el2n = probs.norm(dim=-1)
        row = (batch.positions // ids.shape[1]).cpu()
        count = torch.bincount(row, minlength=len(idx)).clamp(min=1).float()
        loss[idx] = torch.zeros(len(idx)).index_add_(0, row, token_loss.cpu()) / count
        el2n[idx] = torch.zeros(len(idx)).index_add_(0, row, token_el2n.cpu()) / count
    return {"loss": loss, "el2n": el2n}, float(flops)


@torch.no_grad()
def row_embeddings(model: torch.nn.Module, train: "TrainSet") -> tuple[torch.Tensor, float]:
    """Mean-pooled final hidden states of the real tokens of each row (no masking): (N, H), FLOPs."""
    device = next(model.parameters()).device
    encoder = model.encoder
    out = []
    flops_by_shape: dict[tuple, int] = {}
    flops = 0.0
    for idx in _chunks(len(train)):
        ids = train.batch(idx).to(device)
        pad = ids == PAD
        mask = ~pad if bool(pad.any()) else None
        run_fwd = lambda i=ids, m=mask: encoder(i, m)  # noqa: E731
        if tuple(ids.shape) not in flops_by_shape:
            flops_by_shape[tuple(ids.shape)] = count_flops(run_fwd)
        flops += flops_by_shape[tuple(ids.shape)]
        h = run_fwd().float()  # (B, T, H)
        real = (~pad).float().unsqueeze(-1)
        out.append(((h * real).sum(1) / real.sum(1).clamp(min=1)).cpu())
    return torch.cat(out), float(flops)


def kmeans(x: torch.Tensor, k: int, iters: int = KMEANS_ITERS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means (Lloyd) on the rows of `x`: (centroids (k, D) unit norm, assignment (N,)).

    Seeded k-means++ start (each next centroid is a row drawn with probability ∝ its squared
    distance to the nearest centroid so far); an empty cluster keeps its centroid. Similarity is
    the cosine, so the rows are L2-normalized first.
    """
    x = F.normalize(x.float(), dim=1)
    k = min(k, x.shape[0])
    g = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(x.shape[0], (1,), generator=g))]
    nearest = x @ x[chosen[0]]  # (N,) best cosine so far
    for _ in range(1, k):
        d2 = (2 - 2 * nearest).clamp(min=0)  # squared Euclidean distance on the unit sphere
        pick = int(torch.multinomial(d2 + 1e-12, 1, generator=g)) if float(d2.sum()) > 0 else len(chosen)
        chosen.append(pick)
        nearest = torch.maximum(nearest, x @ x[pick])
    centroids = x[chosen].clone()
    assign = torch.zeros(x.shape[0], dtype=torch.long)
    for _ in range(iters):
        assign = (x @ centroids.T).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        filled = counts > 0
        centroids[filled] = F.normalize(sums[filled], dim=1)
    assign = (x @ centroids.T).argmax(dim=1)
    return centroids, assign


def _add(a: Cost, b: Cost) -> Cost:
    return {"seconds": a["seconds"] + b["seconds"], "flops": a["flops"] + b["flops"]}


# -- model-based scores ------------------------------------------------------------------------------
def perplexity_scores(train: "TrainSet", data: "PretrainData", config: Config, ref_steps: int = 50,
                      seed: int = 0) -> tuple[torch.Tensor, Cost]:
    """Mean MLM loss (log-perplexity) of each row's masked tokens under a reference model.

    The reference is a tiny BERT trained `ref_steps` steps on `train`; masks are fixed
    (`SCORE_MASK_SEED`), so the score is deterministic. Higher = the model finds the row harder.
    """
    model, cost = reference_model(train, data, config, ref_steps, seed)
    t0 = time.perf_counter()
    stats, flops = masked_token_stats(model, train, data)
    return stats["loss"], _add(cost, {"seconds": time.perf_counter() - t0, "flops": flops})


def el2n_scores(train: "TrainSet", data: "PretrainData", config: Config, ref_steps: int = 50, runs: int = 2,
                seed: int = 0) -> tuple[torch.Tensor, Cost]:
    """EL2N (Paul et al. 2021): ‖softmax − one-hot‖₂ at the masked positions, early in training.

    Mean over the row's masked tokens and over `runs` reference models (seeds seed … seed+runs−1),
    each trained only `ref_steps` steps. In [0, √2]; higher = larger error = harder.
    """
    total, cost = torch.zeros(len(train)), {"seconds": 0.0, "flops": 0.0}
    for r in range(runs):
        model, ref_cost = reference_model(train, data, config, ref_steps, seed + r)
        t0 = time.perf_counter()
        stats, flops = masked_token_stats(model, train, data)
        total += stats["el2n"]
        cost = _add(_add(cost, ref_cost), {"seconds": time.perf_counter() - t0, "flops": flops})
    return total / runs, cost


def prototype_scores(train: "TrainSet", data: "PretrainData", config: Config, ref_steps: int = 50,
                     clusters: int = 16, seed: int = 0) -> tuple[torch.Tensor, Cost]:
    """Self-supervised prototype distance (Sorscher et al. 2022): 1 − cos(e, nearest centroid).

    e = the reference model's mean-pooled embedding of the row, centred on the pool's mean;
    centroids from spherical k-means with `clusters` clusters. In [0, 2]; higher = farther from every prototype = less typical.
    """
    model, cost = reference_model(train, data, config, ref_steps, seed)
    t0 = time.perf_counter()
    emb, flops = row_embeddings(model, train)
    # centre first: the pooled states of an early model share a large common direction that would
    # make every cosine ≈ 1; the prototypes live in what tells the rows apart
    emb = emb - emb.mean(dim=0)
    centroids, _ = kmeans(emb, clusters, seed=seed)
    x = F.normalize(emb, dim=1)
    scores = 1.0 - (x @ centroids.T).max(dim=1).values
    n, d, k = emb.shape[0], emb.shape[1], centroids.shape[0]
    flops += 2.0 * n * d * k * (KMEANS_ITERS + 3)  # the k-means(++) distance matmuls
    return scores, _add(cost, {"seconds": time.perf_counter() - t0, "flops": float(flops)})


# -- one entry point, cached ----------------------------------------------------------------------------
_SCORE_CACHE: dict[tuple, tuple[torch.Tensor, Cost]] = {}


def score_params(name: str, ref_steps: int = 50, el2n_runs: int = 2, clusters: int = 16, seed: int = 0) -> dict:
    """The parameters that score `name` depends on (the rest are ignored and not part of its cache key)."""
    return {"random": {"seed": seed}, "compressibility": {}, "oracle": {},
            "perplexity": {"ref_steps": ref_steps, "seed": seed},
            "el2n": {"ref_steps": ref_steps, "runs": el2n_runs, "seed": seed},
            "prototype": {"ref_steps": ref_steps, "clusters": clusters, "seed": seed}}[name]


def score_rows(name: str, train: "TrainSet", data: "PretrainData", config: Config, ref_steps: int = 50,
               el2n_runs: int = 2, clusters: int = 16, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Scores of every row of `train` by `name` (one of SCORES or LABEL_SCORES), and their cost.

    Cached in-process by (data.key, the rows' fingerprint, name, its parameters, the reference
    config): a cache hit returns the same scores with the cost of computing them the first time and
    ``cost["cached"] = True``.
    """
    if name not in SCORES + LABEL_SCORES:
        raise ConfigError(f"score must be one of {', '.join(SCORES + LABEL_SCORES)}; got {name!r}")
    params = score_params(name, ref_steps, el2n_runs, clusters, seed)
    model_based = name in ("perplexity", "el2n", "prototype")
    ref = json.dumps(reference_config(config, ref_steps, seed).to_dict(), sort_keys=True, default=str) \
        if model_based else ""
    key = (data.key, fingerprint_rows(train), name, tuple(sorted(params.items())), ref)
    cached = key in _SCORE_CACHE
    if not cached:
        fn: Callable[..., tuple[torch.Tensor, Cost]] = {
            "random": lambda: random_scores(train, **params),
            "compressibility": lambda: compressibility_scores(train),
            "oracle": lambda: oracle_scores(train),
            "perplexity": lambda: perplexity_scores(train, data, config, **params),
            "el2n": lambda: el2n_scores(train, data, config, **params),
            "prototype": lambda: prototype_scores(train, data, config, **params),
        }[name]
        t0 = time.perf_counter()
        scores, cost = fn()
        # the wall time of the whole call (a reference model another score already trained is charged too)
        cost = {"seconds": max(cost["seconds"], time.perf_counter() - t0), "flops": cost["flops"]}
        _SCORE_CACHE[key] = (scores, cost)
    scores, cost = _SCORE_CACHE[key]
    return scores.clone(), {**cost, "cached": cached}


def clear_cache() -> None:
    """Forget cached scores and reference models (e.g. to time scoring again)."""
    _SCORE_CACHE.clear()
    _REFERENCES.clear()


# -- the hook -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PruneParams:
    score: str = param("compressibility", choices=SCORES + LABEL_SCORES,
                       help="what makes an example easy or hard (oracle: a noisy corpus's junk labels)")
    keep_fraction: float = param(0.5, range=(0.05, 1.0), step=0.05, help="share of the examples to train on")
    keep: str = param("easy", choices=KEEPS, help="which end of the scores to keep")
    ref_steps: int = param(50, range=(1, 5000), help="steps of each reference model (perplexity, el2n, prototype)")
    el2n_runs: int = param(2, range=(1, 10), help="reference runs EL2N averages over")
    clusters: int = param(16, range=(2, 512), help="k of the k-means prototypes")
    score_seed: int = param(0, range=(0, 1_000_000), help="seed of the scores (not the run's seed)")


@register
class Prune(Technique):
    """Data pruning: train on a scored subset of the training examples.

    **What.** Before training, every example gets a score (higher = harder / less typical), and
    only `keep_fraction` of them are kept: the easiest, the hardest or the middle band.

    **Why.** Training only changes which examples a step sees, not what a step costs. Pruning pays
    when some examples are worth less than others: junk (quality filtering), or, with data that
    is repeated for several epochs, examples the model already gets right (keep hard) or noisy
    outliers (keep easy). Sorscher et al. show the best end depends on the data budget: keep
    easy examples when data is scarce, hard ones when it is abundant. The scores cost compute;
    `self.stats` reports seconds and FLOPs so a lesson can charge them against the saving.

    **Math.** Scores: `random` (the control); `compressibility`, tokens per character (the cramming
    filter drops text the tokenizer compresses badly); `perplexity`, the mean MLM loss
    $\\bar\\ell_i = \\frac1{|M_i|}\\sum_{j\\in M_i} -\\log p_\\theta(x_j\\mid \\tilde x_i)$ under a tiny
    reference model trained `ref_steps` steps; `el2n`, $\\frac1{|M_i|}\\sum_j \\lVert
    \\mathrm{softmax}(z_j) - e_{x_j}\\rVert_2$ early in training, averaged over `el2n_runs` seeds;
    `prototype`, $1-\\cos(e_i, c_{k(i)})$ to the nearest of `clusters` k-means centroids of the
    reference model's mean-pooled embeddings; `oracle` (noisy corpora only), the injected junk
    labels: the perfect filter.

    **Settings.** `keep_fraction=1.0` changes nothing. Try 0.5–0.9; `compressibility` + `easy`
    is cramming's filter (which removed ~¼ of its data); `el2n` + `hard` is Paul et al.'s choice.
    Model-based scores are computed once per pool and cached in-process.

    **Paper.** Paul, Ganguli, Dziugaite, "Deep Learning on a Data Diet" (2021); Sorscher et al.,
    "Beyond neural scaling laws: beating power law scaling via data pruning" (2022); Geiping &
    Goldstein, "Cramming: Training a Language Model on a Single GPU in One Day" (2022).
    """

    name = "prune"
    Params = PruneParams
    paper = "Paul et al. 2021 (EL2N); Sorscher et al. 2022 (prototypes); Geiping & Goldstein 2022 (cramming)"
    identity_params = {"keep_fraction": 1.0}

    def on_dataset(self, train: "TrainSet", ctx: StepContext) -> "TrainSet":
        p = self.params
        n = len(train)
        if p.keep_fraction >= 1.0:  # keep everything: no scores needed, the identical TrainSet
            self.stats.update(score=p.score, score_seconds=0.0, score_flops=0.0, kept=n, of=n, cached=False)
            return train
        if ctx.data is None:
            raise ValueError("prune needs the run's data (StepContext.data) to score the examples")
        with keep_rng(ctx.device):  # scoring trains models: leave the run's random stream as it was
            scores, cost = score_rows(p.score, train, ctx.data, ctx.config, ref_steps=p.ref_steps,
                                      el2n_runs=p.el2n_runs, clusters=p.clusters, seed=p.score_seed)
        idx = select_rows(scores, p.keep_fraction, p.keep)
        self.stats.update(score=p.score, score_seconds=float(cost["seconds"]), score_flops=float(cost["flops"]),
                          kept=int(idx.numel()), of=n, cached=bool(cost["cached"]))
        return train.select(idx)


# -- lesson helpers ---------------------------------------------------------------------------------------
def score_all(train: "TrainSet", data: "PretrainData", config: Config, scores: Sequence[str] = SCORES,
              **params: Any) -> dict[str, tuple[torch.Tensor, dict]]:
    """`score_rows` for each name in `scores`, with the same parameters: {name: (scores, cost)}."""
    return {name: score_rows(name, train, data, config, **params) for name in scores}


def peek(train: "TrainSet", data: "PretrainData", scores: torch.Tensor, k: int = 2, chars: int = 120) -> "pd.DataFrame":
    """The k easiest and k hardest rows by `scores`, decoded (first `chars` characters)."""
    import pandas as pd

    order = torch.argsort(scores, stable=True)
    rows = []
    for end, picks in (("easiest", order[:k]), ("hardest", order.flip(0)[:k])):
        for i in picks.tolist():
            rows.append({"end": end, "row": i, "score": round(float(scores[i]), 4),
                         "text": decode_text(data.tokenizer, train.ids[i].tolist())[:chars]})
    return pd.DataFrame(rows).set_index(["end", "row"])


__all__ = ["KEEPS", "LABEL_SCORES", "SCORES", "Prune", "PruneParams", "clear_cache", "compressibility_scores", "el2n_scores",
           "fingerprint_rows", "kmeans", "masked_token_stats", "oracle_scores", "peek", "perplexity_scores", "prototype_scores",
           "random_scores", "real_tokens", "reference_config", "reference_model", "row_embeddings", "score_all",
           "score_params", "score_rows", "select_rows"]
