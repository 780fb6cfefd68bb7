"""Data parallel training with `torch.nn.parallel.DistributedDataParallel`.

    run = et.train(cfg, techniques, world_size=2)          # spawned processes (also from a notebook)
    effitrain train --nproc 2 ...                          # the same from the command line
    torchrun --nproc-per-node 2 -m effitrain train ...     # one or several machines (env:// rendezvous)

Every rank draws the same global batch (same sampler, same masking generator: the data side is a
few milliseconds) and trains on its contiguous slice of rows. Its micro-batch loss is weighted by
N · (its predicted tokens / the step's predicted tokens), so DDP's mean over ranks is exactly the
mean over all predicted tokens of the global batch, as in one process; gradients are all-reduced
on the last micro-batch of a step only (`no_sync` on the others). So with the same global batch
and seed the N-process curve equals the one-process curve within float tolerance.

Rank 0 evaluates, logs, checkpoints and returns the Run. FLOPs are the global batch's (the work
of all ranks together), counted as in one process. Seconds are the slowest rank's for each step,
and the stop decision (a seconds budget, the Stop button, Ctrl-C) is all-reduced with them, so
every rank stops at the same step.

A technique that keeps the processes in step itself (`syncs_processes`: Crossbow's `sma`, whose
averaging all-reduces the replicas' corrections) trains without the DDP module: each rank takes its
replicas' micro-batches of the global step, and N processes of k replicas equal one of N·k.

`ouroboros` with world_size = its groups is not data parallel: it trains as a pipeline, one process
per group (`effitrain.parallel.pipeline`); `effitrain.parallel.train` picks the trainer (this module
knows nothing of the pipeline).

What composes: techniques that act on the data (pruning, curriculum, sequence-length warmup,
selective backprop's scoring) train under DDP unchanged, since every rank sees the same global
batch. Techniques that change the model, the loss, the backward, the gradients or the optimizer
are refused with one line: DDP's gradient hooks have not been checked with them here.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist

from effitrain.config import Config, ConfigError
from effitrain.data import MaskedBatch
from effitrain.parallel.launch import backend_for, check_world_size, emit, launch
from effitrain.techniques.base import StepContext, Technique, overridden
from effitrain.train.run import Run
from effitrain.train.step import StepResult, TrainStep, loss_share
from effitrain.train.trainer import Trainer

__all__ = ["DistributedTrainer", "train_distributed", "rank_slice", "REFUSED_EVENTS"]

# the events whose techniques do not train under DDP here (each one changes what DDP synchronises)
REFUSED_EVENTS = ("on_model", "on_optimizer", "loss", "backward", "before_update", "after_step", "eval_model",
                  "on_step")


def check_split(rows: int, world_size: int) -> None:
    if rows % world_size:
        raise ConfigError(f"run.batch_size={rows} rows do not split over world_size={world_size} processes; "
                          f"give a multiple of {world_size}")


def rank_slice(batch: MaskedBatch, rank: int, world_size: int) -> MaskedBatch:
    """Rows [rank·B/N, (rank+1)·B/N) of a masked batch, its predicted positions renumbered."""
    B, T = batch.input_ids.shape
    check_split(B, world_size)
    per = B // world_size
    lo, hi = rank * per, (rank + 1) * per
    keep = (batch.positions >= lo * T) & (batch.positions < hi * T)
    mask = None if batch.attention_mask is None else batch.attention_mask[lo:hi]
    return MaskedBatch(batch.input_ids[lo:hi], mask, batch.positions[keep] - lo * T, batch.labels[keep])


def own_sync(techniques: Sequence[Technique]) -> list[Technique]:
    """The techniques that keep the processes in step themselves (`syncs_processes`, e.g. sma)."""
    return [t for t in techniques if t.syncs_processes]


def check_techniques(techniques: Sequence[Technique], world_size: int) -> None:
    for t in techniques:
        if t.syncs_processes:  # its own collectives replace DDP's; its partners are its own refusals
            continue
        for event in overridden(t, REFUSED_EVENTS):
            raise ConfigError(f"ddp (world_size={world_size}) and {t.name} cannot train together: {t.name} "
                              f"overrides {event}, which DDP's gradient synchronisation is not built for here")


class DistributedStep(TrainStep):
    """`TrainStep` on this rank's slice of each global micro-batch, through the DDP module."""

    def __init__(self, *args: Any, rank: int, world_size: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rank, self.world_size = rank, world_size

    def accumulate(self, batches: Sequence[MaskedBatch], ctx: StepContext) -> StepResult:
        N, k = self.world_size, len(batches)
        total_predicted = sum(int(b.labels.numel()) for b in batches)
        parts = [0.0]
        names: list[str] = []
        for i, batch in enumerate(batches):
            mine = rank_slice(batch, self.rank, N)
            share = int(mine.labels.numel()) / total_predicted  # of the step's predicted tokens
            sync = self.step_model.no_sync() if i < k - 1 else contextlib.nullcontext()
            with sync:
                out = self.loss_inputs(mine, ctx)
                self.backward(loss_share(out.loss, N * share, k), ctx)
            parts[0] += float(out.loss.detach()) * share
            for name, value in out.terms.items():
                if name not in names:
                    names.append(name)
                    parts.append(0.0)
                parts[1 + names.index(name)] += float(value) * share
        summed = torch.tensor(parts, dtype=torch.float64)
        dist.all_reduce(summed)  # the global token-weighted means
        tokens = sum(b.num_tokens for b in batches)
        terms = {name: float(summed[1 + j]) for j, name in enumerate(names)}
        return StepResult(float(summed[0]), tokens, total_predicted, terms)


class DistributedTrainer(Trainer):
    """A `Trainer` for one rank of a process group (already initialised)."""

    def __init__(self, config: Config, techniques: Iterable[Technique] = (), *, shared_stop: Any = None,
                 **kwargs: Any):
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if self.rank != 0:
            kwargs.update(callbacks=(), progress=False, checkpoint=None)
        super().__init__(config, techniques, **kwargs)
        check_techniques(self.techniques, self.world_size)
        self.shared_stop = shared_stop
        self.run.extra.update(world_size=self.world_size, backend=dist.get_backend())

    def _setup(self) -> None:
        super()._setup()  # a technique with its own step (claim "step") has already replaced self.step
        syncing = own_sync(self.techniques)
        if syncing:  # its collectives keep the ranks in step: no DDP module, each rank trains its part
            self.run.extra.update(synchronised_by=syncing[0].name)
            return
        if self.config.run.compile:
            raise ConfigError("run.compile and ddp cannot train together here: compile the model per rank "
                              "under torchrun instead")
        ddp = torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[torch.cuda.current_device()] if self.device.type == "cuda" else None)
        self.count_step = TrainStep(self.model, self.optimizer, self.config, self.device, self.techniques)
        self.step = DistributedStep(self.model, self.optimizer, self.config, self.device, self.techniques,
                                    step_model=ddp, rank=self.rank, world_size=self.world_size)

    def _agree(self, seconds: float) -> float:
        asked = self.stop.is_set() or (self.shared_stop is not None and self.shared_stop.is_set())
        both = torch.tensor([seconds, float(asked)], dtype=torch.float64)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        if both[1] > 0:
            self.stop.set()
        return float(both[0])

    def _evaluate(self, at_stop: bool = False) -> None:
        if self.rank == 0:
            return super()._evaluate(at_stop)
        self._count_evals(self._fraction())

    def _save(self) -> None:
        if self.rank == 0:
            super()._save()


