"""The speedrun (lesson 10): reach a track's target val loss as fast as you can on your own machine;
a new record must beat the last one at p < 0.01.

    cfg = track("cpu").baseline().replace(**{"optim.lr": 5e-3})
    attempt = speedrun(cfg, [], track="cpu", runs=5, name="higher lr")   # baseline, record, candidate, interleaved
    attempt.verdict()            # "record at p = 0.003 (…)" or "not yet: p = 0.04, need ≈ 9 runs …"
    attempt.write(notes="…")     # records/cpu/01-higher-lr/ when a record, else records/cpu/candidates/…
    leaderboard("cpu")           # the records as a table (from their files: no training)
    verify_record(records("cpu")[-1])    # recompute a record's numbers from its stored histories
    check_record(records("cpu")[-1])     # train it again here, against the baseline (explicit and long)

The rules, and why:
- A **track** fixes the data (corpus, tokenizer, sequence length, validation set), the target (`gap`
  nats below the unigram line: deep past the plateau) and the baseline config. Anything else may
  change: any config field, a recipe, any techniques. The validation set is always the track's (a
  candidate that trains with another masking rate is still judged on the track's masks), the runs
  start from scratch (no warm start), and the device and thread count stay the baseline's.
- The **score** of a run is its training seconds to the target (evaluation excluded, torch.compile's
  compiling included; interpolated between evaluations), and each run stops at the first evaluation
  that reaches the target. Seconds are a fact about one machine and one moment, so a candidate is
  always measured against the track baseline **in the same sitting**: for each seed the baseline, the
  current record and the candidate train back to back, the order rotating from seed to seed, and the
  run's speed-up is the baseline's seconds ÷ the candidate's for that seed. FLOPs to target (hardware-independent) are reported beside.
- A **record** must beat the current record at p < 0.01 in a one-sided t-test on log seconds
  (`effitrain.stats.record_test`). The current record trains again in the sitting, as a third arm
  beside the baseline and the candidate, and the test is paired by seed: the ratios record seconds ÷
  candidate seconds against 1× (the first record: the speed-ups over the baseline against 1×).
  Records 1 and 2 of the cpu track were set under the first version of this rule, a Welch test
  against the record's stored speed-ups; it could not decide a 1.1× step, because the record's own
  spread and the machine's drift between sittings stay in it (see lesson 10). p < 0.01 rather than 0.05 because many
  candidates are tried and only the winners are kept: at 0.05, one candidate in twenty that changes
  nothing would become a record. Records live in the repository as folders of plain files
  (`records/<track>/<NN>-<name>/`: `record.json` with the config, techniques, machine, date and
  statistics, `notes.md`, and every run's history without weights under `runs/`).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from effitrain.config import Config, ConfigError, profile_config
from effitrain.data.cache import checkout_folder
from effitrain.lab.panel import Panel
from effitrain.lab.plot import LivePlot
from effitrain.stats import RECORD_ALPHA, Ratio, RecordTest, record_test
from effitrain.techniques.base import REGISTRY, Technique, get as get_technique
from effitrain.train.history import time_to_target
from effitrain.train.machine import host
from effitrain.train.run import Run, finite_or_none, load_run_file, read_json, save_run_file

RECORD_FORMAT = "effitrain-record-1"
# the fields that define the validation set and the machine: a candidate may not change them
FIXED_FIELDS = ("data.corpus", "data.vocab_size", "data.seq_len", "data.val_fraction", "data.max_val_blocks",
                "data.min_words", "data.pack", "run.device", "run.threads", "run.warm_start", "run.warm_base")


class RecordError(ValueError):
    """A record folder that is missing, malformed, or disagrees with its own histories."""


@dataclass(frozen=True)
class Track:
    """A speedrun track: a profile's data, a baseline config and a target `gap` nats below the unigram
    line. runs: the runs per sitting a record attempt starts with. note: what the track is for."""

    name: str
    profile: str
    budget: str
    evals: int
    gap: float
    runs: int = 5
    note: str = ""

    def baseline(self) -> Config:
        """The baseline config: the profile with the track's budget and evaluations."""
        return profile_config(self.profile, budget=self.budget, evals=self.evals)

    def target(self, data: Any) -> float:
        """The target val loss: `gap` nats below the unigram line of the track's data."""
        return float(data.unigram_val_loss()) - self.gap

    def check(self, config: Config) -> None:
        """Refuse, in one line naming the field, a candidate config that changes what the track fixes."""
        base = _flat(self.baseline())
        cand = _flat(config)
        for name in FIXED_FIELDS:
            if cand[name] != base[name]:
                raise ConfigError(f"speedrun track {self.name!r} fixes {name} = {base[name]!r} (the validation set "
                                  f"and the machine stay the baseline's); the candidate has {cand[name]!r}")


