#!/usr/bin/env python
"""The device script: every GPU measurement the project waits for, in one command of at most 9 minutes.

    python scripts/gpu_check.py --out $OUT --deadline 530        # on the GPU: every section, by value
    python scripts/gpu_check.py --device cpu --quick --out /tmp/g  # the dry run on a CPU (CI runs it)
    python scripts/gpu_check.py --only notebooks --lessons 00,10   # some sections, some lessons

A lent GPU gives about 15 minutes in all, machine start included, and one command at most 10, so
the sections run in order of value and each result is written (`<out>/gpu_check.json`, replaced
whole) as soon as it is measured: a later failure or the time limit loses nothing already written.
An exception in one section is recorded and the next runs; with `--deadline`, a section whose
estimated seconds no longer fit is recorded as skipped instead of started. docs/gpu.md says how to
carry the packages the GPU image lacks (scripts/gpu_wheels.sh) and the exact command.

Sections, in order:

  notebooks  every lesson notebook end to end under the gpu-smoke profile (CUDA, bf16, smoke sizes;
             EFFITRAIN_DEVICE=cpu on a CPU), in a fresh run cache: pass or fail and seconds per lesson
  peak       the device's bf16 and fp32 matmul rate (the MFU denominator, `measure_peak_flops`)
  bench      tokens/s and MFU of the base preset (seq 128, batch 128, bf16), eager and torch.compile'd
  baseline   the gpu profile's shared baseline (`design("gpu")`) over 3 seeds from scratch: final val
             loss, steps to 0.5 … 2.5 nats below the unigram line per seed and their spread; the runs
             are stored as a reference set (`<out>/<device>-<date>-gpu-baseline.json.gz`) that
             lessons show beside a learner's own runs
  electra    lesson 04 at the lesson's gpu shape (small preset, seq 128, batch 128, 2,000 MLM steps):
             one MLM run, ELECTRA at its measured FLOPs, each evaluation's unigram gap (MLM) and RTD gap
             below the constant guess; `count_detector`; both and a random init probed and fine-tuned
  replicas   Crossbow's hardware-efficiency claim: samples/s of k vmapped SMA replicas of batch b
             against one model with batch k·b (`replica_throughput`); `auto_replicas`' k
  pipeline   Ouroboros: measured per-group forward/backward seconds of the base model (seq 128,
             batch 32) for K = 2, 4 and the K-device time model (`pipeline_time`)
  crossbow   lesson 08's Crossbow comparison on this device (batch 8, SMA 4 × 8, batch 32 at η and 4η)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the GPU image runs the checkout without installing it


def _import_package() -> None:
    """effitrain and what the sections use, imported in `main` after the package versions are written:
    on a GPU image a missing or too-old dependency then leaves a result that says which."""
    global et, design, device_name, save_reference, auto_replicas, crossbow_settings, group_seconds
    global pipeline_time, replica_throughput
    import effitrain as et
    from effitrain.lab.design import design
    from effitrain.lab.reference import device_name, save_reference
    from effitrain.lab.scaling import auto_replicas, crossbow_settings, group_seconds, pipeline_time, replica_throughput

# every section with its estimated seconds on one H100/H200 (what --deadline budgets with)
SECTIONS = {"notebooks": 240, "peak": 10, "bench": 60, "baseline": 240, "electra": 150, "replicas": 90,
            "pipeline": 30, "crossbow": 120}
GAPS = (0.5, 1.0, 1.5, 2.0, 2.5)  # nats below the unigram line: the steps to each, per seed


@dataclass
class Check:
    """One call of the script: its options and the results written so far."""

    out: Path
    device: str
    quick: bool
    lessons: tuple[str, ...] = ()
    results: dict = field(default_factory=dict)

    def save(self) -> None:
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=1, default=str))
        os.replace(tmp, self.out / "gpu_check.json")


PACKAGES = ("datasets", "pyarrow", "huggingface-hub", "tokenizers", "torchao", "peft", "transformers", "plotly",
            "ipywidgets", "nbclient", "ipykernel", "numpy", "pandas", "scipy")


def package_versions() -> dict[str, str | None]:
    """The versions this call ran with (the GPU image's own, or the carried wheels'); None = missing."""
    from importlib.metadata import PackageNotFoundError, version
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _table(df) -> list[dict]:
    return json.loads(df.reset_index().to_json(orient="records", default_handler=str))


def _lesson_files(wanted: tuple[str, ...]) -> list[Path]:
    files = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if wanted:
        unknown = [w for w in wanted if not any(f.name.startswith(w) for f in files)]
        if unknown:
            raise SystemExit(f"--lessons: no notebook starts with {', '.join(unknown)}; have "
                             f"{', '.join(f.name[:2] for f in files)}")
        files = [f for f in files if any(f.name.startswith(w) for w in wanted)]
    return files


def notebooks(c: Check) -> dict:
    """Each lesson notebook under gpu-smoke, in a fresh run cache; the result grows per notebook."""
    import nbformat
    from nbclient import NotebookClient
    out: dict = {"profile": "gpu-smoke", "device": c.device, "lessons": {}}
    c.results["sections"]["notebooks"] = {"result": out}
    cache = Path(tempfile.mkdtemp(prefix="effitrain-gpu-smoke-"))
    saved = {k: os.environ.get(k) for k in ("EFFITRAIN_PROFILE", "EFFITRAIN_DEVICE", "EFFITRAIN_CACHE", "PYTHONPATH")}
    os.environ.update(EFFITRAIN_PROFILE="gpu-smoke", EFFITRAIN_DEVICE=c.device, EFFITRAIN_CACHE=str(cache),
                      PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), saved["PYTHONPATH"]))))
    try:
        for path in _lesson_files(c.lessons):
            nb = nbformat.read(path, as_version=4)
            t0 = time.perf_counter()
            try:
                NotebookClient(nb, timeout=300, kernel_name="python3",
                               resources={"metadata": {"path": str(path.parent)}}).execute()
                row = {"passed": True}
            except Exception as e:  # the notebook's error, in one line; the next notebook still runs
                what = f"{e.ename}: {e.evalue}" if hasattr(e, "ename") else f"{type(e).__name__}: {e}"
                row = {"passed": False, "error": " ".join(what.split())[:400]}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            out["lessons"][path.stem] = row
            print(f"{path.stem}: {'passed' if row['passed'] else 'FAILED'} in {row['seconds']} s", flush=True)
            c.save()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(cache, ignore_errors=True)
    out["passed"] = sum(r["passed"] for r in out["lessons"].values())
    out["seconds"] = round(sum(r["seconds"] for r in out["lessons"].values()), 1)
    return out


def peak(c: Check) -> dict:
    size = 1024 if c.quick else 0
    return {"device": device_name(c.device), "torch": torch.__version__,
            "bf16_flops": et.measure_peak_flops(c.device, "bf16", size=size),
            "fp32_flops": et.measure_peak_flops(c.device, "fp32", size=size)}


def bench(c: Check) -> dict:
    from effitrain.bench import bench_training_step
    cfg = et.profile_config("gpu", preset="tiny" if c.quick else "base", batch_size=4 if c.quick else 128)
    out = {}
    # compiling on a CPU takes minutes: the dry run checks the eager path only
    variants = {"eager": cfg} if c.quick else {"eager": cfg, "compile": cfg.replace(compile=True),
                                               "compile, batch 256": cfg.replace(compile=True, batch_size=256)}
    for name, conf in variants.items():
        r = bench_training_step(conf, steps=2 if c.quick else 30, warmup=1 if c.quick else 5)
        out[name] = r.to_dict()
        print(r.format(), flush=True)
    return out


def steps_to_gaps(run, unigram: float) -> dict[str, float | None]:
    """{gap: step at which the val curve first reaches unigram − gap (interpolated), or None}."""
    out = {}
    for g in GAPS:
        hit = et.time_to_target(run.history, val_loss=unigram - g)
        out[f"{g:g}"] = None if hit is None else round(hit["step"], 1)
    return out


def spread(per_seed: list[dict]) -> dict[str, dict]:
    """Mean, standard deviation and coefficient of variation over seeds of the steps to each gap that
    every seed reached."""
    out = {}
    for g in GAPS:
        steps = [d[f"{g:g}"] for d in per_seed]
        if len(steps) > 1 and all(s is not None for s in steps):
            m, sd = statistics.mean(steps), statistics.stdev(steps)
            out[f"{g:g}"] = {"mean": round(m, 1), "sd": round(sd, 1), "cv": round(sd / m, 3)}
    return out


def baseline(c: Check) -> dict:
    d = design("gpu-smoke" if c.quick else "gpu")
    seeds = (0, 1, 2)
    cfg = d.config()
    data = et.prepare_data(cfg.data)
    unigram = float(data.unigram_val_loss())
    runs, per_seed = [], []
    for s in seeds:
        run = et.train(d.config(seed=s), data=data, name=f"baseline s{s}", progress=False)
        print(run.summary_line(), flush=True)
        runs.append(run)
        per_seed.append(steps_to_gaps(run, unigram))
    ref = save_reference(runs, c.out, what=f"{d.profile} baseline", profile=d.profile, device=device_name(c.device))
    return {"design": {"profile": d.profile, "budget": d.budget, "evals": d.evals, "seeds": list(seeds)},
            "unigram_val_loss": unigram, "runs": [r.summary_line() for r in runs],
            "final_val_loss": [r.summary()["val_loss_last"] for r in runs],
            "steps_to_gap": per_seed, "spread": spread(per_seed), "reference_file": ref.name}


def replicas(c: Check) -> dict:
    q = c.quick
    out = {}
    shapes = {"tiny seq64 b8": et.profile_config("cpu", batch_size=8, precision="bf16"),
              "small seq128 b8": et.profile_config("cpu", preset="small", seq_len=128, batch_size=8,
                                                   precision="bf16")}
    ks = (1, 2) if q else (1, 2, 4, 8, 16, 32, 64)
    for name, cfg in shapes.items():
        rows = replica_throughput(cfg, ks, steps=2 if q else 20, warmup=1 if q else 5, rounds=1 if q else 3,
                                  plain=True)
        out[name] = rows
        print(name, json.dumps(rows, indent=None), flush=True)
    chosen, tried = auto_replicas(shapes["tiny seq64 b8"], max_replicas=2 if q else 64, threshold=0.05,
                                  steps=2 if q else 20, warmup=1 if q else 5)
    out["auto_replicas tiny seq64 b8"] = {"chosen": chosen, "tried": tried}
    return out


def pipeline(c: Check) -> dict:
    q = c.quick
    cfg = et.profile_config("gpu", batch_size=4 if q else 32, preset="tiny" if q else "base")
    out = {}
    for K in (2, 4):
        rows = group_seconds(cfg, K, repeats=2 if q else 10)
        out[f"K={K}"] = {"groups": rows,
                         **{f"{bw / 1e9:g} GB/s": pipeline_time(rows, steps=1000, bandwidth=bw)
                            for bw in (25e9, 450e9)}}
        print(f"K={K}", json.dumps(out[f"K={K}"]), flush=True)
    return out


def electra(c: Check) -> dict:
    q = c.quick
    from effitrain.model import BertForMLM
    from effitrain.lab.electra import count_detector, rtd_gap
    cfg = (et.profile_config("smoke", budget="20steps", evals=2) if q else
           et.profile_config("gpu", preset="small", budget="2000steps", evals=10))
    data = et.prepare_data(cfg.data)
    unigram = data.unigram_val_loss()
    mlm = et.train(cfg, data=data, name="MLM s0", progress=False)
    print(mlm.summary_line(), flush=True)
    flops = mlm.summary()["flops_measured"]
    el = et.train(cfg.replace(budget=f"{flops:.6g}flops"), [et.technique("electra")], data=data,
                  name="ELECTRA 100% s0", progress=False)
    print(el.summary_line(), flush=True)
    evals = el.history.evals
    out = {"unigram_val_loss": unigram, "count_detector": count_detector(data),
           "mlm": {"line": mlm.summary_line(), "summary": mlm.summary(),
                   "val_loss": [(e["step"], e["val_loss"]) for e in mlm.history.evals]},
           "electra": {"line": el.summary_line(), "summary": el.summary(),
                       "rtd_gap": [(e["step"], rtd_gap(e)) for e in evals],
                       "rtd_accuracy": [(e["step"], e["val_rtd_accuracy"]) for e in evals],
                       "all_original_accuracy": 1 - evals[-1]["val_replaced_share"],
                       "generator_val_loss": [(e["step"], e["val_loss"]) for e in evals]}}
    print(json.dumps({"unigram": unigram, "rtd_gap": out["electra"]["rtd_gap"]}), flush=True)
    try:  # effitrain.lab needs the notebook packages (ipywidgets, plotly), which a GPU box may lack
        from effitrain.lab import tables
    except ImportError as e:
        out["downstream"] = f"not computed here ({e})"
        return out
    names = ("sotu-era",) if q else ("sotu-era", "sotu-party")
    tasks = [et.downstream_task(n, data, seq_len=32).subset(*((128, 64) if q else (None, None))) for n in names]
    groups = {"MLM": [mlm], "ELECTRA 100%": [el], "random init": [BertForMLM(cfg.model, data.vocab_size)]}
    out["downstream"] = _table(tables.downstream_groups(groups, tasks,
                                                        settings={"finetune": {"steps": 5 if q else 200}}))
    print(json.dumps(out["downstream"]), flush=True)
    return out


def crossbow(c: Check) -> dict:
    q = c.quick
    steps, seeds, b, k = (6, 2, 4, 2) if q else (300, 3, 8, 4)
    cfg = et.profile_config("cpu", evals=6, precision="bf16")
    data = et.prepare_data(cfg.data)
    settings, base = crossbow_settings(cfg, batch=b, replicas=k, steps=steps)
    runs, lines = [], []
    for name, (c, techniques) in settings.items():
        for s in range(seeds):
            r = et.train(c.replace(seed=s), [et.technique(t, **p) for t, p in techniques], data=data,
                         name=f"{name} s{s}", progress=False)
            print(r.summary_line(), flush=True)
            lines.append(r.summary_line())
            runs.append(r)
    out = {"runs": lines, "run_dicts": [r.to_dict() for r in runs]}  # et.Run.from_dict rebuilds them
    try:  # effitrain.lab needs the notebook packages (ipywidgets, plotly), which a GPU box may lack
        from effitrain.lab import compare
    except ImportError as e:
        out["compare"] = f"not computed here ({e}); rebuild the runs with et.Run.from_dict and compare them"
        return out
    out["by tokens"] = _table(compare(runs, baseline=base, speedup_by="tokens"))
    out["by seconds"] = _table(compare(runs, baseline=base, speedup_by="seconds"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check_out", help="folder for gpu_check.json and the reference sets")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where everything runs (default: cuda when available); sets EFFITRAIN_DEVICE")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script itself (the CPU dry run)")
    p.add_argument("--lessons", default="", help="the notebooks section's lessons by number, e.g. 00,10 (default all)")
    p.add_argument("--deadline", type=float, default=0.0,
                   help="seconds this call may take: a section whose estimate no longer fits is skipped (0 = none)")
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SECTIONS]
    if bad:
        p.error(f"--only: unknown section(s) {', '.join(bad)}; allowed: {', '.join(SECTIONS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device here; use --device cpu (with --quick) for the dry run")
    os.environ["EFFITRAIN_DEVICE"] = args.device  # every profile runs on the chosen device
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = Check(out_dir, args.device, args.quick, tuple(x.strip() for x in args.lessons.split(",") if x.strip()))
    _lesson_files(c.lessons)  # a bad --lessons fails now, not minutes in
    c.results.update({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
                      "quick": args.quick, "packages": package_versions(), "sections": {}})
    c.save()
    try:
        _import_package()
    except Exception as e:  # e.g. datasets against an older pyarrow on the GPU image
        c.results["error"] = f"import effitrain: {type(e).__name__}: {' '.join(str(e).split())}"
        c.save()
        print(f"== {c.results['error']}; package versions in {out_dir / 'gpu_check.json'}", flush=True)
        return 1
    c.results["device"] = device_name(args.device)
    start = time.perf_counter()
    for name in wanted:
        used = time.perf_counter() - start
        estimate = SECTIONS[name] * (0.1 if args.quick else 1)
        if args.deadline and used + estimate > args.deadline:
            c.results["sections"][name] = {"skipped": f"{used:.0f} s used, ~{estimate:.0f} s more would pass the "
                                                      f"{args.deadline:.0f} s deadline"}
            print(f"== {name} skipped ({c.results['sections'][name]['skipped']})", flush=True)
            c.save()
            continue
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            value = globals()[name](c)
        except Exception as e:  # recorded; the next section still runs
            traceback.print_exc()
            value = {"error": f"{type(e).__name__}: {' '.join(str(e).split())}"}
        c.results["sections"][name] = {"seconds": round(time.perf_counter() - t0, 1), "result": value}
        c.results["seconds"] = round(time.perf_counter() - start, 1)
        c.save()
        print(f"== {name} done in {c.results['sections'][name]['seconds']} s", flush=True)
    errors = [n for n, v in c.results["sections"].items() if isinstance(v.get("result"), dict) and "error" in v["result"]]
    failed = [k for k, v in c.results["sections"].get("notebooks", {}).get("result", {}).get("lessons", {}).items()
              if not v["passed"]]
    print(f"== done in {time.perf_counter() - start:.0f} s; sections with errors: {errors or 'none'}; "
          f"notebooks failed: {failed or 'none'}", flush=True)
    return 1 if errors or failed else 0


if __name__ == "__main__":
    sys.exit(main())
