"""The run cache's keys and storage: what decides a run's curve, and its entries on disk.

The facade that trains through it (`cached_train`, `train`, `train_now`) is `effitrain.train.runcache`,
which sits above the trainer; this module sits below it (the trainer's warm start keys and keeps its
state files here), so the two never import each other in a circle.

The run cache: training the same thing again loads it from disk instead.

    run = cached_train(cfg, [et.technique("prune", keep_fraction=0.5)], data=data)  # trains, stores
    run = cached_train(cfg, [et.technique("prune", keep_fraction=0.5)], data=data)  # loads it
    run.extra["cache"]    # {"loaded": True, "machine": {"host", "device"}, "path", "stored", ...}
    cached_train(cfg, force=True)                                  # train again; the new run replaces it

**The key** (`run_key`) is everything that decides a run's curve: the config (`Config.to_dict()`)
without `run.name` and `profile` (labels, not settings) and with `run.device` resolved to the
device type it trains on ("auto" → "cpu" or "cuda"); every technique's `describe()` (name and
params), its class and the source of its module (of the class alone for one defined in a
notebook); the data fingerprint (`PretrainData.key`, its `DataConfig` and vocabulary size); the
effitrain version and a hash of the package's source (a code change never serves an old curve)
and the torch version. `run.evals` and `run.log_every` are in it: they change the history's rows.
The seed is `run.seed`. Not in it: the machine. A time budget ("60s") trains a different number
of steps on a faster machine, so a cached run keeps the seconds it measured and says where
(`run.extra["cache"]["machine"]`); `effitrain.lab.compare` flags seconds measured on another host.

**What is stored**: only runs that complete, trained without `checkpoint=` / `resume=` and by
techniques that leave the model alone: a loaded run gets its model back as
`BertForMLM(config.model, vocab_size)` with the stored weights, which a technique overriding
`on_model` (surgery) or `eval_model` would not reproduce, so such runs always train. A loaded run has the
history it was stored with (the same rows, in order), the caller's config and name, its model in
train mode on the config's device, and callbacks receive its rows again as "step" / "eval" events
and a final "end" (`replay`), so live plots and panels draw it like a run that trains.

**On disk**: `cache_dir("runs")/<techniques>-s<seed>-<digest>/` holds `run.json` (`Run.save`;
`Run.load` and `effitrain.lab.load_runs` read it), `model.pt` (the state dict) and `entry.json`
(the full key, the machine, an id shared by the three files). An entry is written in a temporary
folder beside it and renamed into place in one step, so a reader never sees half an entry and two
processes storing the same run leave one whole entry. An entry that cannot be read, or whose key
is not this run's, is ignored with a one-line `RunCacheWarning`, trained again and replaced.
Least recently used entries are deleted when the cache grows past `EFFITRAIN_RUN_CACHE_GB`
(default 5). `EFFITRAIN_RUN_CACHE=0` turns the cache off (nothing read, nothing written).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import inspect
import json
import os
import re
import secrets
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from effitrain.config import Config, ConfigError
from effitrain.data.cache import cache_dir
from effitrain.data.cache import first_line as _first_line
from effitrain.train.machine import this_machine
from effitrain.train.run import Run
from effitrain.version import __version__

FORMAT = "effitrain-run-cache-v1"
ENV_SWITCH = "EFFITRAIN_RUN_CACHE"
ENV_SIZE = "EFFITRAIN_RUN_CACHE_GB"
DEFAULT_GB = 5.0
_PACKAGE = Path(__file__).resolve().parent.parent  # effitrain/
# package code that cannot change a pre-training curve: the notebook UI, the command line, the step
# benchmark, the statistics of comparisons, and downstream evaluation (fine-tuning, probes), which
# no training path imports
_CODE_EXCLUDED = ("lab/", "cli.py", "bench.py", "stats.py", "train/finetune.py", "train/sparse_update.py")
# technique events that make the trained (or evaluated) model something `BertForMLM` + weights is not
MODEL_EVENTS = ("on_model", "eval_model")


class RunCacheWarning(UserWarning):
    """A cache entry was ignored (unreadable, or written for another key); the run trains again."""


# -- on or off, where ---------------------------------------------------------------------------
def enabled() -> bool:
    """False when EFFITRAIN_RUN_CACHE is 0 / false / no / off."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_root() -> Path:
    return cache_dir("runs")


