"""A `Run`: the resolved config, the techniques, the history, the model and how it ended."""
from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from effitrain.config import SECTIONS, Config, ConfigError, DataConfig
from effitrain.data.cache import atomic_path
from effitrain.train.history import History

STATUSES = ("created", "running", "completed", "stopped", "interrupted", "diverged", "failed")

# The config fields each run-file format records, oldest first; files are written in the last one.
# Loading requires every field of the file's format: only a field added after it (in a later
# format) may be absent, and takes its default. Adding a config field therefore means adding a
# format here that lists it (tests/test_runfile.py checks that every field is in the last one).
_V1_FIELDS = {
    "data": ("corpus", "vocab_size", "seq_len", "mask_prob", "val_fraction", "max_val_blocks", "min_words", "pack",
             "max_train_examples"),
    "model": ("preset", "hidden", "layers", "heads", "ffn", "max_positions", "norm", "ffn_kind", "bias", "dropout",
              "tie_embeddings", "init_std"),
    "optim": ("lr", "weight_decay", "beta1", "beta2", "eps", "schedule", "warmup", "min_lr_ratio", "grad_clip", "fused"),
    "run": ("seed", "batch_size", "grad_accum", "device", "precision", "compile", "evals", "log_every", "threads",
            "name"),
}
FORMAT_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "effitrain-run-v1": _V1_FIELDS,
    "effitrain-run-v2": {**_V1_FIELDS, "model": _V1_FIELDS["model"] + ("position",),
                         "run": _V1_FIELDS["run"] + ("batch_ramp",)},
}
# v3: optim.fused (a bool) became optim.kernel (for-loop / foreach / fused / auto); model.attention (sdpa / math);
# model.groupbert, conv_kernel, conv_group_size, ffn_groups (GroupBERT layers)
FORMAT_FIELDS["effitrain-run-v3"] = {
    **FORMAT_FIELDS["effitrain-run-v2"],
    "model": FORMAT_FIELDS["effitrain-run-v2"]["model"] + ("attention", "groupbert", "conv_kernel", "conv_group_size",
                                                          "ffn_groups"),
    "optim": tuple(f for f in _V1_FIELDS["optim"] if f != "fused") + ("kernel",)}
# v4: the recipes' ingredients: data.max_tokens_per_char, data.order, model.sparse_head, optim.plan_steps
FORMAT_FIELDS["effitrain-run-v4"] = {
    **FORMAT_FIELDS["effitrain-run-v3"],
    "data": FORMAT_FIELDS["effitrain-run-v3"]["data"] + ("max_tokens_per_char", "order"),
    "model": FORMAT_FIELDS["effitrain-run-v3"]["model"] + ("sparse_head",),
    "optim": FORMAT_FIELDS["effitrain-run-v3"]["optim"] + ("plan_steps",)}
# v5: run.warm_start, run.warm_seed (start from a baseline seed's state at a step)
FORMAT_FIELDS["effitrain-run-v5"] = {
    **FORMAT_FIELDS["effitrain-run-v4"], "run": FORMAT_FIELDS["effitrain-run-v4"]["run"] + ("warm_start", "warm_seed")}
# v6: run.warm_base (the baseline's batch size, lr, warm-up where a warm-started run's differ)
FORMAT_FIELDS["effitrain-run-v6"] = {
    **FORMAT_FIELDS["effitrain-run-v5"], "run": FORMAT_FIELDS["effitrain-run-v5"]["run"] + ("warm_base",)}
_FUSED_TO_KERNEL = {True: "auto", False: "foreach"}  # what optim.fused meant in v1 and v2
# v7: run.memory_budget (lesson 09)
FORMAT_FIELDS["effitrain-run-v7"] = {
    **FORMAT_FIELDS["effitrain-run-v6"], "run": FORMAT_FIELDS["effitrain-run-v6"]["run"] + ("memory_budget",)}

RUN_FORMAT = list(FORMAT_FIELDS)[-1]
_RUN_KEYS: dict[str, tuple[type, str]] = {  # every format: key -> (type, what it must be)
    "name": (str, "a string"), "config": (dict, "a mapping"), "techniques": (list, "a list"),
    "history": (dict, "a mapping"), "status": (str, "a string"), "message": (str, "a string"),
    "device": (str, "a string"), "started": (str, "a string"), "extra": (dict, "a mapping"),
}


