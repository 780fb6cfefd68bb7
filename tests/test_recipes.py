"""The named recipes (bert, 24h-bert, cramming) and the config fields they toggle: the step-planned
schedule, the dense head, the compressibility filter and the likely-first order."""
import dataclasses

import pytest
import torch

import effitrain as et
from effitrain import cli
from effitrain.data.order import OrderedSampler, likely_first, tokens_per_char, unigram_log_likelihood
from effitrain.model.bert import BertForMLM, analytic_flops
from effitrain.recipes import RECIPE_NAMES, RECIPES, ingredients, recipe_card, swap
from effitrain.train.flops import count_flops
from effitrain.train.schedule import lr_factor, micro_batches_at

# what the issue lists for each recipe (the spec), independent of recipes.py
LISTED = {
    "bert": {"model.norm": "post", "model.dropout": 0.1, "model.bias": True, "model.ffn_kind": "gelu",
             "model.sparse_head": False, "optim.lr": 1e-4, "optim.schedule": "linear", "data.mask_prob": 0.15,
             "run.grad_accum": 1, "run.batch_ramp": 0.0, "data.max_tokens_per_char": 0.0, "data.order": "shuffle"},
    "24h-bert": {"model.norm": "pre", "model.sparse_head": True, "optim.lr": 1e-3, "optim.beta1": 0.9,
                 "optim.beta2": 0.98, "optim.eps": 1e-6, "optim.weight_decay": 0.01, "optim.warmup": 0.06,
                 "optim.schedule": "linear", "optim.plan_steps": 0, "data.order": "shuffle"},
    "cramming": {"model.norm": "pre", "model.bias": False, "model.ffn_kind": "glu", "model.tie_embeddings": True,
                 "model.dropout": 0.0, "model.sparse_head": True, "data.mask_prob": 0.25, "optim.beta1": 0.9,
                 "optim.beta2": 0.98, "optim.eps": 1e-12, "optim.weight_decay": 0.01, "optim.grad_clip": 0.5,
                 "optim.lr": 1e-3, "optim.schedule": "triangular", "optim.plan_steps": 0, "run.batch_ramp": 0.6,
                 "data.max_tokens_per_char": 0.3, "data.order": "likely-first"},
}


def field(cfg, name):
    section, _, attr = name.partition(".")
    return getattr(getattr(cfg, section), attr)


def flat(cfg):
    return {f"{s}.{k}": v for s in ("data", "model", "optim", "run") for k, v in dataclasses.asdict(getattr(cfg, s)).items()}


@pytest.mark.parametrize("name", RECIPE_NAMES)
@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_each_recipe_has_exactly_the_listed_values(name, profile):
    cfg = et.recipe(name, profile)
    for key, value in LISTED[name].items():
        assert field(cfg, key) == value, (name, profile, key)
    for key, value in ingredients(name, profile).items():  # and every ingredient it names is what the config holds
        assert field(cfg, key) == value
    base = flat(et.profile_config(profile))
    changed = {k for k, v in flat(cfg).items() if base[k] != v}
    assert changed <= set(ingredients(name, profile)), "a recipe sets only its ingredients"
    assert cfg.profile == profile and cfg.data.vocab_size == et.profile_config(profile).data.vocab_size


def test_large_batches_are_accumulated_and_bert_plans_in_steps():
    for profile in ("smoke", "cpu", "gpu"):
        bert, h24, cram = (et.recipe(n, profile) for n in RECIPE_NAMES)
        assert bert.run.grad_accum == 1 < h24.run.grad_accum == cram.run.grad_accum
        assert h24.run.batch_size == bert.run.batch_size == et.profile_config(profile).run.batch_size
        assert bert.optim.plan_steps > 0 and h24.optim.plan_steps == cram.optim.plan_steps == 0
    card = recipe_card("cramming", "cpu")
    assert "trash_cutoff 0.3" in card and "batch_size_ramp 0.60" in card and "2× BERT's batch on cpu" in card


