"""The technique contract: one small test technique per event, composition rules, and the promise that
counting FLOPs and resuming from a checkpoint change nothing."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch

import effitrain as et
from effitrain.data import MaskedBatch, mask_tokens
from effitrain.model import BertForMLM
from effitrain.techniques import StepContext, Technique, param
from effitrain.techniques.base import StepPlan, resolve
from effitrain.train import CheckpointError, lr_factor
from effitrain.train.schedule import micro_batches_at
from effitrain.train.step import TrainStep, make_optimizer, micro_batch_weights, mlm_loss_inputs


def short(cfg, steps: int = 6, **kw):
    return cfg.replace(budget=f"{steps}steps", evals=2, log_every=1, **kw)


def timeless(rows: list[dict]) -> list[dict]:
    """History rows without wall seconds (the one thing a rerun may change)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def curve(run) -> list:
    return [(r["train_loss"], r["flops"], r["tokens"]) for r in run.history.steps] + \
        [r["val_loss"] for r in run.history.evals]


# -- test techniques, one per event --------------------------------------------------------------
@dataclass(frozen=True)
class NoisyParams:
    scale: float = param(0.05, range=(0.0, 1.0), help="size of the noise")


class NoisyLoss(Technique):
    """Draws from ctx.rng in `loss` and keeps state that changes the loss: the hard case for counting and resuming."""

    name = "noisy_loss"
    Params = NoisyParams

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = 0

    def loss(self, out, ctx):
        self.calls += 1
        noise = torch.rand((), generator=ctx.rng).item()
        out.terms["noise"] = torch.tensor(noise)
        return out.loss * (1.0 + self.params.scale * noise * (self.calls % 3))

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


class DoubleLate(Technique):
    """plan_step: two micro-batches per step in the second half of the budget."""

    name = "double_late"

    def plan_step(self, plan, ctx):
        return StepPlan(plan.micro_batches * (2 if ctx.fraction >= 0.5 else 1), plan.micro_batch_size, plan.lr)


