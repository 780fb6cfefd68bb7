"""Where a training step's bytes go: weights, gradients, optimizer state and the activations autograd
keeps for the backward, measured on a real step, next to the formula that predicts them.

    from effitrain.train.footprint import measure_footprint, activation_formula
    fp = measure_footprint(et.profile_config("smoke"))
    fp.parameters, fp.gradients, fp.optimizer, fp.activations, fp.by_part    # bytes
    activation_formula(cfg)                                                  # the same, predicted (fp32)

**Measured.** Weights, gradients and optimizer state are the tensors themselves after one optimizer
step (AdamW keeps two moments per weight, and a step counter). Activations are what autograd saves
for the backward during the forward, caught with `torch.autograd.graph.saved_tensors_hooks` and
counted by *storage*: a tensor saved as a view keeps its whole storage alive (the attention's `v`, a
view of the fused q|k|v projection, keeps all three), and a storage saved twice counts once.
Storages that belong to the weights are not activations; a checkpointed block (the `checkpointing`
technique) keeps only its input, which is what is counted for it. Each saved storage is booked to the part
of the model that was running when it was saved: `embeddings`, `block 0` … `block L-1`, `head`, or
`loss` (the cross-entropy, outside the model).

**Predicted** (`activation_formula`), in fp32 without dropout, for a micro-batch of B full rows of T
tokens, hidden H, h heads, FFN inner width F (2/3 of `model.ffn` for the gated unit), M masked
positions and V words; bytes = 4 × elements (8 for the int64 ids and labels). Per block, pre-LN with
rotary positions and fused attention (each term is one saved tensor):

    block = B·T·H·(1 + 1 + 2 + 3 + 1 + 1 + 1)   input, LN1 out, rotated q and k, the q|k|v projection
                                                 (kept whole by v, a view of it), attention out, LN2 in, LN2 out
          + B·T·2F                              the FFN: GELU's input, the down projection's input (gated: 4F)
          + 2·2·B·T + B·h·T                     each LN's mean and 1/std, the attention's logsumexp

Learned or ALiBi positions save no rotated copies (q and k are views of the projection: −2·B·T·H);
`model.norm="none"` saves no LN outputs (−2·B·T·H, no statistics); `model.attention="math"` saves
bmm copies of q, kᵀ and v, the output's copy and the softmax output, B·T·4H + B·h·T·T, instead.
Then the embeddings (the ids, the embedding LN's input), the head (the final LN's input; the dense
layer's, GELU's, LN's and decoder's inputs at M positions, at all B·T with a dense head) and the loss
(the M × V log-softmax, the labels); the rotary cos/sin tables (2·T·H/h) are saved once, in the first
block. Measured, every block matches the formula to the byte, and the total within
`FORMULA_TOLERANCE` (a few scalars the formula leaves out).
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from effitrain.config import Config

FORMULA_TOLERANCE = 0.01  # relative, on the parts outside the blocks and the total: a few scalars are left out


@dataclass
class Footprint:
    """Bytes of one training step's memory, by kind and, for activations, by part of the model."""

    parameters: int
    gradients: int
    optimizer: int
    activations: int
    by_part: dict[str, int] = field(default_factory=dict)
    micro_batch: tuple[int, int] = (0, 0)  # rows, tokens per row

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.activations

    def to_dict(self) -> dict[str, Any]:
        return {"parameters": self.parameters, "gradients": self.gradients, "optimizer": self.optimizer,
                "activations": self.activations, "total": self.total, "by_part": dict(self.by_part),
                "micro_batch": list(self.micro_batch)}


