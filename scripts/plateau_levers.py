"""Time past the unigram plateau: steps, tokens, FLOPs and seconds to (unigram − gap) over seeds.

A masked LM first learns token frequencies (val loss ≈ the unigram baseline), sits on a plateau,
and only later drops as attention uses the context. This script trains one config over seeds and
prints, per seed and as the median, when each run first reached `unigram_val_loss − gap`
(`effitrain.time_to_target`, interpolated between evaluations), so levers can be compared:

    python scripts/plateau_levers.py --profile cpu --budget 3000steps --seeds 0 1 2
    python scripts/plateau_levers.py --profile cpu --set model.position=alibi --set data.mask_prob=0.25 \\
        --budget 120s --seeds 0 1 2 --evals 20 --jsonl levers.jsonl --label alibi+mask25

Steps, tokens and FLOPs to target are deterministic for a seed (independent of machine load);
seconds are wall seconds of training (evaluation excluded) and depend on what else runs.
`--precision auto` (the default leaves the profile's) picks bf16 where the CPU has AVX-512 bf16 or
AMX (read from /proc/cpuinfo) or the GPU supports it, else fp32, and says which.
The sanity column `below` is whether the run's best val loss got below the unigram line at all.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

import effitrain as et


def cpu_has_bf16() -> bool:
    """AVX-512 bf16 or AMX bf16 in /proc/cpuinfo: bf16 autocast runs natively (else it is emulated, slowly)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_precision(device: torch.device) -> tuple[str, str]:
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bf16", "GPU supports bf16") if ok else ("fp32", "GPU without bf16: fp32")
    if cpu_has_bf16():
        return "bf16", "CPU has AVX-512 bf16 / AMX: bf16 autocast"
    return "fp32", "CPU without AVX-512 bf16 / AMX: bf16 would be emulated, fp32 instead"