TRACKS: dict[str, Track] = {
    # CI and tests: the machinery at a size that trains in seconds; its target is above the unigram line
    "smoke": Track("smoke", "smoke", budget="60steps", evals=6, gap=-1.0, runs=2,
                   note="tests only: its target is on the plateau, so it decides nothing about training"),
    # a 2-core laptop: every baseline seed reaches 2 nats below the unigram line within ~900 of 2,000 steps
    "gpu-smoke": Track("gpu-smoke", "gpu-smoke", budget="60steps", evals=6, gap=-1.0, runs=2,
                       note="tests of the CUDA paths only: its target is on the plateau"),
    "cpu": Track("cpu", "cpu", budget="2000steps", evals=80, gap=2.0, runs=5),
    "gpu": Track("gpu", "gpu", budget="4000steps", evals=80, gap=2.5, runs=5),
}


def track(name: str) -> Track:
    if name not in TRACKS:
        raise ConfigError(f"unknown speedrun track {name!r}; tracks: {', '.join(TRACKS)}")
    return TRACKS[name]


def _flat(config: Config) -> dict[str, Any]:
    d = config.to_dict()
    out = {"budget": d["budget"]}
    for section, values in d.items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": v for k, v in values.items()})
    return out


def changes(config: Config, base: Config) -> dict[str, Any]:
    """The config fields where `config` differs from `base`, as {"section.field": value}."""
    a, b = _flat(config), _flat(base)
    return {k: a[k] for k in a if a[k] != b.get(k)}


# -- one sitting ------------------------------------------------------------------------------------
def score(run: Run, target: float) -> dict[str, float] | None:
    """{"seconds", "flops", "step"} to the target (seconds: training plus compiling), or None if missed."""
    hit = time_to_target(run.history, val_loss=target)
    if hit is None:
        return None
    return {"seconds": hit["seconds"] + float(run.extra.get("compile_seconds", 0.0) or 0.0),
            "flops": hit["flops"], "step": hit["step"]}


def judged_data(track_data: Any, config: Config) -> Any:
    """The data a candidate trains on, with the track's validation set (masked at the track's rate)."""
    from effitrain.data import prepare_data

    data = prepare_data(config.data)
    return data if data is track_data else dataclasses.replace(data, val=track_data.val)


def race(config: Config, techniques: Iterable[Technique], data: Any, target: float, *, name: str,
         callbacks: Iterable[Callable] = (), progress: bool = False, stop: threading.Event | None = None) -> Run:
    """Train one run now (never from the run cache: its seconds must be this sitting's) and stop it at
    the first evaluation that reaches `target` (or after the step at which `stop` is set)."""
    from effitrain.train.runcache import cached_train

    halt, outside = threading.Event(), stop or threading.Event()

    def at_target(kind: str, row: dict, run: Run) -> None:
        if (kind == "eval" and float(row.get("val_loss", math.inf)) <= target) or outside.is_set():
            halt.set()

    fresh = [type(t)(t.params) for t in techniques]
    run = cached_train(config, fresh, cache=False, data=data, stop=halt, name=name, progress=progress,
                       callbacks=[at_target, *callbacks])
    s = score(run, target)
    if run.status == "stopped" and s is not None and not outside.is_set():  # it did what a speedrun run is for
        run.status = "completed"
        run.message = (f"reached the target {target:.3f} at step {s['step']:.0f} after {s['seconds']:.1f} s "
                       "and stopped there")
    return run


