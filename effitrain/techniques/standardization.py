"""Standardization loss: a secondary objective that keeps the residual stream standardised at every block
boundary, in place of normalisation layers (meant for a norm-free model, `model.norm = "none"`).

    cfg = et.profile_config("smoke", norm="none")
    run = et.train(cfg, [et.technique("standardization_loss", weight=1e-2)])

The penalty is the plain function `standardization_penalty`; the hook is `StandardizationTechnique`
(registered as ``standardization_loss``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from effitrain.config import ConfigError
from effitrain.data import MaskedBatch
from effitrain.techniques.base import LossInputs, StepContext, Technique, param, register
from effitrain.train.step import capture_hidden_states


def token_standardization(h: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """μ² + (σ − 1)² of every token of h (B, T, H), μ and σ over its H hidden units (σ the population
    std, √(var + eps)); computed in fp32: (B, T)."""
    h = h.float()
    var, mean = torch.var_mean(h, dim=-1, unbiased=False)
    return mean.square() + (torch.sqrt(var + eps) - 1.0).square()


def standardization_penalty(states: Sequence[torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_l mean over tokens of μ_l² + (σ_l − 1)², the tokens being the real ones (`keep` (B, T) bool,
    True = real token; None = all). 0 for standardised activations (every token mean 0, std 1)."""
    if not states:
        raise ValueError("standardization_penalty needs at least one hidden state")
    total = states[0].new_zeros((), dtype=torch.float32)
    for h in states:
        per_token = token_standardization(h)  # (B, T)
        if keep is None:
            total = total + per_token.mean()
        else:
            w = keep.to(per_token.dtype)
            total = total + (per_token * w).sum() / w.sum().clamp_min(1.0)
    return total


