"""Low-bit optimizer state: AdamW's two moments stored in 8 or 4 bits (torchao's low-bit optimizers).

    run = et.train(cfg, [et.technique("lowbit_optimizer", bits=8)])

The functional core is the library's: `torchao.optim.AdamW8bit` / `AdamW4bit` keep each moment of a
weight matrix as block-wise quantized codes (one scale per block), and run the update as one compiled
function per parameter shape (`torch.compile`, on CPU and CUDA alike). This module builds the optimizer
over the trainer's parameter groups; `effitrain.train.footprint` counts and predicts its bytes.

Why torchao and not bitsandbytes: both ship an 8-bit AdamW that runs on a CPU, but only torchao offers
4-bit state, it is plain PyTorch (its update is compiled, not a vendor kernel), and bitsandbytes' CPU
back end tries to fetch kernels from the Hugging Face Hub when it is imported (checked with
bitsandbytes 0.50, 2026-12-07), which a machine without network cannot do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from effitrain.config import ConfigError
from effitrain.imports import quiet_import
from effitrain.techniques.base import StepContext, Technique, param, register
from effitrain.train.footprint import optimizer_state_bytes

BITS = (32, 8, 4)


def lowbit_adamw(param_groups: list[dict], bits: int, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """torchao's AdamW with `bits`-bit moments over these groups (each group may set its weight decay).
    Weights under 4,096 elements (biases, norms) keep fp32 moments, as bitsandbytes and torchao do."""
    try:
        optim = quiet_import("torchao.optim", "lowbit_optimizer", "pip install 'torchao>=0.10'")
    except ImportError as exc:
        raise ConfigError(str(exc)) from None
    cls = _loads_adamw_state({8: optim.AdamW8bit, 4: optim.AdamW4bit}[bits])
    return cls(param_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _loads_adamw_state(cls: type) -> type:
    """`cls` whose `load_state_dict` also takes torch AdamW's state (a warm start continues the baseline's
    optimizer): fp32 moments of the weights it quantizes are quantized (`copy_` into its low-bit buffers)
    and a float learning rate becomes the tensor its compiled step reads. Its own state loads unchanged."""

    class LowBitAdamW(cls):
        def load_state_dict(self, state_dict: dict) -> None:
            super().load_state_dict(state_dict)
            for group in self.param_groups:
                if not isinstance(group["lr"], torch.Tensor):
                    group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32)
                for p in group["params"]:
                    state = self.state.get(p, {})
                    for key, signed in (("exp_avg", True), ("exp_avg_sq", False)):
                        plain = state.get(key)
                        if type(plain) is torch.Tensor:
                            low = self._new_buffer(p, signed)
                            if type(low) is not torch.Tensor:  # a weight it keeps in low bits
                                low.copy_(plain)
                                state[key] = low

    LowBitAdamW.__name__ = LowBitAdamW.__qualname__ = cls.__name__  # the name says the bits
    return LowBitAdamW


@dataclass(frozen=True)
class LowBitOptimizerParams:
    bits: int = param(8, choices=BITS, help="bits per stored moment: 8 or 4 (torchao); 32 = the config's AdamW")


@register
class LowBitOptimizer(Technique):
    """Low-bit optimizer state: AdamW's two moments kept in 8 or 4 bits instead of 32.

    **What.** AdamW keeps, for every weight, a running mean of its gradients and of their squares: two
    fp32 numbers, 8 bytes per weight, twice the weights themselves. Here every weight matrix of at least
    4,096 elements keeps each moment as 8-bit (or 4-bit) codes in blocks of 256 (128), with one fp32 scale
    per block; every update dequantizes, applies the AdamW step in fp32 and quantizes again (torchao's
    `AdamW8bit` / `AdamW4bit`, compiled with `torch.compile`). Biases and norms keep fp32 moments. The
    config's learning rate, betas, eps and weight decay are used unchanged.

    **Why.** Parameters, gradients and optimizer state together cost 16 bytes per weight in fp32 training
    with AdamW; half of that is the optimizer state. In 8 bits the state costs 2 bytes per weight and in
    4 bits 1, which is what lets a bigger model fit a fixed memory (lesson 09). The price: a quantization
    error in the moments, and an update that dequantizes and requantizes every step.

    **Math.** Bytes per weight: AdamW 4 (weight) + 4 (gradient) + 8 (moments) = 16; 8-bit 4 + 4 + 2·(1 +
    4/256) ≈ 10.03; 4-bit 4 + 4 + 2·(1/2 + 4/128) ≈ 9.06. The codes are a dynamic (non-linear) map:
    signed for the first moment, unsigned for the second (Dettmers et al.: block-wise quantization keeps
    an outlier's error inside its block; the 4-bit second moment of Li et al. drops the zero point so that
    1/√v stays finite).

    **Settings.** `bits` 8 (default) or 4; 32 is the config's AdamW (changes nothing). The first step of a
    process compiles one update per parameter shape (seconds on a CPU; the run's `compile_seconds` does not
    include it, the step's time does). Claims the optimizer: refused with another technique that brings
    its own (Crossbow's SMA) and under DDP (which refuses on_optimizer techniques). The run's
    `extra["techniques"]["lowbit_optimizer"]["state_bytes"]` is the optimizer state measured after the
    first update.

    **Paper.** Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise Quantization"
    (ICLR 2022); Li, Chen & Zhu, "Memory Efficient Optimizers with 4-bit States" (NeurIPS 2023); the
    implementation is PyTorch's torchao.
    """

    name = "lowbit_optimizer"
    Params = LowBitOptimizerParams
    paper = "Dettmers et al. 2022, 8-bit Optimizers via Block-wise Quantization"
    identity_params = {"bits": 32}

    def __init__(self, params: Any = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.optimizer: torch.optim.Optimizer | None = None

    @property
    def active(self) -> bool:
        return self.params.bits != 32

    def claimed(self) -> tuple[str, ...]:
        return ("optimizer",) if self.active else ()

    def on_optimizer(self, model: torch.nn.Module, param_groups: list[dict],
                     ctx: StepContext) -> torch.optim.Optimizer | None:
        if not self.active:
            return None
        o = ctx.config.optim
        self.optimizer = lowbit_adamw(param_groups, self.params.bits, o.lr, (o.beta1, o.beta2), o.eps)
        self.stats["bits"] = self.params.bits
        return self.optimizer

    def after_step(self, model: torch.nn.Module, ctx: StepContext) -> None:
        if self.optimizer is not None and "state_bytes" not in self.stats and self.optimizer.state:
            self.stats["state_bytes"] = optimizer_state_bytes(self.optimizer)


__all__ = ["BITS", "LowBitOptimizer", "LowBitOptimizerParams", "lowbit_adamw"]
