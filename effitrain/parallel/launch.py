"""Start N worker processes that share a `torch.distributed` process group, and watch them.

    result = launch(worker, world_size=2, args=(...), timeout=60)      # worker(rank, world_size, *args)

Processes are started with the "spawn" method, so this works from a notebook kernel (the worker
must be importable: it lives in `effitrain.parallel`, never in a cell). They meet through a file
store in a temporary folder (no port to pick), on the gloo backend on CPU and NCCL on CUDA.

Faults. Every collective has the group's timeout. When a rank dies (killed, or an exception), the
others' next collective fails (gloo notices the closed connection at once; a rank that is alive
but stuck is caught by the timeout), and the launcher ends every rank still running within the
timeout, then raises `WorkerError` with one line naming the first rank that failed. Never a hang.

Events. Rank 0 may call `emit(kind, row)`; the launcher hands each (kind, row) to `on_event` in
the parent process as it arrives (live plots of a distributed run). Rank 0's return value comes
back through a file (torch.save), so it may hold a model.
"""
from __future__ import annotations

import datetime as _dt
import os
import queue as _queue
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["WorkerError", "launch", "emit", "init_group", "backend_for", "process_group"]

_events: Any = None  # the queue to the parent, in a worker process


class WorkerError(RuntimeError):
    """A worker process failed; the message names the rank and what happened."""


