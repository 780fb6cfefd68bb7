"""Progressive layer dropping (PLD): skip whole pre-LN blocks at random, more of them later in training
and deeper in the network.

    run = et.train(cfg, [et.technique("layer_drop", theta_bar=0.5, gamma=10)])

The schedule and the draw are plain functions (`theta`, `keep_probabilities`, `expected_kept_fraction`,
`draw_kept`); the hook is `LayerDropTechnique` (registered as ``layer_drop``). How it uses the events:

    on_model    turns every encoder block into a `DroppableBlock` (the same module and parameters, so
                the state_dict keys and forward hooks are unchanged; only its forward consults a mask)
    plan_step   draws, once per optimizer step and from ctx.rng, which blocks run (all of the step's
                micro-batches use the same draw)
    loss        logs the terms ``kept_layer_fraction`` (this step's kept blocks / L) and ``theta``
    after_step  clears the mask: outside a step (evaluation, downstream fine-tuning) every block runs
    flops_key   the number of kept blocks (every block costs the same, so the count fixes the FLOPs)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn

from effitrain.config import ConfigError
from effitrain.model.bert import Block
from effitrain.techniques.base import LossInputs, StepContext, StepPlan, Technique, param, register


# -- the schedule and the draw ----------------------------------------------------------------------
def theta(t: float, theta_bar: float = 0.5, gamma: float = 10.0) -> float:
    """θ(t) = (1 − θ̄)·exp(−γ·t) + θ̄: the keep probability of the deepest block's neighbour, from 1 at
    t = 0 down to θ̄; t is the fraction of the budget used (γ in budget-fraction units)."""
    return (1.0 - theta_bar) * math.exp(-gamma * t) + theta_bar


def keep_probabilities(t: float, layers: int, theta_bar: float = 0.5, gamma: float = 10.0) -> list[float]:
    """p_l = 1 − (l/L)·(1 − θ(t)) for l = 0 … L−1 (DeepSpeed's indexing: the first block always runs)."""
    th = theta(t, theta_bar, gamma)
    return [1.0 - (l / layers) * (1.0 - th) for l in range(layers)]


def expected_kept_fraction(theta_value: float, layers: int) -> float:
    """The mean of p_l over l = 0 … L−1: 1 − (1 − θ)(L − 1)/(2L), the expected share of blocks that run."""
    return 1.0 - (1.0 - theta_value) * (layers - 1) / (2 * layers)


def draw_kept(probs: Sequence[float], rng: torch.Generator) -> list[bool]:
    """Which blocks run: block l with probability p_l, one uniform draw per block from `rng`
    (none at all when every p_l is 1, so the identity setting leaves the generator untouched)."""
    if all(p >= 1.0 for p in probs):
        return [True] * len(probs)
    u = torch.rand(len(probs), generator=rng, dtype=torch.float64)
    return [bool(u[l] < p) for l, p in enumerate(probs)]


# -- the model surgery --------------------------------------------------------------------------------
class DropMask:
    """The current step's draw, shared by the technique and its blocks; `kept` None = every block runs."""

    def __init__(self) -> None:
        self.kept: list[bool] | None = None
        self.probs: list[float] | None = None

    def set(self, kept: Sequence[bool] | None, probs: Sequence[float] | None = None) -> None:
        self.kept = None if kept is None else [bool(k) for k in kept]
        self.probs = None if kept is None else [float(p) for p in (probs or [1.0] * len(self.kept))]


class DroppableBlock(Block):
    """A pre-LN (or norm-free) `Block` whose training forward obeys the mask: a dropped block returns its input without
    computing anything; a kept block with keep probability p scales each residual branch by 1/p (as
    DeepSpeed's PLD layer does), so the expected output is the full block's. In eval mode, or with no
    mask (outside a training step), it is exactly `Block.forward`."""

    pld_mask: DropMask
    pld_index: int

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        mask = getattr(self, "pld_mask", None)
        if not self.training or mask is None or mask.kept is None:
            return Block.forward(self, x, attn_mask, rotary)
        if not mask.kept[self.pld_index]:
            return x  # skipped: no attention, no FFN, no FLOPs
        p = mask.probs[self.pld_index]
        if p >= 1.0:
            return Block.forward(self, x, attn_mask, rotary)
        x = x + self.drop(self._attn(self.ln1(x), attn_mask, rotary)) / p
        return x + self.drop(self._ffn(self.ln2(x))) / p


def make_droppable(model: nn.Module, mask: DropMask) -> list[DroppableBlock]:
    """Turn the encoder's blocks into `DroppableBlock`s in place (class swap: same parameters, same keys)."""
    base = getattr(model, "_orig_mod", model)
    blocks = getattr(getattr(base, "encoder", None), "blocks", None)
    if blocks is None or not all(isinstance(b, Block) for b in blocks):
        raise ConfigError(f"layer_drop needs a BertForMLM-style model with encoder.blocks of Block; got "
                          f"{type(base).__name__} (from a technique before it)")
    for i, block in enumerate(blocks):
        if type(block) not in (Block, DroppableBlock):
            raise ConfigError(f"layer_drop drops plain encoder blocks (model.groupbert off); block {i} is a "
                              f"{type(block).__name__}")
        block.__class__ = DroppableBlock
        block.pld_mask, block.pld_index = mask, i
    return list(blocks)


# -- the hook -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerDropParams:
    theta_bar: float = param(0.5, range=(0.0, 1.0), step=0.05,
                             help="θ̄, where the keep probability settles (1 = keep every block: the plain run)")
    gamma: float = param(10.0, range=(0.0, 100.0), step=1.0,
                         help="γ, how fast θ falls to θ̄, per budget fraction (10: within 1% of θ̄ by t = 0.5)")


@register
class LayerDropTechnique(Technique):
    """Progressive layer dropping: skip whole blocks at random, more of them later and deeper.

    **What.** At every optimizer step each encoder block l = 0 … L−1 runs with probability
    $p_l$ and is skipped otherwise (its input passes through unchanged, nothing is computed, so the
    step's FLOPs and seconds fall). A kept block's attention and FFN outputs are divided by $p_l$
    before they join the residual stream. The probabilities start at 1 (the full model) and fall along
    a schedule; evaluation (and everything outside a training step) uses every block, unscaled.
    Pre-LN (or norm-free, model.norm "none") models only: a config with model.norm "post" is refused.

    **Why.** In a pre-LN Transformer each block adds a correction to a residual stream that always
    carries the input through, so the network still works when a block is missing, as stochastic depth
    showed for ResNets. Early in training every block matters (the representation is being formed),
    so nothing is dropped; later, dropping many deep blocks costs little accuracy and saves their work.
    Post-LN normalises after every residual sum, so a skipped block also skips a normalisation the next
    block expects; the PLD paper pairs layer dropping with a pre-LN BERT.

    **Math.** The global keep level $\\theta(t) = (1-\\bar\\theta)\\,e^{-\\gamma t} + \\bar\\theta$ with
    $t$ the fraction of the budget used; block $l$ keeps with $p_l = 1 - \\tfrac{l}{L}(1-\\theta(t))$.
    Indexing is DeepSpeed's, $l = 0 … L-1$ (the first block always runs), so the expected share of
    blocks that run is $E = \\frac1L\\sum_{l=0}^{L-1} p_l = 1 - (1-\\theta)\\frac{L-1}{2L}$
    (`expected_kept_fraction`; with $l = 1 … L$ it would be $1 - (1-\\theta)\\frac{L+1}{2L}$).
    Scaling a kept branch $f$ by $1/p_l$ makes $E[\\text{keep}_l\\,f/p_l] = f$: the expected residual
    update is the full block's, as with inverted dropout. DeepSpeed's example code draws with $p_l$ but
    divides by $p_{l+1}$ (an off-by-one); here the draw and the scale use the same $p_l$. FLOPs per
    step: the blocks' and attention's shares scale by (kept blocks)/L; embeddings and head do not change.

    **Settings.** theta_bar 0.5 (DeepSpeed's default): once settled, $E = 1 - (L-1)/(4L)$, about 0.77
    of the blocks for L = 12 and 0.875 for L = 2 (the smoke model, where little can be saved). gamma 10
    per budget fraction: θ is within $0.5\\,e^{-5} ≈ 0.0034$ of θ̄ at half the budget and halfway down
    to θ̄ by t ≈ 0.07, so most of the run trains at the settled rate while its first tenth sees nearly
    the full model. DeepSpeed's γ = 0.001 is per step (settled, e^{−5}, after 5,000 steps); a
    budget-fraction γ keeps the same shape for any budget and unit. theta_bar = 1 (or gamma = 0) keeps
    every block: exactly the plain run (no draws, no scaling, no terms). The draw is per optimizer step
    (every micro-batch of a step skips the same blocks), from the run's technique generator. The terms
    ``kept_layer_fraction`` and ``theta`` are logged per step, to plot the measured share against
    `expected_kept_fraction(theta, L)`; under torch.compile each new mask may cost a recompile.

    **Paper.** Zhang & He, "Accelerating Training of Transformer-Based Language Models with
    Progressive Layer Dropping", NeurIPS 2020 (with a pre-LN BERT and this schedule: 24% less time for
    the same number of samples, 2.5× faster to a similar downstream accuracy); DeepSpeed's
    `ProgressiveLayerDrop` and its bing_bert example.
    """

    name = "layer_drop"
    Params = LayerDropParams
    paper = ("Zhang & He 2020, Accelerating Training of Transformer-Based Language Models with Progressive "
             "Layer Dropping")
    identity_params = {"theta_bar": 1.0}
    conflicts = {"electra": "electra's discriminator and generator are two encoders around the embeddings; "
                            "layer_drop drops the blocks of one BertForMLM encoder"}

    def __init__(self, params: Any = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.mask = DropMask()
        self.layers = 0
        self.theta_now = 1.0

    @property
    def active(self) -> bool:
        """Whether any block can ever be dropped (θ̄ < 1 and γ > 0)."""
        return self.params.theta_bar < 1.0 and self.params.gamma > 0.0

    # -- setup
    def on_model(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        norm = ctx.config.model.norm
        if norm == "post":  # pre-LN and norm-free blocks are x + f(x): skipping one leaves x, nothing else
            raise ConfigError(f"layer_drop needs a pre-LN or norm-free model (model.norm='pre' or 'none'); this "
                              f"config has model.norm={norm!r}: a skipped post-LN block would also skip its "
                              f"normalisation")
        self.layers = len(make_droppable(model, self.mask))
        self.stats.update(layers=self.layers, steps=0, kept_blocks=0)
        return model

    # -- each step
    def plan_step(self, plan: StepPlan, ctx: StepContext) -> StepPlan:
        if not self.active or self.layers == 0:
            return plan
        p = self.params
        self.theta_now = theta(ctx.fraction, p.theta_bar, p.gamma)
        probs = keep_probabilities(ctx.fraction, self.layers, p.theta_bar, p.gamma)
        self.mask.set(draw_kept(probs, ctx.rng), probs)
        self.stats["steps"] = self.stats.get("steps", 0) + 1
        self.stats["kept_blocks"] = self.stats.get("kept_blocks", 0) + self.kept_count()
        self.stats["mean_kept_fraction"] = self.stats["kept_blocks"] / (self.stats["steps"] * self.layers)
        return plan

    def loss(self, out: LossInputs, ctx: StepContext) -> torch.Tensor | None:
        if self.mask.kept is not None:
            out.terms["kept_layer_fraction"] = torch.tensor(self.kept_count() / self.layers)
            out.terms["theta"] = torch.tensor(self.theta_now)
        return None

    def after_step(self, model: nn.Module, ctx: StepContext) -> None:
        self.mask.set(None)  # outside a step every block runs (evaluation, fine-tuning the kept model)

    # -- counting
    def kept_count(self) -> int:
        return self.layers if self.mask.kept is None else sum(self.mask.kept)

    def flops_key(self, ctx: StepContext) -> Any:
        return None if self.mask.kept is None else ("kept_blocks", self.kept_count())

    def analytic_flops(self, parts: dict[str, float], batch: Any, ctx: StepContext) -> dict[str, float]:
        if self.mask.kept is None or self.layers == 0:
            return parts
        share = self.kept_count() / self.layers
        return {**parts, "blocks": parts["blocks"] * share, "attention": parts["attention"] * share}

    def state_dict(self) -> dict[str, Any]:
        return {"kept": self.mask.kept, "probs": self.mask.probs, "theta": self.theta_now,
                "stats": dict(self.stats)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mask.set(state.get("kept"), state.get("probs"))
        self.theta_now = float(state.get("theta", 1.0))
        if "stats" in state:
            self.stats.clear()
            self.stats.update(state["stats"])


__all__ = ["theta", "keep_probabilities", "expected_kept_fraction", "draw_kept", "DropMask", "DroppableBlock",
           "make_droppable", "LayerDropParams", "LayerDropTechnique"]
