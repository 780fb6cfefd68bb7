"""Curriculum learning and sequence-length warmup on the real smoke corpus."""
import math
import threading

import numpy as np
import pytest
import torch

import effitrain as et
from effitrain.data.tokenizer import CLS, SPECIAL_TOKENS
from effitrain.techniques import StepContext
from effitrain.lab import tables
from effitrain.techniques import curriculum as cu


@pytest.fixture(scope="module")
def unpacked():
    """The smoke profile with one paragraph per example (variable length), and its data."""
    cfg = et.profile_config("smoke", **{"data.pack": False})
    return cfg, et.prepare_data(cfg.data)


def ctx_at(cfg, fraction, rng=None, data=None, step=0):
    return StepContext(step=step, fraction=fraction, tokens=0, seconds=0.0, flops=0.0, config=cfg,
                       device=torch.device("cpu"), rng=rng or torch.Generator().manual_seed(0), data=data)


def losses(run):
    return [r["train_loss"] for r in run.history.steps]


def step_flops(run):
    flops = [r["flops"] for r in run.history.steps]
    return np.diff([0.0] + flops)


# -- competence ----------------------------------------------------------------------------------
@pytest.mark.parametrize("c0,T", [(0.01, 0.5), (0.1, 0.3), (0.5, 1.0)])
def test_competence_functions_match_their_formulas(c0, T):
    assert cu.competence_linear(0.0, T, c0) == pytest.approx(c0)
    assert cu.competence_sqrt(0.0, T, c0) == pytest.approx(c0)
    assert cu.competence_linear(T / 2, T, c0) == pytest.approx((1 - c0) / 2 + c0)
    assert cu.competence_sqrt(T / 2, T, c0) == pytest.approx(math.sqrt((1 - c0 ** 2) / 2 + c0 ** 2))
    for f in (cu.competence_linear, cu.competence_sqrt):
        assert f(T, T, c0) == pytest.approx(1.0)
        assert f(min(1.0, T + 0.2), T, c0) == 1.0 and f(2.0, T, c0) == 1.0  # capped at 1 beyond T
    t = np.linspace(0, 1, 101)
    lin, sq = cu.competence_linear(t, T, c0), cu.competence_sqrt(t, T, c0)
    assert np.all(np.diff(lin) >= 0) and np.all(np.diff(sq) >= 0)
    assert np.all(sq >= lin - 1e-12)
    inside = (t > 0) & (t < T)
    assert np.all(sq[inside] > lin[inside])  # strictly more competent while the curriculum runs
    assert cu.competence("sqrt", 0.1, T, c0) == cu.competence_sqrt(0.1, T, c0)


