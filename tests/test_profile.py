"""effitrain.lab.profile: seconds per step by operator group, from torch.profiler and the code's labels."""
import pytest
import torch

from effitrain.config import ConfigError
from effitrain.lab import profile_steps
from effitrain.lab.figures import profile_figure
from effitrain.lab.profile import GROUPS, WALL


@pytest.fixture(scope="module")
def profiles(smoke):
    cfg, _ = smoke
    return {a: profile_steps(cfg.replace(attention=a), steps=2, warmup=1) for a in ("sdpa", "math")}


def test_groups_sum_to_the_wall_step_time(profiles):
    for df in profiles.values():
        assert list(df.index) == [*GROUPS, WALL]
        assert (df.loc[list(GROUPS), "seconds"] >= 0).all()
        wall = df.loc[WALL, "seconds"]
        assert wall > 0
        assert abs(df.loc[list(GROUPS), "seconds"].sum() / wall - 1) < 0.10
        assert df.loc[list(GROUPS), "share"].sum() == pytest.approx(df.loc[list(GROUPS), "seconds"].sum() / wall)
        # the profiler's events cover most of the step (the rest is Python between ops), nothing twice
        covered = wall - df.attrs["uncovered_seconds"]
        assert 0.5 * wall < covered <= wall * 1.0001
        assert df.loc["other", "seconds"] >= df.attrs["other_measured_seconds"] - 1e-9


def test_attention_and_the_model_regions_get_a_positive_share(profiles):
    for attention, df in profiles.items():
        assert df.attrs["attention"] == attention
        for group in ("attention", "FFN matmuls", "embeddings / head", "optimizer"):
            assert df.loc[group, "seconds"] > 0, (attention, group)
        assert df.loc["attention", "share"] > 0.05
        # backward ops are charged to the forward region that created them
        assert 0 < df.loc["attention", "backward seconds"] < df.loc["attention", "seconds"]
        assert 0 < df.loc["FFN matmuls", "backward seconds"] < df.loc["FFN matmuls", "seconds"]
        assert df.loc["optimizer", "backward seconds"] == 0


def test_profiling_with_real_data_and_leaves_the_random_state(smoke):
    cfg, data = smoke
    before = torch.get_rng_state()
    df = profile_steps(cfg.replace(grad_accum=2, batch_size=8), data=data, steps=1, warmup=0)
    assert torch.equal(torch.get_rng_state(), before)
    assert df.loc["attention", "seconds"] > 0 and "2 micro-batches" in df.attrs["batch"]


def test_attribute_charges_backward_to_the_forward_region():
    from torch.profiler import ProfilerActivity, profile, record_function
    from effitrain.lab.profile import attribute

    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(32, 64)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("effitrain/ffn"):
            y = (x @ w).relu()
        y.sum().backward()
    rows = attribute([e for e in prof.events()])
    backward_ffn = sum(us for g, b, us in rows if g == "FFN matmuls" and b)
    assert backward_ffn > 0  # MmBackward0 / ReluBackward0 carry the forward's sequence numbers


@pytest.mark.parametrize("kw", [dict(steps=0), dict(warmup=-1), dict(steps=True)])
def test_bad_counts_are_refused(smoke, kw):
    with pytest.raises(ConfigError, match="profile"):
        profile_steps(smoke[0], **kw)


def test_figure_has_one_bar_per_group(profiles):
    df = profiles["sdpa"]
    fig = profile_figure(df, title="tiny model")
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 1 and bars[0].orientation == "h"
    assert list(bars[0].y) == list(reversed(GROUPS))
    assert list(bars[0].x) == pytest.approx(list(df.loc[list(reversed(GROUPS)), "ms"]))
    assert "tiny model" in fig.layout.title.text and "ms per step" in fig.layout.xaxis.title.text
