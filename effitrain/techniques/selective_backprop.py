"""Selective backprop: score every row with a no-grad forward, train only on the rows with the biggest losses.

    run = et.train(cfg, [et.technique("selective_backprop", mode="cdf", beta=1.0)])
    run = et.train(cfg, [et.technique("selective_backprop", mode="percentile", keep_fraction=0.5)])

The pieces are plain functions (`row_losses`, `cdf_keep_probabilities`, `keep_cdf`, `keep_top`,
`select_rows`); the hook is `SelectiveBackpropTechnique` (registered as ``selective_backprop``). It
uses one event, `on_masked_batch`: the trainer's FLOP meter redoes that event when it counts a
micro-batch, so the scoring forward is charged to the run's FLOPs.
"""
from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from effitrain.data import MaskedBatch
from effitrain.techniques.base import LossInputs, StepContext, Technique, param, register
from effitrain.model.bert import analytic_flops_parts
from effitrain.train.step import attention_recompute, autocast_for, mlm_loss_inputs

MODES = ("cdf", "percentile")


# -- scoring and selection ------------------------------------------------------------------------
def row_losses(token_losses: torch.Tensor, positions: torch.Tensor, batch_shape: tuple[int, int]) -> torch.Tensor:
    """(B,) mean MLM loss over each row's predicted tokens; −inf for a row with none (it teaches nothing)."""
    B, T = batch_shape
    rows = positions // T
    total = torch.zeros(B, dtype=torch.float64, device=token_losses.device).index_add_(0, rows, token_losses.double())
    count = torch.bincount(rows, minlength=B)
    out = total / count.clamp(min=1)
    return out.masked_fill(count == 0, float("-inf"))


def cdf_keep_probabilities(losses: torch.Tensor, history: torch.Tensor, beta: float) -> torch.Tensor:
    """P(keep row i) = CDF(ℓ_i)^β, the CDF the empirical one of `history` (the share of it ≤ ℓ_i)."""
    cdf = (history[None, :] <= losses[:, None]).double().mean(dim=1)
    return cdf.pow(beta)


def keep_cdf(losses: torch.Tensor, history: torch.Tensor, beta: float, rng: torch.Generator) -> torch.Tensor:
    """Sorted row indices kept with probability CDF(loss)^β (one uniform per row from `rng`); at least the
    row with the highest loss is kept."""
    probs = cdf_keep_probabilities(losses.cpu(), history.cpu(), beta)
    kept = (torch.rand(losses.shape[0], generator=rng, dtype=torch.float64) < probs).nonzero().squeeze(1)
    if kept.numel() == 0:
        kept = losses.cpu().argmax().reshape(1)
    return kept.sort().values


