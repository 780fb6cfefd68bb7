"""Ouroboros as a real pipeline: one process per module group, activations and gradients sent point
to point over torch.distributed (gloo on CPU, NCCL on GPUs).

    run = et.train(cfg, [et.technique("ouroboros", groups=2)], world_size=2)     # K = world_size
    effitrain train --nproc 2 --technique ouroboros:groups=2 ...                # the same, from a shell

Rank g trains group g of K (`ouroboros_groups`: the embeddings with the first blocks, the MLM head
with the last). The paper gives the arithmetic of the delayed gradients, not a timetable; this is
the schedule implemented for step t on rank g, whose gradient is d_g = K − 1 − g steps old:

1. Forward of batch t, as in one process: rank 0 embeds it, runs its blocks and sends the
   activation to rank 1; rank g receives from g − 1, runs its blocks and sends on; the last rank ends
   with the final norm, the head and the loss. Each rank runs its forward on a copy of its group's
   weights taken at this step (weight stashing, as PipeDream does: the optimizer changes the live
   weights in place while this graph waits d_g steps for its backward) and keeps the graph.
2. Backward of batch t − d_g, waiting for no backward of this step (no backward locking): the last
   rank backpropagates this step's loss; rank g < K − 1 takes the gradient of its output that rank
   g + 1 sent during step t − 1 and backpropagates it through the graph kept from step t − d_g; every
   rank but the first sends its input's gradient down to rank g − 1, which uses it in step t + 1.
   So group g's gradient is that of the batch it saw d_g steps ago at the weights of that step: the
   one-process arithmetic of `DelayedGradients`. With the same seed the curve equals the one-process
   `ouroboros` run's within float tolerance (at dropout 0: each process draws its own dropout masks).
3. The tied token embedding sits on rank 0 (the lookup) and on rank K − 1 (the decoder) as two
   equal copies: their gradient parts are summed between those two ranks and both apply the same update.
4. One all-reduce over every rank: the squared gradient norms (to clip by the global norm, as one
   process does) and the last rank's loss (so every rank skips the update of a non-finite loss and
   stops at the same step). Then each rank updates its group.

What it costs. Step 4 is a barrier, so the forward chain stays inside the step: a step takes
max_g (F_0 + … + F_g + B_g) plus the messages, not the max_g (F_g + B_g) of a pipeline without one
(which would clip each group by its own norm and learn the loss a step late); `lab.scaling.pipeline_time`
models both. Every process builds the whole model (its FLOP meter counts the whole step, as in one
process, and the evaluation needs it) but trains only its group; before an evaluation each group's
weights are broadcast from their owner, so rank 0 evaluates and returns the current model.
Checkpoints are refused: the optimizer states and kept graphs are spread over the processes.
"""
from __future__ import annotations

import collections
import copy
import math
import time
from typing import Any, Sequence

import torch
import torch.distributed as dist

from effitrain.config import Config, ConfigError
from effitrain.data import MaskedBatch
from effitrain.parallel.ddp import REFUSED_EVENTS, DistributedTrainer
from effitrain.parallel.launch import process_group
from effitrain.techniques.base import StepContext, Technique, overridden
from effitrain.techniques.ouroboros import (DECODER_PART, EMBEDDING_PART, OuroborosTechnique, group_forward,
                                            ouroboros_groups)
from effitrain.train.step import StepResult, TrainStep, loss_share, micro_batch_weights, set_lr
from effitrain.train.flops import sync

__all__ = ["PipelineStep", "PipelineTrainer", "check_pipeline", "pipelined"]

SCHEDULE = ("forward of step t down the chain on weights stashed at t; backward of step t − d_g with the "
            "gradient rank g + 1 sent in step t − 1; tied embedding summed between the first and last rank; "
            "one all-reduce (gradient norm, loss), then each rank updates its group")


def pipelined(techniques: Sequence[Technique]) -> Technique | None:
    """The Ouroboros technique that turns a multi-process run into a pipeline, if there is one."""
    return next((t for t in techniques if isinstance(t, OuroborosTechnique)), None)


