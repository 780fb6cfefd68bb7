"""Parallel training: data parallel over processes (`ddp`), and the launcher its workers share (`launch`)."""
from effitrain.parallel.launch import WorkerError, launch

__all__ = ["WorkerError", "launch"]