def size_limit() -> float:
    """The cache's size bound in bytes: EFFITRAIN_RUN_CACHE_GB (default 5). Anything but a positive
    number is refused in one line (a negative bound would let the trim delete every cached run)."""
    raw = os.environ.get(ENV_SIZE, "").strip()
    if not raw:
        return DEFAULT_GB * 2**30
    try:
        gb = float(raw)
    except ValueError:
        gb = float("nan")
    if not (gb > 0 and gb != float("inf")):
        raise ConfigError(f"{ENV_SIZE} must be a positive number of GiB (e.g. 5); got {raw!r} "
                          f"(to turn the run cache off, set {ENV_SWITCH}=0)")
    return gb * 2**30


# -- the key ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the package's source files that can change a curve (all but `_CODE_EXCLUDED`)."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        rel = path.relative_to(_PACKAGE).as_posix()
        if rel.startswith(_CODE_EXCLUDED):
            continue
        h.update(rel.encode() + b"\x00" + path.read_bytes() + b"\x00")
    return h.hexdigest()[:16]


def _source_hash(cls: type) -> str | None:
    """The hash of the source that defines a technique outside effitrain (its module; else its class)."""
    module = inspect.getmodule(cls)
    if module is not None and module.__name__.split(".")[0] == "effitrain":
        return None  # in `code_fingerprint`
    try:
        if module is not None and module.__name__ != "__main__" and getattr(module, "__file__", None):
            text = inspect.getsource(module)
        else:
            text = inspect.getsource(cls)
    except (OSError, TypeError):
        return None  # no source to read (a class built at run time): its name and params still count
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _technique_key(t: Any) -> dict[str, Any]:
    cls = type(t)
    return {**t.describe(), "class": f"{cls.__module__}.{cls.__qualname__}", "source": _source_hash(cls)}


def _normal(value: Any) -> Any:
    """JSON's view of a value (tuples → lists, keys → strings), so a stored key compares equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


@dataclass(frozen=True)
class RunKey:
    """What decides a run's curve (`material`, JSON), its digest and the folder it is stored in."""

    material: dict[str, Any]

    @functools.cached_property
    def digest(self) -> str:
        text = json.dumps(self.material, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def folder(self) -> str:
        names = "+".join(t["name"] for t in self.material["techniques"]) or "baseline"
        slug = re.sub(r"[^A-Za-z0-9_+.-]+", "_", names)[:60]
        return f"{slug}-s{self.material['config']['run']['seed']}-{self.digest[:24]}"


def run_key(config: Config, techniques: Sequence[Any], data: Any) -> RunKey:
    """The key of training `config` with `techniques` on `data` (a `PretrainData`); see the module docstring."""
    cfg = config.to_dict()
    cfg.pop("profile", None)
    cfg["run"] = {k: v for k, v in cfg["run"].items() if k not in ("name", "memory_budget")}  # no effect on the curve
    cfg["run"]["device"] = config.run.resolved_device().type
    return RunKey(_normal({
        "format": FORMAT,
        "config": cfg,
        "techniques": [_technique_key(t) for t in techniques],
        "data": {"key": data.key, "config": dataclasses.asdict(data.config), "vocab_size": int(data.vocab_size)},
        "effitrain": __version__,
        "code": code_fingerprint(),
        "torch": torch.__version__,
    }))


def why_not_cached(techniques: Sequence[Any], train_kwargs: dict[str, Any]) -> str | None:
    """Why a run of these techniques / trainer arguments is never cached (None: it can be)."""
    from effitrain.techniques.base import Technique, overridden

    if not enabled():
        return f"{ENV_SWITCH}=0"
    if train_kwargs.get("checkpoint") or train_kwargs.get("resume"):
        return "it writes or resumes a checkpoint"
    for t in techniques:
        if not isinstance(t, Technique):
            return "a technique is not a Technique"
        # on_model of a technique that keeps the weights changes how the model runs, not what it holds
        events = [e for e in MODEL_EVENTS if not (e == "on_model" and t.keeps_weights)]
        changed = overridden(t, events)
        if changed:
            return f"technique {t.name!r} changes the model ({changed[0]}), which the cache cannot rebuild"
    return None


# -- reading ------------------------------------------------------------------------------------
class _Changed(Exception):
    """The entry was replaced while it was being read: read it again."""



def _read_entry(folder: Path) -> dict[str, Any]:
    entry = json.loads((folder / "entry.json").read_text())
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} entry")
    return entry