@dataclass
class Run:
    config: Config
    techniques: list[dict[str, Any]] = field(default_factory=list)
    history: History = field(default_factory=History)
    model: torch.nn.Module | None = None
    status: str = "created"
    message: str = ""
    device: str = ""
    name: str = ""
    started: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. unigram_entropy, parameters

    @property
    def setting(self) -> str:
        """What was trained, without the seed: the techniques' names, else "baseline"; on a corpus
        other than the default, its file or name after "on" ("baseline on reviews.txt")."""
        names = "+".join(t["name"] for t in self.techniques) or "baseline"
        corpus = self.config.data.corpus
        return names if corpus == DataConfig.corpus else f"{names} on {Path(corpus).name or corpus}"

    @property
    def label(self) -> str:
        return self.name or f"{self.setting} s{self.config.run.seed}"

    @property
    def finished(self) -> bool:
        return self.status not in ("created", "running")

    def summary(self) -> dict[str, Any]:
        steps, evals = self.history.steps, self.history.evals
        last = steps[-1] if steps else {}
        seconds = float(last.get("seconds", 0.0))
        tokens = int(last.get("tokens", 0))
        nan = float("nan")
        val_last = float(evals[-1]["val_loss"]) if evals else nan
        unigram = self.extra.get("unigram_val_loss")
        unigram = float(unigram) if isinstance(unigram, (int, float)) else nan
        return {
            "name": self.label,
            "status": self.status,
            "steps": int(last.get("step", 0)),
            "tokens": tokens,
            "seconds": seconds,
            "tokens_per_second": tokens / seconds if seconds > 0 else nan,
            "flops_measured": float(last.get("flops", 0.0)),
            "flops_analytic": float(last.get("flops_analytic", 0.0)),
            "train_loss_first": float(steps[0]["train_loss"]) if steps else nan,
            "train_loss_last": float(last["train_loss"]) if steps else nan,
            "val_loss_first": float(evals[0]["val_loss"]) if evals else nan,
            "val_loss_last": val_last,
            "val_accuracy_last": float(evals[-1]["val_accuracy"]) if evals else nan,
            # a model that knows only word frequencies scores `unigram_val_loss`; how far below it
            # the run ended (nats) is what it learned from context (negative: still on the plateau)
            "unigram_val_loss": unigram,
            "context_gain": unigram - val_last,
            "cached": bool((self.extra.get("cache") or {}).get("loaded", False)),
            # CUDA: peak allocated bytes; CPU: growth of the process's peak RSS during the run
            "peak_memory_bytes": int(self.extra.get("peak_memory_bytes", 0) or 0),
            "peak_memory_kind": str(self.extra.get("peak_memory_kind", "")),
            # torch.compile's compiling, kept out of `seconds` (0 for an eager run)
            "compile_seconds": float(self.extra.get("compile_seconds", 0.0) or 0.0),
            "device": self.device,
            "profile": self.config.profile,
            "techniques": [t["name"] for t in self.techniques],
            "message": self.message,
        }

    def summary_line(self) -> str:
        """One line: "baseline s0: completed · 300 steps · 12.1s · val loss 7.630 → 6.220 · 7,400 tokens/s
        · context gain 0.98 nats" (+ " · loaded from the run cache" for a cached run)."""
        s = self.summary()
        gain = s["context_gain"]
        return (f"{s['name']}: {s['status']} · {s['steps']} steps · {s['seconds']:.1f}s · "
                f"val loss {s['val_loss_first']:.3f} → {s['val_loss_last']:.3f} · {s['tokens_per_second']:,.0f} tokens/s"
                + (f" · context gain {gain:.2f} nats" if math.isfinite(gain) else "")
                + (f" · compiled in {s['compile_seconds']:.1f}s (not counted)" if s["compile_seconds"] else "")
                + (" · loaded from the run cache" if s["cached"] else "")
                + (f" · {s['message']}" if s["message"] else ""))

    # -- saving (history and settings; the model goes in a checkpoint) ---------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": RUN_FORMAT, "name": self.name, "config": self.config.to_dict(),
                "techniques": self.techniques, "history": self.history.to_dict(), "status": self.status,
                "message": self.message, "device": self.device, "started": self.started,
                "extra": _jsonable(self.extra)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "") -> "Run":
        """A run from `to_dict()`'s output, validated in full: anything missing or of the wrong kind
        raises a one-line ValueError (ConfigError for a config value) naming the key, after `source`."""
        where = f"{source}: " if source else ""
        if not isinstance(d, dict):
            raise ValueError(f"{where}not an effitrain run (a JSON object with a 'format'); got {type(d).__name__}")
        fmt = d.get("format")
        if fmt not in FORMAT_FIELDS:
            raise ValueError(f"{where}not an effitrain run: 'format' is {fmt!r}; known: {', '.join(FORMAT_FIELDS)}")
        for key, (kind, what) in _RUN_KEYS.items():
            if key not in d:
                raise ValueError(f"{where}{key!r} is missing (a {fmt} file records it)")
            if not isinstance(d[key], kind):
                raise ValueError(f"{where}{key!r} must be {what}; got {type(d[key]).__name__}")
        if d["status"] not in STATUSES:
            raise ValueError(f"{where}'status' must be one of {', '.join(STATUSES)}; got {d['status']!r}")
        for i, t in enumerate(d["techniques"]):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not isinstance(t.get("params", {}), dict):
                raise ValueError(f"{where}techniques[{i}] must be a mapping with a 'name' string and 'params' mapping; "
                                 f"got {t!r:.80}")
        config = _config_from_dict(d["config"], fmt, where)
        try:
            history = History.from_dict(d["history"])
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None
        return cls(config=config, techniques=[dict(t) for t in d["techniques"]], history=history,
                   status=d["status"], message=d["message"], device=d["device"], name=d["name"],
                   started=d["started"], extra=dict(d["extra"]))

    @classmethod
    def load(cls, path: str | Path) -> "Run":
        return cls.from_dict(read_json(path, "run file"), source=f"run file {path}")


