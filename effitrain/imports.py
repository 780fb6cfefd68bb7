"""Optional libraries imported without their import-time chatter.

torchao logs a warning for each optional compiled extension it cannot load (kernels for other GPUs and
torch builds, which its low-bit optimizers do not use), and registering its enums with torch's pytree
logs a deprecation notice; `peft` imports `transformers`, which imports torchao where it is installed.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from types import ModuleType

QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_import(name: str, needed_for: str, install: str) -> ModuleType:
    """`importlib.import_module(name)` with the loggers above at ERROR level meanwhile; a missing library
    is an ImportError of one line naming what needs it and how to install it."""
    loggers = [logging.getLogger(n) for n in QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"{needed_for} needs {name.split('.')[0]} ({install}): {exc}") from None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    # torch notes once per process that torchao's optimizer-state classes lack a hash for its compile cache
    warnings.filterwarnings("ignore", message=".*does not implement _stable_hash_for_caching.*")
    return module
