"""What more devices would buy, measured on this one: samples/s of k SMA replicas against k (Crossbow's
tuning of k), Ouroboros' per-group forward/backward seconds and the time model of a K-device pipeline,
and the settings of lesson 08's Crossbow comparison.

    rows = replica_throughput(cfg, (1, 2, 4, 8), plain=True)   # samples/s per k, and one model at batch k·b
    k, tried = auto_replicas(cfg, max_replicas=16)             # add a replica while samples/s grows > 5%
    t = pipeline_time(group_seconds(cfg, 4), steps=1000, bandwidth=25e9)   # one device vs four, PCIe
    settings, baseline = crossbow_settings(cfg, batch=8, replicas=4)       # {label: (config, techniques)}

The methods themselves are `effitrain.techniques.sma` and `effitrain.techniques.ouroboros`; these are
measurements and lesson settings around them (kept out of the technique modules, whose source is part
of the run cache's key).
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import torch

from effitrain.bench import synthetic_batches, time_steps
from effitrain.config import Config, ConfigError
from effitrain.model import BertForMLM
from effitrain.techniques.base import StepContext
from effitrain.techniques.ouroboros import blocks_of, group_forward
from effitrain.techniques.sma import SMATechnique
from effitrain.train.flops import sync as device_sync
from effitrain.train.step import TrainStep, autocast_for, make_optimizer, param_groups
from effitrain.train.warm import variant


# -- the comparison of lesson 08 -----------------------------------------------------------------------
def crossbow_settings(config: Config, batch: int = 8, replicas: int = 4, steps: int = 300,
                      lr: float | None = None) -> tuple[dict[str, tuple[Config, list]], str]:
    """Crossbow's comparison at equal samples (`steps` steps of k·b rows, as a token budget): batch b;
    SMA with k replicas of b; batch k·b at lr η; batch k·b at lr k·η with a 10% warm-up (the linear
    scaling rule). η = `lr`, default half the config's. With `run.warm_start` set, the baseline (batch
    k·b, lr η, this budget) is the warm start's and every setting continues its state. Returns ({label: (config, [(technique,
    params)])}, the baseline's label, "batch k·b, lr η")."""
    b, k = batch, replicas
    eta = config.optim.lr / 2 if lr is None else lr
    base = config.replace(budget=f"{steps * k * b * config.data.seq_len}tokens", lr=eta, batch_size=k * b)
    baseline = f"batch {k * b}, lr η"
    # from a warm start every setting continues the baseline's state (warm.variant: a plain replace otherwise)
    return {f"batch {b}": (variant(base, batch_size=b), []),
            f"SMA {k} × {b}": (variant(base, batch_size=b), [("sma", {"replicas": k})]),
            baseline: (base, []),
            f"batch {k * b}, lr {k}η, warm-up": (variant(base, lr=k * eta, warmup=0.1), [])}, baseline


# -- samples/s against k --------------------------------------------------------------------------------
def _rate(step: Any, batches: Sequence[Any], per_step: int, rows: int, steps: int, warmup: int,
          ctx: StepContext, device: torch.device) -> float:
    """Rows per second of `step` over `steps` timed calls (after `warmup`), alternating two sets of batches."""
    times = time_steps(lambda i: step(batches[(i % 2) * per_step:(i % 2 + 1) * per_step], ctx), steps, warmup, device)
    return steps * rows / sum(times)