@dataclass
class Attempt:
    """A sitting: the baseline and a candidate, seed by seed, and the test against the current record."""

    track: Track
    name: str
    target: float
    baseline: list[Run]
    candidate: list[Run]
    previous: "Record | None"
    peak_flops: float
    date: str
    machine: dict[str, str]
    config_changes: dict[str, Any] = field(default_factory=dict)
    record: list[Run] = field(default_factory=list)  # the previous record re-run in this sitting, per seed
    _scores: dict[str, list] = field(default_factory=dict, init=False, repr=False)  # per arm, computed once

    @property
    def seeds(self) -> list[int]:
        return [r.config.run.seed for r in self.candidate]

    def scores(self, which: str) -> list[dict[str, float] | None]:
        """Each run's `score` (the sitting is over: its runs no longer change, so each is read once)."""
        if which not in self._scores:
            self._scores[which] = [score(r, self.target) for r in getattr(self, which)]
        return self._scores[which]

    def arms(self) -> tuple[str, ...]:
        return ("baseline", "record", "candidate") if self.record else ("baseline", "candidate")

    def reached(self) -> bool:
        return all(s is not None for w in self.arms() for s in self.scores(w))

    def seconds(self, which: str) -> list[float]:
        return [s["seconds"] if s else math.nan for s in self.scores(which)]

    def flops(self, which: str) -> list[float]:
        return [s["flops"] if s else math.nan for s in self.scores(which)]

    def speedups(self) -> list[float]:
        """Per seed: the baseline's seconds to target ÷ the candidate's (same seed, same sitting)."""
        return [b / c for b, c in zip(self.seconds("baseline"), self.seconds("candidate"))]

    def ratio(self, by: str = "seconds") -> Ratio:
        values = self.seconds if by == "seconds" else self.flops
        return Ratio.of(values("baseline"), values("candidate"), paired=True)

    def test(self) -> RecordTest | None:
        """The record test, or None when a run missed the target (then it is no record, whatever the rest).

        With the previous record re-run in this sitting: the per-seed ratios record seconds ÷ candidate
        seconds against 1× (paired: the machine's drift and each seed's start cancel). Without a re-run:
        the per-seed speed-ups against the record's stored ones (Welch), or against 1× for a first record."""
        if not self.reached() or len(self.candidate) < 2:
            return None
        if self.record:
            ratios = [r / c for r, c in zip(self.seconds("record"), self.seconds("candidate"))]
            return dataclasses.replace(record_test(ratios), test=f"one-sided paired t-test against record "
                                       f"{self.previous.number} re-run in this sitting (log seconds ratios)")
        return record_test(self.speedups(), self.previous.speedups if self.previous else None)

    def mfu(self) -> float:
        """The candidate's achieved FLOP/s to target ÷ this machine's measured matmul peak."""
        rates = [f / s for f, s in zip(self.flops("candidate"), self.seconds("candidate")) if s > 0]
        return float(np.mean(rates)) / self.peak_flops if rates and self.peak_flops > 0 else math.nan

    def is_record(self) -> bool:
        t = self.test()
        return t is not None and t.beyond

    def verdict(self) -> str:
        against = f"record {self.previous.number} ({self.previous.speedup:.2f}×)" if self.previous else "the baseline"
        missed = {w: sum(s is None for s in self.scores(w)) for w in self.arms()}
        for arm, what in (("baseline", "the track baseline"), ("record", "the re-run record")):
            if missed.get(arm):
                return (f"no verdict: {what} missed the target in {missed[arm]} of {len(self.baseline)} runs "
                        "(a sitting needs every such run to reach it)")
        if missed["candidate"]:
            return f"not a record: the candidate missed the target in {missed['candidate']} of {len(self.candidate)} runs"
        test = self.test()
        if test is None:
            return "no verdict: a record test needs at least 2 runs"
        r = self.ratio()
        over = (f" ({test.speedup:.2f}× over it, re-run in this sitting)" if self.record else "")
        return (f"{r.ratio:.2f}× [{r.lo:.2f}, {r.hi:.2f}] over the baseline; against {against}{over}: "
                f"{test.verdict()}")

    def table(self) -> pd.DataFrame:
        """Per seed: seconds to target of each arm, the speed-up over the baseline (and over the re-run
        record), steps, and the speed-up by FLOPs."""
        rows, arms = [], {w: self.scores(w) for w in self.arms()}
        for i, seed in enumerate(self.seeds):
            sc = {w: arms[w][i] for w in arms}
            row = {f"{w}_s": sc[w]["seconds"] if sc[w] else math.nan for w in self.arms()}
            b, c = sc["baseline"], sc["candidate"]
            row["speedup"] = b["seconds"] / c["seconds"] if b and c else math.nan
            if self.record:
                row["vs_record"] = sc["record"]["seconds"] / c["seconds"] if sc["record"] and c else math.nan
            row.update({f"{w}_step": sc[w]["step"] if sc[w] else math.nan for w in self.arms()})
            row["flops_speedup"] = b["flops"] / c["flops"] if b and c else math.nan
            rows.append({"seed": seed, **row})
        return pd.DataFrame(rows).set_index("seed")

    def to_dict(self, notes: str = "") -> dict[str, Any]:
        test, r, rf = self.test(), self.ratio(), self.ratio("flops")
        cand = self.candidate[0]
        return finite_or_none({
            "format": RECORD_FORMAT, "track": self.track.name, "name": self.name, "record": self.is_record(),
            "date": self.date, "machine": self.machine, "torch": torch.__version__,
            "target_val_loss": self.target, "seeds": self.seeds,
            "baseline_seconds": self.seconds("baseline"), "candidate_seconds": self.seconds("candidate"),
            "baseline_flops": self.flops("baseline"), "candidate_flops": self.flops("candidate"),
            **({"record_seconds": self.seconds("record"), "record_flops": self.flops("record")} if self.record else {}),
            "speedup": {"ratio": r.ratio, "lo": r.lo, "hi": r.hi},
            "flops_speedup": {"ratio": rf.ratio, "lo": rf.lo, "hi": rf.hi},
            "test": None if test is None else {**dataclasses.asdict(test), "paired": bool(self.record),
                                               "against": self.previous.number if self.previous else 0},
            "verdict": self.verdict(), "peak_flops": self.peak_flops, "mfu": self.mfu(),
            "changes": self.config_changes, "techniques": cand.techniques, "config": cand.config.to_dict(),
            "notes": notes})

    def write(self, root: str | Path | None = None, notes: str = "") -> Path:
        """Write the attempt's folder: `<root>/<track>/<NN>-<name>/` when it is a record (NN = the next
        number), else `<root>/<track>/candidates/<date>-<name>/`. Written whole or not at all."""
        if len(self.candidate) < 2:
            raise RecordError(f"nothing to write: {self.name!r} has {len(self.candidate)} finished pair(s) of runs; "
                              "a record needs at least 2")
        base = Path(root) if root is not None else records_root()
        folder = base / self.track.name
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "candidate"
        if self.is_record():
            number = max([r.number for r in records(self.track.name, base)], default=0) + 1
            target = folder / f"{number:02d}-{slug}"
        else:
            target = folder / "candidates" / f"{self.date.replace(':', '').replace('-', '')[:15]}-{slug}"
        info = {**self.to_dict(notes), "number": number if self.is_record() else 0}  # 0: a candidate
        return _write_folder(target, info, {"baseline": self.baseline, "record": self.record,
                                            "candidate": self.candidate})


