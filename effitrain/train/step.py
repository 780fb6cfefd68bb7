"""One optimizer step as a unit, and the side-effect-free FLOP meter.

    step = TrainStep(model, optimizer, config, device, techniques)
    result = step(batches, ctx, lr)      # micro-batches → forward/loss → backward → before_update → clip → update

The trainer, `effitrain.bench` and `scripts/bench_vs_hf.py` all call this same step. Each
micro-batch's loss is weighted by its share of the step's predicted tokens, so a step's gradient
is the mean over every predicted token of the step however its rows were split (with equal
shares, as packed rows have, that is exactly loss / k).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from effitrain.config import FP16_NEEDS_GPU, Config, ConfigError
from effitrain.data import MaskedBatch
from effitrain.techniques.base import LossInputs, StepContext, Technique
from effitrain.train.flops import count_flops


# -- precision, randomness, optimizer ---------------------------------------------------------------
def autocast_for(config: Config, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """The precision policy: bf16 = autocast to bfloat16, fp16 = autocast to float16 (CUDA only; the
    step scales its loss, see `TrainStep`), fp32 = nothing."""
    if config.run.precision == "fp16":
        check_precision(config, device)
        return lambda: torch.autocast(device.type, dtype=torch.float16)
    if config.run.precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def check_precision(config: Config, device: torch.device) -> None:
    """fp16 needs a CUDA device: on a CPU it is refused in one line (bf16 is the CPU's low precision)."""
    if config.run.precision == "fp16" and device.type != "cuda":
        raise ConfigError(FP16_NEEDS_GPU)


def compile_seconds() -> float:
    """Wall seconds torch.compile has spent compiling in this process so far (dynamo's own clock:
    tracing, inductor code generation, the backward's graph), 0 where torch does not report it."""
    try:
        from torch._dynamo.utils import calculate_time_spent

        return float(calculate_time_spent().get("total_wall_time", 0.0))
    except Exception:  # a torch without the metric: nothing to subtract
        return 0.0


def keep_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """Restores the global RNG (and the CUDA one of `device`) on exit: work done inside, such as
    counting FLOPs or training a helper model, leaves the random stream of the run untouched."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def attention_recompute(config: Config, device: torch.device) -> bool:
    """Whether the attention kernel recomputes its scores in the backward (for the analytic FLOPs):
    model.attention "math" keeps the probabilities for the backward (no recompute); so does CPU SDPA
    with dropout (it takes its own math path); the fused kernels recompute."""
    if config.model.attention == "math":
        return False
    return not (device.type == "cpu" and config.model.dropout > 0)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and embeddings (BERT's TF code spares biases and LayerNorm only)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            plain = name == "bias" or isinstance(module, (torch.nn.LayerNorm, torch.nn.Embedding))
            (no_decay if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, config: Config, device: torch.device,
                   groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """The config's AdamW with the implementation `optim.kernel` names: "for-loop" (one parameter at a
    time), "foreach" (multi-tensor ops), "fused" (one kernel; refused in one line where the device has
    none), "auto" (fused where available, else foreach). The same update in every case."""
    o = config.optim
    kwargs = dict(lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    groups = groups if groups is not None else param_groups(model, o.weight_decay)
    if o.kernel in ("auto", "fused"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError) as exc:
            if o.kernel == "fused":
                raise ConfigError(f"optim.kernel 'fused' is not available here ({str(exc).splitlines()[0][:120]}); "
                                  "use 'auto', 'foreach' or 'for-loop'") from None
            # auto: no fused kernel for this device/dtype, fall back to foreach
    return torch.optim.AdamW(groups, foreach=o.kernel != "for-loop", **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's learning rate to `lr`; in place where a group holds it as a tensor (torchao's
    low-bit optimizers, whose compiled step reads the tensor and refuse a float in its place)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


# -- the forward --------------------------------------------------------------------------------------
def mlm_loss_inputs(model: torch.nn.Module, batch: MaskedBatch) -> LossInputs:
    """The sparse MLM forward: logits at the predicted positions only, and their cross-entropy."""
    logits = model(batch.input_ids, batch.positions, batch.attention_mask)  # (M, V)
    token_losses = F.cross_entropy(logits.float(), batch.labels, reduction="none")  # (M,)
    return LossInputs(logits=logits, labels=batch.labels, token_losses=token_losses, loss=token_losses.mean(),
                      positions=batch.positions, batch_shape=tuple(batch.input_ids.shape), model=model,
                      input_ids=batch.input_ids, attention_mask=batch.attention_mask)


@contextlib.contextmanager
def capture_hidden_states(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collects each encoder block's output during a forward (forward hooks; the model is unchanged)."""
    base = getattr(model, "_orig_mod", model)
    blocks = getattr(getattr(base, "encoder", None), "blocks", None)
    if blocks is None:
        raise TypeError(f"{type(base).__name__} has no encoder.blocks to take hidden states from")
    outputs: list[torch.Tensor] = []
    handles = [b.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for b in blocks]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def micro_batch_weights(predicted: Sequence[int]) -> list[float] | None:
    """Each micro-batch's share of the step's predicted tokens; None when all are equal (then 1/k each)."""
    if len(set(predicted)) <= 1:
        return None
    total = sum(predicted)
    return [m / total for m in predicted]