def test_toggling_one_ingredient_changes_only_that_field():
    cfg = et.recipe("cramming", "smoke")
    for key, other in (("model.norm", "post"), ("data.order", "shuffle"), ("optim.schedule", "linear")):
        diff = {k for k, v in flat(cfg.replace(**{key: other})).items() if flat(cfg)[k] != v}
        assert diff == {key}
    swapped = swap(cfg, "bert", ["optim.lr", "optim.beta2"])
    assert {k for k, v in flat(swapped).items() if flat(cfg)[k] != v} == {"optim.lr", "optim.beta2"}
    with pytest.raises(et.ConfigError, match=r"^recipe 'bert' has no ingredient 'optim\.kernel'"):
        swap(cfg, "bert", ["optim.kernel"])
    with pytest.raises(et.ConfigError, match=r"^recipe must be one of bert, 24h-bert, cramming; got 'roberta'$"):
        et.recipe("roberta")


def test_schedules_end_at_zero_exactly_at_the_deadline():
    for schedule, warmup in (("triangular", 0.0), ("linear", 0.06)):
        assert lr_factor(1.0, schedule, warmup) == 0.0 and lr_factor(0.999, schedule, warmup) > 0.0
    assert lr_factor(0.75, "triangular", 0.0) == 1.0


@pytest.mark.parametrize("budget", ["flops", "seconds"])
@pytest.mark.parametrize("name", ["cramming", "24h-bert"])
def test_a_synced_run_ends_at_lr_zero_and_a_step_plan_is_cut_off(smoke, name, budget):
    cfg, data = smoke
    base = et.recipe(name, "smoke", evals=1, precision="fp32")
    micro = analytic_flops(base.model, data.vocab_size, cfg.run.batch_size, cfg.data.seq_len,
                           int(base.data.mask_prob * cfg.run.batch_size * cfg.data.seq_len))
    amount = f"{15 * base.run.grad_accum * micro:.4g}flops" if budget == "flops" else "4s"
    run = et.train(base.replace(budget=amount), data=data, progress=False)
    steps = run.history.steps
    assert len(steps) >= 8 and run.status == "completed"
    peak, unit = base.optim.lr, ("flops" if budget == "flops" else "seconds")
    total = base.replace(budget=amount).budget.amount
    before, share = steps[-2][unit] / total, (steps[-1][unit] - steps[-2][unit]) / total  # the last step's start, size
    assert steps[-1]["lr"] == pytest.approx(peak * lr_factor(before, base.optim.schedule, base.optim.warmup), rel=1e-6)
    slope = 4.0 if name == "cramming" else 1.0 / (1 - base.optim.warmup)  # how fast the factor falls to 0 at f = 1
    assert steps[-1]["lr"] / peak <= slope * share + 1e-9 and before < 1.0 <= before + share + 1e-9
    assert max(s["lr"] for s in steps) / peak > 0.5  # it did get near the peak on the way
    cut = et.train(base.replace(budget=amount, plan_steps=4 * len(steps), schedule="linear", warmup=0.0,
                                batch_ramp=0.0), data=data, progress=False)
    k = len(cut.history.steps)
    assert cut.history.steps[-1]["lr"] == pytest.approx(peak * lr_factor((k - 1) / (4 * len(steps)), "linear", 0.0))
    assert cut.history.steps[-1]["lr"] > 0.5 * peak  # the deadline cut the plan off part-way


def test_the_batch_ramp_reaches_the_target_at_60_percent_in_whole_micro_batches(smoke):
    assert [micro_batches_at(f, 4, 0.6) for f in (0.0, 0.3, 0.59, 0.6, 1.0)] == [1, 2, 3, 4, 4]
    cfg, data = smoke
    base = et.recipe("cramming", "smoke", evals=1)
    micro = cfg.run.batch_size * cfg.data.seq_len
    amount = 30 * base.run.grad_accum * micro
    run = et.train(base.replace(budget=f"{amount}tokens", max_tokens_per_char=0.0), data=data, progress=False)
    prev, per_step = 0, []
    for s in run.history.steps:
        per_step.append(s["tokens"] - prev)
        prev = s["tokens"]
    assert all(t % micro == 0 for t in per_step) and per_step[0] == micro
    first_full = next(i for i, t in enumerate(per_step) if t == base.run.grad_accum * micro)
    used_before = sum(per_step[:first_full]) / amount
    assert 0.4 < used_before <= 0.6 + 1e-9  # the target is reached when 60% of the budget is used