def check_pipeline(techniques: Sequence[Technique], world_size: int, config: Config,
                   checkpointing: bool = False) -> None:
    """One process per group (one GPU each on CUDA), no checkpoints, and no partner that changes the
    model, the loss, the backward or the update (the pipeline's step carries none of them out):
    each refused in one line."""
    technique = pipelined(techniques)
    K = technique.params.groups
    for t in techniques:
        for event in overridden(t, REFUSED_EVENTS) if t is not technique else ():
            raise ConfigError(f"ouroboros over {world_size} processes and {t.name} cannot train together: {t.name} "
                              f"overrides {event}, which the pipeline's step does not carry out")
    if world_size != K:
        raise ConfigError(f"ouroboros with world_size={world_size} runs one process per group, so world_size must "
                          f"equal ouroboros.groups={K} (or be 1: the delayed arithmetic in one process)")
    if config.run.resolved_device().type == "cuda" and world_size > torch.cuda.device_count():
        raise ConfigError(f"ouroboros over {world_size} processes on CUDA needs {world_size} GPUs (one rank per GPU); "
                          f"this machine has {torch.cuda.device_count()}: use fewer groups or run.device 'cpu'")
    if config.run.compile:
        raise ConfigError("ouroboros over processes and run.compile cannot train together: the pipeline runs its "
                          "groups' stashed copies eagerly; train with compile off")
    if checkpointing:
        raise ConfigError("ouroboros over processes and checkpoint/resume cannot train together: the optimizer "
                          "states and kept graphs are spread over the processes; use world_size=1 to checkpoint")


class PipelineStep(TrainStep):
    """One step of the schedule above, on this rank's group (see the module docstring)."""

    def __init__(self, step: TrainStep, rank: int, world_size: int):
        super().__init__(step.model, step.optimizer, step.config, step.device, step.techniques)
        model, K = step.model, world_size
        self.g, self.K, self.delay = rank, K, K - 1 - rank
        where = ouroboros_groups(model, K)
        named = dict(model.named_parameters())
        self.owner = {key.split("@")[0]: g for key, g in where.items() if key != DECODER_PART}
        self.own = sorted({key.split("@")[0] for key, g in where.items() if g == rank}, key=list(named).index)
        self.live = [named[n] for n in self.own]
        self.tied = EMBEDDING_PART in where and rank in (0, K - 1)
        # the tied embedding's gradient parts are summed between the first and the last rank only
        # (new_group is collective: every rank makes it, in the same order)
        self.tied_group = dist.new_group([0, K - 1]) if EMBEDDING_PART in where and K > 2 else None
        self.stashes = [copy.deepcopy(model) for _ in range(self.delay + 1)]  # weights of the steps in flight
        self.stash_params = [[dict(s.named_parameters())[n] for n in self.own] for s in self.stashes]
        self.kept: collections.deque = collections.deque()  # (step, stash, [(input, output)]) awaiting backward
        self.sends: list[tuple[Any, torch.Tensor]] = []
        self.calls = 0
        self.dtype = model.encoder.tok.weight.dtype  # the residual stream's: what crosses between ranks
        self.seconds = dict.fromkeys(("forward", "backward", "waiting", "update"), 0.0)

    # -- messages ---------------------------------------------------------------------------------------
    def _send(self, tensor: torch.Tensor, dst: int) -> None:
        if tensor.dtype != self.dtype:
            raise RuntimeError(f"pipeline: rank {self.g} would send a {tensor.dtype} activation; the ranks "
                               f"exchange {self.dtype}")
        tensor = tensor.detach().contiguous()
        self.sends.append((dist.isend(tensor, dst), tensor))  # kept alive until it is received

    def _recv(self, shape: Sequence[int], src: int) -> torch.Tensor:
        buf = torch.empty(tuple(shape), dtype=self.dtype, device=self.device)
        t0 = time.perf_counter()
        dist.recv(buf, src)
        self.seconds["waiting"] += time.perf_counter() - t0
        return buf

    def _timed(self, part: str, t0: float) -> None:
        sync(self.device)
        self.seconds[part] += time.perf_counter() - t0

    # -- the step ---------------------------------------------------------------------------------------
    def __call__(self, batches: Sequence[MaskedBatch], ctx: StepContext, lr: float | None = None) -> StepResult:
        if lr is not None:
            set_lr(self.optimizer, lr)
        g, K, t = self.g, self.K, self.calls
        self.calls += 1
        self.sends = [(w, x) for w, x in self.sends if not w.is_completed()]
        slot = t % len(self.stashes)
        with torch.no_grad():
            for p, live in zip(self.stash_params[slot], self.live):
                p.copy_(live)
        k = len(batches)
        predicted = [int(b.labels.numel()) for b in batches]
        weights = micro_batch_weights(predicted)
        loss, entries = 0.0, []
        for i, batch in enumerate(batches):  # 1. forward of batch t
            x = None
            if g > 0:
                B, T = batch.input_ids.shape
                x = self._recv((B, T, self.config.model.hidden), g - 1).requires_grad_(True)
            t0 = time.perf_counter()
            with self.autocast():
                out = group_forward(self.stashes[slot], g, K, batch, x)
            if g < K - 1:
                self._timed("forward", t0)
                self._send(out, g + 1)
            else:
                w = None if weights is None else weights[i]
                loss += loss_share(float(out.detach()), w, k)
                out = loss_share(out, w, k)
                self._timed("forward", t0)
            entries.append((x, out))
        self.kept.append((t, slot, entries))
        if t >= self.delay:  # 2. backward of batch t − d_g
            _, old, kept = self.kept.popleft()
            for x, out in kept:
                grad = None if g == K - 1 else self._recv(out.shape, g + 1)
                t0 = time.perf_counter()
                out.backward(grad)
                self._timed("backward", t0)
                if g > 0:
                    self._send(x.grad, g - 1)
            for p, stashed in zip(self.live, self.stash_params[old]):
                p.grad, stashed.grad = stashed.grad, None
        t0 = time.perf_counter()
        if self.tied:  # 3. the two copies of the tied embedding get the sum of their parts
            tok = self.model.encoder.tok.weight
            tok.grad = tok.grad if tok.grad is not None else torch.zeros_like(tok)
            dist.all_reduce(tok.grad, group=self.tied_group)
        owned = [p.grad for n, p in zip(self.own, self.live) if p.grad is not None and self.owner[n] == g]
        local = float(torch.nn.utils.get_total_norm(owned)) if owned else 0.0  # the tied weight counted once
        shared = torch.tensor([local ** 2, loss if g == K - 1 else 0.0], dtype=torch.float64, device=self.device)
        dist.all_reduce(shared)  # 4. the global gradient norm and the loss
        self.seconds["waiting"] += time.perf_counter() - t0
        norm, loss = math.sqrt(float(shared[0])), float(shared[1])
        result = StepResult(loss, sum(b.num_tokens for b in batches), sum(predicted))
        t0 = time.perf_counter()
        if result.finite:
            if self.config.optim.grad_clip > 0:  # clip_grad_norm_'s arithmetic, with the norm of every group
                torch.nn.utils.clip_grads_with_norm_(self.live, self.config.optim.grad_clip,
                                                     torch.tensor(norm, dtype=torch.float32, device=self.device))
            with torch.profiler.record_function("effitrain/optimizer"):
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._timed("update", t0)
        return result

    def drain(self) -> None:
        """After the last step: take the gradient the rank above sent in it (it is no longer needed)
        and wait until every message this rank sent has been received, so no process ends mid-message."""
        if self.g < self.K - 1 and self.kept and self.kept[0][0] == self.calls - self.delay:
            for _, out in self.kept[0][2]:
                self._recv(out.shape, self.g + 1)
        self.kept.clear()
        for work, _ in self.sends:
            work.wait()
        self.sends.clear()


