"""Named training recipes: the original BERT, 24-hour BERT and cramming, each a readable list of
ingredients on top of a profile.

    et.recipe("cramming")                       # the cpu/gpu/smoke profile (default_profile) + the recipe
    et.recipe("cramming", "cpu", budget="15s")  # and any config change after it
    et.recipe_card("24h-bert")                  # markdown: every ingredient, its value and its source
    et.ingredients("bert")                      # {"model.norm": "post", ...} for this profile

Every ingredient is one config field, so it can be toggled alone (`cfg.replace(**{"model.norm":
"post"})`) and `swap(cfg, "bert", ["optim.lr", ...])` puts another recipe's values in. A recipe sets
only the fields it names; the rest (vocabulary, sequence length, micro-batch, precision, position
encoding) stay the profile's.

Sources:
- **bert**: Devlin et al. 2019 and google-research/bert (`run_pretraining.py`, `optimization.py`,
  `modeling.py`); the dense head is Hugging Face's `BertForMaskedLM`, the BERT that cramming and
  24-hour BERT compare against (the TF original gathers the masked positions first).
- **24h-bert**: Izsak, Berchansky & Levy 2021, "How to Train BERT with an Academic Budget"
  (IntelLabs/academic-budget-bert).
- **cramming**: Geiping & Goldstein 2022, "Cramming: Training a Language Model on a Single GPU in
  One Day" (JonasGeiping/cramming: `arch/crammed-bert.yaml`, `train/bert-o4.yaml`, `optim/adam.yaml`,
  `data/*.yaml`).

Scale. The originals train for a day on 128-token sequences with 256 to 8,192 of them per step. A
`cpu` run here lasts seconds, so the batch multiples are smaller (a step plan must still have tens of
steps) and BERT's step plan is sized to the profile; each such value says so in its card. Positions
stay the profile's rotary ones: with learned positions the tiny models here sit on the unigram
plateau for the whole budget (docs/plateau.md), which would hide every other ingredient.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from effitrain.config import Config, ConfigError, default_profile, profile_config, profile_size

RECIPE_NAMES = ("bert", "24h-bert", "cramming")


@dataclass(frozen=True)
class Ingredient:
    """One config field of a recipe: its value (or a value per profile), where it comes from, and how the
    value here differs from the source's when the scale demands it."""

    field: str
    value: Any
    source: str
    scaled: str = ""
    by_profile: dict[str, Any] = field(default_factory=dict)

    def value_for(self, profile: str) -> Any:
        return self.by_profile.get(profile_size(profile), self.value)


BERT_SRC = "google-research/bert"
HF_SRC = "Hugging Face BertForMaskedLM"
IZSAK = "academic-budget-bert (Izsak et al. 2021)"
CRAM = "cramming (Geiping & Goldstein 2022)"
CRAM_ARCH, CRAM_TRAIN, CRAM_OPT, CRAM_DATA = (f"{CRAM}, {f}" for f in
                                              ("arch/crammed-bert.yaml", "train/bert-o4.yaml",
                                               "train/optim/adam.yaml", "data/*.yaml"))

# the large batches, as micro-batches per step (the profile's micro-batch is the unit)
_BIG_BATCH = {"smoke": 2, "cpu": 2, "gpu": 16}
_BIG_BATCH_NOTE = ("reached by accumulating micro-batches of the profile's size; 2× BERT's batch on cpu and smoke, "
                   "16× on gpu: a 20-second cpu budget holds about 150 steps at 2×, 70 at 4× (too few to leave "
                   "the unigram plateau, measured)")
# BERT's schedule is planned in steps: 1,000,000 in the original, far beyond any budget here; the plan
# is sized to the profile so that, as in a cramming budget, the deadline cuts it off part-way
_BERT_PLAN = {"smoke": 60, "cpu": 400, "gpu": 20_000}

