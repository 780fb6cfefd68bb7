"""Crossbow's synchronous model averaging (SMA): k model replicas on one device, each trained on its own
small batch by its own optimizer, pulled towards a central average model that is what gets evaluated.

    run = et.train(cfg, [et.technique("sma", replicas=4)])      # cfg.run.batch_size = b, per replica

The averaging (`sma_average`) and the replica step (`ReplicaStep`) are plain code; the hook is
`SMATechnique` (registered as ``sma``). How it uses the events:

    plan_step     k × the micro-batches, `replicas` = k: micro-batch m·k + j goes to replica j
    on_optimizer  stacks k copies of the model's parameters (`torch.func.stack_module_state`) and
                  gives them one AdamW (elementwise, so each replica's slice is exactly its own AdamW)
    on_step       the trainer's step becomes a `ReplicaStep`: `vmap(functional_call)` runs the k
                  replicas as one batched forward/backward, then the optimizer, then the averaging

Across processes (`et.train(cfg, [sma], world_size=N)`, `effitrain train --nproc N`, torchrun) each
process holds k replicas and the corrections Σ_j c_j are all-reduced, so every process keeps the same
z: N processes of k replicas train exactly as one process of N·k replicas (no DDP wrapper: the
averaging is the synchronisation).

The trainer's model stays the central model z: it is what is evaluated, checkpointed and returned.
FLOPs are counted as for every run, one replica-batch at a time on z (the same work per row).
`effitrain.lab.scaling` measures samples/s against k (`replica_throughput`, Crossbow's tuning of k:
`auto_replicas`) and holds lesson 08's comparison settings (`crossbow_settings`).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from effitrain.config import ConfigError
from effitrain.data import MaskedBatch
from effitrain.model.bert import SelfAttention, math_attention
from effitrain.parallel.launch import process_group
from effitrain.techniques.base import StepContext, StepPlan, Technique, param, register
from effitrain.train.step import StepResult, TrainStep, make_optimizer


# -- the averaging --------------------------------------------------------------------------------------
@torch.no_grad()
def sma_average(replicas: dict[str, torch.Tensor], central: dict[str, torch.Tensor],
                previous: dict[str, torch.Tensor], alpha: float, momentum: float,
                all_reduce: Callable[[torch.Tensor], None] | None = None) -> None:
    """One SMA correction, in place: c_j = α(w_j − z); w_j ← w_j − c_j; z ← z + Σ_j c_j + μ(z − z_prev).

    `replicas[name]` is (k, …) (replica j = row j), `central[name]` and `previous[name]` are z and z
    before the last correction (updated here). With replicas in several processes, `all_reduce` sums
    a tensor over them in place (one call, all corrections flattened): Σ_j runs over every replica of
    every process, so every process keeps the same z."""
    sums = {}
    for name, w in replicas.items():
        c = alpha * (w - central[name].unsqueeze(0))
        w.sub_(c)
        sums[name] = c.sum(0)
    if all_reduce is not None:
        flat = torch.cat([t.flatten() for t in sums.values()])
        all_reduce(flat)
        for (name, t), part in zip(list(sums.items()), flat.split([t.numel() for t in sums.values()])):
            sums[name] = part.view_as(t)
    for name, z in central.items():
        z_prev = previous[name]
        new = z + sums[name] + momentum * (z - z_prev)
        z_prev.copy_(z)
        z.copy_(new)


def tied_names(model: torch.nn.Module) -> dict[str, str]:
    """{alias: name} for parameters registered under more than one name (e.g. a tied decoder weight)."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    return aliases


