import math
import threading
from dataclasses import dataclass

import pytest
import torch

import effitrain as et
from effitrain.techniques import Technique, param
from effitrain.train import CheckpointError, History, lr_factor, time_to_target
from effitrain.train.checkpoint import save_checkpoint


def short(cfg, **kw):
    return cfg.replace(**{"budget": "20steps", "evals": 2, **kw})


# -- learning on real text ---------------------------------------------------------------------
def test_smoke_profile_learns_real_text(smoke):
    cfg, data = smoke
    run = et.train(cfg, data=data, progress=False)
    s = run.summary()
    assert run.status == "completed" and s["steps"] == 300
    assert s["val_loss_last"] < s["val_loss_first"] - 1.0
    # below what a model that knows only word frequencies gets on the same validation targets
    assert s["val_loss_last"] < run.extra["unigram_val_loss"] - 0.05
    assert s["val_accuracy_last"] > 0.05
    assert s["tokens"] == 300 * cfg.tokens_per_step


def test_measured_flops_match_analytic(smoke):
    cfg, data = smoke
    run = et.train(short(cfg, budget="3steps"), data=data, progress=False)
    s = run.summary()
    assert s["flops_measured"] > 0
    assert abs(s["flops_measured"] / s["flops_analytic"] - 1) < 0.03


def test_measured_flops_count_attention_on_cpu(smoke):
    """Without formulas for the CPU flash-attention ops, attention would count as zero."""
    cfg, data = smoke
    run = et.train(short(cfg, budget="1steps", seq_len=64), data=data, progress=False)
    from effitrain.model import analytic_flops
    m = cfg.model
    B, T = cfg.run.batch_size, 64
    predicted = run.history.steps[0]["flops_analytic"]  # includes attention
    without_attention = predicted - m.layers * 4 * T * m.hidden * 3.5 * B * T
    assert run.history.steps[0]["flops"] > without_attention * 1.02
    assert predicted == analytic_flops(m, data.vocab_size, B, T, round(cfg.data.mask_prob * 63) * B)


# -- reproducibility --------------------------------------------------------------------------
def losses(run):
    return [r["train_loss"] for r in run.history.steps]


def test_same_seed_same_curve_other_seed_other_curve(smoke):
    cfg, data = smoke
    a = et.train(short(cfg, seed=1), data=data, progress=False)
    b = et.train(short(cfg, seed=1), data=data, progress=False)
    c = et.train(short(cfg, seed=2), data=data, progress=False)
    assert losses(a) == losses(b)
    assert a.history.evals[-1]["val_loss"] == b.history.evals[-1]["val_loss"]
    assert losses(a) != losses(c)


def test_resume_continues_identically(smoke, tmp_path):
    cfg, data = smoke
    cfg = short(cfg, budget="30steps", evals=3, dropout=0.1)  # dropout: the torch RNG must be restored too
    straight = et.train(cfg, data=data, progress=False)

    stop = threading.Event()
    def stop_at_12(kind, row, run):
        if kind == "step" and row["step"] == 12:
            stop.set()
    ckpt = tmp_path / "run.pt"
    first = et.train(cfg, data=data, progress=False, stop=stop, callbacks=[stop_at_12], checkpoint=str(ckpt))
    assert first.status == "stopped" and len(first.history.steps) == 12
    resumed = et.train(cfg, data=data, progress=False, resume=str(ckpt))
    assert resumed.status == "completed"
    assert losses(resumed) == losses(straight)
    assert resumed.history.evals[-1]["val_loss"] == straight.history.evals[-1]["val_loss"]
    assert resumed.summary()["tokens"] == straight.summary()["tokens"]


def test_bad_checkpoints_are_refused(smoke, tmp_path):
    cfg, data = smoke
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        et.train(short(cfg), data=data, progress=False, resume=str(garbage))
    other = tmp_path / "other.pt"
    save_checkpoint(other, {"something": 1})
    with pytest.raises(CheckpointError, match="incomplete"):
        et.train(short(cfg), data=data, progress=False, resume=str(other))
    with pytest.raises(CheckpointError, match="does not exist"):
        et.train(short(cfg), data=data, progress=False, resume=str(tmp_path / "none.pt"))
    ckpt = tmp_path / "ok.pt"
    et.train(short(cfg, budget="2steps"), data=data, progress=False, checkpoint=str(ckpt))
    with pytest.raises(CheckpointError, match=r"model.layers=2; this run has 3"):
        et.train(short(cfg, layers=3), data=data, progress=False, resume=str(ckpt))