# -- difficulty --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", cu.DIFFICULTIES)
def test_difficulty_cdf_is_in_unit_interval_and_monotone(unpacked, kind):
    _, data = unpacked
    raw = cu.difficulty(data.train, kind, data.unigram_counts)
    cdf = cu.difficulty_cdf(raw)
    assert raw.shape == cdf.shape == (len(data.train),)
    assert float(cdf.min()) > 0 and float(cdf.max()) == 1.0
    order = torch.argsort(raw, stable=True)
    assert bool((cdf[order].diff() >= 0).all())  # monotone in the raw difficulty
    same = raw[order].diff() == 0
    assert bool((cdf[order].diff()[same] == 0).all())  # ties share a value
    harder = raw[order].diff() > 0
    assert bool((cdf[order].diff()[harder] > 0).all())
    # the CDF is the share of examples at most as hard
    i = int(order[len(order) // 3])
    assert float(cdf[i]) == pytest.approx(float((raw <= raw[i]).double().mean()))


def test_length_difficulty_is_real_tokens(unpacked):
    _, data = unpacked
    raw = cu.length_difficulty(data.train)
    real = (data.train.ids != 0).sum(dim=1)
    assert torch.equal(raw.long(), real)
    assert not cu.is_packed(data.train)
    assert cu.is_packed(et.prepare_data(et.profile_config("smoke").data).train)


def test_rare_word_rows_are_harder_than_common_word_rows(unpacked):
    """Among full-length real rows, the one made most of the 100 commonest words is easier by rarity
    than the one made least of them (commonness judged by counts only, not by the score itself)."""
    _, data = unpacked
    raw = cu.rarity_difficulty(data.train, data.unigram_counts)
    counts = data.unigram_counts.clone()
    counts[: len(SPECIAL_TOKENS)] = -1
    common = torch.zeros_like(counts, dtype=torch.bool)
    common[counts.topk(100).indices] = True
    full = (data.train.features["length"] == data.train.seq_len).nonzero().squeeze(1)
    share = common[data.train.ids[full]].double().mean(dim=1)
    most, least = int(full[share.argmax()]), int(full[share.argmin()])
    assert float(share.max()) > 0.6 and float(share.min()) < 0.2
    assert float(raw[least]) > float(raw[most]) + 50  # nats; measured 440 vs 298 (shares 0.125 vs 0.75)
    # and over all full rows, the share of common words and rarity go opposite ways (measured r = −0.74)
    assert np.corrcoef(share.numpy(), raw[full].numpy())[0, 1] < -0.6


# -- the sampler -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,schedule", [("rarity", "sqrt"), ("length", "linear")])
def test_sampler_never_draws_above_competence_and_reaches_everything(unpacked, kind, schedule):
    cfg, data = unpacked
    cdf = cu.difficulty_cdf(cu.difficulty(data.train, kind, data.unigram_counts))
    sampler = cu.CompetenceSampler(cdf, schedule, duration=0.5, c0=0.05)
    B, steps, rng = 32, 200, torch.Generator().manual_seed(3)
    floor = float(sampler.sorted_cdf[B - 1])  # at least one batch is always admitted
    late = []
    for step in range(steps):
        fraction = step / steps
        idx = sampler.next(B, ctx_at(cfg, fraction, rng))
        assert idx.shape == (B,) and len(set(idx.tolist())) == B  # no repeats within a batch
        c = cu.competence(schedule, fraction, 0.5, 0.05)
        assert float(cdf[idx].max()) <= max(c, floor) + 1e-12, f"step {step}: drew above competence {c:.3f}"
        if fraction >= 0.5:
            late.append(idx)
    assert sampler.admitted(0.5, B) == len(data.train) == sampler.admitted(1.0, B)
    assert sampler.admitted(0.1, B) < len(data.train) // 2
    late = torch.cat(late)
    assert float(cdf[late].max()) == 1.0 and float(cdf[late].mean()) > 0.4  # the hardest examples do come
    assert sampler.state_dict() == {"draws": steps}


def test_sampler_is_deterministic_given_the_generator(unpacked):
    cfg, data = unpacked
    cdf = cu.difficulty_cdf(cu.length_difficulty(data.train))

    def draw(seed):
        return cu.CompetenceSampler(cdf, "sqrt", 0.5, 0.01).next(32, ctx_at(cfg, 0.2, torch.Generator().manual_seed(seed)))
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))