def parse_value(text: str) -> Any:
    """`3e-3` → float, `4` → int, `true` → True, anything else → the string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_sets(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes section.field=value, e.g. model.position=alibi; got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def measure(cfg: et.Config, gap: float) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"loss became", category=RuntimeWarning)
        run = et.train(cfg, progress=False)
    s = run.summary()
    unigram = float(run.extra["unigram_val_loss"])
    evals = run.history.evals
    best = min(float(e["val_loss"]) for e in evals) if evals else float("nan")
    hit = et.time_to_target(run.history, val_loss=unigram - gap)
    return {"seed": cfg.run.seed, "status": s["status"], "unigram": unigram, "target": unigram - gap,
            "val_first": s["val_loss_first"], "val_last": s["val_loss_last"], "val_best": best,
            "below": best < unigram, "steps_run": s["steps"], "seconds_run": s["seconds"],
            "s_per_step": s["seconds"] / max(1, s["steps"]), "flops_run": s["flops_measured"],
            "hit": hit, "curve": [(int(e["step"]), round(float(e["val_loss"]), 4)) for e in evals]}


def seconds_per_step(cfg: et.Config, steps: int, repeats: int) -> float:
    """The best of `repeats` short runs' training seconds per step (evaluation excluded): the least
    disturbed by whatever else the machine runs. The first steps (warm-up, FLOP counting) are left out."""
    best = float("inf")
    for _ in range(repeats):
        run = et.train(cfg.replace(budget=f"{steps}steps", evals=1), progress=False)
        rows = run.history.steps
        skip = min(10, len(rows) // 4)
        dt = float(rows[-1]["seconds"]) - float(rows[skip - 1]["seconds"] if skip else 0.0)
        best = min(best, dt / (len(rows) - skip))
    return best


def fmt(x: Any, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu", help="smoke, cpu or gpu (default cpu)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a config change, e.g. model.position=alibi, lr=3e-3, data.mask_prob=0.25 (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", help="e.g. 3000steps or 120s (default: the profile's)")
    p.add_argument("--evals", type=int, default=20, help="evaluations per run (default 20)")
    p.add_argument("--gap", type=float, default=1.0, help="target = unigram val loss − gap (default 1.0 nat)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="default: the profile's")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the profile's)")
    p.add_argument("--speed", type=int, default=0, metavar="R",
                   help="also time R short runs of --speed-steps steps and give seconds to target as "
                        "steps to target × the best seconds per step")
    p.add_argument("--speed-steps", type=int, default=80)
    p.add_argument("--label", default="", help="a name for this config in the output")
    p.add_argument("--jsonl", help="append one JSON line per seed (and one for the median) to this file")
    args = p.parse_args(argv)

    changes = parse_sets(args.set)
    changes["evals"] = args.evals
    if args.budget:
        changes["budget"] = args.budget
    if args.threads is not None:
        changes["threads"] = args.threads
    base = et.profile_config(args.profile, **changes)
    if args.precision:
        precision, why = (auto_precision(base.run.resolved_device()) if args.precision == "auto"
                          else (args.precision, "as asked"))
        base = base.replace(precision=precision)
        print(f"precision {precision} ({why})", flush=True)
    label = args.label or (" ".join(args.set) or "profile default")
    print(f"{label}: profile {args.profile}, budget {base.budget}, precision {base.run.precision}, "
          f"{base.model.preset} {base.model.hidden}x{base.model.layers}, V={base.data.vocab_size}, "
          f"T={base.data.seq_len}, B={base.run.batch_size}, target unigram − {args.gap:g}", flush=True)
    print(f"{'seed':>4} {'unigram':>8} {'best':>7} {'last':>7} {'below':>5} {'steps→':>8} {'tokens→':>10} "
          f"{'FLOPs→':>9} {'s→':>7} {'s/step':>7}", flush=True)
    rows = []
    for seed in args.seeds:
        r = measure(base.replace(seed=seed), args.gap)
        r["label"], r["config"] = label, base.replace(seed=seed).to_dict()
        rows.append(r)
        h = r["hit"] or {}
        print(f"{seed:>4} {r['unigram']:8.3f} {r['val_best']:7.3f} {r['val_last']:7.3f} {str(r['below']):>5} "
              f"{fmt(h.get('step'), '.0f'):>8} {fmt(h.get('tokens'), '10.3g'):>10} {fmt(h.get('flops'), '9.3g'):>9} "
              f"{fmt(h.get('seconds'), '7.1f'):>7} {r['s_per_step']:7.4f}"
              + ("" if r["status"] == "completed" else f"  ({r['status']})"), flush=True)
    reached = [r["hit"] for r in rows if r["hit"]]
    median: dict[str, Any] = {"label": label, "median": True, "reached": f"{len(reached)}/{len(rows)}",
                              "val_best": statistics.median(r["val_best"] for r in rows),
                              "s_per_step": min(r["s_per_step"] for r in rows)}
    if len(reached) == len(rows):
        for key in ("step", "tokens", "flops", "seconds"):
            median[key] = statistics.median(h[key] for h in reached)
        print(f"median ({median['reached']} reached): {median['step']:.0f} steps, {median['tokens']:.3g} tokens, "
              f"{median['flops']:.3g} FLOPs, {median['seconds']:.1f} s; best val {median['val_best']:.3f}; "
              f"fastest {median['s_per_step']:.4f} s/step", flush=True)
    else:
        print(f"median: target reached by {median['reached']} seeds; best val {median['val_best']:.3f}", flush=True)
    if args.speed:
        best = seconds_per_step(base, args.speed_steps, args.speed)
        median["s_per_step_best"] = best
        line = f"best of {args.speed} timing runs: {best:.4f} s/step"
        if "step" in median:
            median["seconds_at_best"] = median["step"] * best
            line += f" → {median['seconds_at_best']:.1f} s to target at the median step count"
        print(line, flush=True)
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            for r in rows + [median]:
                f.write(json.dumps(r, default=str) + "\n")
    return 0 if len(reached) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
