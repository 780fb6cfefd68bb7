"""Low-precision gradient accumulation: accumulate a step's micro-batch gradients in bf16 / fp16, naively or in chunks.

    run = et.train(cfg.replace(grad_accum=16, batch_size=2),
                   [et.technique("lowprec_accumulation", dtype="bf16", mode="chunked", chunk=4)])

The functional core (the sums, the buffer, the error curves) is `effitrain.train.chunked`; the hook is
`LowPrecAccumulation` (registered as ``lowprec_accumulation``): its `backward` takes each micro-batch's
gradients with `torch.autograd.grad` and adds them to an `AccumulationBuffer` instead of `p.grad`; its
`before_update` writes the buffer's total into `p.grad` (before clipping and the optimizer step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from effitrain.config import ConfigError
from effitrain.techniques.base import StepContext, Technique, param, register
from effitrain.train.chunked import AccumulationBuffer

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("naive", "chunked", "fp32")


@dataclass(frozen=True)
class LowPrecAccumulationParams:
    dtype: str = param("bf16", choices=tuple(DTYPES), help="the format the accumulated gradients are stored in")
    mode: str = param("chunked", choices=MODES,
                      help="naive: one running sum; chunked: sums of `chunk` micro-batches, then their sum; "
                           "fp32: accumulate as the baseline does (changes nothing)")
    chunk: int = param(8, range=(1, 1024), help="micro-batches per chunk (mode chunked)")


@register
class LowPrecAccumulation(Technique):
    """Low-precision gradient accumulation: the step's micro-batch gradients summed in bf16 or fp16.

    **What.** A step of k micro-batches normally adds each micro-batch's gradient into `p.grad` in
    fp32. Here each micro-batch's gradients (`torch.autograd.grad` of its weighted loss) are added
    into a buffer stored in `dtype` (bf16 or fp16): in mode `naive` as one running sum, in mode
    `chunked` into a chunk buffer that is added into the total every `chunk` micro-batches. Before
    clipping and the update the total is written into `p.grad`. It only matters when a step has many
    micro-batches: set the config's `grad_accum` (micro-batches per step, each `batch_size` rows;
    `batch_ramp` grows it from 1); with `grad_accum = 1` the only effect is one rounding of the gradient.

    **Why.** Low-precision accumulators halve the memory and bandwidth of gradient buffers (and are
    what 8-bit training hardware accumulates in), but a running sum in a short format swamps its
    late, small addends. Chunking keeps the accuracy of a much wider accumulator for the price of a
    second buffer. This is a lesson in numerics: on this CPU trainer it saves no time; it shows how
    much accuracy the accumulation format costs, and how little chunking needs to win it back.

    **Math.** A format with p significand bits (bf16 8, fp16 11) has ulp(s) ≈ |s|·2^(1−p); an addend
    a with |a| < ulp(s)/2 leaves s unchanged. After i micro-batches the running sum is ~i times one
    micro-batch's gradient g/k, so the naive sum's rounding error grows like k·u (u = 2^−p) and
    stalls once k approaches 2^p. With chunks of C, no running sum exceeds max(C, k/C) addends: the
    error is ~(C + k/C)·u, smallest near C = √k. Each micro-batch's loss carries its share of the step
    (1/k), so the gradients added are already scaled.

    **Settings.** `mode` fp32 is the identity (the trainer's own fp32 accumulation, bit for bit);
    `naive` vs `chunked` at the same `dtype` is the experiment. `chunk` ≈ √(grad_accum) is the
    sweet spot (the default 8 suits 64 micro-batches; chunk ≥ grad_accum is the naive sum). fp16
    has 3 more bits than bf16 but a range of only ±65504: the buffer holds the gradients of the loss
    the backward is given, so under a loss scale (if the run scales its loss) it holds scaled ones,
    which the trainer unscales after `before_update`, and may overflow to inf. The
    technique owns the backward ("backward" claim) in modes naive and chunked. The FLOP meter's
    counting pass runs the same `autograd.grad` and keeps nothing. Measured errors of the core:
    `effitrain.train.chunked.accumulation_error` and `dot_error_curve`.

    **Paper.** Wang et al., "Training Deep Neural Networks with 8-bit Floating Point Numbers"
    (NeurIPS 2018): chunk-based accumulation; Sakr et al., "Accumulation Bit-Width Scaling for
    Ultra-Low Precision Training of Deep Networks" (ICLR 2019).
    """

    name = "lowprec_accumulation"
    Params = LowPrecAccumulationParams
    paper = "Wang et al. 2018, Training Deep Neural Networks with 8-bit Floating Point Numbers"
    identity_params = {"mode": "fp32"}

    def __init__(self, params: Any = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.model: torch.nn.Module | None = None
        self.trainable: list[torch.nn.Parameter] = []
        self.buffer: AccumulationBuffer | None = None
        self._step: int | None = None  # the step the buffer's contents belong to

    @property
    def active(self) -> bool:
        return self.params.mode != "fp32"

    def claimed(self) -> tuple[str, ...]:
        return ("backward",) if self.active else ()

    def _bind(self, model: torch.nn.Module) -> None:
        self.model = model
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.buffer = None  # built at the first backward, on the parameters' device

    # -- setup: which parameters the gradients are taken of ------------------------------------------------
    def on_model(self, model: torch.nn.Module, ctx: StepContext) -> torch.nn.Module:
        self._bind(model)
        return model

    def on_optimizer(self, model: torch.nn.Module, param_groups: list[dict],
                     ctx: StepContext) -> torch.optim.Optimizer | None:
        self._bind(model)  # the final model, after every technique's on_model
        return None

    # -- each step ---------------------------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, ctx: StepContext) -> bool:
        if not self.active:
            return False
        if not self.trainable:
            raise ConfigError("lowprec_accumulation: no model to take gradients of; run it through the trainer "
                              "or call on_model(model, ctx) first")
        grads = torch.autograd.grad(loss, self.trainable, allow_unused=True)
        if ctx.counting:
            return True  # the FLOP meter's pass: the backward's work is done, nothing is kept
        if self.buffer is None:
            p = self.params
            self.buffer = AccumulationBuffer(self.trainable, DTYPES[p.dtype], p.mode, p.chunk)
        if self._step != ctx.step:  # a step that ended without an update (non-finite loss) leaves nothing behind
            self.buffer.reset()
            self._step = ctx.step
        self.buffer.add(grads)
        return True

    def before_update(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: StepContext) -> None:
        if not self.active or self.buffer is None or self.buffer.adds == 0:
            return
        current = [p for p in model.parameters() if p.requires_grad]
        if len(current) != len(self.trainable) or any(a is not b for a, b in zip(current, self.trainable)):
            raise ConfigError("lowprec_accumulation: the model's trainable parameters are not the ones it took "
                              "gradients of; let it see the final model (on_model / on_optimizer)")
        for p, total, got in zip(self.trainable, self.buffer.total(), self.buffer.received):
            if not got:
                continue  # as the baseline: a parameter no micro-batch reached keeps grad None
            total = total.to(p.dtype)
            p.grad = total if p.grad is None else p.grad.add_(total)
        self.stats["steps"] = self.stats.get("steps", 0) + 1
        self.stats["micro_batches"] = self.stats.get("micro_batches", 0) + self.buffer.adds
        self.buffer.reset()
        self._step = None

    def state_dict(self) -> dict[str, Any]:
        # between steps the buffer is empty (before_update resets it), so the counters are all there is
        return {k: self.stats[k] for k in ("steps", "micro_batches") if k in self.stats}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("steps", "micro_batches"):
            if k in state:
                self.stats[k] = int(state[k])


__all__ = ["DTYPES", "MODES", "LowPrecAccumulationParams", "LowPrecAccumulation"]