RECIPES: dict[str, tuple[Ingredient, ...]] = {
    "bert": (
        Ingredient("model.norm", "post", f"{BERT_SRC} modeling.py (LayerNorm after each residual)"),
        Ingredient("model.dropout", 0.1, f"{BERT_SRC} hidden_dropout_prob"),
        Ingredient("model.bias", True, f"{BERT_SRC} (every dense layer has a bias)"),
        Ingredient("model.ffn_kind", "gelu", f"{BERT_SRC} hidden_act gelu"),
        Ingredient("model.sparse_head", False, f"{HF_SRC} (logits at every position; the loss reads the masked ones)"),
        Ingredient("data.mask_prob", 0.15, f"{BERT_SRC} masked_lm_prob, 80/10/10 [MASK]/random/kept"),
        Ingredient("optim.lr", 1e-4, f"{BERT_SRC} run_pretraining.py learning_rate"),
        Ingredient("optim.beta1", 0.9, f"{BERT_SRC} optimization.py"),
        Ingredient("optim.beta2", 0.999, f"{BERT_SRC} optimization.py"),
        Ingredient("optim.eps", 1e-6, f"{BERT_SRC} optimization.py"),
        Ingredient("optim.weight_decay", 0.01, f"{BERT_SRC} optimization.py, none on LayerNorm and biases (the "
                                               "toolkit's AdamW groups spare the embeddings too)"),
        Ingredient("optim.grad_clip", 1.0, f"{BERT_SRC} optimization.py clip_by_global_norm 1.0"),
        Ingredient("optim.schedule", "linear", f"{BERT_SRC} warm-up then linear decay to 0"),
        Ingredient("optim.warmup", 0.01, f"{BERT_SRC} 10,000 warm-up steps of 1,000,000"),
        Ingredient("optim.plan_steps", 1_000_000, f"{BERT_SRC} num_train_steps 1,000,000",
                   scaled="the plan is sized to the profile (60 steps on smoke, 400 on cpu, 20,000 on gpu): a "
                          "deadline cuts it off part-way, as a day's budget cuts BERT's million steps",
                   by_profile=_BERT_PLAN),
        Ingredient("run.grad_accum", 1, "BERT's 256 sequences per step: the small-batch reference",
                   scaled="one micro-batch of the profile's size stands for BERT's 256 sequences"),
        Ingredient("run.batch_ramp", 0.0, f"{BERT_SRC} (a fixed batch)"),
        Ingredient("data.max_tokens_per_char", 0.0, f"{BERT_SRC} (no filter)"),
        Ingredient("data.order", "shuffle", f"{BERT_SRC} (shuffled)"),
    ),
    "24h-bert": (
        Ingredient("model.norm", "pre", f"{IZSAK} (pre-LN, for stability at a large LR)"),
        Ingredient("model.dropout", 0.1, f"{IZSAK} (kept at BERT's 0.1)"),
        Ingredient("model.bias", True, f"{IZSAK} (BERT's layers)"),
        Ingredient("model.ffn_kind", "gelu", f"{IZSAK} (BERT's layers)"),
        Ingredient("model.sparse_head", True, f"{IZSAK} sparse token prediction (logits only at masked tokens)"),
        Ingredient("data.mask_prob", 0.15, f"{IZSAK} (BERT's 15%)"),
        Ingredient("optim.lr", 1e-3, f"{IZSAK} (peak lr 1e-3)"),
        Ingredient("optim.beta1", 0.9, f"{IZSAK} AdamW"),
        Ingredient("optim.beta2", 0.98, f"{IZSAK} AdamW"),
        Ingredient("optim.eps", 1e-6, f"{IZSAK} AdamW"),
        Ingredient("optim.weight_decay", 0.01, f"{IZSAK} AdamW"),
        Ingredient("optim.schedule", "linear", f"{IZSAK} linear decay to 0 at the deadline"),
        Ingredient("optim.warmup", 0.06, f"{IZSAK} warm-up over 6% of the time budget"),
        Ingredient("optim.plan_steps", 0, f"{IZSAK} the schedule follows the time budget, not a step count"),
        Ingredient("run.grad_accum", 16, f"{IZSAK} 4,096 sequences per step (16× BERT's)", scaled=_BIG_BATCH_NOTE,
                   by_profile=_BIG_BATCH),
        Ingredient("run.batch_ramp", 0.0, f"{IZSAK} (a fixed batch)"),
        Ingredient("data.max_tokens_per_char", 0.0, f"{IZSAK} (no filter)"),
        Ingredient("data.order", "shuffle", f"{IZSAK} (shuffled; short single-sequence rows prepared in memory, "
                                             "as every TrainSet here is)"),
    ),
    "cramming": (
        Ingredient("model.norm", "pre", f"{CRAM_ARCH} norm_scheme pre, final_norm true"),
        Ingredient("model.dropout", 0.0, f"{CRAM_TRAIN} pretrain_in_train_mode false (no dropout in pre-training)"),
        Ingredient("model.bias", False, f"{CRAM_ARCH} use_bias false"),
        Ingredient("model.ffn_kind", "glu", f"{CRAM_ARCH} nonlin GELUglu"),
        Ingredient("model.tie_embeddings", True, f"{CRAM_ARCH} tie_weights true"),
        Ingredient("model.sparse_head", True, f"{CRAM_ARCH} sparse_prediction"),
        Ingredient("data.mask_prob", 0.25, f"{CRAM_TRAIN} mlm_probability 0.25, 80/10/10"),
        Ingredient("optim.lr", 1e-3, f"{CRAM_TRAIN} lr 1e-3"),
        Ingredient("optim.beta1", 0.9, f"{CRAM_OPT} betas"),
        Ingredient("optim.beta2", 0.98, f"{CRAM_OPT} betas"),
        Ingredient("optim.eps", 1e-12, f"{CRAM_OPT} eps"),
        Ingredient("optim.weight_decay", 0.01, f"{CRAM_TRAIN} weight_decay 0.01, none on biases and norms (the "
                                               "toolkit's AdamW groups spare the embeddings too)"),
        Ingredient("optim.grad_clip", 0.5, f"{CRAM_TRAIN} gradient_clipping 0.5"),
        Ingredient("optim.schedule", "triangular", f"{CRAM_TRAIN} budget-triangle2 (0.25× → peak at 75% → 0)"),
        Ingredient("optim.warmup", 0.0, f"{CRAM_TRAIN} warmup_steps 0 (the triangle has its own rise)"),
        Ingredient("optim.plan_steps", 0, f"{CRAM_TRAIN} the schedule follows the budget"),
        Ingredient("run.grad_accum", 32, f"{CRAM_TRAIN} batch_size 8,192 (32× BERT's)", scaled=_BIG_BATCH_NOTE,
                   by_profile=_BIG_BATCH),
        Ingredient("run.batch_ramp", 0.6, f"{CRAM_TRAIN} batch_size_ramp 0.60 (linear, reached at 60% of the budget)"),
        Ingredient("data.max_tokens_per_char", 0.3, f"{CRAM_DATA} trash_cutoff 0.3 (tokens per character)"),
        Ingredient("data.order", "likely-first", f"{CRAM} (likely sequences first by unigram log-probability; "
                                                 "`reverse-unigram-curriculum` in its code)"),
    ),
}