def residual_states(model: torch.nn.Module, input_ids: torch.Tensor,
                    block_outputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The residual stream at every block boundary: the embedding output (the first block's input,
    recomputed from the ids before the embedding dropout: a gather, an add and a scale, no matmul), then
    each block's output (the next block's input; the last one's is what the MLM head reads)."""
    base = getattr(model, "_orig_mod", model)
    encoder = getattr(base, "encoder", None)
    if encoder is None or not hasattr(encoder, "embed"):
        raise ConfigError(f"standardization_loss needs a BertForMLM-style model (encoder.embed); got {type(base).__name__}")
    return [encoder.embed(input_ids, dropout=False), *block_outputs]


@torch.no_grad()
def residual_stream(model: torch.nn.Module, batch: MaskedBatch) -> list[torch.Tensor]:
    """`residual_states` of `model` on one masked batch: a no-grad forward in eval mode (the model's
    mode is put back), L + 1 tensors (B, T, H)."""
    was_training = model.training
    model.eval()
    try:
        with capture_hidden_states(model) as outputs:
            model(batch.input_ids, batch.positions, batch.attention_mask)
            return residual_states(model, batch.input_ids, outputs)
    finally:
        model.train(was_training)


def residual_scale(model: torch.nn.Module, batch: MaskedBatch) -> list[float]:
    """σ of the residual stream at each block boundary of `model` (`residual_stream`) on one masked
    batch: each token's std over the hidden units, averaged over the real tokens. A LayerNorm'd or
    well standardised stream reads about 1; a blown-up one, orders of magnitude more."""
    sigma = [h.float().std(-1, unbiased=False) for h in residual_stream(model, batch)]  # (B, T) each
    if batch.attention_mask is None:
        return [float(s.mean()) for s in sigma]
    real = batch.attention_mask.float()
    return [float((s * real).sum() / real.sum()) for s in sigma]


@dataclass(frozen=True)
class StandardizationParams:
    weight: float = param(1e-2, range=(0.0, 10.0), step=1e-3,
                          help="λ, the weight of the standardization term; 0 = the plain MLM loss")


@register
class StandardizationTechnique(Technique):
    """Standardization loss: a secondary loss that keeps the residual stream standardised.

    **What.** The training loss gains a term $\\lambda\\,S$, where $S$ sums, over the residual stream
    at every block boundary (the embedding output, then each block's output, the last one being what
    the MLM head reads), the mean over real (non-PAD) tokens of how far each token's vector is from
    standardised. $S$ is logged as the named term ``std`` (the step's ``term_std``). Nothing changes at
    evaluation: the trainer's evaluation calls no `loss` event, so the validation loss is the plain
    MLM loss of the same model.

    **Why.** Normalisation layers make deep networks train faster and tolerate larger learning rates,
    but cost time and memory at every step and must stay in the model at test time. Without them
    nothing holds the residual stream at a fixed scale: each block adds to it, a large learning rate
    grows the blocks' weights, and the stream's size can multiply block after block until attention
    saturates and the run blows up. A loss that *asks* for standardised activations instead of a
    layer that *forces* them can do that part of the job in a network without normalisation, and is
    simply dropped after training. The lesson pairs it with `model.norm = "none"` (no LayerNorm in the
    encoder; the token vectors scaled by a constant 1 / init_std so the stream starts at unit scale,
    as a LayerNorm would put it); with a normalised model it is allowed, and nearly inert.

    **Math.** For a state $h_l$ (B, T, H), $l = 0 … L$, and token $i$, $\\mu_{l,i}$ and $\\sigma_{l,i}$ are
    the mean and (population) standard deviation over the H hidden units:
    $S = \\sum_l \\frac{1}{|\\text{real}|}\\sum_{i\\,\\text{real}} \\mu_{l,i}^2 + (\\sigma_{l,i} - 1)^2$, and
    $\\mathcal L = \\mathrm{CE} + \\lambda S$. $S = 0$ exactly when every token's vector is standardised
    at every boundary. The last block's output counts too: leaving it out lets the last block grow
    unchecked, and a blow-up there is as fatal as one inside. The embedding output is taken before the
    embedding dropout (recomputed from the ids: no random draw, no matmul FLOPs); block outputs are
    the ones the forward produced.

    **Settings.** `weight` λ = 1e-2 by default. A norm-free model starts with $S$ near 0 (its stream is
    at unit scale), so the term costs nothing until the stream drifts; once a block's output is 10×
    too large it adds about λ·81 nats, enough to pull it back within steps. λ = 0 is exactly the plain
    run (the term is not even computed). Try 1e-3 … 1e-1 with norm "none" and a learning rate above
    the profile's.

    **Paper.** Collins, Ballé & Shlens, "Accelerating Training of Deep Neural Networks with a
    Standardization Loss" (2019). The paper's setting is image classification with convolutional
    networks: batch normalisation removed and a secondary loss on the standardisation of the
    pre-activations, dropped at test time. This adaptation is ours: a Transformer encoder (BERT MLM),
    statistics per token over the hidden units (LayerNorm's axis, not the batch), on the residual
    stream at each block boundary, in the squared form μ² + (σ − 1)².
    """

    name = "standardization_loss"
    Params = StandardizationParams
    paper = "Collins, Ballé & Shlens 2019, Accelerating Training of Deep Neural Networks with a Standardization Loss"
    identity_params = {"weight": 0.0}
    needs_hidden_states = True
    conflicts = {"electra": "electra trains a generator and a discriminator, two encoders; which one's residual stream "
                           "to standardise is not defined here"}

    def loss(self, out: LossInputs, ctx: StepContext) -> torch.Tensor | None:
        if self.params.weight == 0.0:
            return None
        if not out.hidden_states or out.input_ids is None:
            raise ConfigError("standardization_loss needs the blocks' hidden states and the input ids "
                              "(run it through the trainer)")
        states = residual_states(out.model, out.input_ids, out.hidden_states)
        penalty = standardization_penalty(states, out.attention_mask)
        out.terms["std"] = penalty.detach()
        self.stats["std_batches"] = self.stats.get("std_batches", 0) + 1  # the effect, as measured
        return out.loss + self.params.weight * penalty.to(out.loss.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"std_batches": self.stats.get("std_batches", 0)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "std_batches" in state:
            self.stats["std_batches"] = int(state["std_batches"])


__all__ = ["token_standardization", "standardization_penalty", "residual_states", "residual_stream", "residual_scale",
           "StandardizationParams", "StandardizationTechnique"]