def save_run(run: Run, path: Path) -> Path:
    """A run's file (`effitrain.train.run.save_run_file`: gzipped JSON, no weights)."""
    return save_run_file(run, path)


def load_run(path: str | Path) -> Run:
    """A run written by `save_run`; a missing or malformed file raises a one-line RecordError."""
    try:
        return load_run_file(path)
    except ValueError as exc:
        raise RecordError(str(exc)) from None


def _write_folder(target: Path, info: dict[str, Any], arms: dict[str, Sequence[Run]]) -> Path:
    if target.exists():
        raise FileExistsError(f"{target} exists already; records are never overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "runs").mkdir(parents=True)
        for which, runs in arms.items():
            for r in runs:
                save_run(r, tmp / "runs" / f"{which}-s{r.config.run.seed}.json.gz")
        (tmp / "record.json").write_text(json.dumps(info, indent=1))
        (tmp / "notes.md").write_text(f"# {info['name']}\n\n{info.get('notes') or '(no notes)'}\n")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _sitting(seeds: Sequence[int], arms: dict[str, tuple], target: float, labels: dict[str, str],
             callbacks: Iterable[Callable], verbose: bool, stop: threading.Event) -> dict[str, list[Run]]:
    """For each seed, every arm ((config, techniques, data) each) back to back, the order rotated by one
    arm per seed (so each arm goes first as often); when `stop` is set, only the seeds whose runs all
    finished are kept."""
    names = list(arms)
    runs: dict[str, list[Run]] = {k: [] for k in names}
    for i, seed in enumerate(seeds):
        for which in names[i % len(names):] + names[:i % len(names)]:
            cfg, techs, d = arms[which]
            run = race(cfg.replace(seed=seed), techs, d, target, name=f"{labels[which]} s{seed}",
                       callbacks=callbacks, stop=stop)
            if stop.is_set():  # a run cut short has no score: this seed is dropped
                break
            runs[which].append(run)
            if verbose:
                print(f"seed {seed} · {which}: {run.summary_line()}"
                      + ("" if score(run, target) else f" · missed the target {target:.3f}"), flush=True)
        if stop.is_set():
            n = min(len(v) for v in runs.values())
            return {k: v[:n] for k, v in runs.items()}
    return runs


def speedrun(config: Config, techniques: Iterable[Technique] = (), *, track: str | Track = "cpu",
             runs: int | None = None, seeds: Sequence[int] | None = None, name: str = "",
             root: str | Path | None = None, against: "Record | None | str" = "latest",
             callbacks: Iterable[Callable] = (), verbose: bool = True, stop: threading.Event | None = None) -> Attempt:
    """Train the track baseline, the record to beat (`against`: a Record, None for the baseline, or
    "latest") and the candidate (`config` + `techniques`) for each seed, back to back in rotating order,
    each stopped at the target; test the candidate against the record re-run here, paired by seed (or
    against 1× when there is no record). Nothing is written: see `Attempt.write`. `stop` set: the
    sitting ends after the current step, keeping only the seeds whose runs all finished."""
    tr = TRACKS[track] if isinstance(track, str) else track
    tr.check(config)
    techniques = list(techniques)
    seeds = list(seeds) if seeds is not None else list(range(runs or tr.runs))
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"a speedrun needs at least 2 distinct seeds; got {seeds}")
    from effitrain.data import prepare_data
    from effitrain.train.flops import measure_peak_flops

    base_cfg = tr.baseline()
    track_data = prepare_data(base_cfg.data)
    data = judged_data(track_data, config)
    target = tr.target(track_data)
    previous = latest_record(tr.name, root) if against == "latest" else against
    label = name or "candidate"
    arms = {"baseline": (base_cfg, [], track_data)}
    if previous is not None:
        arms["record"] = (previous.config(), previous.techniques(), judged_data(track_data, previous.config()))
    arms["candidate"] = (config, techniques, data)
    labels = {"baseline": "baseline", "record": f"record {previous.number if previous else ''}", "candidate": label}
    pairs = _sitting(seeds, arms, target, labels, callbacks, verbose, stop or threading.Event())
    device = base_cfg.run.resolved_device()
    from effitrain.bench import device_name

    attempt = Attempt(tr, label, target, pairs["baseline"], pairs["candidate"], previous,
                      measure_peak_flops(device.type, config.run.precision if config.run.precision != "fp16" else "bf16"),
                      datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      {"host": host(), "device": device_name(device)}, changes(config, base_cfg),
                      pairs.get("record", []))
    if verbose:
        print(attempt.verdict(), flush=True)
    return attempt