def stack_batches(batches: Sequence[MaskedBatch]) -> tuple[torch.Tensor, ...]:
    """k micro-batches of equal shape as one batch per replica: ids (k, B, T), mask (k, B, T) or None,
    positions and labels (k, M_max) padded with position 0 and weight 0, weights (k, M_max)."""
    shapes = {tuple(b.input_ids.shape) for b in batches}
    if len(shapes) != 1:
        raise ConfigError(f"sma: the replicas' micro-batches must have one shape; got {sorted(shapes)}")
    ids = torch.stack([b.input_ids for b in batches])
    mask = None
    if any(b.attention_mask is not None for b in batches):
        mask = torch.stack([b.attention_mask if b.attention_mask is not None
                            else torch.ones_like(b.input_ids, dtype=torch.bool) for b in batches])
    M = max(int(b.labels.numel()) for b in batches)
    pos = ids.new_zeros(len(batches), M)
    labels = ids.new_zeros(len(batches), M)
    weight = torch.zeros(len(batches), M, device=ids.device)
    for j, b in enumerate(batches):
        m = int(b.labels.numel())
        pos[j, :m], labels[j, :m], weight[j, :m] = b.positions, b.labels, 1.0
    return ids, mask, pos, labels, weight


class ReplicaStep(TrainStep):
    """The step of k replicas: for each accumulation index, the k micro-batches (one per replica) run as
    one `vmap(functional_call)` forward/backward; each replica's loss is the mean over its own predicted
    tokens of the step; then per-replica clipping, the optimizer (over the stacked tensors) and
    `sma_average`. The logged loss is the mean over replicas."""

    def __init__(self, plain: TrainStep, sma: "SMATechnique"):
        super().__init__(plain.model, plain.optimizer, plain.config, plain.device, ())
        self.sma = sma
        base = copy.deepcopy(plain.model).to("meta")  # the structure only; the weights come from `sma.replicas`
        for module in base.modules():  # SDPA has no vmap batching rule (torch falls back to a loop over k);
            if isinstance(module, SelfAttention):  # the written-out attention batches: same math
                module.kernel = math_attention
        aliases = tied_names(plain.model)

        def forward(params: dict, buffers: dict, ids: torch.Tensor, pos: torch.Tensor, mask: Any) -> torch.Tensor:
            params = dict(params)
            for alias, name in aliases.items():
                params[alias] = params[name]
            return functional_call(base, (params, buffers), (ids, pos, mask))

        self.vmapped = vmap(forward, in_dims=(0, 0, 0, 0, 0), randomness="different")
        self.vmapped_no_mask = vmap(forward, in_dims=(0, 0, 0, 0, None), randomness="different")

    def accumulate(self, batches: Sequence[MaskedBatch], ctx: StepContext) -> StepResult:
        k, (rank, N) = self.sma.k, process_group()
        width = k * N  # every replica of every process; this process's are rank·k … rank·k + k − 1
        if len(batches) % width:
            raise ConfigError(f"sma: a step of {len(batches)} micro-batches does not split over {width} replicas")
        groups = [list(batches[i + rank * k:i + (rank + 1) * k]) for i in range(0, len(batches), width)]
        totals = torch.zeros(k)
        for g in groups:
            totals += torch.tensor([float(b.labels.numel()) for b in g])
        totals = totals.to(self.device)
        losses = torch.zeros(k, device=self.device)
        for g in groups:
            ids, mask, pos, labels, weight = stack_batches(g)
            with self.autocast():
                if mask is None:
                    logits = self.vmapped_no_mask(self.sma.replicas, self.sma.buffers, ids, pos, None)
                else:
                    logits = self.vmapped(self.sma.replicas, self.sma.buffers, ids, pos, mask)  # (k, M, V)
            ce = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none").view_as(weight)
            per_replica = (ce * weight).sum(1) / totals  # (k,): this group's part of each replica's mean
            per_replica.sum().backward()
            losses += per_replica.detach()
        total = losses.sum().double().cpu()
        if N > 1:
            dist.all_reduce(total)
        tokens = sum(b.num_tokens for b in batches)  # the step's global work, as DDP logs it
        return StepResult(float(total) / width, tokens, int(sum(b.labels.numel() for b in batches)))

    def update(self, result: StepResult, ctx: StepContext) -> StepResult:
        if not result.finite:
            self.optimizer.zero_grad(set_to_none=True)
            return result
        clip = self.config.optim.grad_clip
        if clip > 0:  # each replica clips its own gradient, as k separate runs would
            grads = [p.grad for p in self.sma.replicas.values() if p.grad is not None]
            norms = torch.stack([g.float().pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()  # (k,)
            scale = (clip / (norms + 1e-6)).clamp(max=1.0)
            for g in grads:
                g.mul_(scale.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))
        with torch.profiler.record_function("effitrain/optimizer"):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sma.average()
        return result


# -- the hook -------------------------------------------------------------------------------------------
# events whose owner changes the model, its loss or its gradients: with k replicas stepped by their own
# functional forward, such a technique would act on the central model only, so the pair is refused
# (after_step still runs, on the central model: curriculum's bookkeeping there composes)
SMA_REFUSED_EVENTS = ("on_model", "on_optimizer", "on_masked_batch", "loss", "backward", "before_update",
                      "eval_model", "on_step", "needs_hidden_states")


@dataclass(frozen=True)
class SMAParams:
    replicas: int = param(2, range=(1, 64), help="k, model replicas trained side by side on one device")
    pull: float = param(1.0, range=(0.0, 1.0), step=0.05,
                        help="α·k: how hard each step pulls the replicas to the central model (1: α = 1/k)")
    momentum: float = param(0.9, range=(0.0, 0.99), step=0.05, help="μ, momentum of the central model")


@register
class SMATechnique(Technique):
    """Crossbow's synchronous model averaging: k small-batch replicas and a central average model.

    **What.** k replicas of the model train side by side, each on its own batch of b rows (the
    config's batch size) with its own AdamW. After every step each replica is pulled towards a
    central model z, and z moves by the sum of the pulls plus momentum. z is what is evaluated and
    saved. On one device the replicas' parameters are stacked and run as one batched forward and
    backward (`vmap(functional_call)`), so one kernel launch serves all k.

    **Why.** A large batch uses the hardware well but needs more samples to reach the same loss
    (statistical efficiency falls as the batch grows); a small batch learns more per sample but
    leaves a GPU idle. Crossbow keeps the small batch for learning and gets the throughput back by
    training several replicas at once; averaging them stops the replicas from drifting apart.

    **Math.** For replica $j$ with weights $w_j$ after its optimizer step:
    $c_j = \\alpha (w_j - z)$, $w_j \\leftarrow w_j - c_j$, and
    $z \\leftarrow z + \\sum_j c_j + \\mu (z - z_{prev})$ with $\\alpha = \\text{pull}/k$ (k: every
    replica, in every process). With pull 1 and μ = 0, z becomes the replicas' mean each step. With
    pull 0 the replicas never meet z (and z never moves). At k = 1 and pull 1 the replica and z swap
    each step: use pull ≤ 0.5 at k = 1.

    **Across processes.** With `world_size=N` each process trains k replicas (N·k in all, α =
    pull/(N·k)) and the sum of the corrections is all-reduced: the same curve as one process with
    N·k replicas. Only one-process runs resume from a checkpoint.

    **Settings.** `replicas` k (a step has k × the micro-batches, k·b rows: compare with plain
    training at batch k·b, same samples per step); `pull` α·k in [0, 1]; `momentum` μ (Crossbow: 0.9).
    Refused with techniques that change the model, loss, gradients or step (they would act on z only);
    data techniques compose. fp16 and run.compile are refused in one line.

    **Paper.** Koliousis et al., "Crossbow: Scaling Deep Learning with Small Batch Sizes on Multi-GPU
    Servers", VLDB 2019.
    """

    name = "sma"
    Params = SMAParams
    paper = "Koliousis et al., Crossbow, VLDB 2019"
    claims = ("optimizer", "step")
    refuses_events = SMA_REFUSED_EVENTS
    syncs_processes = True  # under world_size > 1 the corrections are all-reduced (no DDP wrapper)

    def __init__(self, params: Any = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.replicas: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.central: dict[str, torch.Tensor] = {}
        self.previous: dict[str, torch.Tensor] = {}
        self.optimizer_groups: list[dict] = []

    @property
    def k(self) -> int:
        return self.params.replicas

    @property
    def processes(self) -> int:
        return process_group()[1]

    @property
    def alpha(self) -> float:
        return self.params.pull / (self.k * self.processes)

    def plan_step(self, plan: StepPlan, ctx: StepContext) -> StepPlan:
        n = self.k * self.processes  # every process draws the whole step; each trains its k replicas' part
        return replace(plan, micro_batches=plan.micro_batches * n, replicas=plan.replicas * n)

    def on_optimizer(self, model: torch.nn.Module, param_groups: list[dict],
                     ctx: StepContext) -> torch.optim.Optimizer:
        cfg = ctx.config
        if cfg.run.precision == "fp16":
            raise ConfigError("sma and run.precision 'fp16' cannot train together: the replicas' step has no "
                              "gradient scaler; use bf16 or fp32")
        if cfg.run.compile:
            raise ConfigError("sma and run.compile cannot train together: the vmapped replicas are not "
                              "compiled; set run.compile off")
        params, buffers = stack_module_state([model] * self.k)
        self.replicas, self.buffers = params, buffers
        self.central = dict(model.named_parameters())
        self.previous = {n: p.detach().clone() for n, p in self.central.items()}
        names = {id(p): n for n, p in model.named_parameters()}
        groups = [{**{k: v for k, v in g.items() if k != "params"},
                   "params": [params[names[id(p)]] for p in g["params"]]} for g in param_groups]
        self.optimizer_groups = groups
        return make_optimizer(model, cfg, ctx.device, groups)

    def on_step(self, step: TrainStep, ctx: StepContext) -> TrainStep:
        return ReplicaStep(step, self)

    def average(self) -> None:
        N = self.processes
        reduce = dist.all_reduce if N > 1 else None
        sma_average(self.replicas, self.central, self.previous, self.alpha, self.params.momentum, reduce)
        with torch.no_grad():  # how far the replicas sit from z after the pull (root mean square over weights)
            sq = sum(float((w - z.unsqueeze(0)).float().pow(2).sum()) for w, z in
                     ((self.replicas[n], self.central[n]) for n in self.replicas))
            spread = torch.tensor([sq, float(sum(w.numel() for w in self.replicas.values()))], dtype=torch.float64)
            if reduce is not None:
                reduce(spread)
            sq, count = float(spread[0]), float(spread[1])
        self.stats["replicas"] = self.k * N
        self.stats["processes"] = N
        self.stats["averaging_steps"] = self.stats.get("averaging_steps", 0) + 1
        self.stats["replica_spread"] = math.sqrt(sq / max(count, 1))

    def on_warm_start(self, model: torch.nn.Module, optimizer_state: dict[str, Any],
                      ctx: StepContext) -> dict[str, Any]:
        """Every replica and the central model start from the baseline's weights (z_prev = z: no momentum
        yet), and every replica from the baseline's AdamW moments, stacked k times."""
        with torch.no_grad():
            for n, z in self.central.items():
                self.replicas[n].copy_(z.detach().unsqueeze(0).expand_as(self.replicas[n]))
                self.previous[n].copy_(z.detach())
        stacked = [p for g in self.optimizer_groups for p in g["params"]]
        state = {}
        for index, saved in optimizer_state.get("state", {}).items():
            target = stacked[int(index)]
            state[index] = {key: value.unsqueeze(0).expand(self.k, *value.shape).clone()
                            if torch.is_tensor(value) and tuple(value.shape) == tuple(target.shape[1:]) else value
                            for key, value in saved.items()}
        return {**optimizer_state, "state": state}

    def state_dict(self) -> dict[str, Any]:
        return {"replicas": {n: t.detach().clone() for n, t in self.replicas.items()},
                "previous": {n: t.clone() for n, t in self.previous.items()}, "process": list(process_group())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved, here = tuple(state.get("process", (0, 1))), process_group()
        if saved != here:  # a checkpoint (written by rank 0) holds rank 0's replicas only
            raise ConfigError(f"sma: this state holds the replicas of rank {saved[0]} of {saved[1]} process(es), "
                              f"not of rank {here[0]} of {here[1]}: only one-process sma runs resume from a "
                              "checkpoint (the central model is in every checkpoint)")
        with torch.no_grad():
            for n, t in state.get("replicas", {}).items():
                self.replicas[n].copy_(t)
            for n, t in state.get("previous", {}).items():
                self.previous[n].copy_(t)