def keep_top(losses: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Sorted indices of the max(1, round(keep_fraction · B)) rows with the highest losses (ties: lower index)."""
    B = int(losses.shape[0])
    k = min(B, max(1, round(keep_fraction * B)))
    order = torch.argsort(-losses.cpu(), stable=True)
    return order[:k].sort().values


def select_rows(batch: MaskedBatch, rows: torch.Tensor) -> MaskedBatch:
    """The batch restricted to `rows` (sorted): positions are flat indices into (B·T), so each kept
    position r·T + c becomes j·T + c for the kept row's new index j; the others' labels go."""
    B, T = batch.input_ids.shape
    device = batch.input_ids.device
    rows = rows.to(device)
    new_index = torch.full((B,), -1, dtype=torch.long, device=device)
    new_index[rows] = torch.arange(rows.numel(), device=device)
    pos_rows = new_index[batch.positions // T]
    sel = pos_rows >= 0
    positions = pos_rows[sel] * T + batch.positions[sel] % T
    mask = None
    if batch.attention_mask is not None:
        mask = batch.attention_mask[rows]
        mask = None if bool(mask.all()) else mask  # as mask_tokens: None when nothing is padded
    return MaskedBatch(batch.input_ids[rows], mask, positions, batch.labels[sel])


@torch.no_grad()
def score_rows(model: nn.Module, batch: MaskedBatch, autocast: Any = None) -> torch.Tensor:
    """(B,) each row's mean MLM loss under a no-grad forward in eval mode (no dropout, no RNG drawn)."""
    base = getattr(model, "_orig_mod", model)
    was_training = base.training
    base.eval()
    try:
        with (autocast() if autocast is not None else contextlib.nullcontext()):
            out = mlm_loss_inputs(base, batch)
    finally:
        base.train(was_training)
    return row_losses(out.token_losses.detach(), batch.positions, tuple(batch.input_ids.shape))


# -- the hook -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SelectiveBackpropParams:
    mode: str = param("cdf", choices=MODES,
                      help="cdf: keep a row with probability CDF(loss)^β over recent losses (Jiang et al.); "
                           "percentile: keep the keep_fraction of each micro-batch with the highest losses")
    beta: float = param(1.0, range=(0.0, 10.0), step=0.5,
                        help="cdf mode: selectivity β; keeps about 1/(1+β) of the rows "
                             "(0 = every row: the plain run)")
    history: int = param(1024, range=(1, 1_000_000),
                         help="cdf mode: how many recent row losses the CDF is taken over")
    keep_fraction: float = param(0.5, range=(0.0, 1.0), step=0.05,
                                 help="percentile mode: share of each micro-batch's rows kept "
                                      "(at least one; 1 = the plain run)")


@register
class SelectiveBackpropTechnique(Technique):
    """Selective backprop: a cheap forward picks the rows with the biggest losses; only they are trained on.

    **What.** After masking, every micro-batch gets a no-grad forward (in eval mode) that scores each
    row by the mean MLM loss over its masked tokens. Rows are then kept either with probability
    $\\mathrm{CDF}(\\ell)^\\beta$, the CDF the empirical one of the last `history` row losses (mode "cdf",
    Jiang et al.), or as the top `keep_fraction` of the micro-batch by loss (mode "percentile", as
    Composer's selective backprop). The training forward and the backward run only on the kept rows
    (at least one per micro-batch); the others cost only their scoring forward.

    **Why.** Rows the model already predicts well give small gradients; spending the backward (two
    thirds of a step's work) on the rows it gets most wrong should learn about as much for less work.
    The risk: the loss is noisy, hard rows may be junk, and the scoring pass is not free.

    **Math.** Break-even. With F the FLOPs of one row's forward, a training row costs about 3F
    (forward 1F, backward 2F). Keeping a share k, a step costs $F + 3F\\,k$ per row (every row scored,
    k of them trained) against $3F$ for the baseline: the FLOP ratio is $\\tfrac13 + k$, below 1 only
    when $k < \\tfrac23$ (k = 0.5 gives 0.83, k = 1/3 gives 0.67). The scoring forward is cheaper in time
    than F of a training forward (no activations kept), but on a CPU, and at small batches anywhere,
    the cost of a batch is not linear in its rows (fixed per-op overheads, small matmuls run below peak),
    so training k·B rows costs more than k of training B rows and the time ratio is worse than the FLOP
    ratio. In cdf mode, if the recent losses are a stationary sample, $\\mathrm{CDF}(\\ell)$ of a new row is
    uniform on [0, 1], so the expected kept share is $E[U^\\beta] = 1/(1+\\beta)$.

    **Settings.** mode "cdf" with beta 1 keeps about half the rows (FLOP ratio ≈ 0.83); beta 2 a third
    (≈ 0.67). history 1024 rows (32 micro-batches of the smoke profile). mode "percentile" keeps exactly
    round(keep_fraction · B) rows per micro-batch (default 0.5). beta = 0 (cdf) or keep_fraction = 1
    (percentile) keeps every row without scoring: exactly the plain run. The draw comes from the run's
    technique generator. The term ``kept_row_fraction`` (kept rows / rows of the micro-batch) is logged per
    step; `run.extra["techniques"]["selective_backprop"]` has rows_scored and rows_kept. The scoring pass
    is charged in FLOPs; its seconds are charged only where the trainer times `on_masked_batch`.

    **Paper.** Jiang et al., "Accelerating Deep Learning by Focusing on the Biggest Losers" (2019);
    MosaicML Composer's `SelectiveBackprop` (top-k by loss per batch).
    """

    name = "selective_backprop"
    Params = SelectiveBackpropParams
    paper = "Jiang et al. 2019, Accelerating Deep Learning by Focusing on the Biggest Losers"
    identity_params = {"beta": 0.0}

    def __init__(self, params: Any = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.history: deque[float] = deque(maxlen=self.params.history)
        self.pending: list[float] = []  # kept fractions of micro-batches not yet through `loss`, in order
        self.stats.update(rows_scored=0, rows_kept=0, batches=0)
        self.last_scored: tuple[int, int, int] | None = None  # (B, T, M) of the micro-batch scored last

    @property
    def active(self) -> bool:
        p = self.params
        return p.beta > 0.0 if p.mode == "cdf" else p.keep_fraction < 1.0

    def choose(self, losses: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Sorted indices of the rows to keep, given their scores (updates the loss history in cdf mode)."""
        p = self.params
        if p.mode == "percentile":
            return keep_top(losses, p.keep_fraction)
        finite = losses[torch.isfinite(losses)].cpu()
        self.history.extend(float(v) for v in finite)
        history = torch.tensor(list(self.history), dtype=torch.float64)
        if history.numel() == 0:
            return torch.arange(losses.shape[0])
        return keep_cdf(losses, history, p.beta, rng)

    def on_masked_batch(self, batch: MaskedBatch, model: nn.Module, ctx: StepContext) -> MaskedBatch:
        if not self.active:
            return batch
        losses = score_rows(model, batch, autocast_for(ctx.config, ctx.device))
        rows = self.choose(losses, ctx.rng)
        B = int(batch.input_ids.shape[0])
        self.last_scored = (B, int(batch.input_ids.shape[1]), int(batch.labels.numel()))  # for analytic_flops
        self.pending.append(rows.numel() / B)
        self.stats["rows_scored"] = self.stats.get("rows_scored", 0) + B
        self.stats["rows_kept"] = self.stats.get("rows_kept", 0) + int(rows.numel())
        self.stats["batches"] = self.stats.get("batches", 0) + 1
        self.stats["kept_fraction"] = self.stats["rows_kept"] / self.stats["rows_scored"]
        return select_rows(batch, rows)  # a new batch even when every row is kept: the meter keys on it

    def analytic_flops(self, parts: dict[str, float], batch: MaskedBatch, ctx: StepContext) -> dict[str, float]:
        """The kept rows' forward+backward (`parts`, from the trainer) plus the scoring forward of the whole
        micro-batch: a third of its blocks' and head's FLOPs, and the forward share of its attention's."""
        if self.last_scored is None or ctx.data is None:
            return parts
        B, T, M = self.last_scored
        full = analytic_flops_parts(ctx.config.model, ctx.data.vocab_size, B, T, M,
                                    attention_recompute=attention_recompute(ctx.config, ctx.device))
        attention_share = 1.0 / (3.0 + (0.5 if attention_recompute(ctx.config, ctx.device) else 0.0))
        return {**parts, "blocks": parts["blocks"] + full["blocks"] / 3.0,
                "attention": parts["attention"] + full["attention"] * attention_share,
                "head": parts["head"] + full["head"] / 3.0}

    def loss(self, out: LossInputs, ctx: StepContext) -> torch.Tensor | None:
        if self.active and self.pending:
            out.terms["kept_row_fraction"] = torch.tensor(self.pending.pop(0))
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "pending": list(self.pending), "stats": dict(self.stats)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = deque(state.get("history", []), maxlen=self.params.history)
        self.pending = list(state.get("pending", []))
        if "stats" in state:
            self.stats.clear()
            self.stats.update(state["stats"])


__all__ = ["row_losses", "cdf_keep_probabilities", "keep_cdf", "keep_top", "select_rows", "score_rows",
           "SelectiveBackpropParams", "SelectiveBackpropTechnique"]