# -- records ----------------------------------------------------------------------------------------
def records_root() -> Path:
    """Where records live: EFFITRAIN_RECORDS, else the repository's `records/` (a source checkout),
    else `records/` in the current folder."""
    return checkout_folder("EFFITRAIN_RECORDS", "records")


_RECORD_KEYS = {"format": str, "track": str, "name": str, "number": int, "record": bool, "date": str,
                "machine": dict, "target_val_loss": (int, float), "seeds": list, "baseline_seconds": list,
                "candidate_seconds": list, "baseline_flops": list, "candidate_flops": list, "speedup": dict,
                "test": dict, "changes": dict, "techniques": list, "config": dict, "notes": str}


@dataclass(frozen=True)
class Record:
    """A record folder, read and validated (see `load_record`)."""

    path: Path
    info: dict[str, Any]

    @property
    def number(self) -> int:
        return int(self.info["number"])

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def speedups(self) -> list[float]:
        return [b / c for b, c in zip(self.info["baseline_seconds"], self.info["candidate_seconds"])]

    @property
    def speedup(self) -> float:
        return float(self.info["speedup"]["ratio"])

    def config(self) -> Config:
        return Config.from_dict(self.info["config"])

    def techniques(self) -> list[Technique]:
        return [get_technique(t["name"], **t.get("params", {})) for t in self.info["techniques"]]

    def runs(self, which: str) -> list[Run]:
        """The stored runs ("baseline" or "candidate"), in seed order."""
        return [load_run(self.path / "runs" / f"{which}-s{s}.json.gz") for s in self.info["seeds"]]