def loss_share(value: Any, weight: float | None, count: int) -> Any:
    """A micro-batch's part of the step: value · weight, or value / count when the shares are equal
    (dividing, not multiplying by 1/count, keeps equal-share steps bit-identical to plain accumulation)."""
    return value / count if weight is None else value * weight


@dataclass
class StepResult:
    loss: float  # the step's training loss: the token-weighted mean over its micro-batches
    tokens: int  # real (non-pad) tokens the step trained on
    predicted: int  # predicted (masked) tokens
    terms: dict[str, float] = field(default_factory=dict)  # techniques' named terms, token-weighted means

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss)


class TrainStep:
    """Forward, loss events, backward, update: one optimizer step over a list of micro-batches.

    forward(model, batch) -> LossInputs (default `mlm_loss_inputs`) or a plain loss tensor (another
    model's, e.g. Hugging Face's; then no technique may replace the loss).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: Config,
                 device: torch.device, techniques: Sequence[Technique] = (), *,
                 step_model: torch.nn.Module | None = None,
                 forward: Callable[[torch.nn.Module, Any], "LossInputs | torch.Tensor"] | None = None):
        self.model, self.optimizer, self.config, self.device = model, optimizer, config, device
        self.step_model = step_model if step_model is not None else model
        self.techniques = list(techniques)
        self.forward = forward or mlm_loss_inputs
        self.autocast = autocast_for(config, device)
        self.hidden = any(t.needs_hidden_states for t in self.techniques)
        self.params = [p for p in model.parameters() if p.requires_grad]
        # fp16: the loss is scaled before backward and the gradients unscaled before clipping; a step
        # whose gradients overflow is skipped and the scale lowered (torch.amp.GradScaler)
        self.scaler = torch.amp.GradScaler(device.type) if config.run.precision == "fp16" else None

    def loss_inputs(self, batch: Any, ctx: StepContext) -> LossInputs | torch.Tensor:
        """The forward and every technique's `loss` event, under the precision policy."""
        with self.autocast():
            hidden = capture_hidden_states(self.step_model) if self.hidden else contextlib.nullcontext(None)
            with hidden as states:
                out = self.forward(self.step_model, batch)
            if isinstance(out, torch.Tensor):
                return out
            out.hidden_states = states
            for t in self.techniques:
                replaced = t.loss(out, ctx)
                if replaced is not None:
                    out.loss = replaced
        return out

    def backward(self, loss: torch.Tensor, ctx: StepContext) -> None:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        for t in self.techniques:
            if t.backward(loss, ctx):
                return
        loss.backward()

    def micro_step(self, batch: Any, ctx: StepContext, weight: float | None, count: int) -> LossInputs | torch.Tensor:
        """Forward and backward of one micro-batch; its loss scaled by `weight` (None: 1/count)."""
        out = self.loss_inputs(batch, ctx)
        self.backward(loss_share(out if isinstance(out, torch.Tensor) else out.loss, weight, count), ctx)
        return out

    def __call__(self, batches: Sequence[Any], ctx: StepContext, lr: float | None = None) -> StepResult:
        if lr is not None:
            set_lr(self.optimizer, lr)
        return self.update(self.accumulate(batches, ctx), ctx)

    def accumulate(self, batches: Sequence[Any], ctx: StepContext) -> StepResult:
        """Forward and backward of every micro-batch; the gradients are left in .grad."""
        k = len(batches)
        predicted = [int(b.labels.numel()) if isinstance(b, MaskedBatch) else 1 for b in batches]
        weights = micro_batch_weights(predicted)
        total, terms = 0.0, {}
        for i, batch in enumerate(batches):
            w = None if weights is None else weights[i]
            out = self.micro_step(batch, ctx, w, k)
            loss, named = (out, {}) if isinstance(out, torch.Tensor) else (out.loss, out.terms)
            total += loss_share(float(loss.detach()), w, k)
            for name, value in named.items():
                terms[name] = terms.get(name, 0.0) + loss_share(float(value), w, k)
        tokens = sum(b.num_tokens for b in batches if isinstance(b, MaskedBatch))
        return StepResult(total, tokens, sum(predicted), terms)

    def update(self, result: StepResult, ctx: StepContext) -> StepResult:
        """before_update, clipping and the optimizer step (none after a non-finite loss)."""
        if not result.finite:
            self.optimizer.zero_grad(set_to_none=True)
            return result  # no update from a non-finite loss
        for t in self.techniques:
            t.before_update(self.model, self.optimizer, ctx)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.optim.grad_clip)
        with torch.profiler.record_function("effitrain/optimizer"):  # a label for effitrain.lab.profile
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return result