def replica_throughput(config: Config, replicas: Sequence[int] = (1, 2, 4), *, steps: int = 5, warmup: int = 2,
                       vocab_size: int | None = None, rounds: int = 1, plain: bool = False) -> list[dict[str, Any]]:
    """Samples/s of an SMA step with k replicas of the config's batch b, for each k (synthetic batches of
    the config's shape; the replicas vmapped as in training); median over `rounds`. Rows: replicas,
    rows/step, samples/s, ms/step; plain=True adds "one model, batch k·b samples/s": a single model
    trained on the same k·b rows per step, timed the same way (what the replicas compete with)."""
    device = config.run.resolved_device()
    vocab = vocab_size or config.data.vocab_size
    ctx = StepContext.standalone(config, device, config.run.seed)
    b = config.run.batch_size
    rows = []
    for k in replicas:
        rates, plain_rates = [], []
        for _ in range(rounds):
            torch.manual_seed(config.run.seed)
            model = BertForMLM(config.model, vocab).to(device).train()
            sma = SMATechnique(replicas=k)
            opt = sma.on_optimizer(model, param_groups(model, config.optim.weight_decay), ctx)
            step = sma.on_step(TrainStep(model, opt, config, device), ctx)
            batches = synthetic_batches(config, 2 * k, vocab, config.run.seed + 1, device)
            rates.append(_rate(step, batches, k, k * b, steps, warmup, ctx, device))
            if plain:
                big = config.replace(batch_size=k * b)
                single = BertForMLM(config.model, vocab).to(device).train()
                one = TrainStep(single, make_optimizer(single, big, device), big, device)
                big_batches = synthetic_batches(big, 2, vocab, config.run.seed + 1, device)
                plain_rates.append(_rate(one, big_batches, 1, k * b, steps, warmup, ctx, device))
        rate = sorted(rates)[len(rates) // 2]
        row = {"replicas": k, "rows/step": k * b, "samples/s": rate, "ms/step": 1000 * k * b / rate}
        if plain:
            row["one model, batch k·b samples/s"] = sorted(plain_rates)[len(plain_rates) // 2]
        rows.append(row)
    return rows


def auto_replicas(config: Config, max_replicas: int = 8, threshold: float = 0.05, **kwargs: Any) -> tuple[int, list]:
    """Crossbow's tuning of k: add a replica while samples/s grows by more than `threshold` (relative);
    returns the chosen k and the measured rows. Measured once, before training (k then stays fixed, so
    the run's curve does not depend on timing)."""
    if not (isinstance(max_replicas, int) and max_replicas >= 1):
        raise ConfigError(f"auto_replicas: max_replicas must be a positive integer; got {max_replicas!r}")
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ConfigError(f"auto_replicas: threshold must be a number >= 0; got {threshold!r}")
    rows = replica_throughput(config, (1,), **kwargs)
    k = 1
    while k < max_replicas:
        row = replica_throughput(config, (k + 1,), **kwargs)[0]
        gain = row["samples/s"] / rows[-1]["samples/s"] - 1.0
        row["gain"] = gain
        rows.append(row)
        if gain <= threshold:
            break
        k += 1
    return k, rows


# -- what K devices would take ------------------------------------------------------------------------------
def group_seconds(config: Config, groups: int, *, vocab_size: int | None = None, repeats: int = 5,
                  seed: int = 0) -> list[dict[str, float]]:
    """Measured forward and backward seconds of each of the `groups` groups (median of `repeats`), on a
    synthetic batch of the config's shape: the embedding stage with group 0, the head (and its loss)
    with the last group. Rows: group, blocks, forward_s, backward_s, activation_bytes (what crosses
    into the next group: one (B, T, H) tensor)."""
    device = config.run.resolved_device()
    vocab = vocab_size or config.data.vocab_size
    torch.manual_seed(seed)
    model = BertForMLM(config.model, vocab).to(device).train()
    L = len(model.encoder.blocks)
    if not 1 <= groups <= L:
        raise ConfigError(f"group_seconds: groups must be in [1, {L}]; got {groups!r}")
    batch = synthetic_batches(config, 1, vocab, seed + 1, device)[0]
    autocast = autocast_for(config, device)

    def stage(g: int, x: torch.Tensor | None) -> torch.Tensor:
        with autocast():
            return group_forward(model, g, groups, batch, x)

    def sync() -> None:
        device_sync(device)

    rows = []
    inputs: torch.Tensor | None = None
    for g in range(groups):
        fwd, bwd = [], []
        for r in range(repeats + 1):
            x = None if inputs is None else inputs.detach().requires_grad_(True)
            sync()
            t0 = time.perf_counter()
            out = stage(g, x)
            sync()
            t1 = time.perf_counter()
            grad = None if out.dim() == 0 else torch.ones_like(out) / out.numel()
            out.backward(grad)
            sync()
            t2 = time.perf_counter()
            model.zero_grad(set_to_none=True)
            if r:  # the first round warms up
                fwd.append(t1 - t0)
                bwd.append(t2 - t1)
        inputs = out.detach() if out.dim() else None
        rows.append({"group": g, "blocks": len(blocks_of(g, groups, L)),
                     "forward_s": sorted(fwd)[len(fwd) // 2], "backward_s": sorted(bwd)[len(bwd) // 2],
                     "activation_bytes": 0 if inputs is None else inputs.numel() * inputs.element_size()})
    return rows


def pipeline_time(rows: Sequence[dict[str, float]], steps: int, bandwidth: float = 25e9) -> dict[str, float]:
    """The time model of a K-device Ouroboros pipeline, from `group_seconds` rows.

    One device runs every group in turn: Σ_k (F_k + B_k) per step. K devices without backward locking
    run concurrently, so a step takes the slowest device's F_k + B_k plus, not overlapped, sending its
    activation forward and receiving the gradient back (2 · activation bytes / bandwidth; 25 GB/s is
    PCIe 4.0 x16, NVLink is ~10× that). The first K − 1 steps fill the pipeline.

    With a barrier in every step (the real pipeline of `effitrain.parallel.pipeline` has one: the
    global gradient norm for clipping), device k cannot finish a step before the forward has come
    down the chain to it: the step takes max_k (F_0 + … + F_k + the k activations' transfers + B_k).

    Returns seconds per step for one and K devices (without and with the barrier), the total for
    `steps` steps each way, and both speed-ups."""
    K = len(rows)
    one = sum(r["forward_s"] + r["backward_s"] for r in rows)
    sends = [r["activation_bytes"] / bandwidth for r in rows] if K > 1 else [0.0] * K
    comm = 2 * max(sends, default=0.0)
    per = max(r["forward_s"] + r["backward_s"] for r in rows) + comm
    chain, barrier = 0.0, 0.0
    for k, r in enumerate(rows):
        chain += r["forward_s"] + (sends[k - 1] if k else 0.0)
        barrier = max(barrier, chain + r["backward_s"])
    fill = steps + K - 1
    total_one, total_k, total_barrier = steps * one, fill * per, fill * barrier
    return {"groups": K, "one_device_s_per_step": one, "k_devices_s_per_step": per, "communication_s": comm,
            "barrier_s_per_step": barrier, "bubble_steps": K - 1,
            "speedup": total_one / total_k if total_k > 0 else float("nan"),
            "barrier_speedup": total_one / total_barrier if total_barrier > 0 else float("nan")}