def load_record(path: str | Path) -> Record:
    """A record folder; anything missing or malformed raises a one-line RecordError naming the file and key."""
    path = Path(path)
    try:
        info = read_json(path / "record.json", "record file")
    except (FileNotFoundError, ValueError) as exc:
        raise RecordError(str(exc)) from None
    where = f"record file {path / 'record.json'}"
    if not isinstance(info, dict) or info.get("format") != RECORD_FORMAT:
        raise RecordError(f"{where}: not an effitrain record ('format' must be {RECORD_FORMAT!r})")
    for key, kind in _RECORD_KEYS.items():
        if key == "test" and info.get(key) is None and info.get("record") is False:
            continue  # a candidate with a missed target has no test
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool) and kind is int:
            raise RecordError(f"{where}: {key!r} is missing or not a {getattr(kind, '__name__', 'number')}")
    n = len(info["seeds"])
    for key in ("baseline_seconds", "candidate_seconds", *(("record_seconds",) if "record_seconds" in info else ())):
        values = info[key]
        if len(values) != n or not all(isinstance(v, (int, float)) and v > 0 for v in values):
            raise RecordError(f"{where}: {key!r} must hold one positive number per seed ({n})")
    return Record(path, info)


def records(track_name: str, root: str | Path | None = None) -> list[Record]:
    """The track's records, by number (folders `<NN>-<name>` under `<root>/<track>/`)."""
    folder = (Path(root) if root is not None else records_root()) / track_name
    found = [load_record(p) for p in sorted(folder.glob("[0-9]*-*")) if p.is_dir()] if folder.is_dir() else []
    return sorted(found, key=lambda r: r.number)


def latest_record(track_name: str, root: str | Path | None = None) -> Record | None:
    found = records(track_name, root)
    return found[-1] if found else None


def verify_record(record: Record, previous: Record | None = None) -> RecordTest:
    """Recompute a record's numbers from its stored histories (no training): every run's seconds to the
    target must match `record.json`, and the speed-ups must beat `previous` (None: the baseline) at
    p < 0.01. Returns the recomputed test; a mismatch raises a one-line RecordError."""
    target = float(record.info["target_val_loss"])
    rerun = "record_seconds" in record.info
    for which in ("baseline", "record", "candidate") if rerun else ("baseline", "candidate"):
        for run, stored in zip(record.runs(which), record.info[f"{which}_seconds"]):
            s = score(run, target)
            if s is None or not math.isclose(s["seconds"], stored, rel_tol=1e-6):
                raise RecordError(f"record {record.path.name}: {which} seed {run.config.run.seed} reaches "
                                 f"{target:.4f} in {s['seconds'] if s else 'never'} s by its history, but "
                                 f"record.json says {stored}")
    if rerun:  # the record before it was re-run in the same sitting: the paired test
        test = record_test([r / c for r, c in zip(record.info["record_seconds"], record.info["candidate_seconds"])])
    else:
        test = record_test(record.speedups, previous.speedups if previous else None)
    if not test.beyond:
        against = f"record {previous.number}" if previous else "the baseline"
        raise RecordError(f"record {record.path.name} does not beat {against}: p = {test.p:.3g} ≥ {RECORD_ALPHA}")
    return test


