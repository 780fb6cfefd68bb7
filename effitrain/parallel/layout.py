"""One run over several processes: which layout, checked, then spawned or joined under torchrun.

    et.train(cfg, techniques, world_size=N)        # → train_parallel (the run facade routes world_size > 1 here)
    torchrun --nproc-per-node N -m effitrain train # → torchrun_main

Two layouts exist. Data parallel (`effitrain.parallel.ddp`) is the default; a run with the Ouroboros
technique is a pipeline instead, one process per module group (`effitrain.parallel.pipeline`). This
module is the only one that knows both: `ddp` does not import the pipeline, and the technique does
not import either.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from effitrain.config import Config
from effitrain.parallel import ddp
from effitrain.parallel.pipeline import PipelineTrainer, check_pipeline, pipelined
from effitrain.techniques.base import Technique
from effitrain.train.run import Run


def trainer_for(techniques: Iterable[Technique]) -> type:
    """Each rank's Trainer class: the pipeline's when Ouroboros is among the techniques, else DDP's."""
    return PipelineTrainer if pipelined(list(techniques)) is not None else ddp.DistributedTrainer


def train_parallel(config: Config, techniques: Iterable[Technique] = (), *, world_size: int, **kwargs: Any) -> Run:
    """Train over `world_size` spawned processes in the layout the techniques ask for; rank 0's Run
    comes back (see `ddp.train_distributed` for the keyword arguments)."""
    techniques = list(techniques)
    if pipelined(techniques) is not None:  # one process per group, not data parallel
        check_pipeline(techniques, world_size, config, bool(kwargs.get("checkpoint") or kwargs.get("resume")))
    return ddp.train_distributed(config, techniques, world_size=world_size, trainer=trainer_for(techniques),
                                 **kwargs)


def torchrun_main(config: Config, techniques: Iterable[Technique] = (), **kwargs: Any) -> Run | None:
    """Under `torchrun`: `ddp.torchrun_main` with this layout's trainer (Run on rank 0, None elsewhere)."""
    techniques = list(techniques)
    return ddp.torchrun_main(config, techniques, trainer=trainer_for(techniques), **kwargs)


def fit_world(config: Config, world_size: int) -> tuple[Config, str]:
    """`config` where `world_size` processes fit its device; on CUDA with fewer GPUs than processes (one GPU
    per process), the same config on CPU processes (gloo) and one line saying so; "" when unchanged."""
    if config.run.resolved_device().type != "cuda" or torch.cuda.device_count() >= world_size:
        return config, ""
    return config.replace(device="cpu"), (f"{world_size} processes need {world_size} GPUs and this machine has "
                                          f"{torch.cuda.device_count()}: these runs train on CPU processes (gloo)")


__all__ = ["fit_world", "torchrun_main", "train_parallel", "trainer_for"]