def _rank_main(rank: int, world_size: int, trainer: type, config: Config, techniques: list, kwargs: dict,
               shared_stop: Any) -> Any:
    if config.run.resolved_device().type == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    callbacks = [lambda kind, row, run: emit(kind, {"row": row, "extra": dict(run.extra)})] if rank == 0 else []
    run = trainer(config, techniques, shared_stop=shared_stop, callbacks=callbacks, **kwargs).fit()
    if rank != 0:
        return None
    run.model = run.model.cpu() if run.model is not None else None
    return run


def train_distributed(config: Config, techniques: Iterable[Technique] = (), *, world_size: int,
                      trainer: type | None = None, timeout: float = 60.0, callbacks: Iterable = (),
                      stop: threading.Event | None = None, **kwargs: Any) -> Run:
    """Train over `world_size` spawned processes (see the module docstring); rank 0's Run comes back.

    trainer: each rank's Trainer class (default `DistributedTrainer`; `effitrain.parallel.train` picks
    the pipeline's for Ouroboros). timeout: seconds any collective may wait (a rank that dies ends the
    others within it). callbacks see the rows as they arrive, with a Run in this process that mirrors
    rank 0's history.
    """
    check_world_size(world_size, config.run.resolved_device())
    techniques = list(techniques)
    check_techniques(techniques, world_size)
    if not own_sync(techniques):
        check_split(config.run.batch_size, world_size)
    data = kwargs.pop("data", None)  # the ranks load the same prepared data from the cache
    if data is not None and getattr(data, "config", None) != config.data:
        raise ConfigError("data= was prepared for another data config than config.data; with world_size > 1 "
                          "each rank prepares config.data from the cache, so give data of that config or none")
    from effitrain.data import prepare_data

    prepare_data(config.data)  # fills the cache once, so the ranks only read it
    callbacks = list(callbacks)
    mirror = Run(config=config, techniques=[t.describe() for t in techniques], name=kwargs.get("name", ""),
                 status="running")

    def on_event(kind: str, payload: dict) -> None:
        mirror.extra.update(payload["extra"])
        row = payload["row"]
        if kind == "step":
            mirror.history.steps.append(row)
        elif kind == "eval":
            mirror.history.evals.append(row)
        for cb in callbacks:
            cb(kind, row, mirror)

    import torch.multiprocessing as mp

    shared_stop = mp.get_context("spawn").Event()
    device = str(config.run.resolved_device())
    return launch(_rank_main, world_size, (trainer or DistributedTrainer, config, techniques, kwargs, shared_stop),
                  timeout=timeout,
                  device=device, on_event=on_event, stop=stop, stop_shared=shared_stop,
                  threads=config.run.threads or None)


def torchrun_main(config: Config, techniques: Iterable[Technique] = (), timeout: float = 60.0,
                  trainer: type | None = None, **kwargs: Any) -> Run | None:
    """Under `torchrun` (RANK, WORLD_SIZE, MASTER_ADDR in the environment): join the group by env://,
    train with `trainer` (default `DistributedTrainer`), and return the Run on rank 0 (None elsewhere)."""
    import datetime as _dt

    device = config.run.resolved_device()
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend_for(device), timeout=_dt.timedelta(seconds=timeout))
    try:
        techniques = list(techniques)
        run = (trainer or DistributedTrainer)(config, techniques, **kwargs).fit()
        return run if dist.get_rank() == 0 else None
    finally:
        dist.destroy_process_group()
