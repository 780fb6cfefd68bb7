"""Where a run's seconds were measured: this host, and the machine a (cached or loaded) run records.

The trainer stamps every run with `this_machine`; the run cache keeps it with each entry; `compare`
flags seconds measured on another host (`measured_elsewhere`), since seconds from two machines do not
compare.
"""
from __future__ import annotations

import socket

from effitrain.train.run import Run


def host() -> str:
    return socket.gethostname()


def this_machine(device: str) -> dict[str, str]:
    """{"host": this host's name, "device": `device`} (a run's `device`, e.g. "NVIDIA H200", "cpu (8 threads)")."""
    return {"host": host(), "device": device}


def measured_on(run: Run) -> dict[str, str] | None:
    """{"host", "device"} where the run's seconds were measured, when known (cached runs record it)."""
    machine = (run.extra.get("cache") or {}).get("machine") or run.extra.get("machine")
    return dict(machine) if isinstance(machine, dict) else None


def measured_elsewhere(run: Run) -> bool:
    """True when the run's seconds are known to come from another host than this one."""
    machine = measured_on(run)
    return machine is not None and bool(machine.get("host")) and machine["host"] != host()


__all__ = ["host", "measured_elsewhere", "measured_on", "this_machine"]
