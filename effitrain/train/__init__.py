"""Training: the loop, schedules, history, FLOPs, checkpoints."""
from effitrain.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from effitrain.train.flops import count_flops, flops_breakdown, measure_peak_flops
from effitrain.train.history import History, time_to_target
from effitrain.train.run import Run
from effitrain.train.schedule import lr_factor
from effitrain.train.trainer import EpochSampler, Trainer, evaluate, train

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint", "count_flops", "flops_breakdown", "measure_peak_flops",
           "History", "time_to_target", "Run", "lr_factor", "EpochSampler", "Trainer", "evaluate", "train"]
