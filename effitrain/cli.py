"""The `effitrain` command: train a run, benchmark a training step, open the lessons.

    effitrain train --profile smoke --budget 200steps --json
    effitrain train --technique prune:score=compressibility,keep_fraction=0.5
    effitrain train --no-cache      # train again even if an identical run is in the run cache
    effitrain techniques            # what is registered, with parameters and the first line of each card
    effitrain bench --preset tiny --steps 20 --json
    effitrain bench --hidden 256 --layers 4 --heads 4 --ffn 1024 --vocab 8192 --attention math --precision bf16
    effitrain lab [jupyter lab arguments]

Bad input (a config value, a corpus, a checkpoint) prints one line ``effitrain: error: <message>``
to stderr and exits 2; a diverged run exits 1 with its message; Ctrl-C exits 130. With
``--json`` the last line of stdout is one JSON object (NaN written as null). `train` goes through
the run cache (`effitrain.train.runcache`): an identical run trained before loads from disk.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, NoReturn, Sequence

PROG = "effitrain"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TERMINATED = 128 + 15  # SIGTERM, as a shell reports a process it ended

# options whose value may start with "-" (argparse would otherwise take "-5s" for an option)
_VALUE_OPTIONS = ("--technique", "--budget", "--seed", "--corpus", "--preset", "--profile", "--precision", "--seq-len",
                  "--batch", "--steps", "--warmup")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line `effitrain: error: ...` (exit 2) like every other error."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def _build_parser() -> _Parser:
    parser = _Parser(prog=PROG, description="Measure what speeds up the training of Transformer language models.")
    from effitrain.version import __version__
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,bench,speedrun,techniques,lab}", parser_class=_Parser)

    t = sub.add_parser("train", help="train one run and print its summary",
                       description="Train one run of a profile (with overrides) and print its summary.")
    t.add_argument("--profile", help="smoke, gpu-smoke, cpu or gpu (default: EFFITRAIN_PROFILE, else gpu with CUDA, else cpu)")
    t.add_argument("--recipe", help="a named recipe on top of the profile: bert, 24h-bert or cramming")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="sets",
                   help="change one config field after the recipe, e.g. --set model.norm=post (repeatable)")
    t.add_argument("--preset", help="model size: tiny, mini, small or base (default: the profile's)")
    t.add_argument("--budget", help="how long to train: 60s, 5min, 2000steps, 1e12flops, 2e6tokens")
    t.add_argument("--seed", type=int, help="random seed (integer >= 0)")
    t.add_argument("--precision", help="fp32 or bf16 (autocast)")
    t.add_argument("--corpus", help="a corpus name or a local file / folder of text")
    t.add_argument("--technique", action="append", default=[], metavar="NAME[:k=v,...]",
                   help="a registered technique and its parameters, e.g. prune:keep_fraction=0.5 (repeatable; "
                        "see 'effitrain techniques')")
    t.add_argument("--no-cache", action="store_true",
                   help="train even if an identical run is in the run cache (the new run replaces it); "
                        "EFFITRAIN_RUN_CACHE=0 turns the cache off")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--nproc", type=int, default=1, help="data parallel over N spawned processes (gloo on CPU, "
                   "NCCL on GPUs; with --technique ouroboros:groups=N a pipeline, one process per group); "
                   "under torchrun the group comes from the environment instead")
    t.add_argument("--json", action="store_true", help="end with the summary as one line of JSON")

    b = sub.add_parser("bench", help="training-step throughput, FLOPs and MFU on this device",
                       description="Time training steps of the model on synthetic masked batches: "
                                   "median tokens/s, FLOPs per step, MFU, peak memory.")
    b.add_argument("--profile", help="smoke, cpu or gpu: vocabulary, length, batch, precision (default as train)")
    b.add_argument("--preset", help="model size: tiny, mini, small or base (default: the profile's)")
    b.add_argument("--seq-len", type=int, help="tokens per row (default: the profile's)")
    b.add_argument("--batch", type=int, help="rows per step (default: the profile's)")
    b.add_argument("--precision", help="fp32, bf16 (autocast) or fp16 (autocast + grad scaler; GPU only)")
    for flag, what in (("hidden", "hidden size"), ("layers", "encoder layers"), ("heads", "attention heads"),
                       ("ffn", "FFN inner size"), ("vocab", "vocabulary size")):
        b.add_argument(f"--{flag}", type=int, help=f"{what} (default: the preset's / profile's)")
    b.add_argument("--attention", help="attention kernel: sdpa (fused) or math (written out)")
    b.add_argument("--optimizer-kernel", dest="optimizer_kernel", help="AdamW: auto, for-loop, foreach or fused")
    b.add_argument("--compile", action="store_const", const=True, default=None, help="torch.compile the model")
    b.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    b.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    b.add_argument("--seed", type=int, help="random seed (integer >= 0)")
    b.add_argument("--json", action="store_true", help="end with the result as one line of JSON")

    s = sub.add_parser("speedrun", help="race a candidate against a track's baseline; records must beat the last at p < 0.01",
                       description="Train the track baseline, the latest record and a candidate (the baseline "
                                   "config with a recipe, --set changes and techniques) seed by seed in rotating "
                                   "order, each stopped at the track's target val loss; report seconds and FLOPs to "
                                   "target, the speed-up with its interval and the one-sided test against the "
                                   "record (paired by seed in this sitting), and write "
                                   "the attempt's folder (records/<track>/NN-name/ when it is a record, else "
                                   "records/<track>/candidates/).")
    s.add_argument("--track", default="cpu", help="smoke, gpu-smoke, cpu or gpu (default cpu)")
    s.add_argument("--name", default="", help="the candidate's name (its folder's name)")
    s.add_argument("--recipe", help="a named recipe on top of the track's baseline: bert, 24h-bert or cramming")
    s.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="sets",
                   help="change one config field, e.g. --set optim.lr=5e-3 --set budget=900steps (repeatable)")
    s.add_argument("--technique", action="append", default=[], metavar="NAME[:k=v,...]", help="a technique (repeatable)")
    s.add_argument("--runs", type=int, help="seeds 0..N-1, each trained for the baseline and the candidate "
                                            "(default: the track's)")
    s.add_argument("--notes", default="", help="the write-up: what changed and why it helps (goes to notes.md)")
    s.add_argument("--records", help="the records folder (default: EFFITRAIN_RECORDS, else the repository's records/)")
    s.add_argument("--no-write", action="store_true", help="report only; write no folder")
    s.add_argument("--leaderboard", action="store_true", help="print the track's records (no training)")
    s.add_argument("--verify", action="store_true",
                   help="recompute every record of the track from its stored histories and test each against the "
                        "one before it (no training)")
    s.add_argument("--check", type=int, metavar="N", help="train record N again here against the baseline (long)")

    sub.add_parser("techniques", help="list the registered techniques, their parameters and allowed values",
                   description="List every registered technique: the first line of its card and its parameters.")

    sub.add_parser("lab", help="open the lesson notebooks in JupyterLab (other arguments go to jupyter lab)",
                   description="Start JupyterLab on the repository's notebooks/ folder; "
                               "any further arguments are passed to `jupyter lab`.")
    return parser


def _join_dash_values(argv: Sequence[str]) -> list[str]:
    """`--budget -5s` → `--budget=-5s`, so the value reaches validation (and its message names the field)."""
    out, i = [], 0
    argv = list(argv)
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out.extend(argv[i:])
            break
        if a in _VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and argv[i + 1] not in _VALUE_OPTIONS and argv[i + 1] not in ("-h", "--help", "--json"):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


# -- output ----------------------------------------------------------------------------------------
def _json_line(d: dict[str, Any]) -> str:
    from effitrain.train.run import finite_or_none

    return json.dumps(finite_or_none(d), allow_nan=False, default=str, separators=(", ", ": "))


def _fmt(x: Any, spec: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return format(x, spec)


def _format_summary(s: dict[str, Any]) -> str:
    tps = s.get("tokens_per_second", float("nan"))
    lines = [
        f"run          {s.get('name', '')} ({s.get('profile', '')} profile): {s.get('status', '')}",
        f"device       {s.get('device', '')}",
        f"trained      {s['steps']} steps, {s['tokens']:,} tokens in {s['seconds']:.1f} s "
        f"({_fmt(tps, ',.0f')} tokens/s)",
        f"FLOPs        {s['flops_measured']:.3e} measured, {s['flops_analytic']:.3e} analytic",
        f"train loss   {_fmt(s['train_loss_first'], '.3f')} → {_fmt(s['train_loss_last'], '.3f')}",
        f"val loss     {_fmt(s['val_loss_first'], '.3f')} → {_fmt(s['val_loss_last'], '.3f')}"
        f"   (accuracy {_fmt(s['val_accuracy_last'], '.1%')})",
        f"context gain {_fmt(s.get('context_gain'), '+.3f')} nats below the unigram baseline "
        f"{_fmt(s.get('unigram_val_loss'), '.3f')} (word frequencies alone; negative: still on the plateau)",
    ]
    if s.get("cached"):
        lines.append("cache        loaded from the run cache (seconds as measured then; --no-cache trains again)")
    if s.get("message"):
        lines.append(f"message      {s['message']}")
    return "\n".join(lines)


# -- commands --------------------------------------------------------------------------------------
def _config(args: argparse.Namespace, names: dict[str, str]) -> Any:
    """The profile's config with the options in `names` (argparse attribute -> config field) that were given."""
    from effitrain.config import parse_assignment, profile_config

    if getattr(args, "recipe", None):
        from effitrain.recipes import recipe

        cfg = recipe(args.recipe, args.profile)
    else:
        cfg = profile_config(args.profile)
    sets = dict(parse_assignment(s) for s in getattr(args, "sets", ()))
    cfg = cfg.replace(**sets) if sets else cfg
    changes = {field: getattr(args, attr) for attr, field in names.items() if getattr(args, attr) is not None}
    return cfg.replace(**changes) if changes else cfg


