"""The technique contract and registry.

A technique is a functional core (plain functions at the top of its module) plus a thin hook
class that subclasses `Technique`, declares a frozen `Params` dataclass, and overrides only the
events it needs. The trainer calls the events documented in `effitrain.train.trainer`; each hands
the technique exactly what it may change and a read-only `StepContext`. Widgets are generated
from `Params` (field types, defaults, and `metadata={"range": (lo, hi)}` or `{"choices": (...)}`),
so a registered technique appears in every control panel without UI code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from effitrain.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from effitrain.config import Config
    from effitrain.data import PretrainData, TrainSet


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


def validate_params(name: str, params: Any) -> None:
    """Refuse values outside a field's declared range or choices, naming the field."""
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"{name}.{f.name} must be one of {', '.join(map(str, f.metadata['choices']))}; got {value!r}")
        if "range" in f.metadata:
            lo, hi = f.metadata["range"]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ConfigError(f"{name}.{f.name} must be a number in [{lo}, {hi}]; got {value!r}")


class Technique:
    """Base hook: every event defaults to 'change nothing'."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    paper: ClassVar[str] = ""
    # parameter values under which the technique must change nothing at all (same curve as no
    # technique, bit for bit on CPU); the registry test checks it. None: the technique has no such setting.
    identity_params: ClassVar[dict[str, Any] | None] = None

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
        # what the technique measured about itself (e.g. seconds and FLOPs spent scoring the data);
        # the trainer copies it into `run.extra["techniques"][name]` so lessons can charge the cost
        self.stats: dict[str, Any] = {}

    # -- events, in the order the trainer calls them --------------------------------------------
    def on_dataset(self, train: "TrainSet", ctx: StepContext) -> "TrainSet":
        return train

    def on_model(self, model: torch.nn.Module, ctx: StepContext) -> torch.nn.Module:
        return model

    def on_batch(self, ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return ids

    def loss(self, out: "LossInputs", ctx: StepContext) -> torch.Tensor | None:
        return None

    def after_step(self, model: torch.nn.Module, ctx: StepContext) -> None:
        return None

    def on_eval(self, metrics: dict[str, float], ctx: StepContext) -> dict[str, float]:
        return metrics

    # -- bookkeeping -----------------------------------------------------------------------------
    def flops_key(self, ctx: StepContext) -> Any:
        """Anything that changes a step's FLOPs beyond the batch shape (e.g. layers skipped)."""
        return None

    def state_dict(self) -> dict[str, Any]:
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


@dataclass
class LossInputs:
    """What the `loss` event sees: the model's MLM logits at the predicted positions and more."""

    logits: torch.Tensor  # (M, V)
    labels: torch.Tensor  # (M,)
    token_losses: torch.Tensor  # (M,) cross-entropy per predicted token
    loss: torch.Tensor  # scalar: mean of token_losses (or what an earlier technique made of it)
    positions: torch.Tensor  # (M,) flat indices into (B, T)
    batch_shape: tuple[int, int]
    model: torch.nn.Module
    input_ids: torch.Tensor | None = None  # (B, T) the masked input the model saw
    attention_mask: torch.Tensor | None = None  # (B, T) bool, True = real token; None = no padding


REGISTRY: dict[str, type[Technique]] = {}


def register(cls: type[Technique]) -> type[Technique]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a class attribute `name`")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"technique {cls.name!r} is registered twice")
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
    import ast

    name, _, rest = spec.strip().partition(":")
    values: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"technique {spec!r}: write parameters as name=value, separated by commas; got {item!r}")
        try:
            values[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            values[key.strip()] = text.strip()
    return get(name.strip(), **values)