def test_likely_first_order_and_the_compressibility_filter(smoke):
    cfg, data = smoke
    order = likely_first(data.train, data.unigram_counts)
    ll = unigram_log_likelihood(data.train, data.unigram_counts)[order]
    assert sorted(order.tolist()) == list(range(len(data.train)))
    assert bool((ll[:-1] >= ll[1:]).all()), "likely-first: non-increasing unigram log-likelihood"
    sampler = OrderedSampler(order)
    assert torch.equal(torch.cat([sampler.next(7), sampler.next(5)]), order[:12])
    tpc = tokens_per_char(data.train)
    run = et.train(cfg.replace(budget="2steps", evals=1, max_tokens_per_char=0.3, order="likely-first"), data=data,
                   progress=False)
    assert run.extra["rows_filtered"] == int((tpc > 0.3).sum()) > 0
    assert run.extra["train_examples"] == int((tpc <= 0.3).sum())
    with pytest.raises(et.ConfigError, match=r"^data\.max_tokens_per_char=0\.01 drops every training row"):
        et.train(cfg.replace(budget="1steps", max_tokens_per_char=0.01), data=data, progress=False)
    with pytest.raises(et.ConfigError, match=r"^data\.order='likely-first' and curriculum cannot train together"):
        et.train(cfg.replace(budget="1steps", order="likely-first"), [et.technique("curriculum")], data=data,
                 progress=False)
    with pytest.raises(et.ConfigError, match=r"^data\.order must be one of shuffle, likely-first; got 'random'$"):
        cfg.replace(order="random")
    with pytest.raises(et.ConfigError, match=r"^data\.max_tokens_per_char must be in \[0, 2\]"):
        cfg.replace(max_tokens_per_char=-1)


def test_the_first_batch_of_a_likely_first_run_is_the_likeliest_rows(smoke):
    cfg, data = smoke
    trainer = et.Trainer(cfg.replace(budget="1steps", order="likely-first"), data=data, progress=False)
    trainer.fit()
    expected = likely_first(trainer.train_set, data.unigram_counts)[: cfg.run.batch_size]
    sampler = OrderedSampler(likely_first(trainer.train_set, data.unigram_counts))
    assert torch.equal(sampler.next(cfg.run.batch_size), expected)
    assert trainer.sampler.state_dict() == {"epoch": 0, "cursor": cfg.run.batch_size}


def test_the_dense_head_gives_the_same_logits_and_counts_every_position(smoke):
    cfg, data = smoke
    torch.manual_seed(0)
    sparse = BertForMLM(cfg.model, data.vocab_size).eval()
    dense = BertForMLM(dataclasses.replace(cfg.model, sparse_head=False), data.vocab_size).eval()
    dense.load_state_dict(sparse.state_dict())
    ids = data.train.ids[:4, :32]
    pos = torch.tensor([1, 5, 40, 77, 100])
    assert torch.allclose(sparse(ids, pos), dense(ids, pos), atol=1e-5)
    for model, rows in ((sparse, len(pos)), (dense, ids.numel())):
        model.train()
        measured = count_flops(lambda m=model: m(ids, pos).float().logsumexp(-1).sum().backward())
        analytic = analytic_flops(model.cfg, data.vocab_size, 4, 32, len(pos), attention_recompute=True)
        assert measured == pytest.approx(analytic, rel=0.03), rows
    with pytest.raises(et.ConfigError, match=r"^model\.sparse_head must be true or false"):
        cfg.replace(sparse_head="yes")
    with pytest.raises(et.ConfigError, match=r"^optim\.plan_steps must be an integer >= 0"):
        cfg.replace(plan_steps=-3)