def _storage(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def _parts(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The labelled parts of a `BertForMLM` (or anything with .encoder.blocks / .head) in call order."""
    parts: list[tuple[str, torch.nn.Module]] = []
    encoder = getattr(model, "encoder", None)
    if encoder is not None:
        for name in ("tok", "pos", "ln_emb"):
            if getattr(encoder, name, None) is not None:
                parts.append(("embeddings", getattr(encoder, name)))
        parts += [(f"block {i}", b) for i, b in enumerate(getattr(encoder, "blocks", ()))]
        if getattr(encoder, "ln_final", None) is not None:
            parts.append(("head", encoder.ln_final))  # the last LN belongs with what reads it
    if getattr(model, "head", None) is not None:
        parts.append(("head", model.head))
    return parts


def saved_activation_bytes(model: torch.nn.Module, run: "Any") -> tuple[int, dict[str, int], Any]:
    """Call `run()` (a forward that returns a loss) with every tensor autograd saves for the backward
    recorded; returns (bytes saved, bytes by part, what `run()` returned). Counted by storage, once
    each, the model's weights left out; see the module docstring."""
    weights = {_storage(p)[0] for p in model.parameters()} | {_storage(b)[0] for b in model.buffers()}
    seen: dict[int, tuple[str, int]] = {}
    where = ["loss"]

    def enter(label: str):
        def hook(module, args):
            where.append(label)
        return hook

    def leave(module, args, output):
        where.pop()

    def record(t: torch.Tensor, label: str) -> None:
        if t.device.type != "meta" and not t.is_sparse:
            ptr, nbytes = _storage(t)
            if ptr and ptr not in weights and ptr not in seen:
                seen[ptr] = (label, nbytes)

    def pack(t: torch.Tensor) -> torch.Tensor:
        record(t, where[-1])
        return t

    def labelled(run_block):  # what a checkpointed block keeps (its input) is saved before the block runs
        def call(i, *args, **kwargs):
            where.append(f"block {i}")
            try:
                return run_block(i, *args, **kwargs)
            finally:
                where.pop()
        return call

    handles = []
    for label, module in _parts(model):
        handles.append(module.register_forward_pre_hook(enter(label)))
        handles.append(module.register_forward_hook(leave))
    encoders = [m for m in model.modules() if callable(getattr(m, "run_block", None))]
    for enc in encoders:
        enc.run_block = labelled(enc.run_block)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = run()
    finally:
        for h in handles:
            h.remove()
        for enc in encoders:
            del enc.run_block  # the class's method again
    by_part: dict[str, int] = {}
    for label, nbytes in seen.values():
        by_part[label] = by_part.get(label, 0) + nbytes
    return sum(by_part.values()), by_part, out


def _inner_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors holding a tensor's bytes: itself, or a tensor subclass's parts (a quantized
    optimizer state's codes, block scales and code table; `__tensor_flatten__`)."""
    if not hasattr(type(t), "__tensor_flatten__"):
        return [t]
    names, _ = t.__tensor_flatten__()
    return [x for name in names for x in _inner_tensors(getattr(t, name))]


def tensor_bytes(tensors: Any) -> int:
    """Bytes of these tensors' storages, each storage once (a tensor subclass counts what it holds)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            for x in _inner_tensors(t):
                s = x.untyped_storage()
                seen.setdefault(s.data_ptr() or id(s), s.nbytes())
    return sum(seen.values())


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of an optimizer's state as it is now (moments, step counters), each storage once."""
    return tensor_bytes(v for s in optimizer.state.values() for v in s.values())


def optimizer_state_formula(optimizer: torch.optim.Optimizer) -> int:
    """The state an Adam-type optimizer will hold after its first step, from its parameters: two
    moments per trainable weight in the weight's format (torch's AdamW; a 4-byte step counter each), or,
    for torchao's low-bit AdamW (`block_size` and 8 or 4 bits in its class name), each moment of a weight
    of at least 4,096 elements divisible into blocks as codes (bits/8 bytes per weight), one fp32 scale
    per block and a code table of 2^bits fp32 values; smaller weights keep fp32 moments."""
    name = type(optimizer).__name__
    bits = 8 if "8bit" in name else 4 if "4bit" in name else None
    block = getattr(optimizer, "block_size", None)
    total = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not p.requires_grad:
                continue
            n = p.numel()
            if bits and block and n >= 4096 and n % block == 0:
                total += 2 * (n * bits // 8 + 4 * (n // block) + 4 * 2 ** bits)
            else:
                total += 2 * n * p.element_size()
            total += 4  # the step counter
    return total


def build_model_and_optimizer(config: Config, vocab: int, seed: int, techniques: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The config's model after the techniques' on_model, and the optimizer their on_optimizer (or the
    config's AdamW) builds over it."""
    from effitrain.model import BertForMLM
    from effitrain.techniques.base import StepContext
    from effitrain.train.step import make_optimizer, param_groups

    device = config.run.resolved_device()
    torch.manual_seed(seed)
    model = BertForMLM(config.model, vocab).to(device)
    model.train()
    ctx = StepContext.standalone(config, device, seed)
    for t in techniques:
        model = t.on_model(model, ctx)
    groups = param_groups(model, config.optim.weight_decay)
    for t in techniques:
        optimizer = t.on_optimizer(model, groups, ctx)
        if optimizer is not None:
            return model, optimizer
    return model, make_optimizer(model, config, device, groups)


def _activations(model: torch.nn.Module, config: Config, vocab: int, rows: int,
                 seed: int = 0) -> tuple[int, dict[str, int], torch.Tensor]:
    """Saved activation bytes of one forward of `rows` synthetic masked rows (the loss included), in the
    config's precision; the global random state is left as it was."""
    from effitrain.bench import synthetic_batches
    from effitrain.train.step import autocast_for, keep_rng, mlm_loss_inputs

    device = next(model.parameters()).device
    batch = synthetic_batches(config.replace(**{"run.batch_size": rows}), count=1, vocab_size=vocab, seed=seed,
                              device=device)[0]

    def forward() -> torch.Tensor:
        with autocast_for(config, device)():
            return mlm_loss_inputs(model, batch).loss

    with keep_rng(device):
        return saved_activation_bytes(model, forward)


def measure_footprint(config: Config, vocab_size: int | None = None, seed: int = 0,
                      techniques: Any = ()) -> Footprint:
    """One real training step of `config` (its model, precision and optimizer, one micro-batch of
    synthetic masked rows, `effitrain.bench.synthetic_batches`), measured as the module docstring says.
    `techniques`: Technique instances whose on_model / on_optimizer change the model or the optimizer
    (activation checkpointing, low-bit optimizer state)."""
    vocab = vocab_size or config.data.vocab_size
    model, optimizer = build_model_and_optimizer(config, vocab, seed, list(techniques))
    activations, by_part, loss = _activations(model, config, vocab, config.run.batch_size, seed)
    loss.backward()
    optimizer.step()
    params = tensor_bytes(model.parameters())
    grads = tensor_bytes(p.grad for p in model.parameters() if p.grad is not None)
    state = optimizer_state_bytes(optimizer)
    return Footprint(params, grads, state, activations, by_part, (config.run.batch_size, config.data.seq_len))


def estimate_footprint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: Config,
                       vocab_size: int | None = None) -> Footprint:
    """What one training step of this model and optimizer will hold, before the first step: the weights
    (measured), a gradient per trainable weight, the optimizer state (`optimizer_state_formula`) and one
    micro-batch's saved activations. Activations are affine in the micro-batch's rows (a per-row part and
    a fixed part: weight copies under autocast, position tables), so they are measured on forwards of 1
    and 2 synthetic rows (`saved_activation_bytes`, no backward) and extended to `run.batch_size` rows:
    exact for any model, precision and technique that changes the model, at the cost of two tiny forwards.
    With checkpointed blocks, the part "recompute" adds the insides of the biggest one, which the backward
    holds while it runs that block again (measured the same way with checkpointing off).
    Not counted: the allocator's transient buffers, a technique's extra models outside `model`, rows a
    technique adds to a micro-batch."""
    vocab = vocab_size or config.data.vocab_size
    rows = config.run.batch_size
    by_part = _affine_activations(model, config, vocab, rows)
    checkpointed = [(enc, enc.checkpointed) for enc in model.modules() if getattr(enc, "checkpointed", None)]
    if checkpointed:  # the backward recomputes one checkpointed block at a time: its insides, at most one block's
        for enc, _ in checkpointed:
            enc.checkpointed = frozenset()
        try:
            plain = _affine_activations(model, config, vocab, rows)
        finally:
            for enc, blocks in checkpointed:
                enc.checkpointed = blocks
        blocks = {int(k.split()[1]) for enc, chosen in checkpointed for k in plain if k.startswith("block ")
                  if int(k.split()[1]) in chosen}
        by_part["recompute"] = max((plain[f"block {i}"] - by_part.get(f"block {i}", 0) for i in blocks), default=0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return Footprint(tensor_bytes(model.parameters()), sum(p.numel() * p.element_size() for p in trainable),
                     optimizer_state_formula(optimizer), sum(by_part.values()), by_part, (rows, config.data.seq_len))


def _affine_activations(model: torch.nn.Module, config: Config, vocab: int, rows: int) -> dict[str, int]:
    """Saved activation bytes by part for `rows` rows, from forwards of 1 and 2 rows (affine in the rows)."""
    try:
        _, by_one, _ = _activations(model, config, vocab, 1)
        _, by_two, _ = _activations(model, config, vocab, 2)
    except (TypeError, AttributeError) as exc:
        raise ValueError(f"cannot estimate the activations of a {type(model).__name__} (the footprint runs the "
                         f"masked-LM forward): {exc}") from None
    return {k: by_one.get(k, 0) + (by_two.get(k, 0) - by_one.get(k, 0)) * (rows - 1) for k in {**by_one, **by_two}}


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null meanwhile: the profiler's C++ side logs its start and stop there
    (a notebook would show them as errors). Python's own errors still raise as exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _allocator_peak_above_start(run: Any, device: torch.device) -> tuple[int, str]:
    """Bytes allocated at the peak of `run()` above those allocated when it starts: CUDA's allocator
    statistics on a GPU; on a CPU the profiler's memory records (`torch.profiler`, profile_memory), each
    operator's allocations and each free replayed in time order."""
    if device.type == "cuda":
        from effitrain.train.flops import sync

        sync(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device) - start), "cuda max allocated"
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    now = peak = 0
    for e in events:
        now += e.self_cpu_memory_usage
        peak = max(peak, now)
    return int(peak), "cpu profiler allocations"


def measure_peak(config: Config, vocab_size: int | None = None, seed: int = 0, techniques: Any = ()) -> tuple[int, str]:
    """(bytes, how measured): the most memory one whole training step of `config` holds at any moment —
    weights, optimizer state, gradients, saved activations and every transient buffer of the forward,
    backward and update — and what measured it. A first step creates the optimizer state; the second is
    measured: what it holds when it starts (weights and state) plus the allocator's peak above that
    (`_allocator_peak_above_start`). `run.grad_accum` micro-batches of `run.batch_size` rows per step.
    Beside `estimate_footprint`: the estimate adds parts that are never all held at once (the backward
    frees activations as it makes gradients) and leaves out the transients; the peak has both."""
    from effitrain.bench import synthetic_batches
    from effitrain.train.step import autocast_for, keep_rng, mlm_loss_inputs

    vocab = vocab_size or config.data.vocab_size
    model, optimizer = build_model_and_optimizer(config, vocab, seed, list(techniques))
    device = next(model.parameters()).device
    k = config.run.grad_accum
    batches = synthetic_batches(config, count=k, vocab_size=vocab, seed=seed, device=device)

    def step() -> None:
        for batch in batches:
            with autocast_for(config, device)():
                loss = mlm_loss_inputs(model, batch).loss / k
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with keep_rng(device):
        step()
        held = tensor_bytes(model.parameters()) + optimizer_state_bytes(optimizer)
        above, kind = _allocator_peak_above_start(step, device)
    return held + above, kind


def format_bytes(n: float) -> str:
    """1234567 → '1.23 MB' (powers of 1000, as `run.memory_budget` reads 'MB')."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def check_memory_budget(footprint: Footprint, config: Config) -> None:
    """Refuse (ConfigError, one line) a run whose estimated footprint exceeds `run.memory_budget`,
    naming the estimate and its biggest part."""
    from effitrain.config import ConfigError, parse_bytes

    if not config.run.memory_budget:
        return
    budget = parse_bytes(config.run.memory_budget, "run.memory_budget")
    if footprint.total <= budget:
        return
    parts = {"weights": footprint.parameters, "gradients": footprint.gradients,
             "optimizer state": footprint.optimizer, "activations": footprint.activations}
    biggest = max(parts, key=parts.get)
    raise ConfigError(f"run.memory_budget={config.run.memory_budget!r}: this run needs an estimated "
                      f"{format_bytes(footprint.total)}, the biggest part {biggest} ({format_bytes(parts[biggest])} "
                      f"for a micro-batch of {footprint.micro_batch[0]} rows of {footprint.micro_batch[1]} tokens)")


def predicted_tokens(config: Config) -> int:
    """Masked positions of one micro-batch of full rows ([CLS] … [SEP], `mask_tokens`' rounding per row)."""
    T, p = config.data.seq_len, config.data.mask_prob
    return config.run.batch_size * max(1, round((T - 2) * p))


def activation_formula(config: Config, vocab_size: int | None = None) -> dict[str, float]:
    """Predicted activation bytes of one micro-batch of full rows in fp32 (see the module docstring):
    "embeddings", "block" (each), "blocks", "head", "loss" and "total". The standard block (not
    GroupBERT) without dropout; a ValueError names what else was asked."""
    m, d = config.model, config.data
    unsupported = [what for what, bad in (("model.groupbert", m.groupbert), ("model.dropout > 0", m.dropout > 0),
                                          (f"run.precision={config.run.precision!r}", config.run.precision != "fp32"))
                   if bad]
    if unsupported:
        raise ValueError(f"activation_formula covers the standard block in fp32 without dropout; not {', '.join(unsupported)}")
    vocab = vocab_size or d.vocab_size
    B, T, H, h = config.run.batch_size, d.seq_len, m.hidden, m.heads
    BT, M = B * T, predicted_tokens(config)
    inner = m.ffn * 2 // 3 if m.ffn_kind == "glu" else m.ffn
    ln = m.norm != "none"
    # the FFN: GELU saves the up projection's output (both halves when gated: the gate's GELU output
    # and the other half are the product's factors), the down projection its input
    ffn = BT * (4 * inner if m.ffn_kind == "glu" else 2 * inner)
    if m.attention == "math":  # bmm copies of q, kᵀ and v, the softmax output (B, h, T, T), the output's copy
        attention = BT * 4 * H + B * h * T * T
    else:  # fused SDPA: q and k (rotated copies with rotary; else views), v keeps the whole q|k|v
        # projection alive, the output (the out projection reads a view of it), a logsumexp per row
        attention = BT * (3 + (2 if m.position == "rotary" else 0) + 1) * H + B * h * T
    # the residual stream: the block's input and (norms) the LN outputs and the second sublayer's input
    stream = BT * H * (4 if ln else 2) + (2 * 2 * BT if ln else 0)  # + each LN's mean and rstd
    block = 4.0 * (stream + attention + ffn)
    embeddings = 8.0 * BT + (4.0 * (BT * H + 2 * BT) if ln else 0.0)  # the ids; the embedding LN's input
    rows = M if m.sparse_head else BT  # the head's dense, GELU, LN and decoder inputs (+ LN statistics)
    head = 4.0 * (4 * rows * H + 2 * rows) + (4.0 * (BT * H + 2 * BT) if m.norm == "pre" else 0.0)  # final LN
    head += 8.0 * M if not m.sparse_head else 0.0  # the positions that pick M of the B·T logits
    loss = 4.0 * M * vocab + 2 * 8.0 * M  # log-softmax output; the labels
    tables = 4.0 * 2 * T * (H // h) if m.position == "rotary" else 0.0  # cos and sin, saved in the first block
    total = embeddings + block * m.layers + tables + head + loss
    return {"embeddings": embeddings, "block": block, "rotary tables": tables, "blocks": block * m.layers + tables,
            "head": head, "loss": loss, "total": total}


__all__ = ["FORMULA_TOLERANCE", "Footprint", "activation_formula", "build_model_and_optimizer", "check_memory_budget",
           "estimate_footprint",
           "format_bytes", "measure_footprint", "measure_peak", "optimizer_state_bytes", "optimizer_state_formula", "predicted_tokens",
           "saved_activation_bytes", "tensor_bytes"]
