"""Reference results: runs measured on another machine (a GPU), shown beside a learner's own.

    ref = reference_runs("gpu")                 # every stored set of the gpu profile, newest first
    plot = LivePlot(x="step", show_train=False)
    add_reference(plot, ref)                    # dashed bands labelled with device and date
    print(reference_note("gpu"))                # where and when each set was measured, or that none is

A reference set is one gzipped JSON file (`effitrain-reference-1`): the device, torch version, date,
profile, what was measured, and the runs' files without weights (`Run.to_dict`). The device script
(`scripts/gpu_check.py`) writes one per measurement it takes (e.g. the gpu profile's baseline over
three seeds); committed sets live in `docs/measurements/reference/`. A set's runs keep their own
config, so a learner's curve and a reference curve are compared by steps (seconds are a fact about
one machine) and a lesson says which device and date each came from.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from effitrain.data.cache import checkout_folder
from effitrain.train.run import Run, read_json_gz, write_json_gz

REFERENCE_FORMAT = "effitrain-reference-1"


class ReferenceError(ValueError):
    """A reference file that is missing, malformed or of another format; the message is one line."""


@dataclass(frozen=True)
class ReferenceSet:
    """One measurement of runs on one machine: `label` is "<what>, <device>, <date>"."""

    device: str
    torch: str
    date: str
    profile: str
    what: str
    runs: tuple[Run, ...]
    path: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.what}, {self.device}, {self.date}"


def reference_dir() -> Path:
    """EFFITRAIN_REFERENCE if set, else the repository's `docs/measurements/reference/` (a source checkout),
    else `reference/` in the current folder."""
    return checkout_folder("EFFITRAIN_REFERENCE", "docs", "measurements", "reference")


def device_name(device: str | torch.device | None = None) -> str:
    """"NVIDIA H200" for a CUDA device, "cpu" otherwise."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def file_name(device: str, date: str, what: str) -> str:
    """"h200-2026-12-04-baseline.json.gz" from ("NVIDIA H200", "2026-12-04", "baseline")."""
    short = re.sub(r"^(nvidia|amd|intel)\s+", "", device.strip().lower())
    slug = lambda s: re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "x"  # noqa: E731
    return f"{slug(short)}-{date}-{slug(what)}.json.gz"


def save_reference(runs: Iterable[Run], path: str | Path, *, what: str, profile: str, device: str | None = None,
                   date: str | None = None) -> Path:
    """Write a reference set (written whole or not at all); `path` may be a folder (the file is then
    named by `file_name`). The device defaults to the runs' own, the date to today (UTC)."""
    runs = list(runs)
    if not runs:
        raise ReferenceError(f"reference set {what!r}: no runs to store")
    device = device or device_name(runs[0].device or None)
    date = date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    path = Path(path)
    if path.is_dir() or not path.name.endswith(".json.gz"):
        path = path / file_name(device, date, what)
    doc = {"format": REFERENCE_FORMAT, "device": device, "torch": torch.__version__, "date": date,
           "profile": profile, "what": what, "runs": [r.to_dict() for r in runs]}
    write_json_gz(doc, path)
    return path


def load_reference(path: str | Path) -> ReferenceSet:
    """A reference set written by `save_reference`; anything wrong raises a one-line ReferenceError."""
    path = Path(path)
    try:
        doc = read_json_gz(path, "reference file")
    except ValueError as exc:
        raise ReferenceError(str(exc)) from None
    if not isinstance(doc, dict) or doc.get("format") != REFERENCE_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ReferenceError(f"reference file {path}: not an {REFERENCE_FORMAT} file (format {got!r})")
    for key in ("device", "torch", "date", "profile", "what"):
        if not isinstance(doc.get(key), str):
            raise ReferenceError(f"reference file {path}: {key!r} must be a string")
    if not isinstance(doc.get("runs"), list) or not doc["runs"]:
        raise ReferenceError(f"reference file {path}: 'runs' must be a non-empty list of run files")
    try:
        runs = tuple(Run.from_dict(d, source=f"reference file {path}, run {i}") for i, d in enumerate(doc["runs"]))
    except ValueError as exc:
        raise ReferenceError(str(exc)) from None
    return ReferenceSet(doc["device"], doc["torch"], doc["date"], doc["profile"], doc["what"], runs, path)


def reference_sets(profile: str | None = None, what: str | None = None,
                   folder: str | Path | None = None) -> list[ReferenceSet]:
    """Every stored set (of `profile` and `what` if given), newest first; a folder that does not exist
    holds none. A malformed file raises its ReferenceError (never silently skipped)."""
    root = Path(folder) if folder is not None else reference_dir()
    sets = [load_reference(p) for p in sorted(root.glob("*.json.gz"))] if root.is_dir() else []
    sets = [s for s in sets if (profile is None or s.profile == profile) and (what is None or s.what == what)]
    return sorted(sets, key=lambda s: s.date, reverse=True)


def reference_runs(profile: str | None = None, what: str | None = None, folder: str | Path | None = None) -> list[Run]:
    """The runs of `reference_sets(...)`, each named "<its name> [<device>, <date>]"."""
    out = []
    for s in reference_sets(profile, what, folder):  # loaded from disk on each call: renaming shares nothing
        for r in s.runs:
            r.name = f"{r.name} [{s.device}, {s.date}]"
            out.append(r)
    return out


def reference_note(profile: str | None = None, what: str | None = None, folder: str | Path | None = None) -> str:
    """One line per stored set (what, device, torch, date, runs), or one line saying none is stored."""
    sets = reference_sets(profile, what, folder)
    if not sets:
        scope = " ".join(x for x in (f"profile {profile}" if profile else "", f"{what!r}" if what else "") if x)
        return (f"no reference runs stored{' for ' + scope if scope else ''} yet: scripts/gpu_check.py measures them "
                "on a GPU and docs/measurements/reference/ keeps them")
    return "\n".join(f"reference: {s.what} ({s.profile} profile), {len(s.runs)} runs measured on {s.device} with "
                     f"torch {s.torch} on {s.date}" for s in sets)


def add_reference(plot: Any, sets: Iterable[ReferenceSet]) -> None:
    """Draw each set on a `LivePlot` as one band (min–max over its runs), labelled with device and date."""
    for s in sets:
        plot.add_band(list(s.runs), label=s.label)


def summary_rows(sets: Iterable[ReferenceSet]) -> list[dict[str, Any]]:
    """One row per run: set label, run name, steps, final val loss, training seconds (that machine's)."""
    rows = []
    for s in sets:
        for r in s.runs:
            summ = r.summary()
            rows.append({"set": s.label, "run": r.name, "steps": summ.get("steps"),
                         "val_loss": summ.get("val_loss_last"), "seconds": summ.get("seconds")})
    return rows
