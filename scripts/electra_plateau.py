"""How far ELECTRA's discriminator gets past its own plateau: the RTD gap over training, over seeds.

The discriminator's plateau is the best constant guess (the binary entropy of the replaced share):
a discriminator that has learned only *how many* tokens are replaced sits on it. `rtd_gap` is how
many nats its validation RTD loss is below that line. This script trains ELECTRA under one config
(profile, `--set` changes, the technique's parameters) over seeds and prints, per run, the gap at
every evaluation, the final RTD accuracy against "all original", the gap that word-pair counts
alone reach (`count_detector`), and the generator's val loss against the unigram line, so settings can be compared by how soon the discriminator takes off:

    python scripts/electra_plateau.py --profile cpu --steps 400 --seeds 0 1 2
    python scripts/electra_plateau.py --steps 400 --param generator_width=0.5 --set optim.warmup=0.5
    python scripts/electra_plateau.py --steps 8000 --evals 16 --jsonl electra.jsonl --label long

The gaps are deterministic for a seed on CPU; the seconds depend on what else runs.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import effitrain as et
from effitrain.config import parse_assignment
from effitrain.lab.electra import count_detector, rtd_gap


def measure(cfg: et.Config, params: dict[str, Any], data: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    run = et.train(cfg, [et.technique("electra", **params)], data=data, progress=False)
    evals = run.history.evals
    last = evals[-1]
    return {"seed": cfg.run.seed, "steps": run.summary()["steps"], "seconds": round(time.perf_counter() - t0, 1),
            "gap": [(int(e["step"]), round(rtd_gap(e), 4)) for e in evals],
            "rtd_accuracy": round(float(last["val_rtd_accuracy"]), 4),
            "all_original_accuracy": round(1 - float(last["val_replaced_share"]), 4),
            "generator_val_loss": round(float(last["val_loss"]), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu", help="smoke, cpu or gpu (default cpu)")
    p.add_argument("--steps", type=int, default=400, help="training steps (default 400, the lesson's cpu budget)")
    p.add_argument("--evals", type=int, default=8, help="evaluations per run (default 8)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="pre-training seeds (default 0)")
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="FIELD=VALUE",
                   help="a config change, e.g. optim.warmup=0.5 (repeatable)")
    p.add_argument("--param", action="append", default=[], dest="params", metavar="NAME=VALUE",
                   help="an electra parameter, e.g. generator_width=0.5 (repeatable; 'effitrain techniques')")
    p.add_argument("--jsonl", help="append one JSON line per run to this file")
    p.add_argument("--label", default="", help="a name for this setting in the output")
    args = p.parse_args(argv)
    changes = dict(parse_assignment(s) for s in args.sets)
    params = dict(parse_assignment(s) for s in args.params)
    gaps = []
    base = et.profile_config(args.profile, budget=f"{args.steps}steps", evals=args.evals, **changes)
    data = et.prepare_data(base.data)  # the seeds share the data: prepared, and its lines computed, once
    lines = {"unigram_val_loss": round(data.unigram_val_loss(), 3),
             "count_detector_gap": round(count_detector(data)["gap"], 4)}
    for seed in args.seeds:
        row = {"label": args.label, "profile": args.profile, "changes": changes, "params": params,
               **measure(base.replace(seed=seed), params, data), **lines}
        gaps.append(row["gap"][-1][1])
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
    finite = [g for g in gaps if math.isfinite(g)]
    if finite:
        print(f"{args.label or 'electra'}: final RTD gap {sum(finite) / len(finite):.4f} nats "
              f"(mean of {len(finite)} seed(s); 0 = the constant guess)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