# -- FLOPs ------------------------------------------------------------------------------------------------
class FlopMeter:
    """Measured FLOPs of each micro-batch (technique scoring passes, forward, loss, backward).

    `torch.utils.flop_counter` runs a whole extra pass, so it is not run for every micro-batch.
    Everything but the predicted-token count M fixes the work of the encoder; the heads (the MLM
    head and any technique's, e.g. a teacher's) cost a fixed amount per predicted token. So for
    each shape the counter runs at two different M, and other M are read off the line through
    them: exact for the model (the head's FLOPs are linear in M). `every=True` counts every
    micro-batch (slow; for checking that counting changes nothing).

    The counting pass leaves everything as it found it: gradients, the global and CUDA RNG, the
    techniques' generator (`ctx.rng`), their `state_dict()` and their `stats`. Its points are
    checkpointed with the run (`state_dict`), so a resumed run reads the same numbers.
    """

    def __init__(self, model: torch.nn.Module, techniques: Sequence[Technique], device: torch.device,
                 every: bool = False):
        self.model = getattr(model, "_orig_mod", model)  # count the eager module under compile
        self.techniques, self.device, self.every = list(techniques), device, every
        self.points: dict[str, dict[int, int]] = {}  # key → {predicted tokens: measured FLOPs}

    def key(self, raw: MaskedBatch, final: MaskedBatch, ctx: StepContext) -> str:
        scored = raw is not final  # a technique changed the batch after masking: its pass depends on raw
        parts = (tuple(final.input_ids.shape), final.attention_mask is None,
                 tuple(t.flops_key(ctx) for t in self.techniques),
                 (tuple(raw.input_ids.shape), int(raw.labels.numel())) if scored else None)
        return repr(parts)

    def measure(self, raw: MaskedBatch, final: MaskedBatch, ctx: StepContext,
                work: Callable[[StepContext], None]) -> int:
        """FLOPs of `work(ctx)`, which redoes this micro-batch (from `raw`) and its backward."""
        M = int(final.labels.numel())
        points = self.points.setdefault(self.key(raw, final, ctx), {})
        if self.every or (M not in points and len(points) < 2):
            points[M] = self.count(work, ctx)
        if M in points:
            return points[M]
        (m0, f0), (m1, f1) = sorted(points.items())[:2]
        return int(round(f0 + (f1 - f0) * (M - m0) / (m1 - m0)))

    def count(self, work: Callable[[StepContext], None], ctx: StepContext) -> int:
        params = list(self.model.parameters())
        stashed = [p.grad for p in params]
        for p in params:
            p.grad = None
        rng_state = ctx.rng.get_state()
        saved = [(copy.deepcopy(t.state_dict()), copy.deepcopy(t.stats)) for t in self.techniques]
        try:
            with keep_rng(self.device):
                return count_flops(lambda: work(_counting(ctx)))
        finally:
            for p, g in zip(params, stashed):
                p.grad = g
            ctx.rng.set_state(rng_state)
            for t, (state, stats) in zip(self.techniques, saved):
                t.load_state_dict(state)
                t.stats.clear()
                t.stats.update(stats)

    def state_dict(self) -> dict:
        return {k: dict(v) for k, v in self.points.items()}

    def load_state_dict(self, state: dict) -> None:
        self.points = {k: {int(m): int(f) for m, f in v.items()} for k, v in state.items()}