def check_record(record: Record, *, runs: int | None = None, root: str | Path | None = None,
                 verbose: bool = True) -> Attempt:
    """Train the record's config again on this machine, against the track baseline in this sitting, and
    test it against its predecessor (the record before it). Explicit and long: 2 × runs trainings."""
    earlier = [r for r in records(record.info["track"], root or record.path.parents[1]) if r.number < record.number]
    return speedrun(record.config(), record.techniques(), track=record.info["track"], name=record.name,
                    runs=runs or len(record.info["seeds"]), against=earlier[-1] if earlier else None, verbose=verbose)


def leaderboard(track_name: str = "cpu", root: str | Path | None = None) -> pd.DataFrame:
    """The track's records, one row each: speed-up over the baseline [95% interval], by FLOPs too, the
    test against the record before it, runs, MFU, what changed, where and when."""
    rows = []
    for r in records(track_name, root):
        i, t = r.info, r.info["test"]
        rows.append({"record": r.number, "name": r.name,
                     "speedup": f"{i['speedup']['ratio']:.2f}× [{i['speedup']['lo']:.2f}, {i['speedup']['hi']:.2f}]",
                     "flops_speedup": f"{i.get('flops_speedup', {}).get('ratio') or math.nan:.2f}×",
                     "p": f"{t['p']:.2g} vs {'record ' + str(t['against']) if t['against'] else 'baseline'}"
                          + (" (re-run, paired)" if t.get("paired") else ""),
                     "runs": len(i["seeds"]), "mfu": f"{(i.get('mfu') or math.nan):.1%}",
                     "changes": ", ".join(f"{k}={v}" for k, v in i["changes"].items())
                     + "".join(f" +{x['name']}" for x in i["techniques"]),
                     "machine": i["machine"].get("device", "?"), "date": i["date"][:10]})
    return pd.DataFrame(rows).set_index("record") if rows else pd.DataFrame(
        columns=["name", "speedup", "flops_speedup", "p", "runs", "mfu", "changes", "machine", "date"])


def spread(recs: Sequence[Record]) -> float | None:
    """The pooled sd of a run's log speed-up over `recs` (None without records)."""
    if not recs:
        return None
    return float(np.sqrt(np.mean([np.var(np.log(r.speedups), ddof=1) for r in recs])))


def runs_table(sd: float, improvements: Sequence[float] = (1.1, 1.2, 1.3, 1.5, 2.0),
               record_runs: Sequence[int] = (5, 10)) -> pd.DataFrame:
    """Runs a candidate needs for p < 0.01 at each improvement over the record, when a run's log
    speed-up spreads with `sd`: against the baseline (1×, exact) and against a record measured with
    each of `record_runs` runs at the same spread. None: more than 200 runs, or no number at all."""
    from effitrain.stats import runs_for_record

    rows = {f"{x:.2g}×": {"vs the baseline": runs_for_record(x, sd),
                          **{f"vs a {k}-run record": runs_for_record(x, sd, record_runs=k) for k in record_runs}}
            for x in improvements}
    df = pd.DataFrame(rows).T.astype("Int64")
    df.index.name = "improvement"
    return df


