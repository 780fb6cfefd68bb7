"""Parallel training: data parallel over processes (`ddp`), Ouroboros' pipeline (`pipeline`), the
module that picks between them for one run (`layout`), and the launcher their workers share (`launch`)."""
from effitrain.parallel.launch import WorkerError, launch

__all__ = ["WorkerError", "launch"]