# -- ending a run ------------------------------------------------------------------------------
def test_ctrl_c_keeps_history_and_model(smoke):
    cfg, data = smoke
    def interrupt(kind, row, run):
        if kind == "step" and row["step"] == 5:
            raise KeyboardInterrupt
    run = et.train(short(cfg), data=data, progress=False, callbacks=[interrupt])
    assert run.status == "interrupted" and "step 5" in run.message
    assert len(run.history.steps) == 5 and run.model is not None
    assert run.history.evals[-1]["step"] == 5  # a last evaluation to compare by


@dataclass(frozen=True)
class BlowUpParams:
    at_step: int = param(4, range=(1, 1000))


class BlowUp(Technique):
    name = "test-blow-up"
    Params = BlowUpParams

    def loss(self, out, ctx):
        return out.loss * float("nan") if ctx.step + 1 >= self.params.at_step else None


def test_nan_loss_stops_with_the_step(smoke):
    cfg, data = smoke
    with pytest.warns(RuntimeWarning, match="at step 4"):
        run = et.train(short(cfg), [BlowUp()], data=data, progress=False)
    assert run.status == "diverged" and "nan" in run.message and "step 4" in run.message
    assert len(run.history.steps) == 3


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecorderParams:
    keep_every: int = param(2, range=(1, 10))
    truncate_to: int = param(32, range=(8, 512))


class Recorder(Technique):
    """Prunes to every k-th example, truncates sequences, records the events it sees."""

    name = "test-recorder"
    Params = RecorderParams

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.events: list[tuple[str, int]] = []

    def on_dataset(self, train, ctx):
        self.events.append(("on_dataset", ctx.step))
        return train.select(torch.arange(0, len(train), self.params.keep_every))

    def on_model(self, model, ctx):
        self.events.append(("on_model", ctx.step))
        return model

    def on_batch(self, ids, ctx):
        self.events.append(("on_batch", ctx.step))
        return ids[:, : self.params.truncate_to]

    def loss(self, out, ctx):
        self.events.append(("loss", ctx.step))
        return None

    def after_step(self, model, ctx):
        self.events.append(("after_step", ctx.step))

    def on_eval(self, metrics, ctx):
        self.events.append(("on_eval", ctx.step))
        return {**metrics, "recorded": float(len(self.events))}


def test_events_are_called_in_order_and_take_effect(smoke):
    cfg, data = smoke
    rec = Recorder()
    run = et.train(short(cfg, budget="4steps", evals=2), [rec], data=data, progress=False)
    names = [e for e, _ in rec.events]
    assert names[:2] == ["on_dataset", "on_model"]
    assert names[2] == "on_eval"
    # per step: on_batch; loss (+ loss again for the one-off FLOP count of the first shape); after_step
    assert names.count("after_step") == 4 and names.count("on_batch") == 4
    assert [s for e, s in rec.events if e == "after_step"] == [1, 2, 3, 4]
    assert run.extra["train_examples"] == math.ceil(len(data.train) / 2)
    assert run.summary()["tokens"] == 4 * cfg.run.batch_size * 32
    assert "recorded" in run.history.evals[-1]


def test_off_means_identical(smoke):
    """A technique whose events all return what they were given changes nothing."""
    cfg, data = smoke
    a = et.train(short(cfg), data=data, progress=False)
    b = et.train(short(cfg), [Technique()], data=data, progress=False)
    assert losses(a) == losses(b)


def test_technique_params_are_validated():
    with pytest.raises(et.ConfigError, match=r"test-recorder.keep_every must be a number in \[1, 10\]; got 0"):
        Recorder(keep_every=0)
    with pytest.raises(et.ConfigError, match="parameters: keep_every, truncate_to"):
        Recorder(keep_everything=1)