def _read(folder: Path, key: RunKey, config: Config, name: str) -> Run:
    entry = _read_entry(folder)
    if entry.get("digest") != key.digest or _normal(entry.get("key")) != key.material:
        raise ValueError("it was written for another key")
    run = Run.load(folder / "run.json")
    info = dict(run.extra.get("cache") or {})
    if info.get("id") != entry.get("id"):
        raise _Changed
    if run.status != "completed":
        raise ValueError(f"its run has status {run.status!r}")
    device = config.run.resolved_device()
    state = torch.load(folder / "model.pt", map_location=device, weights_only=True, mmap=True)
    if not isinstance(state, dict) or state.get("id") != entry.get("id"):
        raise _Changed
    from effitrain.model import BertForMLM

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # init draws leave no trace
        model = BertForMLM(config.model, key.material["data"]["vocab_size"])
    model.load_state_dict(state["state_dict"])
    run.model = model.to(device).train()
    run.config = config
    run.name = name or config.run.name
    run.extra["cache"] = {**info, "loaded": True, "path": str(folder)}
    return run


def lookup(key: RunKey, config: Config, *, name: str = "", root: Path | None = None) -> tuple[Run | None, str | None]:
    """(the stored run, None), (None, None) when there is none, or (None, why) for a bad entry (warned)."""
    folder = (root or cache_root()) / key.folder
    problem = "it kept changing while being read"
    for _ in range(5):
        if not folder.is_dir():
            return None, None
        try:
            run = _read(folder, key, config, name)
        except _Changed:  # replaced while being read (a concurrent `store(replace=True)`): read it again
            continue
        except FileNotFoundError as exc:  # the same, or a file is missing for good
            problem = f"it is incomplete ({_first_line(exc)})"
            continue
        except Exception as exc:  # anything unreadable: never crash, train again
            problem = _first_line(exc)
            break
        try:
            os.utime(folder)  # recently used: kept longest when the cache is trimmed
        except OSError:
            pass
        return run, None
    warnings.warn(f"run cache: ignoring {folder} ({problem}); training again", RunCacheWarning, stacklevel=3)
    return None, problem


# -- writing ------------------------------------------------------------------------------------
def _entry_ok(folder: Path, key: RunKey) -> bool:
    try:
        entry = _read_entry(folder)
    except Exception:
        return False
    return entry.get("digest") == key.digest and all((folder / f).is_file() for f in ("run.json", "model.pt"))


