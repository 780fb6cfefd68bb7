"""Speed-up techniques: one module each, registered by name (see `base` for the contract and its events)."""
from effitrain.techniques.base import (REGISTRY, LossInputs, NoParams, Sampler, StepContext, StepPlan, Technique,
                                       get, param, parse_technique, register, registered, resolve)
from effitrain.techniques import curriculum, electra, knowledge_distillation, pruning  # noqa: E402,F401  # registers them
from effitrain.techniques import lowprec_accumulation  # noqa: E402,F401  # registers it
from effitrain.techniques import standardization  # noqa: E402,F401  # registers it
from effitrain.techniques import layer_drop, selective_backprop  # noqa: E402,F401  # registers them
from effitrain.techniques import ouroboros, sma  # noqa: E402,F401  # registers them
from effitrain.techniques import checkpointing, lowbit_optimizer  # noqa: E402,F401  # registers them

__all__ = ["REGISTRY", "LossInputs", "NoParams", "Sampler", "StepContext", "StepPlan", "Technique", "get", "param",
           "parse_technique", "register", "registered", "resolve"]