class KeepHardestHalf(Technique):
    """on_masked_batch: a no-grad scoring pass keeps the half of the predicted tokens with the highest loss."""

    name = "keep_hardest_half"

    def on_masked_batch(self, batch, model, ctx):
        with torch.no_grad():
            losses = mlm_loss_inputs(model, batch).token_losses
        keep = losses.topk(max(1, losses.numel() // 2)).indices.sort().values
        self.stats.setdefault("predicted", []).append(int(keep.numel()))
        return MaskedBatch(batch.input_ids, batch.attention_mask, batch.positions[keep], batch.labels[keep])


class PlainSGD(Technique):
    """on_optimizer: SGD instead of AdamW."""

    name = "plain_sgd"
    claims = ("optimizer",)

    def on_optimizer(self, model, groups, ctx):
        return torch.optim.SGD(groups, lr=ctx.config.optim.lr)


class StaleGradients(Technique):
    """backward: apply the previous micro-batch's gradient, keep this one for later (a one-step delay)."""

    name = "stale_gradients"
    claims = ("backward",)

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.queued: list | None = None

    def backward(self, loss, ctx):
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        fresh = [torch.zeros_like(p) if g is None else g.detach().clone() for p, g in zip(params, grads)]
        apply = self.queued if self.queued is not None else [torch.zeros_like(p) for p in params]
        for p, g in zip(params, apply):
            p.grad = g.clone() if p.grad is None else p.grad + g
        self.queued = fresh
        self.stats["delayed"] = self.stats.get("delayed", 0) + 1
        return True

    def on_model(self, model, ctx):
        self.model = model
        return model

    def state_dict(self):
        return {"queued": self.queued}

    def load_state_dict(self, state):
        self.queued = state["queued"]


class FrozenEmbeddings(Technique):
    """before_update: drop the token embeddings' gradient, so they never move."""

    name = "frozen_embeddings"

    def before_update(self, model, optimizer, ctx):
        model.encoder.tok.weight.grad = None


class EvalInitial(Technique):
    """eval_model: evaluate (and hand back) a frozen copy of the model as it was at the start."""

    name = "eval_initial"
    claims = ("eval_model",)

    def on_model(self, model, ctx):
        self.initial = copy.deepcopy(model)
        return model

    def eval_model(self, model):
        return self.initial


class HiddenProbe(Technique):
    """needs_hidden_states: the loss sees every block's output."""

    name = "hidden_probe"
    needs_hidden_states = True

    def loss(self, out, ctx):
        self.stats["layers_seen"] = len(out.hidden_states)
        self.stats["shape"] = tuple(out.hidden_states[-1].shape)
        return out.loss + 0.0 * sum(h.float().pow(2).mean() for h in out.hidden_states)


# -- counting and resuming change nothing ------------------------------------------------------------
def test_counting_flops_at_every_step_changes_no_curve(smoke):
    cfg, data = smoke
    once = et.train(short(cfg, 5), [NoisyLoss()], data=data, progress=False)
    every = et.Trainer(short(cfg, 5), [NoisyLoss()], data=data, progress=False, flops_every_step=True).fit()
    assert curve(once) == curve(every)
    assert [r["term_noise"] for r in once.history.steps] == [r["term_noise"] for r in every.history.steps]


def test_resume_with_a_stateful_random_technique_is_bit_identical(smoke, tmp_path):
    cfg, data = smoke
    full = et.train(short(cfg, 10), [NoisyLoss()], data=data, progress=False)
    ck = tmp_path / "half.pt"
    et.train(short(cfg, 10), [NoisyLoss()], data=data, progress=False,
             checkpoint=str(ck), checkpoint_every=5, stop=_stop_at(5))
    resumed = et.train(short(cfg, 10), [NoisyLoss()], data=data, progress=False, resume=str(ck))
    assert resumed.status == "completed"
    assert timeless(resumed.history.steps) == timeless(full.history.steps)
    assert timeless(resumed.history.evals) == timeless(full.history.evals)


class _stop_at:
    """A stop event that is set once the trainer has logged step k (read by the loop after that step)."""

    def __init__(self, k: int):
        self.k, self.flag = k, False

    def is_set(self) -> bool:
        return self.flag

    def set(self) -> None:
        self.flag = True

    def __call__(self, kind, row, run):
        if kind == "step" and row["step"] >= self.k:
            self.flag = True


def test_interrupted_then_resumed_history_is_the_uninterrupted_one(smoke, tmp_path):
    cfg, data = smoke
    c = short(cfg, 10)
    full = et.train(c, data=data, progress=False)
    ck = tmp_path / "stop.pt"
    stop = _stop_at(4)
    stopped = et.train(c, data=data, progress=False, checkpoint=str(ck), stop=stop, callbacks=[stop])
    assert stopped.status == "stopped" and stopped.history.evals[-1].get("at_stop")  # its own last evaluation
    resumed = et.train(c, data=data, progress=False, resume=str(ck))
    assert timeless(resumed.history.steps) == timeless(full.history.steps)
    assert timeless(resumed.history.evals) == timeless(full.history.evals)


def test_resume_refuses_another_seed_other_techniques_or_a_used_up_budget(smoke, tmp_path):
    cfg, data = smoke
    ck = tmp_path / "a.pt"
    et.train(short(cfg, 6), data=data, progress=False, checkpoint=str(ck))
    with pytest.raises(CheckpointError, match=r"run\.seed=0; this run has 1$"):
        et.train(short(cfg, 8, seed=1), data=data, progress=False, resume=str(ck))
    with pytest.raises(CheckpointError, match=r"techniques \[none\]; this run has \[seqlen_warmup"):
        et.train(short(cfg, 8), [et.technique("seqlen_warmup")], data=data, progress=False, resume=str(ck))
    with pytest.raises(CheckpointError, match=r"already used 6 steps, more than this run's budget 4steps"):
        et.train(short(cfg, 4), data=data, progress=False, resume=str(ck))
    longer = et.train(short(cfg, 8), data=data, progress=False, resume=str(ck))  # a longer budget continues
    assert longer.status == "completed" and longer.history.steps[-1]["step"] == 8
    # a field that changes the curve is refused in one line: the history would claim the new value throughout
    for change, shown in (({"lr": cfg.optim.lr * 2}, r"optim\.lr="), ({"batch_size": 16}, r"run\.batch_size=32"),
                          ({"warm_start": 2}, r"run\.warm_start=0")):
        with pytest.raises(CheckpointError, match=shown + r".*a resumed run continues the same curve"):
            et.train(short(cfg, 8, **change), data=data, progress=False, resume=str(ck))
    evals = et.train(short(cfg, 8).replace(evals=4, log_every=2), data=data, progress=False, resume=str(ck))
    assert evals.status == "completed"  # where it evaluates and logs may change


def test_a_longer_budget_evaluates_where_the_uninterrupted_run_would(smoke, tmp_path):
    cfg, data = smoke
    ck = tmp_path / "done.pt"
    first = et.train(short(cfg, 10).replace(evals=5), data=data, progress=False, checkpoint=str(ck))
    assert [e["step"] for e in first.history.evals] == [0, 2, 4, 6, 8, 10]
    longer = et.train(short(cfg, 20).replace(evals=5), data=data, progress=False, resume=str(ck))
    straight = et.train(short(cfg, 20).replace(evals=5), data=data, progress=False)
    assert [e["step"] for e in straight.history.evals] == [0, 4, 8, 12, 16, 20]
    # the old evaluations stay; from the resume on, the new budget's points, the last at its end
    assert [e["step"] for e in longer.history.evals] == [0, 2, 4, 6, 8, 10, 12, 16, 20]
    assert longer.summary()["val_loss_last"] == longer.history.evals[-1]["val_loss"]


# -- one test per event ---------------------------------------------------------------------------------
def test_plan_step_changes_the_micro_batches(smoke):
    cfg, data = smoke
    run = et.train(cfg.replace(budget=f"{8 * cfg.tokens_per_step}tokens", evals=1), [DoubleLate()], data=data,
                   progress=False)
    per_step = [b["tokens"] - a["tokens"] for a, b in zip(run.history.steps, run.history.steps[1:])]
    assert per_step[0] * 2 == per_step[-1]
    with pytest.raises(et.ConfigError, match=r"rows per step changed from \d+ to \d+ at step \d+, so a budget in steps"):
        et.train(short(cfg, 8), [DoubleLate()], data=data, progress=False)


def test_on_masked_batch_scores_and_its_pass_is_counted(smoke):
    cfg, data = smoke
    base = et.train(short(cfg, 4), data=data, progress=False)
    run = et.train(short(cfg, 4), [KeepHardestHalf()], data=data, progress=False)
    predicted = run.extra["techniques"]["keep_hardest_half"]["predicted"]
    assert len(predicted) == 4 and predicted[0] < cfg.run.batch_size * cfg.data.seq_len * cfg.data.mask_prob * 0.6
    # the scoring forward is charged: more FLOPs than the backward saved on half the head
    assert run.summary()["flops_measured"] > base.summary()["flops_measured"]
    assert timeless(run.history.steps) != timeless(base.history.steps)


def test_on_optimizer_replaces_the_optimizer(smoke):
    cfg, data = smoke
    trainer = et.Trainer(short(cfg, 3), [PlainSGD()], data=data, progress=False)
    run = trainer.fit()
    assert type(trainer.optimizer) is torch.optim.SGD and run.status == "completed"


def test_backward_can_be_taken_over(smoke):
    cfg, data = smoke
    base = et.train(short(cfg, 4), data=data, progress=False)
    run = et.train(short(cfg, 4), [StaleGradients()], data=data, progress=False)
    assert run.extra["techniques"]["stale_gradients"]["delayed"] == 4
    # the same start; from step 2 on each update applies the gradient of the step before (step 1 has lr 0)
    assert run.history.steps[0]["train_loss"] == base.history.steps[0]["train_loss"]
    assert run.history.steps[2]["train_loss"] != base.history.steps[2]["train_loss"]


def test_before_update_edits_gradients(smoke):
    cfg, data = smoke
    torch.manual_seed(cfg.run.seed)
    start = BertForMLM(cfg.model, data.vocab_size).encoder.tok.weight.detach().clone()
    run = et.train(short(cfg, 3), [FrozenEmbeddings()], data=data, progress=False)
    assert torch.equal(run.model.encoder.tok.weight.detach(), start)
    assert not torch.equal(et.train(short(cfg, 3), data=data, progress=False).model.encoder.tok.weight.detach(), start)


def test_eval_model_is_what_is_evaluated_and_handed_back(smoke):
    cfg, data = smoke
    t = EvalInitial()
    run = et.train(short(cfg, 4), [t], data=data, progress=False)
    losses = [e["val_loss"] for e in run.history.evals]
    assert len(set(losses)) == 1  # the initial model, evaluated three times
    assert run.model is t.initial


def test_loss_terms_are_logged_and_hidden_states_come_on_request(smoke):
    cfg, data = smoke
    run = et.train(short(cfg, 3), [NoisyLoss(), HiddenProbe()], data=data, progress=False)
    assert all(0.0 <= r["term_noise"] < 1.0 for r in run.history.steps)
    stats = run.extra["techniques"]["hidden_probe"]
    assert stats["layers_seen"] == cfg.model.layers and stats["shape"][-1] == cfg.model.hidden


# -- composition rules ------------------------------------------------------------------------------------
class TakesSamplerA(Technique):
    name = "sampler_a"
    claims = ("sampler",)


class TakesSamplerB(Technique):
    name = "sampler_b"
    claims = ("sampler",)


class Picky(Technique):
    name = "picky"
    conflicts = {"sampler_a": "it reorders the data itself"}
    after = ("sampler_b",)


def test_claims_conflicts_and_order():
    with pytest.raises(et.ConfigError, match=r"^sampler_a and sampler_b cannot train together: both take over the sampler$"):
        resolve([TakesSamplerA(), TakesSamplerB()])
    with pytest.raises(et.ConfigError, match=r"^picky and sampler_a cannot train together: it reorders the data itself$"):
        resolve([TakesSamplerA(), Picky()])
    assert [t.name for t in resolve([Picky(), TakesSamplerB()])] == ["sampler_b", "picky"]


def test_curriculum_samples_from_the_pruned_set_in_either_order(smoke):
    cfg, data = smoke
    runs = [et.train(short(cfg, 4), [et.technique(a), et.technique(b)], data=data, progress=False)
            for a, b in (("curriculum", "prune"), ("prune", "curriculum"))]
    for run in runs:
        s = run.extra["techniques"]
        assert s["curriculum"]["examples"] == s["prune"]["kept"] == run.extra["train_examples"] < s["prune"]["of"]
    assert timeless(runs[0].history.steps) == timeless(runs[1].history.steps)  # the same training, whatever the order given


# -- the step ------------------------------------------------------------------------------------------------
def test_micro_batches_are_weighted_by_their_predicted_tokens(smoke):
    cfg, data = smoke
    assert micro_batch_weights([10, 30]) == [0.25, 0.75] and micro_batch_weights([7, 7]) is None
    torch.manual_seed(0)
    model = BertForMLM(cfg.model, data.vocab_size)
    g = torch.Generator().manual_seed(0)
    ids = data.train.ids[:8]
    b1 = mask_tokens(ids[:2, :32], 0.15, data.vocab_size, g)
    b2 = mask_tokens(ids[2:8], 0.15, data.vocab_size, g)
    assert b1.labels.numel() != b2.labels.numel()
    step = TrainStep(model, make_optimizer(model, cfg, torch.device("cpu")), cfg, torch.device("cpu"))
    ctx = StepContext.standalone(cfg)
    w = micro_batch_weights([b1.labels.numel(), b2.labels.numel()])
    for b, wi in zip((b1, b2), w):
        step.micro_step(b, ctx, wi, 2)
    accumulated = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    all_losses = torch.cat([mlm_loss_inputs(model, b).token_losses for b in (b1, b2)])
    all_losses.mean().backward()  # the mean over every predicted token of the step
    for a, p in zip(accumulated, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-7)


def test_triangular_schedule_and_the_batch_ramp(smoke):
    assert [lr_factor(f, "triangular", 0.0) for f in (0.0, 0.5, 0.75, 1.0)] == [0.25, 0.75, 1.0, 0.0]
    assert [micro_batches_at(f, 4, 0.6) for f in (0.0, 0.2, 0.45, 0.6, 0.9)] == [1, 2, 3, 4, 4]
    cfg, data = smoke
    with pytest.raises(et.ConfigError, match=r"^run\.batch_ramp changes the rows per step"):
        et.Trainer(short(cfg, 4, grad_accum=4, batch_ramp=0.5), data=data)
    run = et.train(cfg.replace(budget=f"{6 * cfg.tokens_per_step}tokens", grad_accum=3, batch_ramp=0.5,
                               schedule="triangular", evals=1), data=data, progress=False)
    per_step = [b["tokens"] - a["tokens"] for a, b in zip([{"tokens": 0}] + run.history.steps, run.history.steps)]
    assert per_step[0] == cfg.tokens_per_step and per_step[-1] == 3 * cfg.tokens_per_step


def test_peak_memory_is_in_the_summary(smoke):
    cfg, data = smoke
    s = et.train(short(cfg, 2), data=data, progress=False).summary()
    assert s["peak_memory_kind"] in ("cpu peak RSS growth", "cuda max allocated")
    assert isinstance(s["peak_memory_bytes"], int) and s["peak_memory_bytes"] >= 0