class PipelineTrainer(DistributedTrainer):
    """A `Trainer` for rank g of a K-process Ouroboros pipeline (the process group is initialised)."""

    def __init__(self, config: Config, techniques: Any = (), **kwargs: Any):
        techniques = list(techniques)
        check_pipeline(techniques, dist.get_world_size(), config, bool(kwargs.get("checkpoint") or kwargs.get("resume")))
        super().__init__(config, techniques, **kwargs)
        self._gathered_at = -1
        self.run.extra.update(pipeline=True, schedule=SCHEDULE)

    def _setup(self) -> None:
        super()._setup()  # no partner replaced the step (check_pipeline refuses on_step): this rank's part of it
        self.step = PipelineStep(self.step, *process_group())

    def _gather(self) -> None:
        """Every group's current weights from its owner to every rank (before evaluating, at the end)."""
        if self._gathered_at == self.pos.step:
            return
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                dist.broadcast(p.data, src=self.step.owner[name])
        self._gathered_at = self.pos.step

    def _evaluate(self, at_stop: bool = False) -> None:
        self._gather()
        super()._evaluate(at_stop)

    def _finish(self) -> None:
        if self.run.status != "failed" and self.started:
            self.step.drain()
            self._gather()
            ranks: list[Any] = [None] * self.world_size
            mine = {"rank": self.rank, "parameters": sum(p.numel() for p in self.step.live),
                    **{f"{k}_s": v for k, v in self.step.seconds.items()}}
            dist.all_gather_object(ranks, mine)
            self.run.extra["pipeline_ranks"] = ranks
            technique = pipelined(self.techniques)
            technique.stats["stale_steps"] = min(self.step.calls, self.world_size - 1)
        super()._finish()