def history_figure(track_name: str = "cpu", root: str | Path | None = None):
    """The record history as a plotly figure: each record's speed-up over the baseline with its 95%
    interval, against its number, annotated with its name and p."""
    import plotly.graph_objects as go

    recs = records(track_name, root)
    x = [r.number for r in recs]
    y = [r.speedup for r in recs]
    lo = [r.speedup - r.info["speedup"]["lo"] for r in recs]
    hi = [r.info["speedup"]["hi"] - r.speedup for r in recs]
    fig = go.Figure(go.Scatter(x=[0, *x], y=[1.0, *y], mode="lines+markers+text", line=dict(shape="hv"),
                               text=["baseline", *[f"{r.name} (p = {r.info['test']['p']:.1g})" for r in recs]],
                               textposition="top left",
                               error_y=dict(type="data", symmetric=False, array=[0, *hi], arrayminus=[0, *lo])))
    fig.update_layout(template="plotly_white", height=380, title=f"speedrun records, track {track_name!r}",
                      xaxis=dict(title="record", dtick=1), yaxis=dict(title="speed-up over the baseline (×, seconds "
                                                                             "to target)", type="log"))
    return fig


# -- the lesson's panel ---------------------------------------------------------------------------------
class SpeedrunPanel(Panel):
    """Lesson 10's panel: tick techniques, pick a recipe, type changes, press Run. Run races the track
    baseline and the candidate seed by seed (`speedrun`), draws both live against the latest record's
    stored runs, and ends with the verdict ("record at p = …" or "not yet: …") and the per-seed table.
    Nothing is written; `panel.attempt.write(notes=…)` keeps a record. `runs` slider: seeds per sitting.
    """

    kind = "speedrun"

    def __init__(self, track_name: str = "cpu", root: str | Path | None = None,
                 techniques: Iterable[str] | None = None, plot: LivePlot | None = None):
        self.track = track(track_name)
        self.root = root
        self.attempt: Attempt | None = None
        from effitrain.data import prepare_data

        base = self.track.baseline()
        data = prepare_data(base.data)
        super().__init__(base, techniques=techniques, plot=plot or LivePlot(x="seconds", show_train=False,
                                                                             title="val loss: baseline, candidate, record"),
                         data=data)
        for w in (self.profile, self.warm_start, self.target, self.use_cache):
            w.layout.display = "none"  # fixed by the track: its profile, from scratch, its target, never cached
        self.seeds.min, self.seeds.value, self.seeds.description = 2, self.track.runs, "runs"
        self.record = latest_record(self.track.name, root)
        if self.record is not None:
            when = f"{self.record.info['machine'].get('device', '?')}, {self.record.info['date'][:10]}"
            for run in self.record.runs("candidate"):
                self.plot.add_run(run, label=f"record {self.record.number} s{run.config.run.seed} ({when})")
        self.plot.set_target(self.track.target(data))

    def _check_target(self) -> float | None:
        return None  # the track's target, always

    def _work(self, configs: list[Config], specs: list[tuple[str, Any]], target: float | None,
              new_runs: list[Run], foreground: bool) -> None:
        drawers: dict[int, Callable] = {}

        def draw(kind: str, row: dict, run: Run) -> None:
            if id(run) not in drawers:
                drawers[id(run)] = self.plot.add_run(run, label=run.name)
                self.runs.append(run)
                new_runs.append(run)
                self._say(f"training {run.name}…")
            drawers[id(run)](kind, row, run)

        name = self.changes.value.strip() or "+".join(n for n, _ in specs) or self.recipe.value or "candidate"
        self.attempt = speedrun(configs[0], [REGISTRY[n](p) for n, p in specs], track=self.track,
                                seeds=[c.run.seed for c in configs], name=name, root=self.root,
                                callbacks=[draw], verbose=foreground, stop=self._stop)
        self.table.value = self.attempt.table().to_html(float_format=lambda v: f"{v:.3g}")
        self._say(self.attempt.verdict())


__all__ = ["load_run", "save_run", "Attempt", "SpeedrunPanel", "history_figure", "runs_table", "spread", "FIXED_FIELDS", "Record", "RecordError", "TRACKS", "Track", "changes", "check_record", "judged_data",
           "latest_record", "leaderboard", "load_record", "race", "records", "records_root", "score", "speedrun",
           "track", "verify_record"]
