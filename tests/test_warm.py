"""The shared warm start: every run of a comparison continues from the baseline's state at step S."""
import math

import pytest

import effitrain as et
from effitrain.lab.compare import compare
from effitrain.train import warm
from effitrain.techniques.base import Technique

from test_lab import fake_run


def losses(run):
    return [r["train_loss"] for r in run.history.steps]


def cfg_of(smoke, **kw):
    cfg, data = smoke
    return cfg.replace(**{"budget": "30steps", "evals": 5, "dropout": 0.1, **kw}), data


def test_warm_started_baseline_continues_exactly_as_the_baseline(smoke, fresh_cache):
    cfg, data = cfg_of(smoke)
    straight = et.train(cfg, data=data, progress=False)
    warmed = et.train(cfg.replace(warm_start=12), data=data, progress=False)
    assert warmed.status == "completed"
    assert losses(warmed) == losses(straight)  # the prefix's rows and every step after it
    assert [e["val_loss"] for e in warmed.history.evals] == [e["val_loss"] for e in straight.history.evals]
    assert warmed.extra["warm_start"]["step"] == 12 and warmed.summary()["tokens"] == straight.summary()["tokens"]
    # the state is trained once, kept in the cache under the baseline's key, and shared by a technique
    path = warm.state_path(cfg.replace(warm_start=12), data)
    assert path.exists()
    stamp = path.stat().st_mtime_ns
    pruned = et.train(cfg.replace(warm_start=12), [et.technique("prune", score="random", keep_fraction=0.5)],
                      data=data, progress=False)
    assert path.stat().st_mtime_ns == stamp
    assert losses(pruned)[:12] == losses(straight)[:12] and losses(pruned)[12:] != losses(straight)[12:]
    assert pruned.extra["warm_start"] == warmed.extra["warm_start"]


def test_warm_start_with_a_technique_that_keeps_the_model(smoke, fresh_cache):
    cfg, data = cfg_of(smoke, dropout=0.0)
    base = et.train(cfg.replace(warm_start=10), data=data, progress=False)
    dropped = et.train(cfg.replace(warm_start=10), [et.technique("layer_drop", theta_bar=0.5, gamma=10)], data=data,
                       progress=False)
    assert losses(dropped)[:10] == losses(base)[:10] and losses(dropped)[10:] != losses(base)[10:]
    assert dropped.extra["techniques"]["layer_drop"]["steps"] == 20  # it acted on the 20 steps after the warm start


def test_warm_start_refusals_are_one_line(smoke, fresh_cache):
    cfg, data = cfg_of(smoke)
    with pytest.raises(et.ConfigError, match=r"run.warm_start \(30\) must be a step before the end"):
        cfg.replace(warm_start=30)
    with pytest.raises(et.ConfigError, match="run.warm_start must be a step count"):
        cfg.replace(warm_start=-1)
    with pytest.raises(et.ConfigError, match="run.warm_start and electra cannot train together"):
        et.train(cfg.replace(warm_start=5), [et.technique("electra")], data=data, progress=False)
    with pytest.raises(et.ConfigError, match="run.warm_start and world_size=2"):
        et.train(cfg.replace(warm_start=5), data=data, progress=False, world_size=2)


def test_warm_start_survives_a_cache_it_cannot_write(smoke, fresh_cache):
    cfg, data = cfg_of(smoke, budget="12steps", evals=2)
    from effitrain.train import runcache
    (runcache.cache_root() / warm.WARM_DIR).write_text("a file where the folder would go")  # mkdir fails
    with pytest.warns(warm.WarmStartWarning, match="cannot keep the state"):
        run = et.train(cfg.replace(warm_start=6), data=data, progress=False)
    assert run.status == "completed" and run.extra["warm_start"]["step"] == 6


def test_compare_counts_from_the_warm_start():
    def run(t, techniques, seed):  # shares 100 s of prefix, then reaches val loss 5 at 100 + t
        r = fake_run([(0, 8.0), (100, 6.0), (100 + t, 5.0)], techniques=techniques, seed=seed)
        r.extra["warm_start"] = {"step": 100, "seconds": 100.0, "flops": 100e9, "tokens": 100, "val_loss": 6.0}
        return r

    base = [run(t, (), s) for s, t in enumerate([20.0, 30.0, 25.0])]
    fast = [run(t / 2, ("fast",), s) for s, t in enumerate([20.0, 30.0, 25.0])]
    df = compare(base + fast, target_val_loss=5.0)
    assert df.loc["baseline", "time_s"] == pytest.approx(25.0)  # not 125: the shared prefix is not counted
    assert df.loc["fast", "speedup"] == pytest.approx(2.0) and df.loc["fast", "paired"]
    assert any("warm start at step 100 of seed 0" in n for n in df.attrs["notes"])
    with pytest.raises(ValueError, match="before its warm start"):
        compare(base + fast, target_val_loss=6.5)
    assert math.isfinite(df.loc["fast", "speedup_lo"])


