"""Activation checkpointing: keep a block's input only, and run its forward again in the backward.

The functional core is `Encoder.run_block` (effitrain.model.bert): a block whose index is in
`encoder.checkpointed` runs under `torch.utils.checkpoint.checkpoint` (non-reentrant, random state
preserved, so dropout draws the same masks again) while the model trains with gradients on; in
evaluation and under `no_grad` it runs plainly. This module picks the blocks and reports what was
recomputed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from effitrain.config import ConfigError
from effitrain.model.bert import Encoder, GroupedLinear
from effitrain.techniques.base import StepContext, Technique, param, register
from effitrain.train.step import attention_recompute


def checkpointed_blocks(layers: int, every: int) -> frozenset[int]:
    """Blocks 0, every, 2·every, … of `layers` (every = 1: all; 0: none)."""
    return frozenset(range(0, layers, every)) if every > 0 else frozenset()


def encoders(model: nn.Module) -> list[Encoder]:
    """Every `Encoder` in a model (ELECTRA's generator and discriminator: two)."""
    base = getattr(model, "_orig_mod", model)
    return [m for m in base.modules() if isinstance(m, Encoder)]


def _matmul_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv1d, GroupedLinear)))


def recomputed_share(enc: Encoder) -> float:
    """The share of the encoder's block matmul weights whose forward runs again in the backward: the
    checkpointed blocks', less a pre-LN or norm-free block's FFN down projection (the recompute stops
    before it: nothing the backward needs comes after it)."""
    total = sum(_matmul_weights(b) for b in enc.blocks)
    again = 0
    for i in enc.checkpointed:
        block = enc.blocks[i]
        down = getattr(getattr(block, "ffn", None), "down", None)
        last = _matmul_weights(down) if down is not None and getattr(block, "norm", "pre") != "post" else 0
        again += _matmul_weights(block) - last
    return again / total if total else 0.0


@dataclass(frozen=True)
class CheckpointingParams:
    every: int = param(1, range=(0, 64),
                       help="checkpoint blocks 0, every, 2·every, …: 1 = every block (least memory, one extra "
                            "forward of the blocks), 2 = every other one; 0 = none (the plain run)")


@register
class CheckpointingTechnique(Technique):
    """Activation checkpointing: keep each block's input, not its insides; recompute them in the backward.

    **What.** A checkpointed block runs its forward without keeping the tensors autograd would save for
    the backward (`torch.utils.checkpoint.checkpoint`, non-reentrant); it keeps only its input. In the
    backward it runs the forward again from that input, with the random state it had (so a dropout mask
    is drawn again identically), and then its backward. `every` picks the blocks. The loss curve is the
    plain run's: the same numbers are computed, one block's worth at a time.

    **Why.** A block keeps about 10 tensors of the size of its input for the backward (measured exactly
    by `effitrain.train.footprint`), for every block, for the whole micro-batch; in a deep model that,
    not the weights, decides the largest micro-batch, sequence or model that fits. Checkpointing trades
    that memory for one more forward of the checkpointed blocks: up to a third more block FLOPs.

    **Math.** Per micro-batch of B rows of T tokens, hidden H and L blocks, activations fall from
    $L \\cdot a$ (a ≈ 10·B·T·H + 2·B·T·F floats, pre-LN, rotary, fused attention) to
    $L \\cdot B T H + a$: every checkpointed block keeps its input, and only the block being recomputed
    holds its insides at a time. FLOPs rise by the blocks' forward, $2N$ per token for N block weights
    (the step's 6N becomes at most 8N: torch stops the recompute at the last tensor the backward needs,
    so a pre-LN block's FFN down projection does not run again; `recomputed_share`) plus the attention's
    forward; $\\sqrt{L}$ segments would balance the kept
    inputs against one segment's insides (Chen et al.), `every` > 1 is the simple version of it.

    **Settings.** every = 1 checkpoints every block (default); 2 every other block; 0 none (exactly the
    plain run). Active while training with gradients only: evaluation and no-grad scoring passes run
    plainly. `run.extra["techniques"]["checkpointing"]` has the blocks checkpointed and how many block
    forwards were run again. Refused with Crossbow's SMA, which runs a step of its own (SMA says so).

    **Paper.** Chen, Xu, Zhang & Guestrin, "Training Deep Nets with Sublinear Memory Cost" (2016);
    PyTorch's `torch.utils.checkpoint`.
    """

    name = "checkpointing"
    Params = CheckpointingParams
    paper = "Chen et al. 2016, Training Deep Nets with Sublinear Memory Cost"
    identity_params = {"every": 0}
    keeps_weights = True  # on_model changes how blocks run, not what the model holds: the run cache rebuilds it
    after = ("electra",)  # checkpoint the encoders ELECTRA builds too

    def __init__(self, params: Any = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.encoders: list[Encoder] = []
        self.counted = 0  # the encoders' recompute count when the stats were last brought up to date
        self.stats.update(checkpointed_blocks=0, recomputed_blocks=0)

    def on_model(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        self.encoders = encoders(model)
        if not self.encoders:
            raise ConfigError(f"checkpointing needs a model with an effitrain Encoder; got {type(model).__name__}")
        for enc in self.encoders:
            enc.checkpointed = checkpointed_blocks(len(enc.blocks), self.params.every)
        self.counted = sum(enc.recomputed for enc in self.encoders)
        self.stats["checkpointed_blocks"] = sum(len(enc.checkpointed) for enc in self.encoders)
        return model

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        now = sum(enc.recomputed for enc in self.encoders)  # the encoders count; the stats add what is new
        self.stats["recomputed_blocks"] += now - self.counted
        self.counted = now

    def analytic_flops(self, parts: dict[str, float], batch: Any, ctx: StepContext) -> dict[str, float]:
        """The checkpointed blocks' forward once more, up to the last tensor the backward needs (torch's
        non-reentrant checkpoint stops there: a pre-LN or norm-free block's FFN down projection only feeds
        the block's output, so it is not recomputed): 2 FLOPs per weight of those matmuls and token,
        against the 6 per weight of the step; and the attention's forward (4·T·H of its 12, or 14 with a
        fused kernel's own recompute, per token and layer)."""
        if not self.encoders or not self.encoders[0].checkpointed:
            return parts
        enc = self.encoders[0]
        attention_total = 3.5 if attention_recompute(ctx.config, ctx.device) else 3.0
        share = len(enc.checkpointed) / len(enc.blocks)
        return {**parts, "blocks": parts["blocks"] * (1 + recomputed_share(enc) / 3),
                "attention": parts["attention"] * (1 + share / attention_total)}

    def state_dict(self) -> dict[str, Any]:
        return {"stats": dict(self.stats)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.update(state.get("stats", {}))


__all__ = ["CheckpointingParams", "CheckpointingTechnique", "checkpointed_blocks", "encoders", "recomputed_share"]