def test_cli_recipe_and_set(capsys):
    assert cli.main(["train", "--profile", "smoke", "--recipe", "bert", "--budget", "2steps", "--no-cache",
                     "--no-progress", "--set", "model.norm=pre", "--set", "optim.lr=3e-4"]) == 0
    assert "completed" in capsys.readouterr().out
    for argv, message in ((["--recipe", "roberta"], "recipe must be one of bert, 24h-bert, cramming; got 'roberta'"),
                          (["--recipe", "cramming", "--set", "optim.lr=5"], "optim.lr must be in (0, 1); got 5"),
                          (["--set", "optim.lr"], "a change must look like FIELD=VALUE")):
        assert cli.main(["train", "--profile", "smoke", "--budget", "1steps", "--no-progress", *argv]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_every_recipe_names_a_source_for_every_ingredient():
    for name, items in RECIPES.items():
        assert len({i.field for i in items}) == len(items)
        assert all(i.source for i in items)
        for i in items:
            assert not i.by_profile or i.scaled, f"{name}: {i.field} is scaled without saying how"


def test_the_panel_trains_a_recipe_with_changes():
    from effitrain.lab import Panel

    panel = Panel(et.profile_config("smoke"), techniques=[])
    assert panel.recipe.value == "" and panel.configs()[0].model.norm == et.profile_config("smoke").model.norm
    panel.recipe.value, panel.changes.value, panel.budget.value = "cramming", "model.norm=post, optim.lr=3e-4", "3s"
    cfg = panel.configs()[0]
    assert cfg.model.norm == "post" and cfg.optim.lr == 3e-4 and cfg.optim.schedule == "triangular"
    assert cfg.budget == et.Budget.parse("3s") and cfg.model.bias is False
    panel.changes.value = "optim.lr=7"
    assert panel.run_now(blocking=True) == [] and "optim.lr must be in (0, 1); got 7" in panel.errors.value
    panel.changes.value = "norm"
    assert panel.run_now(blocking=True) == [] and "a change must look like FIELD=VALUE" in panel.errors.value


def test_liveplot_marks_the_deadline_on_its_axis_only():
    from effitrain.lab import LivePlot

    plot = LivePlot(x="seconds")
    plot.mark_x(20.0, "deadline")
    plot.set_target(5.5)
    kinds = sorted((sh.xref, sh.x0) for sh in plot.figure.layout.shapes)
    assert kinds == [("paper", 0), ("x", 20.0)]
    plot.set_x("step")
    assert [sh.xref for sh in plot.figure.layout.shapes] == ["paper"]  # the deadline is in seconds
    plot.set_x("seconds")
    assert len(plot.figure.layout.shapes) == 2
    with pytest.raises(ValueError, match="mark_x needs a finite number"):
        plot.mark_x(float("nan"))


def test_recipe_table_rows_targets_and_a_named_reference(smoke):
    from effitrain.lab import tables

    cfg, data = smoke
    groups = {label: [et.train(cfg.replace(budget="6steps", evals=2, seed=s, lr=lr), data=data, progress=False)
                      for s in (0, 1)] for label, lr in (("slow", 1e-4), ("fast", 3e-3))}
    df = tables.recipe_table(groups, reference="slow")
    assert list(df.index) == ["slow", "fast"] and (df["seeds"] == 2).all()
    worst = max(r.summary()["val_loss_last"] for r in groups["slow"])
    assert df.attrs["target_val_loss"] == pytest.approx(worst) and df.attrs["plateau"] is True
    assert df.loc["slow", "speed-up (s)"] == "1.00×" and df.loc["slow", "loss verdict"] == "reference"
    # the loss difference is paired by seed and equals scipy's paired t-interval on the final losses
    from scipy import stats

    slow, fast = ([r.summary()["val_loss_last"] for r in groups[k]] for k in ("slow", "fast"))
    ci = stats.ttest_rel(fast, slow).confidence_interval(0.95)
    d = sum(fast) / 2 - sum(slow) / 2
    assert df.loc["fast", "Δ val loss"] == f"{d:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]"
    assert df.loc["fast", "loss verdict"].startswith("lower by" if ci.high < 0 else "undecided")
    by_tokens = tables.recipe_table(groups, reference="slow", speedup_by="tokens", target_val_loss="common")
    assert "tokens to target" in by_tokens.columns and "speed-up (tokens)" in by_tokens.columns
    assert not by_tokens["tokens to target"].str.startswith("not reached").any()  # every run reaches "common"
    with pytest.raises(ValueError, match=r"^reference 'none' is not one of the groups: slow, fast$"):
        tables.recipe_table(groups, reference="none")
