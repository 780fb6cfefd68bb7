"""How much power a comparison design has: seed spread from scratch against a shared warm start.

For one config (profile, `--set` changes) this trains the baseline over seeds, and each
`--technique` over the same seeds twice: from scratch, and from the baseline's state at step
`--warm-start` (`run.warm_start`). For targets `--gaps` nats below the unigram line it prints the
steps to target per seed, the baseline's coefficient of variation, and for each technique the
paired speed-up by steps with its 95% interval, its width (×/÷), the seeds a ×/÷1.15 interval
needs, and the same ratio unpaired, so the levers can be compared on the same runs:

    python scripts/power.py --profile cpu --budget 1000steps --evals 40 --seeds 0 1 2 3 4 \\
        --warm-start 300 --gaps 1.5 2.0 --technique prune:score=random,keep_fraction=0.9

Steps to target are deterministic for a seed on CPU (any load, any thread count); runs go through
the run cache, so the lessons that use the same config reuse them. `--jsonl` appends the per-run
rows and the summary for docs/power.md.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

import effitrain as et
from effitrain.config import parse_assignment
from effitrain.stats import Ratio
from effitrain.techniques import parse_technique


def steps_to(run: et.Run, target: float) -> float:
    hit = et.time_to_target(run.history, val_loss=target)
    return math.nan if hit is None else hit["step"]


def final(run: et.Run) -> float:
    return float(run.history.evals[-1]["val_loss"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--budget", default="1000steps")
    p.add_argument("--evals", type=int, default=40, help="evaluations per run (default 40)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--warm-start", type=int, default=300, help="the shared warm start's step (0: none)")
    p.add_argument("--gaps", type=float, nargs="+", default=[1.5, 2.0], help="targets: nats below the unigram line")
    p.add_argument("--technique", action="append", default=[], metavar="NAME[:k=v,...]")
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="FIELD=VALUE")
    p.add_argument("--resolve", type=float, default=1.15)
    p.add_argument("--jsonl", help="append the rows and the summary to this file")
    args = p.parse_args(argv)
    changes = dict(parse_assignment(s) for s in args.sets)
    base_cfg = et.profile_config(args.profile, budget=args.budget, evals=args.evals, **changes)
    data = et.prepare_data(base_cfg.data)
    unigram = data.unigram_val_loss()
    targets = {g: unigram - g for g in args.gaps}
    print(f"{args.profile} profile, {args.budget}, precision {base_cfg.run.precision}, seeds {args.seeds}; "
          f"unigram line {unigram:.3f}; targets " + ", ".join(f"{t:.3f} (−{g:g})" for g, t in targets.items()))

    def train(cfg: et.Config, spec: str | None) -> et.Run:
        t0 = time.perf_counter()
        run = et.cached_train(cfg, [parse_technique(spec)] if spec else [], data=data, progress=False)
        print(f"  {spec or 'baseline'} s{cfg.run.seed} warm {cfg.run.warm_start}: final {final(run):.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return run

    settings: dict[str, dict[int, et.Run]] = {"baseline": {s: train(base_cfg.replace(seed=s), None) for s in args.seeds}}
    for spec in args.technique:
        settings[f"{spec} (scratch)"] = {s: train(base_cfg.replace(seed=s), spec) for s in args.seeds}
        if args.warm_start:
            settings[f"{spec} (warm {args.warm_start})"] = {
                s: train(base_cfg.replace(seed=s, warm_start=args.warm_start), spec) for s in args.seeds}
    rows, summary = [], []
    for label, runs in settings.items():
        for s, run in runs.items():
            rows.append({"setting": label, "seed": s, "final_val_loss": round(final(run), 4),
                         **{f"steps_to_gap_{g:g}": round(steps_to(run, t), 1) for g, t in targets.items()}})
    print()
    for g, target in targets.items():
        base = [steps_to(settings["baseline"][s], target) for s in args.seeds]
        cv = statistics.stdev(base) / statistics.mean(base) if all(map(math.isfinite, base)) else math.nan
        print(f"target {target:.3f} (unigram − {g:g}): baseline steps {[round(b) for b in base]}, CV {cv:.1%}")
        for label, runs in settings.items():
            if label == "baseline":
                continue
            tech = [steps_to(runs[s], target) for s in args.seeds]
            warm = int(label.endswith(f"(warm {args.warm_start})")) * args.warm_start
            ref = base  # the baseline continued from its own warm start is the same curve (tests/test_warm.py)
            if not all(map(math.isfinite, tech + ref)):
                print(f"  {label}: not reached by every seed {[round(t) if math.isfinite(t) else None for t in tech]}")
                continue
            ref_after, tech_after = [b - warm for b in ref], [t - warm for t in tech]
            if min(ref_after + tech_after) <= 0:
                print(f"  {label}: target reached before the warm start")
                continue
            paired, unpaired = Ratio.of(ref_after, tech_after, paired=True), Ratio.of(ref_after, tech_after)
            need = paired.seeds_for(args.resolve)
            item = {"gap": g, "setting": label, "steps": [round(t) for t in tech], "ratio": round(paired.ratio, 4),
                    "paired": [round(paired.lo, 4), round(paired.hi, 4)], "paired_width": round(paired.width, 4),
                    "paired_sd_log": round(paired.sd, 4), "unpaired": [round(unpaired.lo, 4), round(unpaired.hi, 4)],
                    "unpaired_width": round(unpaired.width, 4), "seeds_for_resolve": need,
                    "verdict": paired.verdict(args.resolve)}
            summary.append(item)
            print(f"  {label}: steps {item['steps']}; speed-up by steps {paired.ratio:.3f}, paired "
                  f"[{paired.lo:.3f}, {paired.hi:.3f}] (×/÷{paired.width:.3f}, sd of log ratio {paired.sd:.3f}, "
                  f"{need} seeds for ×/÷{args.resolve:g}); unpaired [{unpaired.lo:.3f}, {unpaired.hi:.3f}] "
                  f"(×/÷{unpaired.width:.3f}); {item['verdict']}")
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            meta = {"profile": args.profile, "budget": args.budget, "precision": base_cfg.run.precision,
                    "warm_start": args.warm_start, "unigram": round(unigram, 4), "changes": changes,
                    "date": time.strftime("%Y-%m-%d")}
            f.write(json.dumps({**meta, "rows": rows, "summary": summary}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
