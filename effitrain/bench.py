"""Training-step throughput on the current device: tokens/s, FLOPs per step, MFU, peak memory.

    import effitrain as et
    from effitrain.bench import bench_training_step
    result = bench_training_step(et.profile_config("cpu", preset="tiny"), steps=20, warmup=3)
    result.tokens_per_second, result.mfu, result.to_dict()

What is timed is the trainer's own step, `effitrain.train.step.TrainStep`: forward with the sparse
MLM head, cross-entropy, backward, gradient clipping (when the config asks for it), AdamW step,
zero_grad. The batches are synthetic but realistic: packed rows of
[CLS] … [SEP] whose ids follow a Zipf law (as words do), masked with `mask_tokens` (15%, 80/10/10).
They are prepared before timing, as a data loader would overlap them with the step. Warm-up
steps are excluded; every timed step is timed on its own (synchronizing on CUDA) and the median
is reported, so a hiccup of the machine does not move the number.

MFU = achieved FLOP/s (measured FLOPs of a step ÷ median step time) ÷ `measure_peak_flops`, the
measured matmul peak of this device in this precision.

The helpers (`synthetic_ids`, `synthetic_batches`, `make_train_step`, `time_steps`, `device_name`,
`peak_memory`) are public so notebooks and `scripts/bench_vs_hf.py` time things the same way.
"""
from __future__ import annotations

import datetime as _dt
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from effitrain.config import Config, ConfigError
from effitrain.data import MaskedBatch, mask_tokens
from effitrain.data.tokenizer import CLS, SEP, SPECIAL_TOKENS
from effitrain.model import BertForMLM, analytic_flops, count_parameters
from effitrain.train.memory import max_rss_bytes
from effitrain.train.flops import count_flops, measure_peak_flops, sync
from effitrain.train.run import finite_or_none
from effitrain.techniques.base import StepContext
from effitrain.train.step import (TrainStep, attention_recompute, autocast_for, check_fits, check_precision, compile_seconds,
                                  make_optimizer)

ZIPF_EXPONENT = 1.1  # unigram frequencies of subword vocabularies fall off roughly as rank^-1.1


# -- inputs ------------------------------------------------------------------------------------
def synthetic_ids(batch: int, seq_len: int, vocab_size: int, generator: torch.Generator,
                  exponent: float = ZIPF_EXPONENT) -> torch.Tensor:
    """(batch, seq_len) packed rows `[CLS] w w … w [SEP]`, the w drawn from a Zipf law over real-token ids."""
    first = len(SPECIAL_TOKENS)
    if vocab_size <= first:
        raise ConfigError(f"vocab_size must be > {first}; got {vocab_size}")
    ranks = torch.arange(1, vocab_size - first + 1, dtype=torch.float64)
    weights = ranks.pow(-exponent)
    ids = torch.multinomial(weights, batch * seq_len, replacement=True, generator=generator) + first
    ids = ids.view(batch, seq_len)
    ids[:, 0] = CLS
    ids[:, -1] = SEP
    return ids


def synthetic_batches(config: Config, count: int = 4, vocab_size: int | None = None, seed: int = 0,
                      device: torch.device | str = "cpu") -> list[MaskedBatch]:
    """`count` masked batches of the config's batch size, length, vocabulary and mask rate."""
    vocab = vocab_size or config.data.vocab_size
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = synthetic_ids(config.run.batch_size, config.data.seq_len, vocab, g)
        out.append(mask_tokens(ids, config.data.mask_prob, vocab, g).to(torch.device(device)))
    return out


# -- the step and its timing ---------------------------------------------------------------------
def make_train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: Config,
                    device: torch.device, loss_of: Callable[[Any], torch.Tensor] | None = None, *,
                    step_model: torch.nn.Module | None = None) -> Callable[[Any], float]:
    """One optimizer step on one batch, the trainer's own `TrainStep` (grad_accum = 1); returns the loss.

    `loss_of(batch)` computes the loss (default: effitrain's MLM loss of a `MaskedBatch`), so another
    model, e.g. Hugging Face's in scripts/bench_vs_hf.py, is timed by the very same step.
    `step_model`: what the forward runs (e.g. `torch.compile(model)`); default `model`.
    """
    forward = None if loss_of is None else (lambda _model, batch: loss_of(batch))
    step = TrainStep(model, optimizer, config, device, step_model=step_model, forward=forward)
    ctx = StepContext.standalone(config, device)
    return lambda batch: step([batch], ctx).loss


