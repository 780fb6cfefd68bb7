"""How much power a comparison design has: seed spread from scratch against a shared warm start.

For a profile's comparison design (`effitrain.lab.design`: budget, seeds, warm start, target) this
trains the baseline over the design's seeds from scratch and from the shared warm start (the warm
seed's state past the plateau), and each `--technique` from the warm start (and, with
`--scratch`, from scratch too). For each target it prints the steps to target per seed (counted
from the warm start for warm runs), the baseline's coefficient of variation, and for each
technique the speed-up by steps, paired by seed, with its interval, its width (×/÷), the seeds
a ×/÷1.15 interval needs, and the same ratio unpaired:

    python scripts/power.py --profile cpu --technique prune:score=random,keep_fraction=0.9 --scratch \\
        --jsonl docs/measurements/cpu-power.jsonl

Steps to target are deterministic for a seed on CPU (any load, any thread count); the runs go
through the run cache, so the lessons that use the same design reuse them. `--jsonl` appends one
line per run as it finishes and one per summary row.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import time

import effitrain as et
from effitrain.config import parse_assignment
from effitrain.lab.design import design
from effitrain.stats import Ratio
from effitrain.techniques import parse_technique


def steps_to(run: et.Run, target: float) -> float:
    hit = et.time_to_target(run.history, val_loss=target)
    return math.nan if hit is None else hit["step"]


def final(run: et.Run) -> float:
    return float(run.history.evals[-1]["val_loss"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu", help="the comparison design of this profile (effitrain.lab.design)")
    p.add_argument("--budget", help="override the design's budget")
    p.add_argument("--seeds", type=int, nargs="+", help="override the design's seeds")
    p.add_argument("--gaps", type=float, nargs="+", help="targets, nats below the unigram line (default: the design's)")
    p.add_argument("--technique", action="append", default=[], metavar="NAME[:k=v,...]")
    p.add_argument("--scratch", action="store_true", help="also train every technique from scratch")
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="FIELD=VALUE")
    p.add_argument("--jsonl", help="append one line per run, then the summary, to this file")
    args = p.parse_args(argv)
    d = design(args.profile)
    d = dataclasses.replace(d, **{k: v for k, v in (("budget", args.budget), ("seeds", tuple(args.seeds or ())))
                                  if v})
    changes = dict(parse_assignment(s) for s in args.sets)
    data = et.prepare_data(d.config(**changes).data)
    unigram = data.unigram_val_loss()
    targets = {g: unigram - g for g in (args.gaps or [d.gap])}
    meta = {"profile": d.profile, "budget": d.budget, "seeds": list(d.seeds), "changes": changes,
            "precision": d.config(**changes).run.precision, "unigram": round(unigram, 4),
            "date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine()}

    def record(item: dict) -> None:
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps({**meta, **item}) + "\n")

    def train(cfg: et.Config, spec: str | None, label: str) -> et.Run:
        t0 = time.perf_counter()
        run = et.cached_train(cfg, [parse_technique(spec)] if spec else [], data=data, progress=False)
        row = {"setting": label, "seed": cfg.run.seed, "warm_start": cfg.run.warm_start, "final": round(final(run), 4),
               **{f"steps_to_gap_{g:g}": round(steps_to(run, t), 1) for g, t in targets.items()}}
        record({"run": row})
        print(f"  {label} s{cfg.run.seed}: final {final(run):.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        return run

    warm_cfg = d.warm(data, **changes)
    S = warm_cfg.run.warm_start
    print(f"{d.profile} design: {d.budget}, seeds {list(d.seeds)}, precision {meta['precision']}; unigram line "
          f"{unigram:.3f}; warm start: seed {d.warm_seed}'s step {S}; targets "
          + ", ".join(f"{t:.3f} (−{g:g})" for g, t in targets.items()), flush=True)
    settings: dict[str, dict[int, et.Run]] = {
        "baseline (scratch)": {s: train(d.config(seed=s, **changes), None, "baseline (scratch)") for s in d.seeds},
        "baseline (warm)": {s: train(warm_cfg.replace(seed=s), None, "baseline (warm)") for s in d.seeds}}
    for spec in args.technique:
        if args.scratch:
            settings[f"{spec} (scratch)"] = {s: train(d.config(seed=s, **changes), spec, f"{spec} (scratch)")
                                             for s in d.seeds}
        settings[f"{spec} (warm)"] = {s: train(warm_cfg.replace(seed=s), spec, f"{spec} (warm)") for s in d.seeds}
    print()
    for g, target in targets.items():
        for kind, offset in (("scratch", 0), ("warm", S)):
            base = [steps_to(settings[f"baseline ({kind})"][s], target) - offset for s in d.seeds]
            ok = all(math.isfinite(b) and b > 0 for b in base)
            cv = statistics.stdev(base) / statistics.mean(base) if ok else math.nan
            print(f"target {target:.3f} (unigram − {g:g}), baseline ({kind}): steps after step {offset}: "
                  f"{[round(b, 1) for b in base]}, CV {cv:.1%}")
            record({"summary": {"gap": g, "setting": f"baseline ({kind})", "steps": base, "cv": cv}})
            for label, runs in settings.items():
                if label.startswith("baseline") or not label.endswith(f"({kind})"):
                    continue
                tech = [steps_to(runs[s], target) - offset for s in d.seeds]
                if not ok or not all(math.isfinite(t) and t > 0 for t in tech):
                    print(f"  {label}: not reached by every seed ({[round(t) if math.isfinite(t) else None for t in tech]})")
                    record({"summary": {"gap": g, "setting": label, "steps": tech, "reached": False}})
                    continue
                paired, unpaired = Ratio.of(base, tech, paired=True), Ratio.of(base, tech)
                item = {"gap": g, "setting": label, "steps": tech, "ratio": paired.ratio,
                        "paired": [paired.lo, paired.hi], "paired_width": paired.width, "paired_sd_log": paired.sd,
                        "unpaired": [unpaired.lo, unpaired.hi], "unpaired_width": unpaired.width,
                        "seeds_for_resolve": paired.seeds_for(d.resolve), "verdict": paired.verdict(d.resolve)}
                record({"summary": item})
                print(f"  {label}: steps {[round(t) for t in tech]}; speed-up by steps {paired.ratio:.3f}, paired "
                      f"[{paired.lo:.3f}, {paired.hi:.3f}] (×/÷{paired.width:.3f}, sd of log ratio {paired.sd:.3f}, "
                      f"{item['seeds_for_resolve']} seeds for ×/÷{d.resolve:g}); unpaired [{unpaired.lo:.3f}, "
                      f"{unpaired.hi:.3f}] (×/÷{unpaired.width:.3f}); {item['verdict']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
