"""The training loop, written as plain PyTorch, with named events for techniques.

    techniques = resolve(techniques)                          # composition: refuse a pair, or order them
    data    = prepare_data(config.data)                       # corpus → tokenizer → examples (cached)
    train   = t.on_dataset(data.train, ctx)                   # prune / replace examples
    sampler = t.make_sampler(train, ctx) or EpochSampler      # the order of examples, on the final set
    model   = t.on_model(BertForMLM(config.model), ctx)       # surgery (before the optimizer sees it)
    opt     = t.on_optimizer(model, groups, ctx) or AdamW
    step    = t.on_step(TrainStep(model, opt, ...), ctx)     # phase 2 below, or a technique's own step
    evaluate(t.eval_model(model))                             # once before training: the first val loss
    while fraction_of_budget_used < 1:                        # steps, tokens, seconds or FLOPs
        plan = t.plan_step(StepPlan(k(f), batch_size, peak_lr · lr_factor(f)), ctx)   # f = budget fraction
        for each of plan.micro_batches:                       # phase 1: the data of the step
            ids   = t.on_batch(train.batch(sampler.next(plan.micro_batch_size)), ctx)
            batch = t.on_masked_batch(mask_tokens(ids), model, ctx)   # 80/10/10 BERT masking, then scoring
            flops += meter.measure(batch)                     # counted on the side, rolled back, not timed
        step(batches, ctx, plan.lr):                          # phase 2: `effitrain.train.step.TrainStep`
            for each batch:
                out  = LossInputs(model(batch))               # sparse head: logits at masked positions only
                loss = t.loss(out, ctx) or out.loss           # replace the objective; out.terms are logged
                t.backward(loss · share, ctx) or (loss · share).backward()   # share of predicted tokens
            t.before_update(model, opt, ctx); clip_grad_norm_; opt.step(); zero_grad
        t.after_step(model, ctx)                              # averaging, schedules, layer-drop state
        log(step, tokens, seconds, flops, loss, lr, terms)    # seconds exclude evaluation and FLOP counting
        if an evaluation point was crossed:
            metrics = t.on_eval(evaluate(t.eval_model(model)), ctx)   # val loss / accuracy on fixed masks

`t.event(...)` means: every technique in order, each receiving what the previous returned (the
events and their rules: `effitrain.techniques.base`). Ctrl-C or `stop.set()` ends the run after
the current step: history and model are kept (and a checkpoint written when `checkpoint=` is
given, before the stopped run's last evaluation, so a resumed run's history is exactly the
uninterrupted one). A non-finite loss ends it with status "diverged" and a message naming the
step. The same seed gives the same curve on CPU, and a run resumed from a checkpoint continues
exactly as if it had never stopped.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from effitrain.config import Config, ConfigError
from effitrain.data import MaskedBatch, PretrainData, TrainSet, mask_tokens, prepare_data
from effitrain.data.order import OrderedSampler, compressible_rows, likely_first, tokens_per_char
from effitrain.data.sampler import EpochSampler
from effitrain.model import BertForMLM, count_parameters
from effitrain.model.bert import analytic_flops_parts
from effitrain.techniques.base import Sampler, StepContext, StepPlan, Technique, overridden, resolve
from effitrain.train.checkpoint import CheckpointError, check_resume, load_checkpoint, save_checkpoint
from effitrain.train.flops import sync
from effitrain.train.footprint import check_memory_budget, estimate_footprint
from effitrain.train.memory import PeakMemory
from effitrain.train.run import Run
from effitrain.train.machine import this_machine
from effitrain.train.schedule import evals_due, lr_factor, micro_batches_at, schedule_fraction
from effitrain.train.warm import prefix_config, prefix_state
from effitrain.train.step import (FlopMeter, TrainStep, attention_recompute, autocast_for, check_fits,
                                  check_precision, compile_seconds, keep_rng, make_optimizer, param_groups)

Callback = Callable[[str, dict, Run], None]

__all__ = ["EpochSampler", "Trainer", "evaluate", "train"]


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

    def add(self, tokens: int, seconds: float, flops: float, analytic: dict[str, float]) -> None:
        self.step += 1
        self.tokens += tokens
        self.seconds += seconds
        self.flops += flops
        self.flops_analytic += sum(analytic.values())
        self.flops_blocks += analytic["blocks"]
        self.flops_attention += analytic["attention"]
        self.flops_head += analytic["head"]


class Trainer:
    """One run: `Trainer(config, techniques).fit()` → `Run`. See the module docstring for the loop.

    Techniques that cannot train together are refused here, with one line naming both.
    flops_every_step=True counts FLOPs on every micro-batch (slow; the curve is the same).
    `config.run.warm_start=S`: the run starts from the state of the baseline seed `run.warm_seed`
    at step S (`effitrain.train.warm`), trained once and kept in the cache.
    """

    def __init__(self, config: Config, techniques: Iterable[Technique] = (), *, data: PretrainData | None = None,
                 stop: threading.Event | None = None, callbacks: Iterable[Callback] = (),
                 checkpoint: str | None = None, checkpoint_every: int = 0, resume: str | None = None,
                 progress: bool | None = None, name: str = "", flops_every_step: bool = False,
                 until_step: int = 0):
        self.config = config
        self.techniques = resolve(techniques)
        if config.run.batch_ramp > 0 and config.budget.unit == "steps":
            raise ConfigError("run.batch_ramp changes the rows per step, so a budget in steps no longer measures "
                              "the work; give the budget in tokens, seconds or flops")
        self.stop = stop or threading.Event()
        self.callbacks = list(callbacks)
        self.checkpoint_path, self.checkpoint_every, self.resume = checkpoint, checkpoint_every, resume
        self.progress = True if progress is None else progress
        self.flops_every_step = flops_every_step
        self.until_step = until_step  # stop (as the Stop button does) once this many steps are done; 0 = never
        self.device = config.run.resolved_device()
        check_precision(config, self.device)  # fp16 without a GPU: refused before anything is built
        self.data = data if data is not None else prepare_data(config.data)
        self.run = Run(config=config, techniques=[t.describe() for t in self.techniques],
                       device=self._device_name(), name=name or config.run.name,
                       started=_dt.datetime.now().isoformat(timespec="seconds"))
        self.run.extra["machine"] = this_machine(self.run.device)  # where its seconds are measured
        self.pos = _Position()
        self.start_fraction = 0.0  # the budget fraction where the techniques began acting (a warm start's)
        self.first_rows: int | None = None  # rows of the first step, for the steps-budget check
        self.started = False  # setup done: from here on, an interrupted run keeps its history and model

    # -- the loop -----------------------------------------------------------------------------------
    def fit(self) -> Run:
        with self._lifecycle():
            self._setup()
            if not self.run.history.evals:
                self._evaluate()
            while self._fraction() < 1.0 and not self.stop.is_set():
                t0 = time.perf_counter()
                ctx = self._ctx()
                plan = self._plan(ctx)
                batches, flops, analytic, paused = self._micro_batches(plan, ctx)
                compiled_before = compile_seconds() if self.config.run.compile else 0.0
                result = self.step(batches, ctx, plan.lr)
                if self.config.run.compile:  # compiling is reported apart, never in the run's seconds
                    compiling = compile_seconds() - compiled_before
                    paused += compiling
                    self.run.extra["compile_seconds"] = self.run.extra.get("compile_seconds", 0.0) + compiling
                if not result.finite:
                    self.run.status = "diverged"
                    self.run.message = f"loss became {result.loss} at step {self.pos.step + 1}; run stopped"
                    warnings.warn(self.run.message, RuntimeWarning, stacklevel=2)
                    break
                self._sync()
                local = time.perf_counter() - t0 - paused
                self.pos.add(result.tokens, local, flops, analytic)
                t1 = time.perf_counter()
                for t in self.techniques:
                    t.after_step(self.model, self._ctx())  # sees the position after the step
                self._sync()
                local_total = local + time.perf_counter() - t1
                self.pos.seconds += self._agree(local_total) - local_total  # one agreement per step
                self._log(result, plan)
                if evals_due(self._fraction(), self.config.run.evals) > self.pos.evals_done:
                    self._evaluate()
                if self.checkpoint_path and self.checkpoint_every and self.pos.step % self.checkpoint_every == 0:
                    self._save()
                if self.until_step and self.pos.step >= self.until_step:
                    self.stop.set()
        return self.run

    # -- the pieces of a step ---------------------------------------------------------------------------
    def _plan(self, ctx: StepContext) -> StepPlan:
        cfg = self.config
        plan = StepPlan(micro_batches=micro_batches_at(ctx.fraction, cfg.run.grad_accum, cfg.run.batch_ramp),
                        micro_batch_size=cfg.run.batch_size,
                        lr=cfg.optim.lr * lr_factor(schedule_fraction(ctx.fraction, ctx.step, cfg.optim.plan_steps), cfg.optim.schedule,
                                                    cfg.optim.warmup, cfg.optim.min_lr_ratio))
        for t in self.techniques:
            plan = t.plan_step(plan, ctx)
        if plan.replicas > 1 and not any("step" in t.claimed() for t in self.techniques):
            raise ConfigError(f"the step plan asks for {plan.replicas} replicas, but no technique carries them out")
        if self.first_rows is None:
            self.first_rows = plan.rows
        elif plan.rows != self.first_rows and cfg.budget.unit == "steps":
            raise ConfigError(f"the rows per step changed from {self.first_rows} to {plan.rows} at step "
                              f"{ctx.step + 1}, so a budget in steps no longer measures the work; "
                              "give the budget in tokens, seconds or flops")
        return plan

    def _micro_batches(self, plan: StepPlan, ctx: StepContext) -> tuple[list[MaskedBatch], int, dict, float]:
        """Phase 1: sample → on_batch → mask → on_masked_batch, and the FLOPs of each micro-batch."""
        batches, flops, paused = [], 0, 0.0
        analytic = dict.fromkeys(("blocks", "attention", "head"), 0.0)
        for _ in range(plan.micro_batches):
            ids = self.train_set.batch(self.sampler.next(plan.micro_batch_size, ctx))
            for t in self.techniques:
                ids = t.on_batch(ids, ctx)
            raw = mask_tokens(ids, self.config.data.mask_prob, self.data.vocab_size, self.mask_rng).to(self.device)
            final = self._after_masking(raw, ctx) if self.scores_batches else raw  # a scoring pass is training time
            pause = time.perf_counter()
            measured = self._measured(raw, final, ctx)
            paused += time.perf_counter() - pause  # counting is not training time
            batches.append(final)
            flops += measured
            B, T = final.input_ids.shape
            parts = analytic_flops_parts(self.config.model, self.data.vocab_size, B, T, final.labels.numel(),
                                         attention_recompute=attention_recompute(self.config, self.device))
            for t in self.techniques:
                parts = t.analytic_flops(parts, final, ctx)
            for part, value in parts.items():
                analytic[part] += value
        return batches, flops, analytic, paused

    def _after_masking(self, batch: MaskedBatch, ctx: StepContext) -> MaskedBatch:
        for t in self.techniques:
            batch = t.on_masked_batch(batch, self.model, ctx)
        return batch

    def _measured(self, raw: MaskedBatch, final: MaskedBatch, ctx: StepContext) -> int:
        """The FLOPs of this micro-batch (`final`, what on_masked_batch made of `raw`); a technique's
        scoring pass on `raw` is counted too."""

        def work(c: StepContext) -> None:  # what this micro-batch costs, redone on the side and rolled back
            if self.scores_batches:
                self._after_masking(raw, c)
            self.count_step.micro_step(final, c, None, 1)

        return self.meter.measure(raw, final, ctx, work)

    def _log(self, result: Any, plan: StepPlan) -> None:
        p = self.pos
        if p.step % self.config.run.log_every == 0 or self._fraction() >= 1.0:
            terms = {f"term_{k}": v for k, v in result.terms.items()}
            row = self.run.history.log_step(step=p.step, tokens=p.tokens, seconds=p.seconds, flops=p.flops,
                                            flops_analytic=p.flops_analytic, train_loss=result.loss, lr=plan.lr,
                                            **terms)
            self._emit("step", row)
        self.bar.update(self._fraction(), result.loss)

    # -- setup ------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        """on_dataset → make_sampler → model → on_model → on_optimizer → (resume)."""
        cfg, run = self.config, self.run
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        torch.manual_seed(cfg.run.seed)
        self.mask_rng = torch.Generator().manual_seed(cfg.run.seed + 1)
        self.technique_rng = torch.Generator().manual_seed(cfg.run.seed + 2)
        self.memory = PeakMemory(self.device)

        train: TrainSet = self.data.train
        if cfg.data.max_tokens_per_char > 0:
            train = train.select(compressible_rows(train, cfg.data.max_tokens_per_char))
            if len(train) == 0:
                raise ConfigError(f"data.max_tokens_per_char={cfg.data.max_tokens_per_char} drops every training row; "
                                  f"raise it (rows here have {tokens_per_char(self.data.train).min():.3f} or more)")
        run.extra.update(rows_filtered=len(self.data.train) - len(train))
        for t in self.techniques:
            train = t.on_dataset(train, self._ctx())
        if len(train) == 0:
            raise ValueError("the training set is empty after on_dataset; keep at least one example")
        self.train_set = train
        self.sampler = self._make_sampler(train)

        check_fits(cfg, self.device, self.data.vocab_size)  # an impossible size: one line, before allocating
        model: torch.nn.Module = BertForMLM(cfg.model, self.data.vocab_size)
        for t in self.techniques:
            model = t.on_model(model, self._ctx())
        model.to(self.device).train()
        run.extra.update(parameters=count_parameters(model), unigram_entropy=self.data.unigram_entropy(),
                         unigram_val_loss=self.data.unigram_val_loss(),
                         train_examples=len(train), vocab_size=self.data.vocab_size)
        self.model = run.model = model
        self.optimizer = self._make_optimizer(model)
        if cfg.run.memory_budget:
            self._check_memory_budget(model)
        step_model = torch.compile(model) if cfg.run.compile else model
        self.step = TrainStep(model, self.optimizer, cfg, self.device, self.techniques, step_model=step_model)
        # the FLOP meter counts the eager module (torch.compile's graphs hide their ops from the counter)
        self.count_step = self.step if step_model is model else TrainStep(model, self.optimizer, cfg, self.device,
                                                                            self.techniques)
        for t in self.techniques:  # a technique that runs the step itself (claim "step"); counting stays plain
            self.step = t.on_step(self.step, self._ctx())
        self.meter = FlopMeter(model, self.techniques, self.device, every=self.flops_every_step)
        self.scores_batches = any(overridden(t, ["on_masked_batch"]) for t in self.techniques)
        self.bar = _ProgressBar(cfg, enabled=self.progress)
        if self.resume:
            self._load(self.resume)
        elif cfg.run.warm_start:
            self._warm_start()
        run.status, self.started = "running", True

    def _check_memory_budget(self, model: torch.nn.Module) -> None:
        """run.memory_budget: the step's estimated footprint (kept in run.extra["memory_estimate"]) or a
        one-line refusal naming the estimate and its biggest part, before the first step."""
        try:
            estimate = estimate_footprint(model, self.optimizer, self.config, self.data.vocab_size)
        except ValueError as exc:
            raise ConfigError(f"run.memory_budget: {exc}") from None
        self.run.extra["memory_estimate"] = estimate.to_dict()
        check_memory_budget(estimate, self.config)

    def _make_sampler(self, train: TrainSet) -> Sampler:
        chosen: list[tuple[str, Sampler]] = []
        for t in self.techniques:
            s = t.make_sampler(train, self._ctx())
            if s is not None:
                chosen.append((t.name, s))
        if self.config.data.order != "shuffle":
            if chosen:
                raise ConfigError(f"data.order={self.config.data.order!r} and {chosen[0][0]} cannot train together: "
                                  "both decide the order of examples")
            return OrderedSampler(likely_first(train, self.data.unigram_counts))
        if len(chosen) > 1:
            raise ConfigError(f"{chosen[0][0]} and {chosen[1][0]} cannot train together: both decide the order of examples")
        return chosen[0][1] if chosen else EpochSampler(len(train), self.config.run.seed)

    def _make_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        groups = param_groups(model, self.config.optim.weight_decay)
        for t in self.techniques:
            opt = t.on_optimizer(model, groups, self._ctx())
            if opt is not None:
                return opt
        return make_optimizer(model, self.config, self.device, groups)

    # -- how a run ends (once, whatever happens) -----------------------------------------------------------
    @contextlib.contextmanager
    def _lifecycle(self) -> Iterator[None]:
        """Sets how the run ended, records its stats, and emits "end" exactly once."""
        run = self.run
        try:
            yield
        except KeyboardInterrupt:
            run.status = "interrupted"
            if not self.started:  # during setup: nothing to keep
                run.message = "interrupted during setup"
                self._finish()
                raise
            run.message = f"interrupted at step {self.pos.step}; history and model kept"
        except BaseException as exc:
            run.status, run.message = "failed", f"{type(exc).__name__}: {exc}"
            self._finish()
            raise
        else:
            if run.status == "running":
                run.status = "completed" if self._fraction() >= 1.0 or not self.stop.is_set() else "stopped"
                if run.status == "stopped":
                    run.message = f"stopped at step {self.pos.step} ({self._fraction():.0%} of the budget)"
        self._finish()

    def _finish(self) -> None:
        run = self.run
        if hasattr(self, "bar"):
            self.bar.close()
        self._record_stats()
        if run.status != "failed" and self.started:
            if self.checkpoint_path:
                self._save()  # before the last evaluation below: a resumed run's history stays the uninterrupted one
            stopped_early = run.status in ("stopped", "interrupted") and run.history.steps
            if stopped_early and (not run.history.evals or run.history.evals[-1]["step"] != self.pos.step):
                self._evaluate(at_stop=True)  # a stopped run still gets a last evaluation to compare by
            run.model = self._eval_model()
        self._emit("end", run.summary())

    def _record_stats(self) -> None:
        p = self.pos
        self.run.extra["flops_analytic_parts"] = {"blocks": p.flops_blocks, "attention": p.flops_attention,
                                                  "head": p.flops_head}
        if hasattr(self, "memory"):
            self.run.extra.update(self.memory.read())
        stats = {t.name: dict(t.stats) for t in self.techniques if t.stats}
        if stats:
            self.run.extra["techniques"] = stats

    # -- evaluation, context, events ---------------------------------------------------------------------------
    def _eval_model(self) -> torch.nn.Module:
        model = self.model
        for t in self.techniques:
            model = t.eval_model(model)
        return model

    def _evaluate(self, at_stop: bool = False) -> None:
        ctx = self._ctx()
        metrics = evaluate(self._eval_model(), self.data.val, self.device, autocast_for(self.config, self.device))
        for t in self.techniques:
            metrics = t.on_eval(metrics, ctx)
        self._count_evals(ctx.fraction)
        p = self.pos
        row = self.run.history.log_eval(step=p.step, tokens=p.tokens, seconds=p.seconds, flops=p.flops, **metrics,
                                        **({"at_stop": True} if at_stop else {}))
        self._emit("eval", row)

    def _count_evals(self, fraction: float) -> None:
        """The evaluations due by this budget fraction are done (the next one is due at the next 1/evals)."""
        self.pos.evals_done = evals_due(fraction, self.config.run.evals)

    def _sync(self) -> None:
        sync(self.device)

    def _agree(self, seconds: float) -> float:
        """The seconds of a part of the step as every process counts them (one process: its own); a
        distributed trainer also shares the stop decision here, so all ranks stop at the same step."""
        return seconds

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({torch.get_num_threads()} threads)"

    def _ctx(self, step: int | None = None) -> StepContext:
        p = self.pos
        return StepContext(step=p.step if step is None else step, fraction=self._fraction(), tokens=p.tokens,
                           seconds=p.seconds, flops=p.flops, config=self.config, device=self.device,
                           rng=self.technique_rng, data=self.data, start=self.start_fraction)

    def _used(self) -> float:
        """How much of the budget's unit (steps, tokens, seconds or FLOPs) the run has used."""
        p = self.pos
        return {"steps": p.step, "tokens": p.tokens, "seconds": p.seconds, "flops": p.flops}[self.config.budget.unit]

    def _fraction(self) -> float:
        return min(1.0, self._used() / self.config.budget.amount)

    def _emit(self, kind: str, row: dict) -> None:
        for cb in self.callbacks:
            cb(kind, row, self.run)

    # -- checkpoints ----------------------------------------------------------------------------------------
    def _warm_start(self) -> None:
        """Continue from the baseline's state at step `run.warm_start` (see `effitrain.train.warm`)."""
        cfg, S = self.config, self.config.run.warm_start
        with keep_rng(self.device):  # training the state now or loading it leaves this run's generators alike
            path = prefix_state(cfg, self.data, type(self)._prefix_trainer, progress=self.progress)
        state = load_checkpoint(path, prefix_config(cfg))
        tr = state["trainer"]
        for part, target in (("model", self.model), ("optimizer", self.optimizer)):
            try:
                if part == "optimizer":
                    for t in self.techniques:
                        state[part] = t.on_warm_start(self.model, state[part], self._ctx())
                target.load_state_dict(state[part])
                if part == "optimizer":
                    _check_optimizer_shapes(self.optimizer)
            except (RuntimeError, ValueError, KeyError) as exc:
                event = "on_model" if part == "model" else "on_optimizer"
                owners = [t.name for t in self.techniques if overridden(t, [event])]
                raise ConfigError(f"run.warm_start and {' and '.join(owners) or 'this config'} cannot train together: "
                                  f"the baseline's {part} state at step {S} does not fit this run's {part} "
                                  f"({str(exc).splitlines()[0][:120]})") from None
        self.pos = _Position(**tr["position"])
        if self.pos.step != S:
            raise CheckpointError(f"warm-start state {path} is at step {self.pos.step}, not {S}; delete it to train it again")
        self.start_fraction = self._fraction()
        if cfg.run.seed == cfg.run.warm_seed:  # the warm run itself continues: its generators and data order
            same_data = len(self.train_set) == len(self.data.train) - self.run.extra["rows_filtered"] \
                and type(self.sampler) is EpochSampler
            if same_data and not any(overridden(t, ["on_dataset"]) for t in self.techniques):
                self.sampler.load_state_dict(tr["sampler"])  # else: the techniques' data, in their own order
            self._restore_generators(tr)
        # another seed keeps the generators and sampler its own seed gave it: its data order and masks from here
        self._restore_records(state)
        p = self.pos
        self.run.extra["warm_start"] = {"step": p.step, "seed": cfg.run.warm_seed, "tokens": p.tokens,
                                        "seconds": p.seconds, "flops": p.flops,
                                        "val_loss": self.run.history.evals[-1]["val_loss"] if self.run.history.evals
                                        else None}

    @staticmethod
    def _prefix_trainer(config: Config, **kwargs: Any) -> "Trainer":
        return Trainer(config, (), **kwargs)

    def _save(self) -> None:
        save_checkpoint(self.checkpoint_path, {
            "config": self.config.to_dict(),
            "techniques": self.run.techniques,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.run.history.to_dict(),
            "status": self.run.status,
            "trainer": {"position": vars(self.pos).copy(), "sampler": self.sampler.state_dict(),
                        "rng": {"torch": torch.get_rng_state(), "mask": self.mask_rng.get_state(),
                                "technique": self.technique_rng.get_state()},
                        "techniques": [t.state_dict() for t in self.techniques],
                        "flops": self.meter.state_dict(), "first_rows": self.first_rows,
                        "start_fraction": self.start_fraction,
                        "scaler": self.step.scaler.state_dict() if self.step.scaler is not None else None},
        })

    def _load(self, path: str) -> None:
        state = load_checkpoint(path, self.config)
        check_resume(state, self.config, self.run.techniques, path)
        tr = state["trainer"]
        self.pos = _Position(**tr["position"])
        b, used = self.config.budget, self._used()
        if used > b.amount:
            raise CheckpointError(f"checkpoint {path} has already used {used:g} {b.unit}, more than this run's "
                                  f"budget {b}; give a longer budget to continue it")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(tr["sampler"])
        # evaluations due by here under *this* budget: a longer budget evaluates from now on where its
        # uninterrupted run would (the old count would wait for an evaluation past its old end)
        self._count_evals(self._fraction())
        self.start_fraction = float(tr.get("start_fraction", 0.0))
        self._restore_generators(tr)
        for t, s in zip(self.techniques, tr.get("techniques", [])):
            t.load_state_dict(s)
        self._restore_records(state)

    def _restore_generators(self, tr: dict) -> None:
        torch.set_rng_state(tr["rng"]["torch"])
        self.mask_rng.set_state(tr["rng"]["mask"])
        self.technique_rng.set_state(tr["rng"]["technique"])

    def _restore_records(self, state: dict) -> None:
        """What a checkpoint adds to the position: measured FLOP points, the step's rows, the scaler, the history."""
        tr = state["trainer"]
        self.meter.load_state_dict(tr.get("flops", {}))
        self.first_rows = tr.get("first_rows")
        if self.step.scaler is not None and tr.get("scaler"):
            self.step.scaler.load_state_dict(tr["scaler"])
        self.run.history = type(self.run.history).from_dict(state["history"])


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Every per-parameter tensor of a loaded optimizer state has its parameter's shape (a state that
    does not would crash AdamW's foreach and fused kernels, not fail cleanly)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                    raise ValueError(f"optimizer state {key!r} has shape {tuple(value.shape)}, "
                                     f"its parameter {tuple(p.shape)}")


class _ProgressBar:
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
    """Train one run in this process; see `Trainer` for keyword arguments (data, stop, callbacks,
    checkpoint, resume). Over several processes: `effitrain.train(..., world_size=N)`, the run facade
    (`effitrain.train.runcache`), which hands such a run to `effitrain.parallel.layout`."""
    return Trainer(config, techniques, **kwargs).fit()
