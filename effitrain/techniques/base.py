"""The technique contract: events, what each hands a technique, composition rules, and the registry.

A technique is a functional core (plain functions at the top of its module) plus a thin hook
class that subclasses `Technique`, declares a frozen module-level `Params` dataclass, and
overrides only the events it needs. Widgets are generated from `Params` (field types, defaults,
and `param(range=(lo, hi))` or `param(choices=(...))`), so a registered technique appears in
every control panel without UI code. The loop that calls the events is drawn once, as
pseudocode, in `effitrain.train.trainer`.

Events, in the order the trainer calls them (each receives what the previous technique returned):

    setup      on_dataset(train, ctx) -> TrainSet         prune / replace examples (before any sampler)
               make_sampler(train, ctx) -> Sampler|None   the order of examples, built on the FINAL set
               on_model(model, ctx) -> Module             surgery, before the optimizer sees it
               on_optimizer(model, groups, ctx) -> Optimizer|None   a different optimizer / state
               on_step(step, ctx) -> TrainStep            run the step yourself (claim "step")
    each step  plan_step(plan, ctx) -> StepPlan           micro-batches, micro-batch size, lr, replicas
               on_batch(ids, ctx) -> ids                  reshape or subsample a batch of ids (B, T)
               on_masked_batch(batch, model, ctx) -> MaskedBatch   after masking; a no-grad scoring pass
               loss(out: LossInputs, ctx) -> Tensor|None  replace the objective; add named out.terms
               backward(loss, ctx) -> bool                True = "I ran the backward myself"
               before_update(model, optimizer, ctx)       edit .grad before clipping and the update
               after_step(model, ctx)                     averaging, schedules, layer-drop state
    evaluation eval_model(model) -> Module                what is evaluated and saved
               on_eval(metrics, ctx) -> metrics           add metrics
    counting   analytic_flops(parts, batch, ctx) -> parts the formula's FLOPs when the model's work changes
               flops_key(ctx)                             what besides the batch shape changes a step's FLOPs

Which method of the mission uses which events (the methods still to come are planned here):

    | method                         | events                                                    |
    |--------------------------------|-----------------------------------------------------------|
    | data pruning (prune)           | on_dataset                                                |
    | curriculum                     | make_sampler                                              |
    | sequence-length warmup         | on_batch                                                  |
    | knowledge distillation         | on_dataset (teacher), loss                                |
    | ELECTRA                        | on_masked_batch (85/15 masking), on_model (generator +    |
    |                                | discriminator), loss (terms: mlm, rtd), eval_model (the   |
    |                                | discriminator), analytic_flops                            |
    | cramming batch-size ramp       | plan_step (RunConfig.batch_ramp is the built-in form)     |
    | chunk-based accumulation       | plan_step (micro-batches), backward, before_update        |
    | selective backprop             | on_masked_batch (scoring forward, keep the biggest losers)|
    | progressive layer dropping     | on_model, after_step, flops_key (layers kept)             |
    | GroupBERT                      | model config (groupbert, conv_kernel, ...): no hook       |
    | standardization loss           | loss (LossInputs.hidden_states, term: std)                |
    | Crossbow SMA (sma)             | plan_step (replicas), on_optimizer (stacked replicas),    |
    |                                | on_step (vmapped replicas, then the averaging)            |
    | DDP (effitrain.parallel.ddp)   | none: a Trainer per rank, its step through the DDP module |
    | Ouroboros (ouroboros)          | loss (tied-weight split), before_update (stale gradients) |
    | activation checkpointing       | on_model (Encoder.checkpointed), after_step, analytic_flops |
    | low-bit optimizer state        | on_optimizer                                              |

Composition. Any two techniques either train together with both effects present, or the pair
is refused when the trainer is built, with one line naming both. A technique declares
`claims` (resources only one technique may own: "sampler", "backward", "optimizer",
"eval_model", "step"), `conflicts` ({other name: why}), `refuses_events` (events no partner may
override: a technique that runs its own step refuses partners whose loss or gradient edits it
would never call), and `after` (names it must run after; the trainer orders the list, keeping the
given order otherwise). The same technique twice is
refused. `resolve(techniques)` applies these rules.

Side effects. The trainer runs `on_masked_batch`, `loss` and `backward` a second time, on a copy of
the state, to count FLOPs: all randomness must come from `ctx.rng` (or torch's global RNG) and
all state that changes the curve must be in `state_dict()` (which checkpoints save), so counting
and resuming change nothing. `ctx.counting` is True during that pass.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Protocol

import torch

from effitrain.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from effitrain.train.step import TrainStep
    from effitrain.config import Config
    from effitrain.data import MaskedBatch, PretrainData, TrainSet

CLAIMS = ("sampler", "backward", "optimizer", "eval_model", "step")


@dataclass(frozen=True)
class StepContext:
    """What a technique may read: where the run stands, and the run's own random generator."""

    step: int
    fraction: float  # of the budget used, in [0, 1]
    tokens: int
    seconds: float
    flops: float
    config: "Config"
    device: torch.device
    rng: torch.Generator  # draw randomness from here so runs stay reproducible and resumable
    data: "PretrainData | None" = None  # tokenizer, unigram counts, validation batches
    counting: bool = False  # True in the trainer's FLOP-counting pass (its effects are rolled back)
    start: float = 0.0  # the budget fraction where the techniques began acting (a warm start's; else 0)

    @property
    def since_start(self) -> float:
        """The share of the budget the techniques act on that is used so far, in [0, 1]:
        (fraction − start) / (1 − start). A schedule over "the training" (a curriculum, a sequence
        length warm-up) reads this, so it runs over the steps after a warm start as it would from
        scratch."""
        return min(1.0, max(0.0, (self.fraction - self.start) / (1.0 - self.start))) if self.start < 1.0 else 1.0

    @classmethod
    def standalone(cls, config: "Config", device: torch.device | str = "cpu", seed: int = 0) -> "StepContext":
        """A context at the start of a budget, for calling a step outside the trainer (benchmarks)."""
        return cls(step=0, fraction=0.0, tokens=0, seconds=0.0, flops=0.0, config=config,
                   device=torch.device(device), rng=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class StepPlan:
    """What one optimizer step consists of: `micro_batches` × `micro_batch_size` rows, at learning rate `lr`.

    `replicas` > 1 asks for several model replicas per device (Crossbow); the plain trainer runs 1
    and refuses a plan asking for more unless a technique that claims "step" carries them out.
    """

    micro_batches: int
    micro_batch_size: int
    lr: float
    replicas: int = 1

    def __post_init__(self) -> None:
        for name in ("micro_batches", "micro_batch_size", "replicas"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"StepPlan.{name} must be a positive integer; got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise ConfigError(f"StepPlan.lr must be a finite number >= 0; got {self.lr!r}")

    @property
    def rows(self) -> int:
        return self.micro_batches * self.micro_batch_size


class Sampler(Protocol):
    """Decides which training rows each micro-batch gets; its state is checkpointed."""

    def next(self, batch_size: int, ctx: StepContext) -> torch.Tensor: ...  # (batch_size,) row indices
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass(kw_only=True)
class LossInputs:
    """What the `loss` event sees: the model's MLM logits at the predicted positions and more.

    `terms`: named scalars a technique adds (e.g. ``rtd``, ``std``, ``rtd_accuracy``); each is logged in
    the step's history row as ``term_<name>`` (its mean over the step's micro-batches). They are for
    reporting: the objective is `loss`, which a technique replaces by returning a new one.
    `hidden_states`: each encoder block's output (B, T, H), filled only when a technique sets
    `needs_hidden_states = True`.
    """

    logits: torch.Tensor  # (M, V)
    labels: torch.Tensor  # (M,)
    token_losses: torch.Tensor  # (M,) cross-entropy per predicted token
    loss: torch.Tensor  # scalar: mean of token_losses (or what an earlier technique made of it)
    positions: torch.Tensor  # (M,) flat indices into (B, T)
    batch_shape: tuple[int, int]
    model: torch.nn.Module
    input_ids: torch.Tensor | None = None  # (B, T) the masked input the model saw
    attention_mask: torch.Tensor | None = None  # (B, T) bool, True = real token; None = no padding
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    hidden_states: list[torch.Tensor] | None = None


@dataclass(frozen=True)
class NoParams:
    pass


def param(default: Any, *, range: tuple | None = None, choices: tuple | None = None,
          step: float | None = None, help: str = "") -> Any:
    """A technique parameter with the facts a widget and a validator need."""
    meta = {"help": help}
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = choices
    if step is not None:
        meta["step"] = step
    return dataclasses.field(default=default, metadata=meta)


def _declared_type(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def validate_params(name: str, params: Any) -> None:
    """Refuse values of the wrong type or outside a field's declared range or choices, naming the field."""
    for f in dataclasses.fields(params):
        value, kind = getattr(params, f.name), _declared_type(f)
        where = f"{name}.{f.name}"
        if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where} must be an integer; got {value!r}")
        if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ConfigError(f"{where} must be a finite number; got {value!r}")
        if kind == "bool" and not isinstance(value, bool):
            raise ConfigError(f"{where} must be True or False; got {value!r}")
        if kind == "str" and not isinstance(value, str):
            raise ConfigError(f"{where} must be text; got {value!r}")
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, f.metadata['choices']))}; got {value!r}")
        if "range" in f.metadata:
            lo, hi = f.metadata["range"]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ConfigError(f"{where} must be a number in [{lo}, {hi}]; got {value!r}")