def time_steps(fn: Callable[[int], Any], steps: int, warmup: int = 0,
               device: torch.device | str = "cpu") -> list[float]:
    """Call `fn(i)` `warmup` times untimed, then `steps` times, each timed on its own (seconds)."""
    for i in range(warmup):
        fn(i)
    sync(device)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        fn(warmup + i)
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


# -- the machine ---------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device | str) -> str:
    """`NVIDIA H100 80GB HBM3` or `cpu: AMD EPYC (2 threads)`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {_cpu_model()} ({torch.get_num_threads()} threads)"


def reset_peak_memory(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device | str) -> tuple[int, str]:
    """(bytes, what was measured): CUDA max allocated since the last reset, or the process's max RSS."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda max_memory_allocated"
    return max_rss_bytes(), "process max RSS"


# -- the result ----------------------------------------------------------------------------------
@dataclass
class BenchResult:
    preset: str
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    parameters: int
    batch_size: int
    seq_len: int
    predicted_per_step: int  # M: positions the sparse head computes logits for
    precision: str
    compile: bool
    attention: str  # model.attention: sdpa or math
    optimizer_kernel: str  # optim.kernel as configured, and what AdamW got: see optimizer_used
    optimizer_used: str
    device: str
    device_type: str
    date: str
    torch_version: str
    warmup: int
    step_seconds: list[float] = field(repr=False)
    compile_seconds: float  # torch.compile's compiling during the warm-up (0 eager); never in step_seconds
    flops_measured_per_step: float
    flops_analytic_per_step: float
    peak_flops: float  # measured matmul FLOP/s of this device in this precision
    peak_memory_bytes: int
    peak_memory_kind: str
    final_loss: float

    @property
    def steps(self) -> int:
        return len(self.step_seconds)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def median_step_seconds(self) -> float:
        return statistics.median(self.step_seconds)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_per_step / self.median_step_seconds

    @property
    def achieved_flops(self) -> float:
        return self.flops_measured_per_step / self.median_step_seconds

    @property
    def mfu(self) -> float:
        return self.achieved_flops / self.peak_flops if self.peak_flops > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(steps=self.steps, tokens_per_step=self.tokens_per_step,
                 median_step_seconds=self.median_step_seconds, tokens_per_second=self.tokens_per_second,
                 achieved_flops=self.achieved_flops, mfu=self.mfu)
        return d

    def format(self) -> str:
        s = sorted(self.step_seconds)
        lo, hi = s[0], s[-1]
        return "\n".join([
            f"model        {self.preset}: hidden {self.hidden}, {self.layers} layers, {self.heads} heads, "
            f"ffn {self.ffn}, vocab {self.vocab_size}, {self.parameters / 1e6:.2f}M parameters",
            f"batch        {self.batch_size} × {self.seq_len} = {self.tokens_per_step} tokens, "
            f"{self.predicted_per_step} predicted (sparse head), {self.precision}"
            + (", compiled" if self.compile else ""),
            f"kernels      attention {self.attention}, AdamW {self.optimizer_used} (optim.kernel {self.optimizer_kernel})",
            f"device       {self.device}",
            f"steps        {self.steps} timed after {self.warmup} warm-up; "
            f"median {self.median_step_seconds * 1e3:.1f} ms (min {lo * 1e3:.1f}, max {hi * 1e3:.1f})",
            f"throughput   {self.tokens_per_second:,.0f} tokens/s",
            f"FLOPs/step   {self.flops_measured_per_step:.3e} measured, {self.flops_analytic_per_step:.3e} analytic",
            f"achieved     {self.achieved_flops / 1e9:,.1f} GFLOP/s of a measured {self.peak_flops / 1e9:,.1f} "
            f"GFLOP/s matmul peak: MFU {self.mfu:.1%}",
            f"peak memory  {self.peak_memory_bytes / 2**20:,.0f} MiB ({self.peak_memory_kind})",
            *([f"compiling    {self.compile_seconds:.1f} s in the warm-up (not in the step times)"]
              if self.compile else []),
            f"date         {self.date}, torch {self.torch_version}",
        ])


def optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    """Which AdamW implementation an optimizer runs: fused, foreach or for-loop."""
    d = optimizer.defaults
    return "fused" if d.get("fused") else "for-loop" if d.get("foreach") is False else "foreach"


# -- the benchmark -------------------------------------------------------------------------------
def bench_training_step(config: Config, steps: int = 20, warmup: int = 3, *, vocab_size: int | None = None,
                        device: torch.device | str | None = None, seed: int | None = None,
                        peak_flops: float | None = None, distinct_batches: int = 4, count: bool = True) -> BenchResult:
    """Time `steps` training steps of `BertForMLM(config.model)` after `warmup` untimed ones.

    `vocab_size` defaults to `config.data.vocab_size`, `device` to `config.run.resolved_device()`,
    `seed` to `config.run.seed`, `peak_flops` to `measure_peak_flops(device, precision)`. `count=False`
    skips torch's FLOP counter (an extra pass): the measured FLOPs are then the analytic ones.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"bench steps must be a positive integer; got {steps!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"bench warmup must be an integer >= 0; got {warmup!r}")
    device = torch.device(device) if device is not None else config.run.resolved_device()
    check_precision(config, device)
    vocab = vocab_size or config.data.vocab_size
    seed = config.run.seed if seed is None else seed
    if config.run.threads:
        torch.set_num_threads(config.run.threads)

    check_fits(config, device, vocab)
    torch.manual_seed(seed)
    model = BertForMLM(config.model, vocab).to(device).train()
    optimizer = make_optimizer(model, config, device)
    batches = synthetic_batches(config, distinct_batches, vocab, seed + 1, device)

    # FLOPs of one forward+backward, measured by torch's counter and by formula (as the trainer does)
    b0 = batches[0]
    ctx = StepContext.standalone(config, device, seed)
    B, T = b0.input_ids.shape
    analytic = analytic_flops(config.model, vocab, B, T, b0.labels.numel(),
                              attention_recompute=attention_recompute(config, device))
    measured = count_flops(lambda: TrainStep(model, optimizer, config, device).micro_step(b0, ctx, None, 1)) \
        if count else analytic
    optimizer.zero_grad(set_to_none=True)

    step_model = torch.compile(model) if config.run.compile else model
    step = make_train_step(model, optimizer, config, device, step_model=step_model)
    losses: list[float] = []
    reset_peak_memory(device)
    compiled_before = compile_seconds()
    seconds = time_steps(lambda i: losses.append(step(batches[i % len(batches)])), steps, warmup, device)
    compiling = compile_seconds() - compiled_before  # in the warm-up, where torch.compile compiles
    mem, mem_kind = peak_memory(device)
    peak = peak_flops if peak_flops is not None else measure_peak_flops(device.type, config.run.precision)

    m = config.model
    return BenchResult(
        preset=m.preset, hidden=m.hidden, layers=m.layers, heads=m.heads, ffn=m.ffn, vocab_size=vocab,
        parameters=count_parameters(model), batch_size=B, seq_len=T, predicted_per_step=int(b0.labels.numel()),
        precision=config.run.precision, compile=config.run.compile, attention=m.attention,
        optimizer_kernel=config.optim.kernel, optimizer_used=optimizer_kind(optimizer), device=device_name(device),
        device_type=device.type, date=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        torch_version=torch.__version__, warmup=warmup, step_seconds=seconds, compile_seconds=compiling,
        flops_measured_per_step=float(measured), flops_analytic_per_step=float(analytic), peak_flops=float(peak),
        peak_memory_bytes=mem, peak_memory_kind=mem_kind, final_loss=float(losses[-1]),
    )


__all__ = ["BenchResult", "bench_training_step", "synthetic_ids", "synthetic_batches", "make_train_step",
           "autocast_for", "time_steps", "sync", "device_name", "peak_memory", "reset_peak_memory",
           "finite_or_none", "ZIPF_EXPONENT"]