def _counting(ctx: StepContext) -> StepContext:
    return replace(ctx, counting=True)


# -- will it fit? ---------------------------------------------------------------------------------------
def memory_needed(config: Config, vocab_size: int | None = None) -> dict[str, float]:
    """A training run's memory, estimated before anything is allocated (bytes): `states` = 16 bytes
    per parameter (fp32 weights, gradients, AdamW's two moments), `activations` = one micro-batch's
    saved activations (Korthikanti et al.'s s·b·h·(34 + 5·a·s/h) per layer at 2 bytes, doubled in
    fp32) plus its logits. An estimate to refuse the impossible, not a measurement."""
    from effitrain.model.bert import matmul_parameters

    m, d = config.model, config.data
    vocab = vocab_size or d.vocab_size
    params = matmul_parameters(m) + vocab * m.hidden + (m.max_positions * m.hidden if m.position == "learned" else 0)
    B, T, H = config.run.batch_size, d.seq_len, m.hidden
    per_layer = B * T * H * (34 + 5 * m.heads * T / H)
    scale = 1.0 if config.run.precision in ("bf16", "fp16") else 2.0
    predicted = B * T * (d.mask_prob if m.sparse_head else 1.0)
    activations = scale * m.layers * per_layer + 4 * predicted * vocab * 2  # logits and their gradient, fp32
    return {"parameters": float(params), "states": 16.0 * params, "activations": float(activations),
            "total": 16.0 * params + float(activations)}


def device_memory(device: torch.device) -> float:
    """Bytes the device has in all: a GPU's total memory, else the machine's physical memory."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def check_fits(config: Config, device: torch.device, vocab_size: int | None = None) -> None:
    """Refuse, in one line naming the sizes, a config whose estimated memory exceeds the device's."""
    need, have = memory_needed(config, vocab_size), device_memory(device)
    if need["total"] <= have:
        return
    m, gib = config.model, 2 ** 30
    if need["states"] >= need["activations"]:
        why = (f"{need['parameters']:.3g} parameters (model.hidden={m.hidden}, model.layers={m.layers}, "
               f"data.vocab_size={vocab_size or config.data.vocab_size}) need {need['states'] / gib:,.1f} GiB of "
               "weights, gradients and AdamW state")
    else:
        why = (f"one micro-batch (run.batch_size={config.run.batch_size} × data.seq_len={config.data.seq_len}, "
               f"{m.layers} layers) needs {need['activations'] / gib:,.1f} GiB of activations")
    raise ConfigError(f"this run needs about {need['total'] / gib:,.1f} GiB, more than the {have / gib:,.0f} GiB "
                      f"of {device.type}: {why}")