def _cmd_train(args: argparse.Namespace) -> int:
    from effitrain.techniques import parse_technique

    cfg = _config(args, {"preset": "preset", "budget": "budget", "seed": "seed", "precision": "precision",
                         "corpus": "corpus"})
    techniques = [parse_technique(spec) for spec in args.technique]
    # SIGTERM (a scheduler, `timeout`, a container stop, a closed terminal) ends the run as the Stop
    # button does: after the current step, with a last evaluation and the summary
    stop, terminated = threading.Event(), []

    def _on_term(signum: int, frame: Any) -> None:
        terminated.append(signum)
        stop.set()

    previous = (signal.signal(signal.SIGTERM, _on_term)
                if threading.current_thread() is threading.main_thread() else None)
    try:
        run = _train_run(args, cfg, techniques, stop)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if run is None:
        return EXIT_OK  # rank 0 reports
    summary = run.summary()
    print(_format_summary(summary), flush=True)
    if args.json:
        print(_json_line(summary), flush=True)
    so_far = (f"at step {summary.get('steps', 0)}: the summary above is the run so far; only a completed run is "
              "kept (in the run cache)")
    if terminated:
        print(f"{PROG}: terminated (SIGTERM) {so_far}", file=sys.stderr)
        return EXIT_TERMINATED
    if run.status == "diverged":
        print(f"{PROG}: run diverged: {run.message}", file=sys.stderr)
        return EXIT_FAILED
    if run.status == "interrupted":  # the CLI keeps no run file: say so, not the library's "history and model kept"
        print(f"{PROG}: interrupted {so_far}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _train_run(args: argparse.Namespace, cfg: Any, techniques: list, stop: threading.Event) -> Any:
    from effitrain.train import runcache

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"loss became", category=RuntimeWarning)  # reported below
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:  # started by torchrun
            from effitrain.parallel.layout import torchrun_main

            return torchrun_main(cfg, techniques, progress=not args.no_progress)  # torchrun owns the signals
        if args.nproc != 1:
            return runcache.train_now(cfg, techniques, world_size=args.nproc, progress=not args.no_progress, stop=stop)
        return runcache.cached_train(cfg, techniques, force=args.no_cache, progress=not args.no_progress, stop=stop)