def store(run: Run, key: RunKey, *, replace: bool = False, root: Path | None = None) -> Path | None:
    """Store a completed run under `key` (atomically); returns its folder, or None when not stored.

    An entry already there is kept when it looks whole (a concurrent writer's), unless `replace`.
    Sets `run.extra["cache"]` (machine, time, id, path; loaded False).
    """
    from effitrain.model import BertForMLM

    model = getattr(run.model, "_orig_mod", run.model)  # the eager module of a compiled one
    if run.status != "completed" or type(model) is not BertForMLM:
        return None  # only a completed run whose model the cache can build again
    root = root or cache_root()
    final = root / key.folder
    entry_id = uuid.uuid4().hex
    machine = this_machine(run.device)
    stored = _dt.datetime.now().isoformat(timespec="seconds")
    run.extra["cache"] = {"loaded": False, "machine": machine, "stored": stored, "id": entry_id,
                          "key": key.digest[:24], "path": str(final)}
    root.mkdir(parents=True, exist_ok=True)
    while True:  # a fresh folder of our own; mode 0o777 less the umask, like the rest of the cache
        tmp = root / f".{final.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.mkdir(tmp, 0o777)
            break
        except FileExistsError:
            continue
    try:
        run.save(tmp / "run.json")
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"format": FORMAT, "id": entry_id, "state_dict": state}, tmp / "model.pt")
        (tmp / "entry.json").write_text(json.dumps(
            {"format": FORMAT, "id": entry_id, "digest": key.digest, "machine": machine, "stored": stored,
             "key": key.material}, indent=1, default=str))
        try:
            os.rename(tmp, final)
        except OSError:  # an entry is there already
            if not replace and _entry_ok(final, key):
                return final  # a concurrent writer's, whole: it stands
            old = root / f".{final.name}.{entry_id}.old"
            try:
                os.rename(final, old)
            except FileNotFoundError:
                pass
            try:
                os.rename(tmp, final)
            except OSError:
                pass  # another writer got in between: its entry stands
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    trim(root)
    return final


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def trim(root: Path | None = None, max_bytes: float | None = None) -> list[Path]:
    """Delete least recently used entries until the cache fits `max_bytes` (EFFITRAIN_RUN_CACHE_GB),
    and leftovers of writers that died (hidden folders over an hour old). Returns what was deleted."""
    root = root or cache_root()
    if max_bytes is None:
        max_bytes = size_limit()
    deleted, entries, now = [], [], time.time()
    for folder in root.iterdir():
        try:
            if not folder.is_dir():
                continue
            if folder.name.startswith("."):
                if now - folder.stat().st_mtime > 3600:
                    shutil.rmtree(folder, ignore_errors=True)
                    deleted.append(folder)
                continue
            entries.append((folder.stat().st_mtime, _size(folder), folder))
        except OSError:
            continue  # deleted or replaced meanwhile
    total = sum(size for _, size, _ in entries)
    for _, size, folder in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        shutil.rmtree(folder, ignore_errors=True)
        deleted.append(folder)
        total -= size
    return deleted


# -- replaying and training ---------------------------------------------------------------------
def replay(run: Run, callbacks: Iterable[Callable[[str, dict, Run], None]]) -> Run:
    """Send a finished run's rows to trainer callbacks, in the trainer's order, as its history regrows.

    Evaluation rows come after the step row of the same step (the first evaluation, at step 0,
    comes first), then "end" with `run.summary()`. The history ends with the same rows as before.
    """
    callbacks = list(callbacks)
    if not callbacks:
        return run
    rows = sorted([(r.get("step", 0), 0, i, "step", r) for i, r in enumerate(run.history.steps)]
                  + [(r.get("step", 0), 1, i, "eval", r) for i, r in enumerate(run.history.evals)],
                  key=lambda e: e[:3])
    full, status = run.history, run.status
    run.history, run.status = type(full)(), "running"
    try:
        for _, _, _, kind, row in rows:
            logged = run.history.log_step(**row) if kind == "step" else run.history.log_eval(**row)
            for cb in callbacks:
                cb(kind, logged, run)
    except BaseException:
        run.history = full  # a callback raised: the run keeps its whole history
        raise
    finally:
        run.status = status
    summary = run.summary()
    for cb in callbacks:
        cb("end", summary, run)
    return run
