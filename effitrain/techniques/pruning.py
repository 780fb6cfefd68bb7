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
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from effitrain.config import Config, ConfigError
from effitrain.data.masking import mask_tokens
from effitrain.data.tokenizer import PAD, SPECIAL_TOKENS, decode_text
from effitrain.techniques.base import StepContext, Technique, param, register
from effitrain.train.flops import count_flops

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import plotly.graph_objects as go

    from effitrain.data import PretrainData, TrainSet
    from effitrain.train.run import Run

SCORES = ("random", "compressibility", "perplexity", "el2n", "prototype")
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
def real_tokens(train: "TrainSet") -> torch.Tensor:
    """Non-special tokens per row (no [CLS]/[SEP]/[PAD]/[MASK]/[UNK])."""
    return (train.ids >= len(SPECIAL_TOKENS)).sum(dim=1)


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
    chars = train.features["chars"].float().clamp(min=1.0)
    scores = real_tokens(train).float() / chars
    return scores, {"seconds": time.perf_counter() - t0, "flops": 0.0}


# -- reference models ---------------------------------------------------------------------------------
def reference_config(config: Config, steps: int, seed: int) -> Config:
    """The run's config with a tiny model, a `steps` budget, one evaluation and the score's seed.

    Depends on neither the run's seed nor its budget, so every run of a sweep shares the scores.
    """
    return config.replace(**{"model.preset": REFERENCE_PRESET, "budget": f"{steps}steps", "run.evals": 1,
                             "run.seed": seed, "run.name": f"prune reference s{seed}", "run.compile": False,
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
    from effitrain.train.trainer import train_frozen

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
    return {"random": {"seed": seed}, "compressibility": {},
            "perplexity": {"ref_steps": ref_steps, "seed": seed},
            "el2n": {"ref_steps": ref_steps, "runs": el2n_runs, "seed": seed},
            "prototype": {"ref_steps": ref_steps, "clusters": clusters, "seed": seed}}[name]


def score_rows(name: str, train: "TrainSet", data: "PretrainData", config: Config, ref_steps: int = 50,
               el2n_runs: int = 2, clusters: int = 16, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Scores of every row of `train` by `name` (one of SCORES), and their cost.

    Cached in-process by (data.key, the rows' fingerprint, name, its parameters, the reference
    config): a cache hit returns the same scores with the cost of computing them the first time and
    ``cost["cached"] = True``.
    """
    if name not in SCORES:
        raise ConfigError(f"score must be one of {', '.join(SCORES)}; got {name!r}")
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
    score: str = param("compressibility", choices=SCORES, help="what makes an example easy or hard")
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
    Scores: `random` (the control); `compressibility`, tokens per character (the cramming filter
    drops text the tokenizer compresses badly); `perplexity`, the mean MLM loss
    $\\bar\\ell_i = \\frac1{|M_i|}\\sum_{j\\in M_i} -\\log p_\\theta(x_j\\mid \\tilde x_i)$ under a tiny
    reference model trained `ref_steps` steps; `el2n`, $\\frac1{|M_i|}\\sum_j \\lVert
    \\mathrm{softmax}(z_j) - e_{x_j}\\rVert_2$ early in training, averaged over `el2n_runs` seeds;
    `prototype`, $1-\\cos(e_i, c_{k(i)})$ to the nearest of `clusters` k-means centroids of the
    reference model's mean-pooled embeddings.

    **Why.** Training only changes which examples a step sees, not what a step costs. Pruning pays
    when some examples are worth less than others: junk (quality filtering), or, with data that
    is repeated for several epochs, examples the model already gets right (keep hard) or noisy
    outliers (keep easy). Sorscher et al. show the best end depends on the data budget: keep
    easy examples when data is scarce, hard ones when it is abundant. The scores cost compute;
    `self.stats` reports seconds and FLOPs so a lesson can charge them against the saving.

    **Settings.** `keep_fraction=1.0` changes nothing. Try 0.5–0.9; `compressibility` + `easy`
    is cramming's filter (which removed ~¼ of its data); `el2n` + `hard` is Paul et al.'s choice.
    Model-based scores are computed once per pool and cached in-process.

    **Papers.** Paul, Ganguli, Dziugaite, "Deep Learning on a Data Diet" (2021); Sorscher et al.,
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
        from effitrain.train.trainer import keep_rng

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


def cost_table(results: dict[str, tuple[torch.Tensor, dict]], run_flops: float | None = None) -> "pd.DataFrame":
    """One row per score: seconds, FLOPs (and FLOPs as a share of one training run), cached."""
    import pandas as pd

    rows = {}
    for name, (scores, cost) in results.items():
        row = {"seconds": cost["seconds"], "FLOPs": cost["flops"]}
        if run_flops:
            row["FLOPs ÷ one training run"] = cost["flops"] / run_flops
        row.update({"cached": cost.get("cached", False), "min": float(scores.min()),
                    "median": float(scores.median()), "max": float(scores.max())})
        rows[name] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "score"
    return df


def agreement(results: dict[str, tuple[torch.Tensor, dict]]) -> "pd.DataFrame":
    """Spearman rank correlation between every pair of scores: do they call the same rows hard?"""
    import pandas as pd

    names = list(results)
    ranks = torch.stack([torch.argsort(torch.argsort(results[n][0], stable=True)).double() for n in names])
    return pd.DataFrame(torch.corrcoef(ranks).numpy().round(2), index=names, columns=names)


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


def run_label(score: str, keep: str, keep_fraction: float) -> str:
    return f"{score} {keep} {keep_fraction:g}"


def sweep(config: Config, data: "PretrainData", scores: Sequence[str], fractions: Sequence[float],
          seeds: int = 2, keep: "str | dict[str, str]" = "easy", baseline: bool = True, verbose: bool = True,
          **params: Any) -> list["Run"]:
    """Train the baseline and every (score, keep fraction) `seeds` times; return all runs.

    keep: one end for every score, or {score: end}. Runs are named "<score> <keep> <fraction>
    s<seed>" (the baseline "baseline s<seed>"), so `compare` groups them by setting. `params` go
    to the technique (ref_steps, el2n_runs, ...). Prints one summary line per run.
    """
    ends = keep if isinstance(keep, dict) else {s: keep for s in scores}
    from effitrain.train.trainer import train as et_train

    plan: list[tuple[str, list[Technique]]] = [("baseline", [])] if baseline else []
    plan += [(run_label(s, ends[s], f), [Prune(score=s, keep_fraction=f, keep=ends[s], **params)])
             for s in scores for f in fractions]
    runs = []
    for label, techniques in plan:
        for seed in range(seeds):
            cfg = config.replace(**{"run.seed": config.run.seed + seed, "run.name": f"{label} s{seed}"})
            run = et_train(cfg, techniques=[type(t)(t.params) for t in techniques], data=data, progress=False)
            runs.append(run)
            if verbose:
                print(run.summary_line(), flush=True)
    return runs


def _prune_params(run: "Run") -> dict | None:
    for t in run.techniques:
        if t["name"] == "prune":
            return t["params"]
    return None


def sweep_table(runs: Sequence["Run"], target_val_loss: float | None = None) -> "pd.DataFrame":
    """Time to target per (score, keep, keep fraction), over seeds, against the baseline (no pruning).

    Target: `target_val_loss`, else the highest final val loss among the baseline's seeds (as
    `compare`). Columns: FLOPs / seconds to target (mean and 95% half-width), final val loss,
    speed-ups by FLOPs and seconds [95% interval], the score's cost, and the speed-ups once that
    cost is charged to the pruned runs ("net"): t_base / (t_pruned + cost).
    """
    import pandas as pd

    from effitrain.lab.compare import mean_ci, ratio_ci
    from effitrain.train.history import time_to_target

    groups: dict[tuple, list] = {}
    for run in runs:
        if run.status == "failed":
            continue
        p = _prune_params(run)
        if p is None or p["keep_fraction"] >= 1.0:
            key = ("none", "all", 1.0)
        else:
            key = (p["score"], p["keep"], float(p["keep_fraction"]))
        groups.setdefault(key, []).append(run)
    base = groups.get(("none", "all", 1.0))
    if not base:
        raise ValueError("sweep_table needs baseline runs (no pruning, or keep_fraction=1.0)")
    finals = lambda rs: [r.summary()["val_loss_last"] for r in rs]  # noqa: E731
    target = float(target_val_loss) if target_val_loss is not None else max(finals(base))
    base_hits = [time_to_target(r.history, val_loss=target) for r in base]
    rows = []
    for (score, keep, fraction), members in groups.items():
        hits = [time_to_target(r.history, val_loss=target) for r in members]
        stats = [r.extra.get("techniques", {}).get("prune", {}) for r in members]
        cost_f = float(np.mean([s.get("score_flops", 0.0) for s in stats]))
        cost_s = float(np.mean([s.get("score_seconds", 0.0) for s in stats]))
        row = {"score": score, "keep": keep, "keep_fraction": fraction, "seeds": len(members),
               "reached": sum(h is not None for h in hits),
               "kept": int(np.mean([s.get("kept", r.extra.get("train_examples", 0)) for s, r in zip(stats, members)]))}
        row["final_val_loss"], row["final_val_loss_ci"] = mean_ci(finals(members))
        row["score_flops"], row["score_seconds"] = cost_f, cost_s
        for axis, unit, cost in (("flops", "flops", cost_f), ("seconds", "s", cost_s)):
            all_hit = all(h is not None for h in hits) and all(h is not None for h in base_hits)
            times = [h[axis] for h in hits] if all_hit else []
            row[f"{unit}_to_target"], row[f"{unit}_to_target_ci"] = mean_ci(times) if times else (math.nan, math.nan)
            b = [h[axis] for h in base_hits] if all_hit else []
            for tag, extra in (("speedup", 0.0), ("net_speedup", cost)):
                if score == "none":  # the baseline against itself: 1 by definition, no interval
                    r, lo, hi = (1.0, math.nan, math.nan) if times else (math.nan,) * 3
                else:
                    r, lo, hi = ratio_ci(b, [t + extra for t in times]) if times else (math.nan,) * 3
                row[f"{tag}_{unit}"], row[f"{tag}_{unit}_lo"], row[f"{tag}_{unit}_hi"] = r, lo, hi
        rows.append(row)
    df = pd.DataFrame(rows)
    df["_pruned"] = df["score"] != "none"  # the baseline first
    df = df.sort_values(["_pruned", "score", "keep", "keep_fraction"]).drop(columns="_pruned").reset_index(drop=True)
    df.attrs.update(target_val_loss=target, notes=[
        f"target val loss {target:.4g}" + ("" if target_val_loss is not None else
                                           " (the highest final val loss of the baseline's seeds)"),
        "to target: mean ± 95% half-width over seeds; NaN when a seed (or the baseline) missed the target",
        "speedup = baseline ÷ pruned time to target; net = baseline ÷ (pruned + the score's cost)"])
    return df


def format_sweep_table(df: "pd.DataFrame") -> "pd.DataFrame":
    """`sweep_table` as readable strings: "1.2e11 ± 3e10", "1.05× [0.91, 1.21]"."""
    import pandas as pd

    from effitrain.lab.compare import fmt_pm, fmt_ratio

    def pm(v: float, h: float, spec: str) -> str:
        return fmt_pm(v, h, spec, missing="not reached")

    def ratio(v: float, lo: float, hi: float) -> str:
        return fmt_ratio(v, lo, hi, missing="not reached")

    out = pd.DataFrame({"score": df["score"], "keep": df["keep"], "keep fraction": df["keep_fraction"],
                        "rows kept": df["kept"], "reached": [f"{r}/{s}" for r, s in zip(df["reached"], df["seeds"])]})
    out["FLOPs to target"] = [pm(v, h, ".3g") for v, h in zip(df["flops_to_target"], df["flops_to_target_ci"])]
    out["s to target"] = [pm(v, h, ".3g") for v, h in zip(df["s_to_target"], df["s_to_target_ci"])]
    out["final val loss"] = [pm(v, h, ".3f") for v, h in zip(df["final_val_loss"], df["final_val_loss_ci"])]
    for unit, word in (("flops", "FLOPs"), ("s", "seconds")):
        out[f"speedup ({word})"] = [ratio(*t) for t in zip(
            df[f"speedup_{unit}"], df[f"speedup_{unit}_lo"], df[f"speedup_{unit}_hi"])]
        out[f"net of scoring ({word})"] = [ratio(*t) for t in zip(
            df[f"net_speedup_{unit}"], df[f"net_speedup_{unit}_lo"], df[f"net_speedup_{unit}_hi"])]
    out["score FLOPs"] = [f"{v:.3g}" for v in df["score_flops"]]
    return out


def sweep_text(df: "pd.DataFrame") -> str:
    """The formatted table and its notes as plain text."""
    import pandas as pd

    with pd.option_context("display.width", 250, "display.max_columns", 20):
        return format_sweep_table(df).to_string(index=False) + "\n" + "\n".join(df.attrs.get("notes", []))


def plot_sweep(df: "pd.DataFrame") -> "go.Figure":
    """FLOPs to target, seconds to target and final val loss against the keep fraction, one line per score.

    Error bars are the 95% half-widths over seeds; the baseline (no pruning) is the dashed line.
    A setting that missed the target has no point in the first two panels.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from effitrain.lab.plot import PALETTE

    panels = (("flops_to_target", "FLOPs to target"), ("s_to_target", "seconds to target"),
              ("final_val_loss", "final val loss"))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in panels])
    base = df[df["score"] == "none"].iloc[0]
    groups = [g for g in df[df["score"] != "none"].groupby(["score", "keep"], sort=False)]
    for i, ((score, keep), g) in enumerate(groups):
        g = g.sort_values("keep_fraction")
        color = PALETTE[i % len(PALETTE)]
        for col, (y, _) in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(
                x=list(g["keep_fraction"]) + [1.0], y=list(g[y]) + [base[y]], mode="lines+markers",
                name=f"{score} ({keep})", legendgroup=f"{score}{keep}", showlegend=col == 1,
                line=dict(color=color), error_y=dict(type="data", array=list(g[f"{y}_ci"]) + [base[f"{y}_ci"]],
                                                     visible=True)), row=1, col=col)
    for col, (y, _) in enumerate(panels, start=1):
        if math.isfinite(base[y]):
            fig.add_hline(y=base[y], line=dict(dash="dash", color="#222"), row=1, col=col)
        fig.update_xaxes(title_text="keep fraction", row=1, col=col)
    fig.update_layout(height=380, margin=dict(t=70, b=40, l=50, r=10),  # room for the title above the panels' titles
                      title=dict(text=f"pruning sweep (target val loss {df.attrs.get('target_val_loss', math.nan):.3f}; "
                                      "dashed: no pruning)", font=dict(size=13), y=0.97))
    return fig


__all__ = ["KEEPS", "SCORES", "Prune", "PruneParams", "agreement", "clear_cache", "compressibility_scores", "cost_table",
           "el2n_scores", "fingerprint_rows", "format_sweep_table", "kmeans", "masked_token_stats", "peek",
           "perplexity_scores", "plot_sweep", "prototype_scores", "random_scores", "real_tokens",
           "reference_config", "reference_model", "row_embeddings", "score_all", "score_params", "score_rows",
           "select_rows", "sweep", "sweep_table", "sweep_text"]