def _ingredients(name: str) -> tuple[Ingredient, ...]:
    if name not in RECIPES:
        raise ConfigError(f"recipe must be one of {', '.join(RECIPE_NAMES)}; got {name!r}")
    return RECIPES[name]


def ingredients(name: str, profile: str | None = None) -> dict[str, Any]:
    """{field: value} of a recipe at a profile (default: `default_profile()`)."""
    profile = profile or default_profile()
    return {i.field: i.value_for(profile) for i in _ingredients(name)}


def recipe(name: str, profile: str | None = None, **changes: Any) -> Config:
    """The profile's config with the recipe's ingredients, then `changes` (flat or "section.field" names)."""
    profile = profile or default_profile()
    cfg = profile_config(profile).replace(**ingredients(name, profile))
    return cfg.replace(**changes) if changes else cfg


def swap(cfg: Config, name: str, fields: Iterable[str], profile: str | None = None) -> Config:
    """`cfg` with the named fields set to recipe `name`'s values (an ablation: "+ original training")."""
    values = ingredients(name, profile or cfg.profile or default_profile())
    unknown = [f for f in fields if f not in values]
    if unknown:
        raise ConfigError(f"recipe {name!r} has no ingredient {unknown[0]!r}; it has {', '.join(values)}")
    return cfg.replace(**{f: values[f] for f in fields})


def recipe_card(name: str, profile: str | None = None) -> str:
    """Markdown: the recipe's ingredients, their values at this profile and their sources."""
    profile = profile or default_profile()
    rows = [f"**{name}** at the `{profile}` profile", "", "| ingredient | value | source | at this scale |",
            "|---|---|---|---|"]
    for i in _ingredients(name):
        value = i.value_for(profile)
        rows.append(f"| `{i.field}` | {value!r} | {i.source} | {i.scaled if value != i.value else ''} |")
    return "\n".join(rows)


# the ingredients by kind, for ablations and the panel
ARCHITECTURE = ("model.norm", "model.bias", "model.ffn_kind", "model.sparse_head")
TRAINING = ("model.dropout", "data.mask_prob", "optim.lr", "optim.beta1", "optim.beta2", "optim.eps",
            "optim.weight_decay", "optim.grad_clip", "optim.schedule", "optim.warmup", "optim.plan_steps",
            "run.grad_accum", "run.batch_ramp")
DATA = ("data.max_tokens_per_char", "data.order")

__all__ = ["ARCHITECTURE", "DATA", "Ingredient", "RECIPES", "RECIPE_NAMES", "TRAINING", "ingredients", "recipe",
           "recipe_card", "swap"]
