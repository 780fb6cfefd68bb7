"""Ouroboros: model parallelism without backward locking: the encoder is split into K groups of
consecutive blocks, and group k updates with a gradient that is K − 1 − k steps old (k = 0 … K−1).

    run = et.train(cfg, [et.technique("ouroboros", groups=2)])

In one process this is the exact delayed-gradient arithmetic, so its convergence can be studied on
a CPU: every step computes the full gradient at the current weights, each group's part goes into a
queue, and the optimizer gets the part that is `delay` steps old (`DelayedGradients`). On K devices
that is what a pipeline computes when device k runs its backward with the error signal the device
above it sent one step earlier, instead of waiting for it (Ouroboros, after decoupled parallel
backprop); `et.train(cfg, [ouroboros], world_size=K)` runs that pipeline, one process per group,
over torch.distributed point-to-point messages (`effitrain.parallel.pipeline`, its schedule written
down there), and gives the same curve. `ouroboros_groups` writes down the grouping; `effitrain.lab.scaling` measures per-group seconds
(`group_seconds`) and models the time per step a K-device pipeline would take (`pipeline_time`).

The hook is `OuroborosTechnique` (registered as ``ouroboros``):

    on_model      assigns every parameter to a group (and checks that each one has a place)
    loss          notes whether this is the FLOP-counting pass (its backward must not feed the queues)
    before_update swaps each group's gradient for its delayed one (None while the queue fills:
                  AdamW skips that group then)
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from effitrain.config import ConfigError
from effitrain.parallel.launch import process_group
from effitrain.techniques.base import LossInputs, StepContext, Technique, param, register

TIED = "encoder.tok.weight"  # one tensor, two places: the embedding (first group) and the decoder (last)
EMBEDDING_PART, DECODER_PART = "encoder.tok.weight@embedding", "encoder.tok.weight@decoder"


# -- the arithmetic -------------------------------------------------------------------------------------
class DelayedGradients:
    """Replace each slot's gradient by the one from `delay` steps ago.

    slots: (key, parameter, delay). A parameter may sit in several slots (a tied weight used in two
    groups): then `apply(parts)` gets each slot's current component in `parts[key]`, and the
    parameter's new gradient is the sum of its slots' delayed components. A slot whose queue has not
    filled yet contributes nothing; a parameter with no contribution gets grad None (no update)."""

    def __init__(self, slots: Sequence[tuple[str, torch.Tensor, int]]):
        self.slots = list(slots)
        self.queues: dict[str, collections.deque] = {key: collections.deque() for key, _, _ in self.slots}

    @torch.no_grad()
    def apply(self, parts: dict[str, torch.Tensor] | None = None) -> int:
        """Swap the gradients in place; returns how many slots got a gradient."""
        parts = parts or {}
        new: dict[int, torch.Tensor | None] = {}
        params: dict[int, torch.Tensor] = {}
        served = 0
        for key, p, delay in self.slots:
            g = parts.get(key, p.grad)
            queue = self.queues[key]
            queue.append(None if g is None else g.detach().clone())
            old = queue.popleft() if len(queue) > delay else None
            params[id(p)] = p
            if old is None:
                new.setdefault(id(p), None)
                continue
            served += 1
            new[id(p)] = old if new.get(id(p)) is None else new[id(p)] + old
        for pid, g in new.items():
            params[pid].grad = g
        return served

    def state_dict(self) -> dict[str, list]:
        return {key: [None if g is None else g.clone() for g in q] for key, q in self.queues.items()}

    def load_state_dict(self, state: dict[str, list]) -> None:
        for key, items in state.items():
            if key in self.queues:
                self.queues[key] = collections.deque(items)


def ouroboros_groups(model: nn.Module, groups: int) -> dict[str, int]:
    """{parameter name: group} for a BertForMLM-style model: the embedding stage in group 0, the L
    encoder blocks split into `groups` runs of consecutive blocks (as even as they go: block i goes
    to ⌊i·K/L⌋), the final norm and the MLM head in the last group. The tied token embedding is in
    both: its embedding part (`EMBEDDING_PART`) in group 0, its decoder part (`DECODER_PART`) in the last."""
    blocks = getattr(getattr(model, "encoder", None), "blocks", None)
    if blocks is None:
        raise ConfigError(f"ouroboros splits a model with encoder.blocks into groups; got {type(model).__name__}")
    L = len(blocks)
    if not isinstance(groups, int) or not 1 <= groups <= L:
        raise ConfigError(f"ouroboros.groups must be an integer in [1, {L}] (the model has {L} encoder blocks); "
                          f"got {groups!r}")
    tied = getattr(getattr(model, "head", None), "decoder", None) is not None and \
        model.head.decoder.weight is model.encoder.tok.weight
    where: dict[str, int] = {}
    for name, _ in model.named_parameters():
        if name.startswith("encoder.blocks."):
            i = int(name.split(".")[2])
            where[name] = i * groups // L
        elif name.startswith(("encoder.tok.", "encoder.pos.", "encoder.ln_emb.")):
            where[name] = 0
        elif name.startswith(("encoder.ln_final.", "head.")):
            where[name] = groups - 1
        else:
            raise ConfigError(f"ouroboros has no group for parameter {name!r}; it splits a BertForMLM "
                              "(embeddings, encoder.blocks, head)")
    if tied and groups > 1:
        del where[TIED]
        where[EMBEDDING_PART], where[DECODER_PART] = 0, groups - 1
    return where


def blocks_of(group: int, groups: int, layers: int) -> list[int]:
    """The encoder blocks of `group` when `layers` blocks are split into `groups` (block i → ⌊i·K/L⌋)."""
    return [i for i in range(layers) if i * groups // layers == group]


def group_forward(model: nn.Module, group: int, groups: int, batch: Any, x: torch.Tensor | None = None) -> torch.Tensor:
    """Group `group`'s part of a BertForMLM's forward on a masked batch: the first group embeds the
    batch's ids (x is None there), every group runs its blocks on x, the last ends with the final
    norm, the head and the batch's mean MLM loss (a scalar); the others return the (B, T, H)
    activation the next group takes. All groups in turn compute what `mlm_loss_inputs` does."""
    enc = model.encoder
    if group == 0:
        x = enc.embed(batch.input_ids)
    args, extra = enc.block_args(x.shape[1], batch.attention_mask, x.device)
    for i in blocks_of(group, groups, len(enc.blocks)):
        x = enc.run_block(i, x, *args, **extra)
    if group < groups - 1:
        return x
    logits = model.predict(enc.ln_final(x), batch.positions)
    return F.cross_entropy(logits.float(), batch.labels, reduction="none").mean()


# -- the hook -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OuroborosParams:
    groups: int = param(2, range=(1, 64), help="K, module groups (devices in a pipeline); group k's gradient "
                                               "is K − 1 − k steps old (1 = plain training)")


@register
class OuroborosTechnique(Technique):
    """Ouroboros: split the encoder into K groups, and let group k update with a gradient K−1−k steps old.

    **What.** The model's blocks are split into K groups of consecutive blocks (the embeddings join
    the first, the MLM head the last). Each step computes the gradient at the current weights; the
    last group applies it at once, the group before it one step later, the first group K − 1 steps
    later. The token embedding is tied to the decoder: its embedding part waits K − 1 steps, its
    decoder part none (Ouroboros puts the two on one device, closing the pipeline into a ring).

    **Why.** Pipelined model parallelism stalls because a device cannot run its backward until
    every device above it has run theirs (backward locking). If each device uses the error signal
    its upper neighbour sent one step earlier, all K devices work every step; the price is a stale
    gradient, whose delay grows towards the input. The paper proves convergence to critical points
    and reports a speed-up beyond data parallelism at comparable perplexity.

    **Math.** With weights $w^t$ and $d_k = K-1-k$, group $k$ updates
    $w_k^{t+1} = w_k^t - \\eta\\, \\nabla_{w_k} f(w^{t-d_k}; \\xi^{t-d_k})$ (AdamW in place of SGD
    here): the gradient of the batch seen $d_k$ steps ago, at the weights of that step. For the
    first $d_k$ steps group $k$ has no gradient yet and does not move.

    **Settings.** `groups` K from 1 (plain training) to the number of blocks. In one process this is
    the delayed arithmetic, no faster by itself; with `world_size=K` it is a real pipeline, one
    process per group (`effitrain.parallel.pipeline`). `effitrain.lab.scaling.pipeline_time` gives the time per step K
    devices would take from measured per-group seconds. Refused with fp16 (a scaled gradient would be
    delayed into a step with another scale) and with techniques that change the model's structure.

    **Paper.** Yang, Huo, Wang, Carin, "Ouroboros: On Accelerating Training of Transformer-Based
    Language Models", NeurIPS 2019.
    """

    name = "ouroboros"
    Params = OuroborosParams
    paper = "Yang et al., Ouroboros, NeurIPS 2019"
    identity_params = {"groups": 1}
    after = ("lowprec_accumulation",)  # delay the gradient of the whole step, once it is complete
    syncs_processes = True  # with world_size = groups: a pipeline of its own messages (no DDP wrapper)
    conflicts = {"electra": "ouroboros splits one BertForMLM into groups, and ELECTRA trains two models"}

    def __init__(self, params: Any = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.delayed: DelayedGradients | None = None
        self.embedding_grad: torch.Tensor | None = None
        self.counting = self.pipeline = False

    def on_model(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        if ctx.config.run.precision == "fp16":
            raise ConfigError("ouroboros and run.precision 'fp16' cannot train together: a scaled gradient "
                              "would be applied in a later step with another scale; use bf16 or fp32")
        K = self.params.groups
        where = ouroboros_groups(model, K)
        named = dict(model.named_parameters())
        self.pipeline = process_group()[1] > 1  # one process per group: the pipeline's step does the delaying
        if not self.pipeline:
            slots = [(key, named[key.split("@")[0]], K - 1 - g) for key, g in where.items()]
            self.delayed = DelayedGradients(slots)
            self.split = EMBEDDING_PART in where
            if self.split:
                model.encoder.tok.register_forward_hook(self._embedding_hook)
        sizes = [0] * K
        for key, g in where.items():
            if key != DECODER_PART:
                sizes[g] += named[key.split("@")[0]].numel()
        self.stats.update(groups=K, delays=[K - 1 - g for g in range(K)], parameters_per_group=sizes,
                          blocks_per_group=[len(blocks_of(g, K, len(model.encoder.blocks))) for g in range(K)])
        return model

    def _embedding_hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        """Collects the embedding lookup's share of the tied weight's gradient (what nn.Embedding's
        backward adds for these ids), so the decoder's share is the rest."""
        if not output.requires_grad:
            return
        ids = inputs[0].reshape(-1)

        def collect(grad: torch.Tensor) -> None:
            if self.counting:
                return
            if self.embedding_grad is None:
                self.embedding_grad = torch.zeros_like(module.weight, dtype=torch.float32)
            self.embedding_grad.index_add_(0, ids, grad.reshape(-1, grad.shape[-1]).float())

        output.register_hook(collect)

    def loss(self, out: LossInputs, ctx: StepContext) -> torch.Tensor | None:
        self.counting = ctx.counting  # the tensor hook above fires in this micro-batch's backward
        return None

    def before_update(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: StepContext) -> None:
        parts = {}
        if self.split:
            tok = model.encoder.tok.weight
            emb = self.embedding_grad if self.embedding_grad is not None else torch.zeros_like(tok)
            full = tok.grad if tok.grad is not None else torch.zeros_like(tok)
            parts = {EMBEDDING_PART: emb.to(full.dtype), DECODER_PART: full - emb.to(full.dtype)}
        served = self.delayed.apply(parts)
        self.embedding_grad = None
        self.stats["stale_steps"] = self.stats.get("stale_steps", 0) + int(served < len(self.delayed.slots))

    def state_dict(self) -> dict[str, Any]:
        return {"queues": self.delayed.state_dict() if self.delayed is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.delayed is not None:
            self.delayed.load_state_dict(state.get("queues", {}))
