#!/usr/bin/env python
"""The GPU measurements of lessons 04, 06 and 08 in one call (a lent GPU's time is short).

    python scripts/gpu_check.py --out results/           # every section, in order of priority
    python scripts/gpu_check.py --only replicas,bench    # some sections
    python scripts/gpu_check.py --quick                  # tiny sizes: checks the script on a CPU

Sections (each writes `<out>/gpu_check.json` as soon as it ends, so a later failure or the time
limit loses nothing already measured; an exception in one section is recorded and the next runs):

  peak       the device's bf16 and fp32 matmul rate (the MFU denominator, `measure_peak_flops`)
  replicas   Crossbow's hardware-efficiency claim: samples/s of k vmapped SMA replicas of batch b
             against one model with batch k·b (`replica_throughput`), for the lesson-08 model
             (tiny, seq 64, b = 8) and a larger one (small, seq 128, b = 8); `auto_replicas`' k
  pipeline   Ouroboros: measured per-group forward/backward seconds of the base model (seq 128,
             batch 32) for K = 2, 4 and the K-device time model (`pipeline_time`) at PCIe and
             NVLink bandwidths
  bench      lesson 06 / issue 14: tokens/s and MFU of the base preset (seq 128, batch 128, bf16),
             eager and torch.compile'd, against the measured bf16 peak
  electra    lesson 04 / issue 12 at the lesson's gpu shape (small preset, seq 128, batch 128, 2,000
             MLM steps): one MLM run, ELECTRA at its measured FLOPs, each evaluation's unigram gap
             (MLM) and RTD gap below the constant guess (the discriminator's plateau; `count_detector`
             says what word-pair counts alone reach), then both
             and a random init probed and fine-tuned (200 steps) on the era and party tasks
  crossbow   lesson 08's Crossbow comparison on this device: batch 8, SMA 4 × 8, batch 32 (lr η),
             batch 32 (lr 4η, warm-up) at equal samples, 3 seeds, compared by samples and by seconds
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

import effitrain as et
from effitrain.techniques.ouroboros import group_seconds, pipeline_time
from effitrain.techniques.sma import auto_replicas, crossbow_settings, replica_throughput

SECTIONS = ("peak", "electra", "replicas", "pipeline", "bench", "crossbow")


def _table(df) -> list[dict]:
    return json.loads(df.reset_index().to_json(orient="records", default_handler=str))


def peak(q: bool) -> dict:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    size = 1024 if q else 0
    return {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__,
            "bf16_flops": et.measure_peak_flops(dev, "bf16", size=size),
            "fp32_flops": et.measure_peak_flops(dev, "fp32", size=size)}


def replicas(q: bool) -> dict:
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


def pipeline(q: bool) -> dict:
    cfg = et.profile_config("gpu", batch_size=4 if q else 32, preset="tiny" if q else "base")
    out = {}
    for K in (2, 4):
        rows = group_seconds(cfg, K, repeats=2 if q else 10)
        out[f"K={K}"] = {"groups": rows,
                         **{f"{bw / 1e9:g} GB/s": pipeline_time(rows, steps=1000, bandwidth=bw)
                            for bw in (25e9, 450e9)}}
        print(f"K={K}", json.dumps(out[f"K={K}"]), flush=True)
    return out


def bench(q: bool) -> dict:
    from effitrain.bench import bench_training_step
    cfg = et.profile_config("gpu", preset="tiny" if q else "base", batch_size=4 if q else 128)
    out = {}
    variants = {"eager": cfg, "compile": cfg.replace(compile=True),
                "compile, batch 256": cfg.replace(compile=True, batch_size=8 if q else 256)}
    for name, c in variants.items():
        r = bench_training_step(c, steps=2 if q else 30, warmup=1 if q else 5)
        out[name] = r.to_dict()
        print(r.format(), flush=True)
    return out


def electra(q: bool) -> dict:
    from effitrain.model import BertForMLM
    from effitrain.techniques.electra import count_detector, rtd_gap
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


def crossbow(q: bool) -> dict:
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
    p.add_argument("--out", default="gpu_check_out", help="folder for gpu_check.json")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script itself")
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SECTIONS]
    if bad:
        p.error(f"--only: unknown section(s) {', '.join(bad)}; allowed: {', '.join(SECTIONS)}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": {}}
    for name in wanted:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            value = globals()[name](args.quick)
        except Exception as e:  # recorded; the next section still runs
            traceback.print_exc()
            value = {"error": f"{type(e).__name__}: {e}"}
        results["sections"][name] = {"seconds": round(time.perf_counter() - t0, 1), "result": value}
        tmp = out_dir / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(results, indent=1, default=str))
        os.replace(tmp, out_dir / "gpu_check.json")
        print(f"== {name} done in {results['sections'][name]['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
