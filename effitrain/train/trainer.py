"""The training loop, written as plain PyTorch, with named events for techniques.

    data   = prepare_data(config.data)                       # corpus → tokenizer → examples (cached)
    train  = t.on_dataset(data.train, ctx)                   # prune / reorder / replace examples
    model  = t.on_model(BertForMLM(config.model), ctx)       # surgery (before the optimizer sees it)
    evaluate()                                               # once before training: the first val loss
    while fraction_of_budget_used < 1:                       # steps, tokens, seconds or FLOPs
        lr = peak_lr · lr_factor(fraction)                   # schedules end exactly at the deadline
        for micro in range(grad_accum):
            ids   = t.on_batch(train.batch(sampler.next()), ctx)  # subsample rows, truncate length
            batch = mask_tokens(ids)                         # 80/10/10 BERT masking, fixed count
            out   = LossInputs(model(batch))                 # sparse head: logits at masked positions only
            loss  = t.loss(out, ctx) or out.loss             # replace or add to the objective
            (loss / grad_accum).backward()
        clip_grad_norm_; optimizer.step(); zero_grad
        t.after_step(model, ctx)                             # averaging, schedules, layer-drop state
        log(step, tokens, seconds, flops, loss, lr)          # seconds exclude evaluation and FLOP counting
        if an evaluation point was crossed:
            metrics = t.on_eval(evaluate(), ctx)             # val loss / accuracy on fixed masks

`t.event(...)` means: every technique in order, each receiving what the previous returned.
Ctrl-C or `stop.set()` ends the run after the current step: history and model are kept (and a
checkpoint written when `checkpoint=` is given). A non-finite loss ends it with status
"diverged" and a message naming the step. The same seed gives the same curve on CPU, and a run
resumed from a checkpoint continues exactly as if it had never stopped.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import math
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from effitrain.config import Config
from effitrain.data import MaskedBatch, PretrainData, TrainSet, mask_tokens, prepare_data
from effitrain.model import BertForMLM, count_parameters
from effitrain.model.bert import analytic_flops_parts
from effitrain.techniques.base import LossInputs, StepContext, Technique
from effitrain.train.checkpoint import load_checkpoint, save_checkpoint
from effitrain.train.flops import count_flops
from effitrain.train.run import Run
from effitrain.train.schedule import lr_factor

Callback = Callable[[str, dict, Run], None]


# -- sampling ----------------------------------------------------------------------------------
class EpochSampler:
    """Each epoch visits every example once in a fresh random order (seeded by seed and epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.cursor = n, seed, 0, 0
        self._order = self._permutation()

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def next(self, batch_size: int, ctx: StepContext) -> torch.Tensor:
        out = []
        while batch_size > 0:
            take = min(batch_size, self.n - self.cursor)
            out.append(self._order[self.cursor:self.cursor + take])
            self.cursor += take
            batch_size -= take
            if self.cursor == self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation()
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation()


# -- pieces of a step ----------------------------------------------------------------------------
def mlm_loss_inputs(model: torch.nn.Module, batch: MaskedBatch) -> LossInputs:
    logits = model(batch.input_ids, batch.positions, batch.attention_mask)  # (M, V)
    token_losses = F.cross_entropy(logits.float(), batch.labels, reduction="none")  # (M,)
    return LossInputs(logits, batch.labels, token_losses, token_losses.mean(), batch.positions,
                      tuple(batch.input_ids.shape), model, batch.input_ids, batch.attention_mask)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Sequence[MaskedBatch], device: torch.device,
             autocast: Callable[[], contextlib.AbstractContextManager]) -> dict[str, float]:
    """Mean MLM loss and accuracy over all predicted tokens of the fixed validation batches."""
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for batch in batches:
        b = batch.to(device)
        with autocast():
            logits = model(b.input_ids, b.positions, b.attention_mask)
        total_loss += float(F.cross_entropy(logits.float(), b.labels, reduction="sum"))
        correct += int((logits.argmax(-1) == b.labels).sum())
        count += b.labels.numel()
    model.train(was_training)
    return {"val_loss": total_loss / count, "val_accuracy": correct / count}


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and embeddings (as BERT)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            plain = name == "bias" or isinstance(module, (torch.nn.LayerNorm, torch.nn.Embedding))
            (no_decay if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, config: Config, device: torch.device) -> torch.optim.Optimizer:
    o = config.optim
    kwargs = dict(lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    groups = _param_groups(model, o.weight_decay)
    if o.fused:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass  # fused kernel not available for this device/dtype: fall back to foreach
    return torch.optim.AdamW(groups, **kwargs)


def keep_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """Restores the global RNG (and the CUDA one of `device`) on exit: work done inside, such as
    counting FLOPs or training a helper model, leaves the random stream of the run untouched."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def autocast_for(config: Config, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """The precision policy: bf16 = autocast to bfloat16, fp32 = nothing."""
    if config.run.precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _attention_recompute(config: Config, device: torch.device) -> bool:
    # CPU SDPA with dropout takes the math path (no recompute); fused kernels recompute scores
    return not (device.type == "cpu" and config.model.dropout > 0)


@dataclass
class _Position:
    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    flops: float = 0.0
    flops_analytic: float = 0.0
    evals_done: int = 0
    # the analytic total in its terms (see `effitrain.model.bert.analytic_flops_parts`)
    flops_blocks: float = 0.0
    flops_attention: float = 0.0
    flops_head: float = 0.0


class Trainer:
    """One run: `Trainer(config, techniques).fit()` → `Run`. See the module docstring for the loop."""

    def __init__(self, config: Config, techniques: Iterable[Technique] = (), *, data: PretrainData | None = None,
                 stop: threading.Event | None = None, callbacks: Iterable[Callback] = (),
                 checkpoint: str | None = None, checkpoint_every: int = 0, resume: str | None = None,
                 progress: bool | None = None, name: str = ""):
        self.config = config
        self.techniques = list(techniques)
        for t in self.techniques:
            if not isinstance(t, Technique):
                raise TypeError(f"techniques must be Technique instances; got {type(t).__name__}")
        self.stop = stop or threading.Event()
        self.callbacks = list(callbacks)
        self.checkpoint_path, self.checkpoint_every, self.resume = checkpoint, checkpoint_every, resume
        self.progress = True if progress is None else progress
        self.device = config.run.resolved_device()
        self.data = data if data is not None else prepare_data(config.data)
        self.run = Run(config=config, techniques=[t.describe() for t in self.techniques],
                       device=self._device_name(), name=name or config.run.name,
                       started=_dt.datetime.now().isoformat(timespec="seconds"))
        self._flops_cache: dict[Any, dict[int, int]] = {}  # key → {predicted tokens: measured FLOPs}

    # -- setup ----------------------------------------------------------------------------------
    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({torch.get_num_threads()} threads)"

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast_for(self.config, self.device)()

    def _ctx(self, pos: _Position) -> StepContext:
        return StepContext(step=pos.step, fraction=self._fraction(pos), tokens=pos.tokens, seconds=pos.seconds,
                           flops=pos.flops, config=self.config, device=self.device, rng=self.technique_rng,
                           data=self.data)

    def _fraction(self, pos: _Position) -> float:
        b = self.config.budget
        used = {"steps": pos.step, "tokens": pos.tokens, "seconds": pos.seconds, "flops": pos.flops}[b.unit]
        return min(1.0, used / b.amount)

    def _emit(self, kind: str, row: dict) -> None:
        for cb in self.callbacks:
            cb(kind, row, self.run)

    # -- FLOPs ------------------------------------------------------------------------------------
    def _step_flops(self, batch: MaskedBatch, ctx: StepContext) -> tuple[int, dict[str, float]]:
        """(measured, analytic terms) FLOPs of forward+backward on this batch.

        FlopCounterMode runs a whole extra step, so it is not run every step. Everything but the
        predicted-token count M fixes the work of the encoder; the heads (the MLM head and any
        technique's, e.g. a teacher's) cost a fixed amount per predicted token. So for each shape
        the counter runs at two different M, and other M are read off the line through them: exact
        for the model (the head's FLOPs are linear in M). With packed data M hardly varies, with
        paragraphs of different lengths it changes almost every batch.
        """
        B, T = batch.input_ids.shape
        M = batch.labels.numel()
        analytic = analytic_flops_parts(self.config.model, self.data.vocab_size, B, T, M,
                                        attention_recompute=_attention_recompute(self.config, self.device))
        key = (tuple(batch.input_ids.shape), batch.attention_mask is None,
               tuple(t.flops_key(ctx) for t in self.techniques))
        points = self._flops_cache.setdefault(key, {})
        if M not in points and len(points) < 2:
            points[M] = self._count_step_flops(batch, ctx)
        if M in points:
            return points[M], analytic
        (m0, f0), (m1, f1) = sorted(points.items())
        return int(round(f0 + (f1 - f0) * (M - m0) / (m1 - m0))), analytic

    def _count_step_flops(self, batch: MaskedBatch, ctx: StepContext) -> int:
        model = getattr(self.model, "_orig_mod", self.model)  # count the eager module under compile
        stashed = [p.grad for p in model.parameters()]
        for p in model.parameters():
            p.grad = None
        with keep_rng(self.device):
            measured = count_flops(lambda: self._loss(model, batch, ctx).backward())
        for p, g in zip(model.parameters(), stashed):
            p.grad = g
        return measured

    def _loss(self, model: torch.nn.Module, batch: MaskedBatch, ctx: StepContext) -> torch.Tensor:
        with self._autocast():
            out = mlm_loss_inputs(model, batch)
            for t in self.techniques:
                replaced = t.loss(out, ctx)
                if replaced is not None:
                    out.loss = replaced
        return out.loss

    # -- the loop -----------------------------------------------------------------------------------
    def fit(self) -> Run:
        cfg, run = self.config, self.run
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        torch.manual_seed(cfg.run.seed)
        self.mask_rng = torch.Generator().manual_seed(cfg.run.seed + 1)
        self.technique_rng = torch.Generator().manual_seed(cfg.run.seed + 2)
        pos = _Position()

        try:
            optimizer, sampler = self._setup(pos)
        except BaseException as exc:
            run.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            run.message = f"{type(exc).__name__}: {exc}" if run.status == "failed" else "interrupted during setup"
            self._record_stats()
            self._emit("end", run.summary())
            raise
        pos = self._position
        evals_total = cfg.run.evals
        run.status = "running"
        bar = _progress_bar(cfg, enabled=self.progress)
        try:
            if pos.evals_done == 0 and not run.history.evals:
                self._evaluate(pos)
            while self._fraction(pos) < 1.0 and not self.stop.is_set():
                t0 = time.perf_counter()
                ctx = self._ctx(pos)
                lr = cfg.optim.lr * lr_factor(ctx.fraction, cfg.optim.schedule, cfg.optim.warmup, cfg.optim.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_loss, step_tokens, step_flops = 0.0, 0, 0
                step_analytic = dict.fromkeys(("blocks", "attention", "head"), 0.0)
                for _ in range(cfg.run.grad_accum):
                    ids = self.train_set.batch(sampler.next(cfg.run.batch_size, ctx))
                    for t in self.techniques:
                        ids = t.on_batch(ids, ctx)
                    batch = mask_tokens(ids, cfg.data.mask_prob, self.data.vocab_size, self.mask_rng).to(self.device)
                    pause = time.perf_counter()
                    measured, analytic = self._step_flops(batch, ctx)
                    t0 += time.perf_counter() - pause  # counting is not training time
                    loss = self._loss(self.step_model, batch, ctx)
                    (loss / cfg.run.grad_accum).backward()
                    step_loss += float(loss.detach()) / cfg.run.grad_accum
                    step_tokens += batch.num_tokens
                    step_flops += measured
                    for part, value in analytic.items():
                        step_analytic[part] += value
                if not math.isfinite(step_loss):
                    run.status, run.message = "diverged", f"loss became {step_loss} at step {pos.step + 1}; run stopped"
                    warnings.warn(run.message, RuntimeWarning, stacklevel=2)
                    break
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                pos.step += 1
                for t in self.techniques:
                    t.after_step(self.model, self._ctx(pos))
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                pos.seconds += time.perf_counter() - t0
                pos.tokens += step_tokens
                pos.flops += step_flops
                pos.flops_analytic += sum(step_analytic.values())
                pos.flops_blocks += step_analytic["blocks"]
                pos.flops_attention += step_analytic["attention"]
                pos.flops_head += step_analytic["head"]
                if pos.step % cfg.run.log_every == 0 or self._fraction(pos) >= 1.0:
                    row = run.history.log_step(step=pos.step, tokens=pos.tokens, seconds=pos.seconds, flops=pos.flops,
                                               flops_analytic=pos.flops_analytic, train_loss=step_loss, lr=lr)
                    self._emit("step", row)
                bar.update(self._fraction(pos), step_loss)
                if self._fraction(pos) >= (pos.evals_done + 1) / evals_total - 1e-12:
                    self._evaluate(pos)
                if self.checkpoint_path and self.checkpoint_every and pos.step % self.checkpoint_every == 0:
                    self._save(pos, optimizer, sampler)
            else:
                run.status = "stopped" if self.stop.is_set() and self._fraction(pos) < 1.0 else "completed"
                if run.status == "stopped":
                    run.message = f"stopped at step {pos.step} ({self._fraction(pos):.0%} of the budget)"
        except KeyboardInterrupt:
            run.status, run.message = "interrupted", f"interrupted at step {pos.step}; history and model kept"
        except Exception as exc:
            run.status, run.message = "failed", f"{type(exc).__name__}: {exc}"
            self._emit("end", run.summary())
            raise
        finally:
            bar.close()
            self._record_stats()
            if run.status in ("running",):
                run.status = "stopped"
            if run.status != "failed":
                if run.status in ("stopped", "interrupted") and run.history.steps and \
                        (not run.history.evals or run.history.evals[-1]["step"] != pos.step):
                    self._evaluate(pos)  # a stopped run still gets a last evaluation to compare by
                if self.checkpoint_path:
                    self._save(pos, optimizer, sampler)
                self._emit("end", run.summary())
        return run

    def _record_stats(self) -> None:
        pos = getattr(self, "_position", None)
        if pos is not None:
            self.run.extra["flops_analytic_parts"] = {"blocks": pos.flops_blocks, "attention": pos.flops_attention,
                                                      "head": pos.flops_head}
        stats = {t.name: dict(t.stats) for t in self.techniques if t.stats}
        if stats:
            self.run.extra["techniques"] = stats

    def _setup(self, pos: _Position) -> tuple[torch.optim.Optimizer, Any]:
        """on_dataset → model → on_model → optimizer → (resume). Sets self.train_set, model, step_model."""
        cfg, run = self.config, self.run
        train: TrainSet = self.data.train
        for t in self.techniques:
            train = t.on_dataset(train, self._ctx(pos))
        if len(train) == 0:
            raise ValueError("the training set is empty after on_dataset; keep at least one example")
        self.train_set = train
        sampler = getattr(train, "sampler", None) or EpochSampler(len(train), cfg.run.seed)

        model: torch.nn.Module = BertForMLM(cfg.model, self.data.vocab_size)
        for t in self.techniques:
            model = t.on_model(model, self._ctx(pos))
        model.to(self.device).train()
        run.extra.update(parameters=count_parameters(model), unigram_entropy=self.data.unigram_entropy(),
                         unigram_val_loss=self.data.unigram_val_loss(),
                         train_examples=len(train), vocab_size=self.data.vocab_size)
        self.model = run.model = model
        optimizer = make_optimizer(model, cfg, self.device)
        self.step_model = torch.compile(model) if cfg.run.compile else model

        if self.resume:
            state = load_checkpoint(self.resume, cfg)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            tr = state["trainer"]
            pos = _Position(**tr["position"])
            sampler.load_state_dict(tr["sampler"])
            torch.set_rng_state(tr["rng"]["torch"])
            self.mask_rng.set_state(tr["rng"]["mask"])
            self.technique_rng.set_state(tr["rng"]["technique"])
            for t, s in zip(self.techniques, tr.get("techniques", [])):
                t.load_state_dict(s)
            run.history = type(run.history).from_dict(state["history"])
        self._position = pos
        return optimizer, sampler

    def _evaluate(self, pos: _Position) -> None:
        ctx = self._ctx(pos)
        metrics = evaluate(self.model, self.data.val, self.device, self._autocast)
        for t in self.techniques:
            metrics = t.on_eval(metrics, ctx)
        pos.evals_done = min(self.config.run.evals, int(math.floor(ctx.fraction * self.config.run.evals + 1e-9)))
        row = self.run.history.log_eval(step=pos.step, tokens=pos.tokens, seconds=pos.seconds, flops=pos.flops, **metrics)
        self._emit("eval", row)

    def _save(self, pos: _Position, optimizer: torch.optim.Optimizer, sampler: Any) -> None:
        save_checkpoint(self.checkpoint_path, {
            "config": self.config.to_dict(),
            "techniques": self.run.techniques,
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": self.run.history.to_dict(),
            "status": self.run.status,
            "trainer": {"position": vars(pos).copy(), "sampler": sampler.state_dict(),
                        "rng": {"torch": torch.get_rng_state(), "mask": self.mask_rng.get_state(),
                                "technique": self.technique_rng.get_state()},
                        "techniques": [t.state_dict() for t in self.techniques]},
        })


class _progress_bar:
    """tqdm over the budget fraction (permille), or nothing."""

    def __init__(self, config: Config, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=1000, desc=f"train {config.budget}", unit="‰", leave=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
        self.done = 0

    def update(self, fraction: float, loss: float) -> None:
        if self.bar is not None:
            now = int(fraction * 1000)
            self.bar.update(now - self.done)
            self.done = now
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(config: Config, techniques: Iterable[Technique] = (), **kwargs: Any) -> Run:
    """Train one run; see `Trainer` for keyword arguments (data, stop, callbacks, checkpoint, resume)."""
    return Trainer(config, techniques, **kwargs).fit()


def train_frozen(config: Config, data: PretrainData, what: str, **kwargs: Any) -> Run:
    """Train a helper model (a pruning reference, a distillation teacher) and freeze it.

    The global RNG is left as it was, so the run that asked for the helper starts exactly as it
    would have without it. A run that does not complete raises RuntimeError naming `what`.
    The run's model comes back in eval mode with gradients off.
    """
    device = config.run.resolved_device()
    with keep_rng(device):
        run = train(config, data=data, progress=False, **kwargs)
    if run.status != "completed":
        raise RuntimeError(f"{what} did not complete: {run.status} {run.message}")
    run.model.eval()
    for p in run.model.parameters():
        p.requires_grad_(False)
    return run

