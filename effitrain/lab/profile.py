"""Where a training step's time goes: the trainer's own step under `torch.profiler`, by operator group.

    from effitrain.lab import profile_steps
    from effitrain.lab.figures import profile_figure
    df = profile_steps(et.profile_config("cpu"), steps=3)          # seconds per step by group
    profile_figure(df, title="tiny model on this CPU")            # ms per step, one bar per group
    profile_steps(cfg.replace(attention="math"))                  # the attention kernel written out

What runs is what `effitrain.bench` times: `BertForMLM(config.model)`, the config's optimizer and
the trainer's `TrainStep` (forward with the sparse MLM head, cross-entropy, backward, clipping,
AdamW, zero_grad) on batches prepared before the profiled steps (`synthetic_batches`, or rows of
`data.train` masked as the trainer masks them). `warmup` steps run first, unprofiled; then
`steps` steps run under the profiler, timed as a whole by `time.perf_counter`.

The groups come from labels the code puts on its regions (`torch.profiler.record_function`):

    attention          "effitrain/attention": each block's attention sublayer (qkv projection, rotary,
                       the attention kernel, the output projection)
    FFN matmuls        "effitrain/ffn": each block's feed-forward sublayer (up, GELU / GLU, down)
    embeddings / head  "effitrain/embeddings" (token + position embeddings, their LayerNorm) and
                       "effitrain/head" (gathering the predicted positions, the MLM head)
    optimizer          "effitrain/optimizer" (the optimizer step in `TrainStep`) and torch's own
                       "Optimizer.step#…" / "Optimizer.zero_grad#…" labels
    other              the rest: the blocks' LayerNorms, residual adds and dropout, the loss
                       (cross-entropy), gradient clipping, gradient accumulation into .grad
                       (AccumulateGrad), and the time between ops (Python) that no event covers

**Backward ops are attributed to the forward region that created them.** A label does not enclose
the backward (autograd runs it later, outside the `with`), but every autograd node records the
sequence number of the forward op that created it, and the profiler gives the backward's
`autograd::engine::evaluate_function: …Backward0` events that same number (and the forward thread).
So a backward event is charged to the region of the last forward op carrying its number (the op
that created the node). AccumulateGrad nodes carry no number, and the backward of ops outside every
region (the loss, the LayerNorms) belongs to no region: both land in "other". The column
"backward seconds" says how much of each row ran in the backward pass.

Nothing is counted twice: each event contributes its *self* time (its time minus its children's),
charged to the innermost label around it. On CPU that is self CPU time (all of it on the thread
that runs the step, so the events sum to at most the wall time); on CUDA it is the GPU kernel time
each op launched (self device time), and "other" then also holds the time the GPU sat idle
(waiting for Python, or for a sync). "other" is the wall time minus the labelled groups, so the
groups sum to "total (wall)"; `df.attrs` keeps what the profiler saw outside the labels
("other_measured_seconds") and what no event covered ("uncovered_seconds").

The profiler slows every op a little (a few µs each), so the absolute numbers run above
`effitrain.bench`'s; the shares are what this view is for. Under `run.compile` the labels vanish
into compiled graphs (the model's work then lands in "other").
"""
from __future__ import annotations

import time
from typing import Iterable, Sequence

import pandas as pd
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity

from effitrain.bench import device_name, synthetic_batches, synthetic_ids
from effitrain.config import Config, ConfigError
from effitrain.data import MaskedBatch, PretrainData, mask_tokens
from effitrain.data.sampler import EpochSampler
from effitrain.model import BertForMLM
from effitrain.techniques.base import StepContext, Technique, resolve
from effitrain.train.flops import sync
from effitrain.train.step import TrainStep, keep_rng, make_optimizer, param_groups

GROUPS = ("attention", "FFN matmuls", "convolution", "embeddings / head", "optimizer", "other")  # convolution: GroupBERT
WALL = "total (wall)"
REGIONS = {"effitrain/attention": "attention", "effitrain/ffn": "FFN matmuls", "effitrain/conv": "convolution",
           "effitrain/embeddings": "embeddings / head", "effitrain/head": "embeddings / head",
           "effitrain/optimizer": "optimizer"}