def test_other_seeds_start_from_the_warm_seeds_state_and_continue_with_their_own_order(smoke, fresh_cache):
    cfg, data = cfg_of(smoke, dropout=0.0)
    seed0 = et.train(cfg.replace(warm_start=10), data=data, progress=False)
    seed1 = et.train(cfg.replace(warm_start=10, seed=1), data=data, progress=False)
    again = et.train(cfg.replace(warm_start=10, seed=1), data=data, progress=False)
    scratch1 = et.train(cfg.replace(seed=1), data=data, progress=False)
    assert losses(seed1)[:10] == losses(seed0)[:10]           # the shared prefix is seed 0's
    assert losses(seed1)[10:] != losses(seed0)[10:]           # then seed 1's own data order and masks
    assert losses(seed1) == losses(again)                     # deterministic, from the cached state as when trained
    assert losses(seed1)[:10] != losses(scratch1)[:10]
    assert seed1.extra["warm_start"]["seed"] == 0
    with pytest.raises(et.ConfigError, match="run.warm_seed must be an integer"):
        cfg.replace(warm_seed=-3)


def test_execution_settings_share_the_warm_state_and_act_after_it(smoke, fresh_cache):
    """Precision, kernels and compile change how a step runs, not what it computes: a run that differs
    from the baseline only there starts from the baseline's own state (lesson 06 times them this way)."""
    cfg, data = cfg_of(smoke)
    plain = {"model.attention": "math", "optim.kernel": "for-loop",
             "run.precision": "fp32" if cfg.run.precision != "fp32" else "bf16"}
    warmed = cfg.replace(warm_start=12)
    assert warm.prefix_config(warmed.replace(**plain)) == warm.prefix_config(warmed)
    assert warm.state_path(warmed.replace(**plain), data) == warm.state_path(warmed, data)
    base = et.train(warmed, data=data, progress=False)
    other = et.train(warmed.replace(**plain), data=data, progress=False)
    assert other.config.model.attention == "math" and other.config.run.precision == plain["run.precision"]
    assert losses(other)[:12] == losses(base)[:12] and losses(other)[12:] != losses(base)[12:]
    # a field that changes the math is not an execution setting: it gets its own state
    assert warm.state_path(warmed.replace(lr=cfg.optim.lr * 2), data) != warm.state_path(warmed, data)


class ScheduleProbe(Technique):
    """Records, at every step, where the budget stands and the share of it the techniques act on."""

    name = "schedule_probe"

    def after_step(self, model, ctx):
        self.seen = getattr(self, "seen", []) + [(ctx.step, ctx.fraction, ctx.start, ctx.since_start)]


def test_schedules_run_over_the_steps_after_the_warm_start(smoke, fresh_cache):
    """A curriculum or length warm-up from a warm start runs its whole schedule over the remaining
    budget (StepContext.since_start), as it would from scratch; from scratch nothing changes."""
    cfg, data = cfg_of(smoke, budget="20steps")
    cold, warmed = ScheduleProbe(), ScheduleProbe()
    et.train(cfg, [cold], data=data, progress=False)
    et.train(cfg.replace(warm_start=10), [warmed], data=data, progress=False)
    assert all(start == 0.0 and since == frac for _, frac, start, since in cold.seen)
    assert [s for s, *_ in warmed.seen] == list(range(11, 21))
    assert all(start == pytest.approx(0.5) for _, _, start, _ in warmed.seen)
    assert [since for *_, since in warmed.seen] == pytest.approx([(s - 10) / 10 for s in range(11, 21)])
    # the sequence-length warm-up of a warm-started run starts short again
    run = et.train(cfg.replace(warm_start=10), [et.technique("seqlen_warmup", start_len=8, warmup_fraction=0.5)],
                   data=data, progress=False)
    assert run.extra["techniques"]["seqlen_warmup"]["shortest"] == 8
    assert 1 <= run.extra["techniques"]["seqlen_warmup"]["batches_cut"] <= 5


def test_a_variant_with_another_batch_and_lr_continues_the_baselines_warm_state(smoke, fresh_cache):
    cfg, data = cfg_of(smoke)
    base = cfg.replace(budget=f"{30 * 32 * cfg.data.seq_len}tokens", warm_start=10)
    small = warm.variant(base, batch_size=8, lr=base.optim.lr / 2)
    assert small.run.warm_base == f"batch_size=32,lr={base.optim.lr!r}"
    assert warm.prefix_config(small) == warm.prefix_config(base)
    assert warm.variant(small, batch_size=32, lr=base.optim.lr).run.warm_base == ""  # back to the baseline
    a = et.train(base, data=data, progress=False)
    b = et.train(small, data=data, progress=False)
    assert b.status == "completed" and b.extra["warm_start"] == a.extra["warm_start"]
    assert warm.state_path(small, data) == warm.state_path(base, data)
    assert losses(b)[:10] == losses(a)[:10]  # the shared prefix, then 8 rows per step at half the rate
    assert [r["tokens"] for r in b.history.steps][10:12] == [a.history.steps[9]["tokens"] + k * 8 * cfg.data.seq_len
                                                           for k in (1, 2)]
    assert b.summary()["tokens"] == a.summary()["tokens"]
    with pytest.raises(et.ConfigError, match="rows per step changed"):  # a budget in steps would mean other work
        et.train(warm.variant(cfg.replace(warm_start=10), batch_size=8), data=data, progress=False)
    with pytest.raises(et.ConfigError, match="run.warm_base must be 'key=value"):
        base.replace(warm_base="dropout=0.1")