def backend_for(device: str | torch.device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def process_group() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group this process is in; (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# spawned CPU processes per core that still make sense (each gets at least one thread; a pipeline of
# four groups on two cores is a lesson's check): past it, one line instead of a thrashing machine
PROCESSES_PER_CORE = 4


def check_world_size(world_size: Any, device: "str | torch.device | None" = None) -> None:
    """A positive number of processes this machine can run: at most one per GPU on CUDA, at most
    `PROCESSES_PER_CORE` per CPU core on a CPU."""
    from effitrain.config import ConfigError

    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"world_size must be a positive integer; got {world_size!r}")
    if device is None:
        return
    if torch.device(device).type == "cuda":
        gpus = torch.cuda.device_count()
        if world_size > gpus:
            raise ConfigError(f"world_size={world_size} needs one GPU per process; this machine has {gpus}")
    else:
        cores = os.cpu_count() or 1
        if world_size > PROCESSES_PER_CORE * cores:
            raise ConfigError(f"world_size={world_size} is more than {PROCESSES_PER_CORE} processes per CPU core "
                              f"({cores} cores here); give at most {PROCESSES_PER_CORE * cores}")


def init_group(rank: int, world_size: int, store_file: str, backend: str, timeout: float) -> None:
    dist.init_process_group(backend, init_method=f"file://{store_file}", rank=rank, world_size=world_size,
                            timeout=_dt.timedelta(seconds=timeout))


def emit(kind: str, row: dict) -> None:
    """From a worker: send (kind, row) to the parent's `on_event` (no-op outside `launch`)."""
    if _events is not None:
        _events.put(("event", kind, row))


def _traceback_file(result_file: str, rank: int) -> str:
    return str(Path(result_file).with_name(f"rank{rank}.traceback"))


def _worker(rank: int, world_size: int, fn: Callable, args: tuple, store_file: str, backend: str,
            timeout: float, result_file: str, events: Any, threads: int) -> None:
    global _events
    _events = events if rank == 0 else None
    # tqdm's default write lock is a multiprocessing lock, which a rank killed by a signal never gives
    # back ("resource_tracker: … leaked semaphore objects" at exit); a rank's bars need only a thread lock
    from tqdm.std import tqdm
    tqdm.set_lock(threading.RLock())
    if threads:
        torch.set_num_threads(threads)
    try:
        init_group(rank, world_size, store_file, backend, timeout)
        result = fn(rank, world_size, *args)
        if rank == 0:
            torch.save(result, result_file + ".part")
            os.replace(result_file + ".part", result_file)  # never half-written
        events.put(("done", rank, ""))
    except BaseException as exc:  # one line for the parent; the traceback in a file it shows only for the
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""  # rank it blames (not a peer's reset)
        Path(_traceback_file(result_file, rank)).write_text(traceback.format_exc())
        events.put(("error", rank, f"{type(exc).__name__}: {line}"[:400]))
        raise SystemExit(1)
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                pass


def launch(fn: Callable, world_size: int, args: tuple = (), *, timeout: float = 60.0, device: str = "cpu",
           on_event: Callable[[str, dict], None] | None = None, stop: threading.Event | None = None,
           stop_shared: Any = None, threads: int | None = None) -> Any:
    """Run fn(rank, world_size, *args) in `world_size` spawned processes; return rank 0's result.

    stop: a parent-side event; when it is set (or on Ctrl-C) `stop_shared` (an mp Event the workers
    read) is set, so the workers end at an agreed step. threads: torch threads per worker (default:
    this machine's cores divided among the workers, at least 1).
    """
    check_world_size(world_size)
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // world_size)
    with tempfile.TemporaryDirectory(prefix="effitrain-dist-") as tmp:
        store, result_file = str(Path(tmp) / "store"), str(Path(tmp) / "result.pt")
        procs = [ctx.Process(target=_worker, args=(r, world_size, fn, args, store, backend_for(device), timeout,
                                                    result_file, events, threads), daemon=True)
                 for r in range(world_size)]
        for p in procs:
            p.start()
        failed: tuple[int, str] | None = None
        failed_at, interrupted = 0.0, False
        done: set[int] = set()
        try:
            while True:
                if stop is not None and stop.is_set() and stop_shared is not None:
                    stop_shared.set()
                try:
                    msg = events.get(timeout=0.05)
                except _queue.Empty:
                    msg = None
                except KeyboardInterrupt:
                    interrupted = True
                    if stop_shared is not None:
                        stop_shared.set()  # like the Stop button: the ranks end at the same step
                    continue
                if msg is not None:
                    tag, a, b = msg
                    if tag == "event":
                        if on_event is not None:
                            on_event(a, b)
                    elif tag == "done":
                        done.add(a)
                    elif tag == "error" and failed is None:
                        killed = [r for r, p in enumerate(procs) if p.exitcode is not None and p.exitcode < 0]
                        failed = ((killed[0], f"was killed by signal {-procs[killed[0]].exitcode}") if killed
                                  else (a, b))  # a killed rank sends nothing; its peers' errors follow it
                        failed_at = time.monotonic()
                    continue
                if failed is None:
                    for r, p in enumerate(procs):
                        if p.exitcode is not None and p.exitcode != 0 and r not in done:
                            how = (f"was killed by signal {-p.exitcode}" if p.exitcode < 0
                                   else f"exited with code {p.exitcode}")
                            failed, failed_at = (r, how), time.monotonic()
                            break
                if all(p.exitcode is not None for p in procs):
                    break
                if failed is not None and time.monotonic() - failed_at > timeout:
                    break  # the rest did not end by themselves within the timeout: ended below
        finally:
            # who died by a signal before we end the rest: a killed rank sends nothing, and its peers'
            # errors ("connection reset") may arrive before its exit code does
            signalled = [r for r, p in enumerate(procs) if p.exitcode is not None and p.exitcode < 0]
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
        if failed is not None and signalled and not failed[1].startswith("was killed"):
            failed = (signalled[0], f"was killed by signal {-procs[signalled[0]].exitcode}")
        if failed is not None:
            rank, what = failed
            if not what.startswith(("was killed", "exited")):  # its own error: where it came from
                try:
                    sys.stderr.write(Path(_traceback_file(result_file, rank)).read_text())
                except OSError:
                    pass
                what = f"failed: {what}"
            raise WorkerError(f"rank {rank} of {world_size} {what}; every other rank was ended")
        if not os.path.exists(result_file):
            raise WorkerError(f"rank 0 of {world_size} ended without a result")
        result = torch.load(result_file, weights_only=False)
        if interrupted and getattr(result, "status", None) == "stopped":  # Ctrl-C ends it as in one process
            result.status, result.message = "interrupted", result.message.replace("stopped", "interrupted", 1)
        return result