# -- the technique in the trainer --------------------------------------------------------------------
@pytest.mark.slow
def test_curriculum_trains_short_first_and_resumes_identically(unpacked, tmp_path):
    cfg, data = unpacked
    cfg = cfg.replace(budget="12steps", evals=2, seed=4, batch_size=16)
    make = lambda: cu.Curriculum(difficulty="length", competence="linear", c0=0.05, duration=0.6)  # noqa: E731
    straight = et.train(cfg, [make()], data=data, progress=False)
    base = et.train(cfg, data=data, progress=False)
    s, b = straight.summary(), base.summary()
    assert straight.status == "completed" and s["val_loss_last"] < s["val_loss_first"] - 0.2  # measured 0.35
    assert not hasattr(data.train, "sampler")  # the shared training set is untouched
    # short examples first: fewer real tokens for the same steps (measured 0.84 of the baseline); FLOPs
    # follow the batch width, the longest row: far lower only at the start on smoke, where 80% of the
    # paragraphs are cut to the full 64 tokens and the other 20% reach 63 (first step measured 0.61,
    # whole run 0.96)
    assert s["tokens"] < 0.9 * b["tokens"] and s["flops_measured"] < b["flops_measured"]
    assert step_flops(straight)[0] < 0.7 * step_flops(base)[0]
    assert straight.extra["techniques"]["curriculum"]["admitted_at_start"] < 0.1 * len(data.train)

    stop = threading.Event()
    def stop_at_5(kind, row, run):
        if kind == "step" and row["step"] == 5:
            stop.set()
    ckpt = tmp_path / "cur.pt"
    first = et.train(cfg, [make()], data=data, progress=False, stop=stop, callbacks=[stop_at_5], checkpoint=str(ckpt))
    assert first.status == "stopped" and len(first.history.steps) == 5
    resumed = et.train(cfg, [make()], data=data, progress=False, resume=str(ckpt))
    assert resumed.status == "completed"
    assert losses(resumed) == losses(straight)
    assert resumed.history.evals[-1]["val_loss"] == straight.history.evals[-1]["val_loss"]
    assert resumed.summary()["tokens"] == s["tokens"]


def test_length_curriculum_is_refused_on_packed_data(smoke):
    cfg, data = smoke
    with pytest.raises(et.ConfigError, match=r"curriculum\.difficulty.*data\.pack=False"):
        et.train(cfg.replace(budget="2steps"), [cu.Curriculum(difficulty="length")], data=data, progress=False)


@pytest.mark.parametrize("cls,kwargs,field", [
    (cu.Curriculum, {"c0": 0.0}, "curriculum.c0"),
    (cu.Curriculum, {"c0": 1.5}, "curriculum.c0"),
    (cu.Curriculum, {"duration": 0.0}, "curriculum.duration"),
    (cu.Curriculum, {"difficulty": "loss"}, "curriculum.difficulty"),
    (cu.Curriculum, {"competence": "step"}, "curriculum.competence"),
    (cu.SeqLenWarmup, {"start_len": 4}, "seqlen_warmup.start_len"),
    (cu.SeqLenWarmup, {"warmup_fraction": 1.5}, "seqlen_warmup.warmup_fraction"),
])
def test_bad_params_are_refused_naming_the_field(cls, kwargs, field):
    with pytest.raises(et.ConfigError, match=field.replace(".", r"\.")) as err:
        cls(**kwargs)
    assert "\n" not in str(err.value)


def test_registered_with_cards():
    from effitrain.techniques import REGISTRY
    for name, cls in (("curriculum", cu.Curriculum), ("seqlen_warmup", cu.SeqLenWarmup)):
        assert REGISTRY[name] is cls
        card = cls.card()
        assert "**Paper.**" in card and "20" in card and "**Math.**" in card


@pytest.mark.slow
@pytest.mark.parametrize("cls", [cu.Curriculum, cu.SeqLenWarmup])
def test_identity_params_give_the_identical_curve(smoke, cls):
    cfg, data = smoke
    cfg = cfg.replace(budget="6steps", evals=1, seed=2)
    base = et.train(cfg, data=data, progress=False)
    same = et.train(cfg, [cls(**cls.identity_params)], data=data, progress=False)
    assert losses(same) == losses(base)
    assert same.history.evals[-1]["val_loss"] == base.history.evals[-1]["val_loss"]
    assert same.summary()["flops_measured"] == base.summary()["flops_measured"]


# -- sequence-length warmup ----------------------------------------------------------------------------
def test_seqlen_schedule_grows_in_multiples_of_8():
    lengths = [cu.seqlen_schedule(f, 8, 128, 0.5) for f in np.linspace(0, 1, 101)]
    assert lengths[0] == 8 and lengths[-1] == 128 and lengths[50] == 128
    assert all(b >= a for a, b in zip(lengths, lengths[1:]))
    assert all(L % 8 == 0 for L in lengths)
    assert cu.seqlen_schedule(0.25, 8, 128, 0.5) == 64  # halfway through the warmup: 8 + 120/2 = 68 → 64
    assert cu.seqlen_schedule(0.1, 8, 128, 0.0) == 128 and cu.seqlen_schedule(0.1, 128, 128, 0.5) == 128