class Technique:
    """Base hook: every event defaults to 'change nothing'. See the module docstring for the events."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    paper: ClassVar[str] = ""
    # parameter values under which the technique must change nothing at all (same curve as no
    # technique, bit for bit on CPU); the registry test checks it. None: the technique has no such setting.
    identity_params: ClassVar[dict[str, Any] | None] = None
    # composition (see `resolve`): resources owned alone, refused partners, and who must run first
    claims: ClassVar[tuple[str, ...]] = ()
    conflicts: ClassVar[dict[str, str]] = {}
    after: ClassVar[tuple[str, ...]] = ()
    # on_model changes how the model runs, not what it holds (same class, same weights): the run cache
    # can rebuild a finished run's model as it does a plain one's (activation checkpointing)
    keeps_weights: ClassVar[bool] = False
    needs_hidden_states: ClassVar[bool] = False
    # events a partner may not override (e.g. a technique that runs its own step refuses partners that
    # change the loss or the gradients, which it would silently skip); see `refusal`
    refuses_events: ClassVar[tuple[str, ...]] = ()
    # True for a technique whose own step keeps several processes in step by its own collectives
    # (with world_size > 1 the trainer then wraps no DDP module around the model; see effitrain.parallel)
    syncs_processes: ClassVar[bool] = False

    def __init__(self, params: Any = None, **kwargs: Any):
        if params is None:
            try:
                params = self.Params(**kwargs)
            except TypeError as exc:
                known = ", ".join(f.name for f in dataclasses.fields(self.Params)) or "none"
                raise ConfigError(f"{self.name}: {exc}; parameters: {known}") from None
        elif kwargs:
            raise ConfigError(f"{self.name}: give either params or keyword values, not both")
        validate_params(self.name, params)
        self.params = params
        # what the technique measured about itself (e.g. seconds and FLOPs spent scoring the data,
        # batches it changed); the trainer copies it into `run.extra["techniques"][name]`
        self.stats: dict[str, Any] = {}

    def claimed(self) -> tuple[str, ...]:
        """The resources this instance takes over (default: the class's `claims`; may depend on params)."""
        return self.claims

    # -- setup events ---------------------------------------------------------------------------
    def on_dataset(self, train: "TrainSet", ctx: StepContext) -> "TrainSet":
        return train

    def make_sampler(self, train: "TrainSet", ctx: StepContext) -> Sampler | None:
        """A sampler over the final training set (after every on_dataset); None = the trainer's epoch shuffler."""
        return None

    def on_model(self, model: torch.nn.Module, ctx: StepContext) -> torch.nn.Module:
        return model

    def on_optimizer(self, model: torch.nn.Module, param_groups: list[dict],
                     ctx: StepContext) -> torch.optim.Optimizer | None:
        """An optimizer to use instead of the config's AdamW over these groups; None = AdamW."""
        return None

    # -- step events ------------------------------------------------------------------------------
    def plan_step(self, plan: StepPlan, ctx: StepContext) -> StepPlan:
        return plan

    def on_batch(self, ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return ids

    def on_masked_batch(self, batch: "MaskedBatch", model: torch.nn.Module, ctx: StepContext) -> "MaskedBatch":
        return batch

    def loss(self, out: LossInputs, ctx: StepContext) -> torch.Tensor | None:
        return None

    def backward(self, loss: torch.Tensor, ctx: StepContext) -> bool:
        """Run the backward of this micro-batch's (already weighted) loss yourself and return True, or
        return False to let the trainer call `loss.backward()`."""
        return False

    def before_update(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: StepContext) -> None:
        return None

    def on_step(self, step: "TrainStep", ctx: StepContext) -> "TrainStep":
        """The step the trainer calls (claim "step"): return another `TrainStep` to run the step yourself
        (e.g. k vmapped replicas). The FLOP meter still counts with the plain step."""
        return step

    def after_step(self, model: torch.nn.Module, ctx: StepContext) -> None:
        return None

    # -- evaluation events ------------------------------------------------------------------------
    def eval_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def on_eval(self, metrics: dict[str, float], ctx: StepContext) -> dict[str, float]:
        return metrics

    # -- bookkeeping -----------------------------------------------------------------------------
    def analytic_flops(self, parts: dict[str, float], batch: "MaskedBatch", ctx: StepContext) -> dict[str, float]:
        """The formula's FLOPs of this micro-batch (keys blocks, attention, head), for a technique that
        changes the model's work (the cross-check of the measured count); default: the baseline's."""
        return parts

    def flops_key(self, ctx: StepContext) -> Any:
        """Anything that changes a step's FLOPs beyond the batch shape (e.g. layers skipped)."""
        return None

    def on_warm_start(self, model: torch.nn.Module, optimizer_state: dict[str, Any],
                      ctx: StepContext) -> dict[str, Any]:
        """A warm start (`run.warm_start`) has loaded the baseline's weights into `model`: take them
        into whatever this technique keeps besides (e.g. replicas), and return the baseline's optimizer
        state as this technique's optimizer takes it. Default: the state unchanged."""
        return optimizer_state

    def state_dict(self) -> dict[str, Any]:
        """Everything that changes the curve from here on (checkpointed, and restored after FLOP counting)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": dataclasses.asdict(self.params)}

    @classmethod
    def card(cls) -> str:
        return (cls.__doc__ or "").strip()

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.params).items())
        return f"{type(self).__name__}({values})"


CARD_HEADINGS = ("What", "Why", "Math", "Settings", "Paper")


def card_sections(card: str) -> list[str]:
    """The bold headings of a card (``**What.**`` …) in the order they appear."""
    return re.findall(r"\*\*([A-Z][a-z]+)\.\*\*", card)


# -- composition ------------------------------------------------------------------------------------
def overridden(t: Technique, events: Iterable[str]) -> list[str]:
    """The events among `events` that `t` overrides (needs_hidden_states counts as an event)."""
    found = [e for e in events if e != "needs_hidden_states" and getattr(type(t), e) is not getattr(Technique, e)]
    if "needs_hidden_states" in events and t.needs_hidden_states:
        found.append("needs_hidden_states")
    return found


def refusal(a: Technique, b: Technique) -> str | None:
    """Why `a` and `b` cannot train together (one line naming both), or None."""
    for x, y in ((a, b), (b, a)):
        if y.name in x.conflicts:
            return f"{x.name} and {y.name} cannot train together: {x.conflicts[y.name]}"
    for x, y in ((a, b), (b, a)):
        events = overridden(y, x.refuses_events)
        if events:
            return (f"{x.name} and {y.name} cannot train together: {x.name} takes over the step, and "
                    f"{y.name}'s {events[0]} would not reach it")
    shared = sorted(set(a.claimed()) & set(b.claimed()))
    if shared:
        return f"{a.name} and {b.name} cannot train together: both take over the {shared[0]}"
    return None


def resolve(techniques: Iterable[Technique]) -> list[Technique]:
    """Check that the techniques compose and put them in their declared order.

    Refused, with a one-line ConfigError: a technique given twice, a declared conflict, two
    techniques claiming the same resource, an `after` cycle. Otherwise the given order is kept,
    except that a technique is moved behind those it declares in `after`.
    """
    items = list(techniques)
    for t in items:
        if not isinstance(t, Technique):
            raise TypeError(f"techniques must be Technique instances; got {type(t).__name__}")
    seen: set[str] = set()
    for t in items:
        if t.name in seen:
            raise ConfigError(f"technique {t.name!r} is given twice; give it once with the settings you want")
        seen.add(t.name)
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            why = refusal(a, b)
            if why:
                raise ConfigError(why)
    ordered: list[Technique] = []
    pending = list(items)
    while pending:
        for t in pending:
            if all(other is t or other.name not in t.after for other in pending):
                ordered.append(t)
                pending.remove(t)
                break
        else:
            raise ConfigError(f"techniques {', '.join(t.name for t in pending)} each ask to run after another")
    return ordered


# -- the registry ------------------------------------------------------------------------------------
REGISTRY: dict[str, type[Technique]] = {}


def register(cls: type[Technique]) -> type[Technique]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a class attribute `name`")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"technique {cls.name!r} is registered twice")
    bad = set(cls.claims) - set(CLAIMS)
    if bad:
        raise ValueError(f"{cls.__name__}.claims: unknown {sorted(bad)}; known: {', '.join(CLAIMS)}")
    REGISTRY[cls.name] = cls
    return cls


def registered() -> list[str]:
    return sorted(REGISTRY)


def get(name: str, **params: Any) -> Technique:
    if name not in REGISTRY:
        raise ConfigError(f"unknown technique {name!r}; registered: {', '.join(registered()) or 'none'}")
    return REGISTRY[name](**params)


def parse_technique(spec: str) -> Technique:
    """A technique from text, as the command line writes it: ``"prune"`` or
    ``"prune:score=compressibility,keep_fraction=0.5"``. Values are read as Python literals
    (numbers, True/False), anything else as a string; a bad name or value raises a one-line ConfigError.
    """
    name, _, rest = spec.strip().partition(":")
    values: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"technique {spec!r}: write parameters as name=value, separated by commas; got {item!r}")
        if key.strip() in values:
            raise ConfigError(f"technique {spec!r}: parameter {key.strip()!r} is given twice")
        try:
            values[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            values[key.strip()] = text.strip()
    return get(name.strip(), **values)