def _config_from_dict(c: dict[str, Any], fmt: str, where: str) -> Config:
    """The config of a run file of format `fmt`: every field that format records must be there."""
    for key in (*SECTIONS, "budget", "profile"):
        if key not in c:
            raise ValueError(f"{where}config.{key} is missing (a {fmt} file records it)")
    if "fused" in FORMAT_FIELDS[fmt]["optim"] and isinstance(c.get("optim"), dict) and "fused" in c["optim"]:
        optim = dict(c["optim"])
        fused = optim.pop("fused")
        if fused not in _FUSED_TO_KERNEL:
            raise ValueError(f"{where}config.optim.fused must be true or false; got {fused!r}")
        c = {**c, "optim": {**optim, "kernel": _FUSED_TO_KERNEL[fused]}}
    for section, names in FORMAT_FIELDS[fmt].items():
        values = c[section]
        if not isinstance(values, dict):
            raise ValueError(f"{where}config.{section} must be a mapping; got {type(values).__name__}")
        known = {f.name for f in fields(SECTIONS[section])}
        for name in names:
            read_as = "kernel" if (section, name) == ("optim", "fused") else name  # converted above
            if read_as in known and read_as not in values:
                raise ValueError(f"{where}config.{section}.{name} is missing (a {fmt} file records it)")
    budget = c["budget"]
    if not (isinstance(budget, str) or (isinstance(budget, dict) and set(budget) == {"amount", "unit"})):
        raise ValueError(f"{where}config.budget must be a budget like '300steps' or a mapping of amount and unit; "
                         f"got {budget!r:.80}")
    if not isinstance(c["profile"], str):
        raise ValueError(f"{where}config.profile must be a string; got {type(c['profile']).__name__}")
    try:
        return Config.from_dict(c)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """Numbers, strings, booleans and (nested) dicts/lists of them; non-finite floats become None."""
    def value(v: Any) -> tuple[bool, Any]:
        if isinstance(v, (int, str, bool)) or v is None:
            return True, v
        if isinstance(v, float):
            return True, v if math.isfinite(v) else None
        if isinstance(v, dict):
            return True, _jsonable(v)
        if isinstance(v, (list, tuple)):
            kept = [value(x) for x in v]
            return True, [x for ok, x in kept if ok]
        return False, None

    out = {}
    for k, v in d.items():
        ok, x = value(v)
        if ok:
            out[str(k)] = x
    return out


def read_json(path: str | Path, what: str) -> Any:
    """The JSON in `path`; a missing file raises FileNotFoundError, bad JSON a one-line ValueError."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path} is not valid JSON ({str(exc).splitlines()[0]})") from None


def finite_or_none(value: Any) -> Any:
    """NaN and ±inf → None, recursively, so `json.dumps` writes valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json_gz(obj: Any, path: str | Path) -> Path:
    """`obj` as gzipped compact JSON, the same bytes for the same object (no time stamp in the gzip
    header), written whole or not at all (a temporary file, then a rename)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(json.dumps(obj, separators=(",", ":")).encode())
    return path


def read_json_gz(path: str | Path, what: str) -> Any:
    """The JSON in a gzipped file; a missing or unreadable one raises a one-line ValueError naming `what` and it."""
    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from None


def save_run_file(run: Run, path: str | Path) -> Path:
    """A run's file without weights (`Run.to_dict`) as gzipped JSON (`write_json_gz`): a tenth of
    `Run.save`'s size, the same bytes for the same run, never half-written."""
    return write_json_gz(run.to_dict(), path)


def load_run_file(path: str | Path) -> Run:
    """A run written by `save_run_file`; a missing or malformed file raises a one-line ValueError naming it."""
    d = read_json_gz(path, "run file")
    try:
        return Run.from_dict(d, source=f"run file {path}")
    except ValueError as exc:
        raise ValueError(" ".join(str(exc).split())) from None