def _cmd_speedrun(args: argparse.Namespace) -> int:
    from effitrain.lab import speedrun as sr

    try:
        return _speedrun(args, sr)
    except (sr.RecordError, FileExistsError) as exc:  # a bad record folder, or one that exists: one line
        raise _UsageError(str(exc)) from None


def _speedrun(args: argparse.Namespace, sr: Any) -> int:
    from effitrain.config import parse_assignment
    from effitrain.techniques import parse_technique

    tr = sr.track(args.track)
    if args.leaderboard or args.verify:
        board = sr.leaderboard(tr.name, args.records)
        print(board.to_string() if len(board) else f"no records on track {tr.name!r} yet", flush=True)
        previous = None
        for rec in sr.records(tr.name, args.records) if args.verify else ():
            test = sr.verify_record(rec, previous)
            print(f"record {rec.number} ({rec.name}): verified from its histories, p = {test.p:.2g}", flush=True)
            previous = rec
        return EXIT_OK
    if args.runs is not None and args.runs < 2:
        raise _UsageError(f"--runs must be at least 2 (a record test needs a spread); got {args.runs}")
    if args.check is not None:
        found = [r for r in sr.records(tr.name, args.records) if r.number == args.check]
        if not found:
            raise _UsageError(f"track {tr.name!r} has no record {args.check}")
        attempt = sr.check_record(found[0], runs=args.runs, root=args.records)
        print(attempt.table().to_string(float_format=lambda v: f"{v:.3g}"), flush=True)
        return EXIT_OK
    if args.recipe:
        from effitrain.recipes import recipe

        cfg = recipe(args.recipe, tr.profile, budget=tr.budget, evals=tr.evals)
    else:
        cfg = tr.baseline()
    sets = dict(parse_assignment(x) for x in args.sets)
    cfg = cfg.replace(**sets) if sets else cfg
    techniques = [parse_technique(spec) for spec in args.technique]
    attempt = sr.speedrun(cfg, techniques, track=tr, runs=args.runs, name=args.name, root=args.records)
    print(attempt.table().to_string(float_format=lambda v: f"{v:.3g}"), flush=True)
    if not args.no_write:
        print(f"written: {attempt.write(args.records, notes=args.notes)}", flush=True)
    return EXIT_OK


