"""Curriculum learning: easy examples first (competence-based), and sequence-length warmup.

Functional core first: competence schedules, per-example difficulty, its empirical CDF and the
sequence-length schedule. Then the hooks:

    curriculum     make_sampler: score every example of the final training set (after any pruning)
                   and draw each batch from the examples the model is "competent" for
    seqlen_warmup  on_batch: cut the (B, T) ids to a length that grows over the first part of the budget

The lesson's tables and plots are in `effitrain.lab.tables` and `effitrain.lab.figures`.

Time is measured as a fraction of the training budget throughout (t and T in [0, 1]), so a
schedule ends where the budget says, whatever its unit (steps, seconds, tokens, FLOPs). After a
warm start (`run.warm_start`) t counts the part of the budget the technique acts on
(`StepContext.since_start`): the schedule runs over the remaining steps as it would from scratch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from effitrain.config import ConfigError
from effitrain.data.tokenizer import decode_text
from effitrain.data.order import token_surprisal
from effitrain.techniques.base import StepContext, Technique, param, register

if TYPE_CHECKING:  # pragma: no cover
    from effitrain.data import PretrainData, TrainSet

DIFFICULTIES = ("length", "rarity")
COMPETENCES = ("linear", "sqrt")


# -- competence (Platanios et al. 2019, eqs. 5 and 7) ------------------------------------------
def competence_linear(t: float | np.ndarray, T: float, c0: float) -> float | np.ndarray:
    """c(t) = min(1, t·(1 − c0)/T + c0): the admitted share of the data grows at a constant rate.

    t: the fraction of the training budget used so far; T: the fraction at which the whole data
    set is admitted (the curriculum's duration); c0: the share admitted at the start.
    """
    c = np.minimum(1.0, np.asarray(t, dtype=float) * (1.0 - c0) / T + c0)
    return float(c) if np.ndim(c) == 0 else c


def competence_sqrt(t: float | np.ndarray, T: float, c0: float) -> float | np.ndarray:
    """c(t) = min(1, √(t·(1 − c0²)/T + c0²)): fast at first, slower later.

    Each new example gets an equal share of the updates when the *area* admitted grows linearly;
    the square root admits new examples quickly while the pool is small. c_sqrt ≥ c_linear for
    the same c0 and T (their squares differ by (t/T)(1 − t/T)(1 − c0)² ≥ 0).
    """
    c = np.minimum(1.0, np.sqrt(np.asarray(t, dtype=float) * (1.0 - c0 ** 2) / T + c0 ** 2))
    return float(c) if np.ndim(c) == 0 else c


COMPETENCE = {"linear": competence_linear, "sqrt": competence_sqrt}


def competence(kind: str, t: float | np.ndarray, T: float, c0: float) -> float | np.ndarray:
    """The competence schedule `kind` ("linear" or "sqrt") at budget fraction t."""
    if kind not in COMPETENCE:
        raise ConfigError(f"curriculum.competence must be one of {', '.join(COMPETENCES)}; got {kind!r}")
    return COMPETENCE[kind](t, T, c0)


# -- difficulty ----------------------------------------------------------------------------------
def is_packed(train: "TrainSet") -> bool:
    """True when every row holds the full sequence length (packed blocks): length says nothing."""
    return bool((train.features["length"] == train.seq_len).all())


def length_difficulty(train: "TrainSet") -> torch.Tensor:
    """(N,) real tokens per example ([CLS] and [SEP] included): longer is harder."""
    return train.features["length"].double()


def rarity_difficulty(train: "TrainSet", unigram_counts: torch.Tensor) -> torch.Tensor:
    """(N,) d_rarity(s) = −Σ_k log p̂(w_k) over the example's tokens (Platanios et al. 2019, eq. 2).

    A sum, as in the paper: it grows with length as well as with rare words. [PAD], [CLS] and
    [SEP] cost nothing, so only the text counts.
    """
    return token_surprisal(unigram_counts)[train.ids].sum(dim=1)


def difficulty(train: "TrainSet", kind: str, unigram_counts: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) raw difficulty of each example: "length" or "rarity" (needs `unigram_counts`)."""
    if kind == "length":
        return length_difficulty(train)
    if kind == "rarity":
        if unigram_counts is None:
            raise ValueError("rarity difficulty needs the corpus's unigram counts (data.unigram_counts)")
        return rarity_difficulty(train, unigram_counts)
    raise ConfigError(f"curriculum.difficulty must be one of {', '.join(DIFFICULTIES)}; got {kind!r}")


def difficulty_cdf(raw: torch.Tensor) -> torch.Tensor:
    """(N,) the empirical CDF of the raw difficulties: the share of examples at most as hard, in (0, 1].

    Monotone in the raw difficulty; tied examples share a value (and so enter the curriculum together).
    """
    ordered = torch.sort(raw.double()).values
    return torch.searchsorted(ordered, raw.double(), right=True).double() / raw.numel()


def admitted_share(cdf: torch.Tensor, c: float | Sequence[float]) -> np.ndarray:
    """Share of examples with CDF difficulty ≤ competence c (for each c): what the curriculum admits."""
    ordered = torch.sort(cdf.double()).values
    cs = torch.as_tensor(np.atleast_1d(np.asarray(c, dtype=float)), dtype=torch.double)
    return (torch.searchsorted(ordered, cs + 1e-12, right=True).double() / cdf.numel()).numpy()


# -- the sampler the trainer uses ----------------------------------------------------------------
class CompetenceSampler:
    """Each batch uniformly (without replacement within the batch) from the admitted examples.

    Admitted at budget fraction t: every example whose CDF difficulty is ≤ c(t), but never fewer
    than one batch (the easiest ones; with c0 = 0.01 and ties the strict rule could admit none).
    All randomness comes from `ctx.rng`, which the trainer checkpoints, so a resumed run draws
    exactly what an uninterrupted one would. The sampler itself only counts its draws.
    """

    def __init__(self, cdf: torch.Tensor, schedule: str, duration: float, c0: float):
        self.cdf = cdf.double()
        self.order = torch.argsort(self.cdf, stable=True)  # easiest first
        self.sorted_cdf = self.cdf[self.order]
        self.schedule, self.duration, self.c0 = schedule, duration, c0
        self.draws = 0

    def __len__(self) -> int:
        return self.cdf.numel()

    def competence(self, fraction: float) -> float:
        return competence(self.schedule, fraction, self.duration, self.c0)

    def admitted(self, fraction: float, batch_size: int = 1) -> int:
        """How many examples (the easiest) batches may be drawn from at this budget fraction."""
        c = self.competence(fraction)
        n = int(torch.searchsorted(self.sorted_cdf, torch.tensor([c + 1e-12], dtype=torch.double), right=True))
        return min(len(self), max(n, batch_size))

    def next(self, batch_size: int, ctx: StepContext) -> torch.Tensor:
        n = self.admitted(ctx.since_start, batch_size)
        if n >= batch_size:
            pick = torch.randperm(n, generator=ctx.rng)[:batch_size]
        else:  # a training set smaller than one batch
            pick = torch.randint(n, (batch_size,), generator=ctx.rng)
        self.draws += 1
        return self.order[pick]

    def state_dict(self) -> dict:
        return {"draws": self.draws}

    def load_state_dict(self, state: dict) -> None:
        self.draws = int(state.get("draws", 0))


# -- sequence-length warmup (Li et al. 2022) --------------------------------------------------------
def seqlen_schedule(fraction: float, start_len: int, full_len: int, warmup_fraction: float, multiple: int = 8) -> int:
    """L(t): from `start_len` to `full_len` linearly over the first `warmup_fraction` of the budget.

    Rounded down to a multiple of `multiple` (at least `multiple`), and exactly `full_len` from
    `warmup_fraction` on; warmup_fraction = 0 or start_len ≥ full_len gives full_len throughout.
    """
    if warmup_fraction <= 0 or start_len >= full_len or fraction >= warmup_fraction:
        return full_len
    raw = start_len + (full_len - start_len) * fraction / warmup_fraction
    return int(min(full_len, max(multiple, multiple * math.floor(raw / multiple))))


def truncate_batch(ids: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T) → (B, min(T, length)) keeping each row's start ([CLS] stays first).

    Rows longer than `length` lose their end, [SEP] included, as packed blocks end mid-text;
    shorter rows keep their [SEP] and [PAD]. A batch no longer than `length` is returned as is.
    """
    return ids if ids.shape[1] <= length else ids[:, :length]


# -- the hooks -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurriculumParams:
    difficulty: str = param("rarity", choices=DIFFICULTIES, help="what makes an example hard")
    competence: str = param("sqrt", choices=COMPETENCES, help="how fast harder examples are admitted")
    c0: float = param(0.01, range=(0.01, 1.0), step=0.01, help="share of the data admitted at the start")
    duration: float = param(0.5, range=(0.05, 1.0), step=0.05,
                            help="T: fraction of the budget after which all data is admitted")


@register
class Curriculum(Technique):
    """Competence-based curriculum: train on the easy examples first, admit harder ones over time.

    **What.** Every training example gets a difficulty, *length* (real tokens) or *rarity*
    (−Σ log p̂(w) over its tokens, from the corpus's own unigram counts), mapped through its
    empirical CDF to [0, 1]. At budget fraction t the batch is drawn uniformly from the examples
    with CDF difficulty ≤ c(t), the model's *competence*, which grows from c0 to 1 by t = T.

    **Why.** Early in training a model cannot use hard examples yet; their gradients are noisy.
    Short or common-word examples teach the basics cheaply (short batches are also cheaper: the
    trainer trims each batch to its longest row), and the harder ones come once they can help.

    **Math.** c_linear(t) = min(1, t(1 − c0)/T + c0); c_sqrt(t) = min(1, √(t(1 − c0²)/T + c0²)),
    t and T as fractions of the training budget. d_rarity(s) = −Σ_k log p̂(w_k);
    CDF(s) = |{s′ : d(s′) ≤ d(s)}| / N. Ties share a CDF value, so they enter together (with
    unpacked paragraphs cut at the sequence length, every cut paragraph has the top length).

    **Settings.** difficulty rarity, competence sqrt, c0 = 0.01 and T = 0.5 of the budget are
    close to the paper's best Transformer setting (c0 = 0.01; the paper fixes T in steps).
    Length needs unpacked data (`data.pack=False`): packed rows are all equally long and the run
    is refused. c0 = 1 admits everything from the start: the technique then steps aside and the
    trainer's epoch shuffler runs unchanged (bit-identical to no technique).

    **Paper.** Platanios, Stretcu, Neubig, Poczos, Mitchell: Competence-based Curriculum Learning
    for Neural Machine Translation, NAACL 2019 (Transformers for translation reached the plain
    model's BLEU in 31–58% of its training time, rarity with c_sqrt fastest). Cramming
    (Geiping & Goldstein 2022) sorts pre-training data by unigram likelihood, a rarity curriculum
    without a schedule.
    """

    name = "curriculum"
    paper = "Platanios et al. 2019, Competence-based Curriculum Learning for NMT (NAACL)"
    identity_params = {"c0": 1.0}

    Params = CurriculumParams
    claims = ("sampler",)

    def claimed(self) -> tuple[str, ...]:
        return () if self.params.c0 >= 1.0 else self.claims  # c0 = 1: the trainer's shuffler, unchanged

    def make_sampler(self, train: "TrainSet", ctx: StepContext) -> "CompetenceSampler | None":
        p = self.params
        if p.difficulty == "length" and is_packed(train):
            raise ConfigError("curriculum.difficulty='length' needs unpacked data (data.pack=False): "
                              "packed rows are all equally long")
        if p.c0 >= 1.0:
            return None  # everything admitted from the start: the trainer's own shuffler, unchanged
        t0 = time.perf_counter()
        counts = ctx.data.unigram_counts if ctx.data is not None else None
        cdf = difficulty_cdf(difficulty(train, p.difficulty, counts))
        self.sampler = CompetenceSampler(cdf, p.competence, p.duration, p.c0)
        self.stats.update(scoring_seconds=time.perf_counter() - t0, scoring_flops=0.0, examples=len(train),
                          admitted_at_start=int(self.sampler.admitted(0.0, ctx.config.run.batch_size)))
        return self.sampler

    def after_step(self, model: torch.nn.Module, ctx: StepContext) -> None:
        sampler = getattr(self, "sampler", None)
        if sampler is not None:  # the effect, as measured: batches drawn and how much was admitted
            self.stats.update(batches_drawn=sampler.draws,
                              admitted_now=int(sampler.admitted(ctx.since_start, ctx.config.run.batch_size)))


@dataclass(frozen=True)
class SeqLenWarmupParams:
    start_len: int = param(8, range=(8, 512), step=8, help="tokens per row at the start")
    warmup_fraction: float = param(0.3, range=(0.0, 1.0), step=0.05,
                                   help="fraction of the budget over which the length grows to full")


@register
class SeqLenWarmup(Technique):
    """Sequence-length warmup: train on short prefixes first, growing to the full length.

    **What.** Each batch is cut to its first L(t) tokens, L growing linearly from `start_len` to
    the full sequence length over the first `warmup_fraction` of the budget (rounded down to a
    multiple of 8, which keeps matrix shapes friendly). [CLS] stays first; a row longer than L
    loses its end, [SEP] included, just as packed blocks end mid-text; shorter rows keep their
    [SEP] and [PAD]. Masking happens after the cut, so 15% of the *kept* tokens are predicted.

    **Why.** Short sequences are cheap (attention is quadratic in L, everything else linear) and
    early training mostly learns local statistics that short contexts teach as well. Li et al.
    found that the long sequences of early training cause the loss spikes that force small
    learning rates and batches; warming the length up removes them.

    **Math.** L(t) = 8·⌊(L0 + (L_full − L0)·t/T_w)/8⌋ for t < T_w, else L_full. A step costs about
    6·N·B·L + 14·layers·B·L²·H FLOPs, so the first T_w of the budget costs roughly half as much
    as full-length steps (a third, for attention). The trainer measures FLOPs per batch shape,
    so shorter steps are charged what they cost.

    **Settings.** start_len 8 and warmup_fraction 0.3 (the defaults of MosaicML Composer's
    SeqLengthWarmup); warmup_fraction 0 (or start_len ≥ the sequence length) changes nothing.

    **Paper.** Li, Zhang, He: The Stability-Efficiency Dilemma: Investigating Sequence Length
    Warmup for Training GPT Models, NeurIPS 2022 (arXiv 2021). BERT itself trained 90% of its
    steps at length 128 and the rest at 512 (Devlin et al. 2019): a two-step length schedule.
    """

    name = "seqlen_warmup"
    paper = "Li, Zhang & He 2022, The Stability-Efficiency Dilemma (sequence length warmup), NeurIPS"
    identity_params = {"warmup_fraction": 0.0}

    Params = SeqLenWarmupParams

    def length(self, ctx: StepContext) -> int:
        """The sequence length L at this point of the budget."""
        return seqlen_schedule(ctx.since_start, self.params.start_len, ctx.config.data.seq_len,
                               self.params.warmup_fraction)

    def on_batch(self, ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        out = truncate_batch(ids, self.length(ctx))
        if out.shape[1] < ids.shape[1]:  # the effect, as measured: batches cut and the shortest length
            self.stats["batches_cut"] = self.stats.get("batches_cut", 0) + 1
            self.stats["shortest"] = min(self.stats.get("shortest", out.shape[1]), out.shape[1])
        return out

    def state_dict(self) -> dict:
        return {"stats": dict(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        self.stats.clear()
        self.stats.update(state.get("stats", {}))


# -- looking at the data -----------------------------------------------------------------------------
def extremes(data: "PretrainData", kind: str, k: int = 2, chars: int = 110) -> dict[str, list[str]]:
    """The k easiest and k hardest training examples by `kind`, decoded (first `chars` characters)."""
    raw = difficulty(data.train, kind, data.unigram_counts)
    order = torch.argsort(raw, stable=True)

    def text(i: int) -> str:
        return f"[{raw[i]:.1f}] " + decode_text(data.tokenizer, data.train.ids[i].tolist())[:chars]

    return {"easiest": [text(int(i)) for i in order[:k]], "hardest": [text(int(i)) for i in order.flip(0)[:k]]}


__all__ = ["COMPETENCE", "CompetenceSampler", "Curriculum", "CurriculumParams", "SeqLenWarmup", "SeqLenWarmupParams",
           "admitted_share", "competence", "competence_linear", "competence_sqrt", "difficulty", "difficulty_cdf",
           "extremes", "is_packed", "length_difficulty", "rarity_difficulty", "seqlen_schedule", "token_surprisal",
           "truncate_batch"]