# -- budgets and schedules -----------------------------------------------------------------------
@pytest.mark.parametrize("budget, unit", [("20000tokens", "tokens"), ("2s", "seconds"), ("2e11flops", "flops")])
def test_budget_units_end_at_the_deadline(smoke, budget, unit):
    cfg, data = smoke
    run = et.train(short(cfg, budget=budget), data=data, progress=False)
    last = run.history.steps[-1]
    column = {"tokens": "tokens", "seconds": "seconds", "flops": "flops"}[unit]
    amount = cfg.replace(budget=budget).budget.amount
    assert last[column] >= amount
    assert run.history.steps[-2][column] < amount  # it did not run a step past the deadline
    assert run.history.steps[-1]["lr"] < 0.2 * cfg.optim.lr  # the schedule decayed to the deadline


def test_eval_seconds_are_not_training_seconds(smoke):
    cfg, data = smoke
    few = et.train(short(cfg, evals=1), data=data, progress=False)
    many = et.train(short(cfg, evals=20, max_val_blocks=128), data=data, progress=False)
    assert len(many.history.evals) > 5 * len(few.history.evals) / 2
    assert many.summary()["seconds"] < 2.0 * few.summary()["seconds"] + 0.5


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine", "one-cycle"])
def test_schedules_end_at_the_budget(schedule):
    assert lr_factor(0.0, schedule, 0.1) < 0.05
    peak = max(lr_factor(i / 1000, schedule, 0.1) for i in range(1001))
    assert peak == pytest.approx(1.0, abs=1e-3)
    end = lr_factor(1.0, schedule, 0.1)
    assert end == pytest.approx(1.0 if schedule == "constant" else 0.0, abs=1e-4)
    assert lr_factor(0.05, "linear", 0.1) == pytest.approx(0.5)
    assert lr_factor(0.55, "cosine", 0.1) == pytest.approx(0.5)


# -- time to target ----------------------------------------------------------------------------
def test_time_to_target_interpolates_and_says_not_reached():
    h = History(evals=[dict(step=0, tokens=0, seconds=0.0, flops=0.0, val_loss=8.0, val_accuracy=0.0),
                       dict(step=10, tokens=100, seconds=2.0, flops=1e9, val_loss=6.0, val_accuracy=0.1),
                       dict(step=20, tokens=200, seconds=4.0, flops=2e9, val_loss=5.0, val_accuracy=0.2)])
    t = time_to_target(h, val_loss=5.5)
    assert t == {"seconds": 3.0, "flops": 1.5e9, "tokens": 150.0, "step": 15.0}
    assert time_to_target(h, val_loss=4.0) is None
    assert time_to_target(h, val_accuracy=0.15)["seconds"] == 3.0
    with pytest.raises(ValueError):
        time_to_target(h)


def test_history_round_trips(tmp_path, smoke):
    cfg, data = smoke
    run = et.train(short(cfg, budget="5steps"), data=data, progress=False)
    again = History.from_csv(run.history.to_csv(tmp_path / "h.csv"))
    assert [r["train_loss"] for r in again.steps] == pytest.approx(losses(run))
    assert len(again.evals) == len(run.history.evals)
    path = run.save(tmp_path / "run.json")
    loaded = et.Run.load(path)
    assert loaded.summary()["val_loss_last"] == run.summary()["val_loss_last"]
    assert loaded.config == run.config


def test_gradient_accumulation_counts_every_micro_batch(smoke):
    cfg, data = smoke
    run = et.train(short(cfg, budget="4steps", batch_size=8, grad_accum=3), data=data, progress=False)
    assert run.summary()["tokens"] == 4 * 3 * 8 * cfg.data.seq_len
    assert run.summary()["flops_measured"] == pytest.approx(3 * et.train(
        short(cfg, budget="4steps", batch_size=8), data=data, progress=False).summary()["flops_measured"])


def test_bf16_autocast_trains_on_cpu(smoke):
    cfg, data = smoke
    run = et.train(short(cfg, budget="30steps", precision="bf16"), data=data, progress=False)
    s = run.summary()
    assert run.status == "completed" and s["val_loss_last"] < s["val_loss_first"] - 0.5