def test_seqlen_warmup_keeps_cls_first_and_cuts_the_end(unpacked):
    cfg, data = unpacked
    t = cu.SeqLenWarmup(start_len=16, warmup_fraction=0.5)
    ids = data.train.batch(torch.arange(32))
    for fraction, want in ((0.0, 16), (0.25, 40), (0.6, ids.shape[1])):
        out = t.on_batch(ids, ctx_at(cfg, fraction))
        assert out.shape == (32, min(want, ids.shape[1])) and bool((out[:, 0] == CLS).all())
        assert torch.equal(out, ids[:, :out.shape[1]])
    assert t.on_batch(ids, ctx_at(cfg, 0.6)) is ids  # full length: the batch itself, unchanged


@pytest.mark.slow
def test_seqlen_warmup_steps_follow_the_schedule_and_cost_fewer_flops(smoke):
    """Packed data: every baseline step has the same shape, so each step's FLOPs show its length."""
    cfg, data = smoke
    # 15% masking predicts the same number of tokens in every packed row of 62-63 real tokens (25% does
    # not: round(15.25) vs round(15.5)), so equal lengths give equal FLOPs to the last FLOP
    cfg = cfg.replace(budget="20steps", evals=1, seed=1, mask_prob=0.15)
    base = et.train(cfg, data=data, progress=False)
    warm = et.train(cfg, [cu.SeqLenWarmup(start_len=8, warmup_fraction=0.5)], data=data, progress=False)
    fb, fw = step_flops(base), step_flops(warm)
    assert np.allclose(fb, fb[0])
    lengths = [cu.seqlen_schedule(s / 20, 8, 64, 0.5) for s in range(20)]
    assert lengths[:2] == [8, 8] and lengths[2] == 16 and lengths[10:] == [64] * 10
    for i in range(19):  # a longer batch costs more, an equal one the same, full length what the baseline costs
        assert (fw[i + 1] > fw[i]) if lengths[i + 1] > lengths[i] else (fw[i + 1] == fw[i])
    assert np.allclose(fw[10:], fb[10:])
    assert fw[0] < 0.2 * fb[0]  # length 8 of 64: measured 0.115 (the linear part scales with L, attention with L²)
    assert warm.summary()["flops_measured"] < 0.8 * base.summary()["flops_measured"]  # measured 0.72
    assert warm.summary()["tokens"] < base.summary()["tokens"]


# -- the lesson's table ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_curriculum_table_is_relative_to_the_baseline(smoke):
    cfg, data = smoke
    cfg = cfg.replace(budget="8steps", evals=1)
    runs = [et.train(cfg.replace(seed=s), data=data, progress=False, name=f"baseline s{s}") for s in (0, 1)]
    runs += [et.train(cfg.replace(seed=s), [cu.SeqLenWarmup(warmup_fraction=0.5)], data=data, progress=False,
                      name=f"seqlen s{s}") for s in (0, 1)]
    df = tables.curriculum_table(runs, baseline="baseline")
    assert list(df.index) == ["baseline", "seqlen"]
    assert df.loc["baseline", "time_rel"] == 1.0 and df.loc["baseline", "flops_rel"] == 1.0
    from effitrain.lab import compare
    by_f = compare(runs, baseline="baseline", speedup_by="flops")
    if not isinstance(by_f.loc["seqlen", "speedup"], str):
        assert df.loc["seqlen", "flops_rel"] == pytest.approx(1 / by_f.loc["seqlen", "speedup"])
        assert df.loc["seqlen", "flops_rel_lo"] <= df.loc["seqlen", "flops_rel"] <= df.loc["seqlen", "flops_rel_hi"]
    shown = tables.format_curriculum_table(df)
    assert list(shown.columns) == ["baseline", "seqlen"] and shown.loc["time to target (rel.)", "baseline"] == "1.00"
    assert "target val loss" in tables.curriculum_text(df)