TORCH_OPTIMIZER_LABELS = ("Optimizer.step#", "Optimizer.zero_grad#")  # torch.optim labels its own steps
BACKWARD_NODE = "autograd::engine::evaluate_function: "


def profile_steps(config: Config, data: PretrainData | None = None, steps: int = 3, warmup: int = 1,
                  techniques: Iterable[Technique] = (), *, device: torch.device | str | None = None,
                  seed: int | None = None) -> pd.DataFrame:
    """Seconds per training step by operator group (see the module docstring for the groups).

    Rows: "attention", "FFN matmuls", "embeddings / head", "optimizer", "other", "total (wall)";
    columns: "seconds" (per step), "ms", "share" (of the wall time) and "backward seconds" (the
    part of "seconds" that ran in the backward pass). `data`: profile on its training rows
    (default: synthetic Zipf rows as `effitrain.bench`); `techniques`: their model, optimizer,
    batch, loss, backward and update events run as in the trainer (dataset events do not: they
    pick rows, they do not change what a step costs). Each step has `run.grad_accum` micro-batches.
    The global random state is left as it was.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"profile steps must be a positive integer; got {steps!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"profile warmup must be an integer >= 0; got {warmup!r}")
    device = torch.device(device) if device is not None else config.run.resolved_device()
    seed = config.run.seed if seed is None else seed
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    techniques = resolve(techniques)
    vocab = data.vocab_size if data is not None else config.data.vocab_size

    with keep_rng(device):
        torch.manual_seed(seed)
        ctx = StepContext(step=0, fraction=0.0, tokens=0, seconds=0.0, flops=0.0, config=config, device=device,
                          rng=torch.Generator().manual_seed(seed + 2), data=data)
        model: torch.nn.Module = BertForMLM(config.model, vocab)
        for t in techniques:
            model = t.on_model(model, ctx)
        model.to(device).train()
        optimizer = _optimizer(model, config, device, techniques, ctx)
        step_model = torch.compile(model) if config.run.compile else model
        step = TrainStep(model, optimizer, config, device, techniques, step_model=step_model)
        raws = _raw_batches(config, data, (warmup + steps) * config.run.grad_accum, seed, device, techniques, ctx)

        def run_step(i: int) -> None:
            c = StepContext(step=i, fraction=0.0, tokens=0, seconds=0.0, flops=0.0, config=config, device=device,
                            rng=ctx.rng, data=data)
            batches = raws[i * config.run.grad_accum:(i + 1) * config.run.grad_accum]
            for t in techniques:
                batches = [t.on_masked_batch(b, model, c) for b in batches]
            step(batches, c)
            for t in techniques:
                t.after_step(model, c)

        for i in range(warmup):
            run_step(i)
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch.profiler.profile(activities=activities) as prof:
            t0 = time.perf_counter()
            for i in range(steps):
                run_step(warmup + i)
            sync(device)
            wall = time.perf_counter() - t0
        events = [e for e in prof.events() if e.device_type == DeviceType.CPU]

    per = {g: [0.0, 0.0] for g in GROUPS}  # group → [seconds, backward seconds], summed over the steps
    measured_other = 0.0
    for group, backward, us in attribute(events, "cuda" if device.type == "cuda" else "cpu"):
        s = us / 1e6
        if group is None:
            measured_other += s
            group = "other"
        per[group][0] += s
        per[group][1] += s if backward else 0.0
    labelled = sum(per[g][0] for g in GROUPS if g != "other")
    covered = labelled + measured_other
    per["other"][0] = max(0.0, wall - labelled)  # what the labels leave: unlabelled ops and the gaps between ops
    rows = {g: {"seconds": v / steps, "backward seconds": b / steps} for g, (v, b) in per.items()}
    rows[WALL] = {"seconds": wall / steps, "backward seconds": float("nan")}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df["ms"] = df["seconds"] * 1e3
    df["share"] = df["seconds"] / (wall / steps)
    df = df[["seconds", "ms", "share", "backward seconds"]]
    df.index.name = "group"
    m = config.model
    df.attrs.update(
        steps=steps, warmup=warmup, device=device_name(device), device_type=device.type,
        time_kind="GPU kernel time (self device time)" if device.type == "cuda" else "self CPU time",
        attention=m.attention, model=f"{m.preset}: hidden {m.hidden}, {m.layers} layers, {m.heads} heads",
        batch=f"{config.run.batch_size} × {config.data.seq_len}" + (f" × {config.run.grad_accum} micro-batches"
                                                                    if config.run.grad_accum > 1 else ""),
        precision=config.run.precision, techniques=[t.name for t in techniques],
        other_measured_seconds=measured_other / steps, uncovered_seconds=max(0.0, wall - covered) / steps,
        events=len(events))
    return df


def attribute(events: Sequence, time_kind: str = "cpu") -> list[tuple[str | None, bool, float]]:
    """(group or None, in the backward?, µs) for every event of a profile: its self CPU time
    (time_kind "cpu") or the self device time of the kernels it launched ("cuda"), charged to the
    innermost label around it, or, inside a backward node, to the region of the forward op whose
    sequence number the node carries."""
    def label(e) -> str | None:
        if e.name in REGIONS:
            return REGIONS[e.name]
        return "optimizer" if e.name.startswith(TORCH_OPTIMIZER_LABELS) else None

    def enclosing(e) -> tuple[str | None, object | None]:
        """The innermost label or backward node around e (e included): (group, None) or (None, node)."""
        while e is not None:
            g = label(e)
            if g is not None:
                return g, None
            if e.name.startswith(BACKWARD_NODE):
                return None, e
            e = e.cpu_parent
        return None, None

    # the forward op that created each autograd node: the last op recorded with its sequence number
    creators: dict[tuple[int, int], tuple[float, str | None]] = {}
    for e in events:
        if e.sequence_nr < 0 or e.name.startswith(BACKWARD_NODE):
            continue
        group, node = enclosing(e)
        if node is not None:
            continue  # an op run by the backward, not a forward op
        key = (e.thread, e.sequence_nr)
        start = e.time_range.start
        if key not in creators or start >= creators[key][0]:
            creators[key] = (start, group)

    out = []
    for e in events:
        us = float(e.self_device_time_total if time_kind == "cuda" else e.self_cpu_time_total)
        if us <= 0:
            continue
        group, node, backward = None, None, False
        walk = e
        while walk is not None:  # a label inside the backward wins; else the node's forward region; else an outer label
            group, node = enclosing(walk)
            if node is None:
                break
            backward = True
            group = creators.get((node.fwd_thread, node.sequence_nr), (0.0, None))[1]
            if group is not None:
                break
            walk = node.cpu_parent
        out.append((group, backward, us))
    return out


def _optimizer(model: torch.nn.Module, config: Config, device: torch.device, techniques: Sequence[Technique],
               ctx: StepContext) -> torch.optim.Optimizer:
    groups = param_groups(model, config.optim.weight_decay)
    for t in techniques:
        opt = t.on_optimizer(model, groups, ctx)
        if opt is not None:
            return opt
    return make_optimizer(model, config, device, groups)


def _raw_batches(config: Config, data: PretrainData | None, count: int, seed: int, device: torch.device,
                 techniques: Sequence[Technique], ctx: StepContext) -> list[MaskedBatch]:
    """`count` masked micro-batches: rows of `data.train` (in the trainer's epoch order) or synthetic
    ones (`effitrain.bench`), each through the techniques' on_batch, masked with `mask_tokens`."""
    if data is None and not techniques:
        return synthetic_batches(config, count, config.data.vocab_size, seed + 1, device)
    g = torch.Generator().manual_seed(seed + 1)
    vocab = data.vocab_size if data is not None else config.data.vocab_size
    sampler = EpochSampler(len(data.train), seed) if data is not None else None
    out = []
    for _ in range(count):
        if sampler is not None:
            ids = data.train.batch(sampler.next(config.run.batch_size, ctx))
        else:
            ids = synthetic_ids(config.run.batch_size, config.data.seq_len, vocab, g)
        for t in techniques:
            ids = t.on_batch(ids, ctx)
        out.append(mask_tokens(ids, config.data.mask_prob, vocab, g).to(device))
    return out


__all__ = ["GROUPS", "WALL", "REGIONS", "attribute", "profile_steps"]
