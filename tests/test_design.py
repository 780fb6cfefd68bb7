"""The shared comparison design: one cached baseline per profile, reused by every lesson."""
import dataclasses

import pytest

import effitrain as et
from effitrain.lab.compare import compare
from effitrain.lab.design import DESIGNS, design, seed_runs
from effitrain.train import warm


def test_every_profile_has_a_design():
    for name, d in DESIGNS.items():
        cfg = d.config()
        assert cfg.profile == name and cfg.run.warm_start == 0 and len(d.seeds) >= 2 and d.warm_seed in d.seeds
    assert design("smoke") is DESIGNS["smoke"]
    with pytest.raises(ValueError, match="no comparison design for profile 'laptop'"):
        design("laptop")


def test_the_shared_baseline_is_trained_once_for_every_lesson(fresh_cache):
    d = dataclasses.replace(design("smoke"), budget="40steps", evals=4, warm_gap=-2.0)  # warm start: first evaluation
    data = et.prepare_data(d.config().data)
    warm_cfg = d.warm(data)
    assert warm_cfg.run.warm_start == 10 and warm_cfg.run.warm_seed == 0
    lesson_a = seed_runs(warm_cfg, [], d.seeds, data, verbose=False)       # e.g. lesson 01's baseline
    lesson_b = seed_runs(d.warm(data), [], d.seeds, data, name="baseline", verbose=False)   # lesson 07's
    assert all(r.extra["cache"]["loaded"] for r in lesson_b)
    assert [r.history.evals for r in lesson_a] == [r.history.evals for r in lesson_b]
    # the seeds share the warm seed's first 10 steps, then differ
    a0, a1 = (r.history.frame("steps")["train_loss"].tolist() for r in lesson_a)
    assert a0[:10] == a1[:10] and a0[10:] != a1[10:]
    assert warm.state_path(warm_cfg.replace(seed=1), data) == warm.state_path(warm_cfg, data)  # one state for all
    prune = seed_runs(warm_cfg, [et.technique("prune", score="random", keep_fraction=0.5)], d.seeds, data,
                      verbose=False)
    target = max(r.history.evals[-1]["val_loss"] for r in lesson_a + prune)
    df = compare(lesson_a + prune, target_val_loss=target, speedup_by="step")
    assert bool(df.loc["prune", "paired"]) and df.attrs["baseline"] == "baseline"
    # a from-scratch baseline and a warm-started technique count from different points: refused
    scratch = seed_runs(d.config(), [], d.seeds, data, verbose=False)
    with pytest.raises(ValueError, match="different warm starts cannot be compared"):
        compare(scratch + prune)