def _cmd_techniques(args: argparse.Namespace) -> int:
    import dataclasses

    from effitrain.techniques import REGISTRY, registered

    for name in registered():
        cls = REGISTRY[name]
        print(f"{name}: {(cls.card().splitlines() or [''])[0]}")
        for f in dataclasses.fields(cls.Params):
            allowed = f.metadata.get("choices") or f.metadata.get("range")
            allowed_text = (" one of " + ", ".join(map(str, allowed)) if "choices" in f.metadata
                            else f" in [{allowed[0]}, {allowed[1]}]" if allowed else "")
            print(f"    {f.name} = {f.default!r}{allowed_text}  {f.metadata.get('help', '')}".rstrip())
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from effitrain.bench import bench_training_step
    from effitrain.config import ConfigError
    from effitrain.train.step import check_precision

    cfg = _config(args, {"preset": "preset", "seq_len": "seq_len", "batch": "batch_size",
                         "precision": "precision", "seed": "seed", "hidden": "hidden", "layers": "layers",
                         "heads": "heads", "ffn": "ffn", "vocab": "vocab_size", "attention": "attention",
                         "optimizer_kernel": "optim.kernel", "compile": "run.compile"})
    if args.steps < 1:
        raise ConfigError(f"--steps must be a positive integer; got {args.steps}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be an integer >= 0; got {args.warmup}")
    check_precision(cfg, cfg.run.resolved_device())  # fp16 without a GPU: refused before anything runs
    print(f"benchmarking {args.steps} steps (+{args.warmup} warm-up) of preset {cfg.model.preset}, "
          f"{cfg.run.batch_size} × {cfg.data.seq_len} tokens, {cfg.run.precision}, attention {cfg.model.attention}, "
          f"AdamW {cfg.optim.kernel}{', compiled' if cfg.run.compile else ''} …", file=sys.stderr, flush=True)
    result = bench_training_step(cfg, steps=args.steps, warmup=args.warmup)
    print(result.format(), flush=True)
    if args.json:
        print(_json_line({**result.to_dict(), "profile": cfg.profile}), flush=True)
    return EXIT_OK


def notebooks_dir() -> Path:
    """The repository's notebooks/ folder (a source checkout), else ./notebooks."""
    here = Path(__file__).resolve().parent.parent / "notebooks"
    if here.is_dir():
        return here
    cwd = Path.cwd() / "notebooks"
    if cwd.is_dir():
        return cwd
    raise FileNotFoundError(f"no notebooks/ folder at {here} or {cwd}; run from a source checkout of effitrain")


def lab_command(extra: Sequence[str] = ()) -> list[str]:
    """`python -m jupyterlab` on the lessons' notebooks, with the user's `extra` options last.

    As root (a container, a cloud VM) Jupyter refuses to start without `--allow-root`; the README's
    `make lab` must work there too, so it is added for root.
    """
    cmd = [sys.executable, "-m", "jupyterlab"]
    if not any(a.startswith(("--notebook-dir", "--ServerApp.root_dir")) for a in extra):
        cmd += ["--notebook-dir", str(notebooks_dir())]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not any(a.startswith("--allow-root") for a in extra):
        cmd.append("--allow-root")
    return cmd + list(extra)


def _cmd_lab(extra: Sequence[str]) -> int:
    if importlib.util.find_spec("jupyterlab") is None:
        raise _UsageError("jupyterlab is not installed; pip install jupyterlab")
    try:
        cmd = lab_command(extra)
    except FileNotFoundError as exc:
        raise _UsageError(str(exc)) from None
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(cmd[0], cmd)  # jupyter takes over this process (and its Ctrl-C handling)
        return EXIT_OK  # not reached
    return subprocess.call(cmd)


# -- entry point -----------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    from effitrain.config import ConfigError
    from effitrain.data import CorpusError
    from effitrain.parallel.launch import WorkerError
    from effitrain.train import CheckpointError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        args, extra = parser.parse_known_args(_join_dash_values(argv))
        if args.command == "lab":
            return _cmd_lab(extra)
        if extra:
            raise _UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{PROG} {args.command or ''} --help')"
                              .replace("  ", " "))
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return {"train": _cmd_train, "bench": _cmd_bench, "speedrun": _cmd_speedrun,
                "techniques": _cmd_techniques}[args.command](args)
    except (_UsageError, ConfigError, CorpusError, CheckpointError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever the message
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except WorkerError as exc:  # a rank died: which one and how, in one line, no traceback
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
