"""effitrain.lab.speed: alternating tokens/s measurements with ratios, and loss parity against seed noise."""
import math

import pytest

import effitrain as et
from effitrain.lab.speed import loss_parity, max_gap, toggle_speed


def test_toggle_speed_alternates_and_gives_ratios_with_intervals(smoke):
    cfg, _ = smoke
    small = cfg.replace(seq_len=16, batch_size=4)
    df = toggle_speed(small, {"math attention": {"attention": "math"}, "for-loop AdamW": {"optim.kernel": "for-loop"}},
                      baseline={"run.precision": "fp32"}, rounds=2, steps=2, warmup=1)
    assert list(df.index) == ["baseline", "math attention", "for-loop AdamW"]
    assert df.loc["baseline", "× baseline"] == pytest.approx(1.0)
    assert (df["tokens/s"] > 0).all() and (df["tokens/s ±"] >= 0).all()
    for label in df.index[1:]:  # two rounds: an interval around every ratio, paired by round
        assert df.loc[label, "lo"] <= df.loc[label, "× baseline"] <= df.loc[label, "hi"]
        assert df.loc[label, "verdict"].split()[0] in ("faster", "slower", "no", "undecided:")
    assert math.isnan(df.loc["baseline", "lo"]) and df.loc["baseline", "verdict"] == ""
    assert (df["compile s"] == 0).all() and df["break-even steps"].isna().all()  # nothing compiled
    assert df.attrs["rounds"] == 2 and df.attrs["steps"] == 2
    with pytest.raises(ValueError, match="rounds"):
        toggle_speed(small, {}, rounds=0)
    with pytest.raises(ValueError, match="'baseline' is the name"):
        toggle_speed(small, {"baseline": {}})


def test_loss_parity_compares_with_the_seed_noise(smoke):
    cfg, data = smoke
    short = cfg.replace(**{"budget": "6steps", "evals": 3})
    a = et.train(short, data=data, progress=False)
    again = et.train(short, data=data, progress=False)
    other_seed = et.train(short.replace(seed=1), data=data, progress=False)
    hot = et.train(short.replace(lr=3e-2), data=data, progress=False)
    assert max_gap(a, again) == 0.0  # deterministic: the same seed, the same curve
    df = loss_parity({"same": again, "lr 3e-2": hot}, baseline=[a, other_seed])
    noise = max_gap(a, other_seed)
    assert noise > 0 and df.loc["same", "seed noise"] == noise
    assert df.loc["same", "max gap"] == 0.0 and bool(df.loc["same", "within noise"]) is True
    assert df.loc["lr 3e-2", "max gap"] > 0
    assert math.isnan(loss_parity({"same": again}, baseline=[a]).loc["same", "seed noise"])
    with pytest.raises(ValueError, match="at least one baseline"):
        loss_parity({"same": again}, baseline=[])
