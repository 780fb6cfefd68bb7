"""The shared comparison design: one cached baseline per profile, reused by every lesson."""
import pytest

import effitrain as et
from effitrain.lab.compare import compare
from effitrain.lab.design import DESIGNS, design, seed_runs
from effitrain.train import warm


def test_every_profile_has_a_design_that_fits_its_budget():
    for name, d in DESIGNS.items():
        cfg = d.warm()
        assert cfg.profile == name and cfg.run.warm_start == d.warm_start and len(d.seeds) >= 2 and d.gap > 0
    assert design("smoke") is DESIGNS["smoke"]
    with pytest.raises(ValueError, match="no comparison design for profile 'laptop'"):
        design("laptop")


def test_the_shared_baseline_is_trained_once_for_every_lesson(fresh_cache):
    d = design("smoke")
    small = dict(budget="40steps", evals=4)
    data = et.prepare_data(d.config().data)
    lesson_a = seed_runs(d.config(**small), [], d.seeds, data, verbose=False)       # e.g. lesson 01's baseline
    lesson_b = seed_runs(d.config(**small), [], d.seeds, data, name="baseline", verbose=False)   # lesson 07's
    assert not any(r.extra.get("cache", {}).get("loaded") for r in lesson_a)
    assert all(r.extra["cache"]["loaded"] for r in lesson_b)
    assert [r.history.evals for r in lesson_a] == [r.history.evals for r in lesson_b]
    # a technique from the shared warm start, paired by seed with the shared baseline
    prune = seed_runs(d.warm(**small, warm_start=20), [et.technique("prune", score="random", keep_fraction=0.5)],
                      d.seeds, data, verbose=False)
    assert all(warm.state_path(d.warm(**small, warm_start=20, seed=s), data).exists() for s in d.seeds)
    target = max(r.history.evals[-1]["val_loss"] for r in lesson_a + prune)
    df = compare(lesson_a + prune, target_val_loss=target, speedup_by="step")
    assert bool(df.loc["prune", "paired"]) and df.attrs["baseline"] == "baseline"
