"""The noisy corpus `sotu-noisy`: deterministic junk in training documents only, labelled per row."""
import math
from collections import Counter

import numpy as np
import pytest
import torch

import effitrain as et
from effitrain.data import CorpusError, TrainSet, load_corpus, prepare_data
from effitrain.data.noisy import JUNK_FRACTION, JUNK_KINDS, PAGE_ROWS, junk_recall, make_junk
from effitrain.techniques.pruning import compressibility_scores


def _cfg(**data):
    return et.profile_config("smoke", **{"data.corpus": "sotu-noisy", **{f"data.{k}": v for k, v in data.items()}})


@pytest.fixture(scope="module")
def noisy():
    cfg = _cfg()
    return cfg, prepare_data(cfg.data)


def _train_texts(n=3000):
    texts = load_corpus("sotu", min_words=20)["text"]
    return texts[:n]


def test_make_junk_is_deterministic_balanced_and_long_enough():
    texts = _train_texts()
    rows = make_junk(texts, 1000, min_words=20)
    assert rows == make_junk(list(texts), 1000, min_words=20)  # same bytes, call after call
    assert make_junk(texts, 1000, min_words=20, seed=1) != rows
    counts = Counter(k for _, k in rows)
    assert set(counts) == set(range(1, 6))
    assert max(counts.values()) - min(counts.values()) <= PAGE_ROWS
    assert min(len(t.split()) for t, _ in rows) >= 20
    assert all(t == " ".join(t.split()) for t, _ in rows)  # one line, single spaces, like load_corpus
    dups = [t for t, k in rows if k == 1]
    exact = sum(t in set(texts) for t in dups)
    assert 0.3 < exact / len(dups) < 0.7  # half exact copies, half near copies
    assert not any(t in set(texts) for t, k in rows if k != 1)


def test_junk_is_labelled_per_row_in_documented_shares(noisy):
    _, data = noisy
    cols = data.corpus[:]
    kinds = Counter(k for k, r in zip(cols["junk"], cols["role"]) if r == "train")
    n_train = sum(kinds.values())
    assert abs(sum(v for k, v in kinds.items() if k) / n_train - JUNK_FRACTION) < 0.005
    for k in range(1, 6):
        assert abs(kinds[k] / n_train - JUNK_FRACTION / 5) < 0.005, (JUNK_KINDS[k], kinds)
    # junk rows sit in pages under a training document's name
    assert all(r == "train" and "/junk-" in d for d, r, k in zip(cols["doc"], cols["role"], cols["junk"]) if k)
    # the training set: every kind present, blocks almost all pure junk or pure clean
    train = data.train
    assert set(train.features) >= {"junk", "junk_share"} and len(train.features["junk"]) == len(train)
    assert set(train.features["junk"].unique().tolist()) == set(JUNK_KINDS)
    share = train.features["junk_share"]
    assert float(((share == 0) | (share == 1)).float().mean()) > 0.95
    assert bool(((share > 0.5) == (train.features["junk"] > 0)).all())
    assert 0.2 < float(share.mean()) < 0.4  # junk tokenizes into more tokens than its row share
    sub = train.select(torch.tensor([5, 2, 7]))
    assert torch.equal(sub.features["junk"], train.features["junk"][[5, 2, 7]])
    assert torch.equal(sub.features["junk_share"], train.features["junk_share"][[5, 2, 7]])


def test_a_capped_pool_keeps_about_the_junk_share_of_the_whole(noisy):
    """Pages follow documents in proportion to their length, so the first blocks are not junk-heavy."""
    _, data = noisy
    whole = float(data.train.features["junk_share"].mean())
    for cap in (512, 1024, 4096):
        pool = prepare_data(_cfg(max_train_examples=cap).data).train
        assert len(pool) == cap
        assert abs(float(pool.features["junk_share"].mean()) - whole) < 0.1, (cap, whole)  # was 0.60 at 1,024


def test_unpacked_examples_carry_the_row_label(noisy):
    _, packed = noisy
    data = prepare_data(_cfg(pack=False).data)
    cols = data.corpus[:]
    want = [k for k, r in zip(cols["junk"], cols["role"]) if r == "train"]
    assert data.train.features["junk"].tolist() == want
    assert torch.equal(data.train.features["junk_share"], (data.train.features["junk"] > 0).float())
    assert data.key == packed.key  # the same tokenized corpus; only the cut differs


def test_validation_and_downstream_rows_are_the_clean_corpus(noisy, smoke):
    _, data = noisy
    _, clean = smoke
    n, c = data.corpus[:], clean.corpus[:]
    for role in ("val", "downstream"):
        rows = [(t, d, y) for t, d, y, r in zip(n["text"], n["doc"], n["year"], n["role"]) if r == role]
        assert rows == [(t, d, y) for t, d, y, r in zip(c["text"], c["doc"], c["year"], c["role"]) if r == role]
        assert not any(k for k, r in zip(n["junk"], n["role"]) if r == role)
    # the clean rows are all there, in order; junk copies only training text
    assert [t for t, k in zip(n["text"], n["junk"]) if not k] == c["text"]
    held_out = {t for t, r in zip(c["text"], c["role"]) if r != "train"}
    assert not any(t in held_out for t, k in zip(n["text"], n["junk"]) if k)
    assert data.key != clean.key
    assert data.train.features.keys() >= {"junk"} and "junk" not in clean.train.features


def test_building_twice_in_fresh_caches_gives_the_same_rows(noisy, fresh_cache):
    cfg, data = noisy
    again = prepare_data.__wrapped__(cfg.data)  # not the in-process cache: built again in an empty cache dir
    assert any(fresh_cache.rglob("*.arrow"))
    assert again.key == data.key
    assert again.corpus[:] == data.corpus[:]
    assert torch.equal(again.train.ids, data.train.ids)
    for name in ("junk", "junk_share", "chars"):
        assert torch.equal(again.train.features[name], data.train.features[name])


def test_junk_recall_of_perfect_random_and_empty_selections(noisy):
    _, data = noisy
    train = data.train
    junk = train.features["junk"]
    clean_rows = (junk == 0).nonzero().squeeze(1)
    perfect = junk_recall(train, clean_rows)
    assert perfect["precision"] == 1.0 and perfect["recall"] == 1.0 and perfect["removed"] == perfect["junk"]
    assert perfect["token_recall"] > 0.95  # the few mixed blocks kept hold a little junk
    assert all(v["recall"] == 1.0 for v in perfect["kinds"].values())
    assert math.isclose(sum(v["share_of_removed"] for v in perfect["kinds"].values()), 1.0)
    assert junk_recall(train, train.select(clean_rows)) == perfect  # a pruned TrainSet, matched by origin

    keep_all = junk_recall(train, torch.arange(len(train)))
    assert keep_all["removed"] == 0 and keep_all["recall"] == 0.0 and math.isnan(keep_all["precision"])

    g = torch.Generator().manual_seed(0)
    kept = torch.randperm(len(train), generator=g)[: int(0.7 * len(train))]
    rand = junk_recall(train, kept)
    assert abs(rand["recall"] - 0.3) < 0.03
    assert abs(rand["precision"] - rand["base_rate"]) < 0.03
    assert rand["base_rate"] == int((junk > 0).sum()) / len(train)

    with pytest.raises(ValueError, match="kept indices"):
        junk_recall(train, [len(train)])


def test_junk_recall_needs_a_noisy_training_set():
    plain = TrainSet(torch.zeros(3, 8, dtype=torch.long), {"length": torch.full((3,), 8)}, torch.arange(3))
    with pytest.raises(ValueError, match="sotu-noisy"):
        junk_recall(plain, [0])


def test_an_unknown_noisy_variant_is_refused_in_one_line():
    assert "sotu-noisy" in et.corpus_names()
    with pytest.raises(CorpusError) as err:
        load_corpus("sotu-noisy-0.5")
    assert "sotu-noisy" in str(err.value) and "\n" not in str(err.value)


def test_compressibility_separates_some_junk_kinds(noisy):
    """What tokens-per-character sees (smoke, packed): numbers, spam and OCR stand out; duplicates and
    boilerplate (ordinary words) do not. Printed with -s; asserted only for the clear cases."""
    _, data = noisy
    train = data.train
    scores, _ = compressibility_scores(train)
    junk = train.features["junk"]
    q90 = float(scores[junk == 0].quantile(0.9))
    above = {name: float((scores[junk == k] > q90).float().mean()) for k, name in JUNK_KINDS.items()}
    print("share of rows above the clean rows' 90th percentile of tokens/char:",
          {k: round(v, 3) for k, v in above.items()})
    assert above["numbers"] > 0.8 and above["ocr"] > 0.5 and above["spam"] > 0.5
    kept = torch.argsort(scores)[: int(0.75 * len(train))]  # the cramming filter: drop the highest 25 %
    r = junk_recall(train, kept)
    print("dropping the top 25 %:", {k: round(v["recall"], 3) for k, v in r["kinds"].items()},
          "precision", round(r["precision"], 3), "base rate", round(r["base_rate"], 3))
    assert r["precision"] > 2 * r["base_rate"] * 0.9
    assert np.isfinite(r["recall"])


def test_the_oracle_score_removes_exactly_the_junk_and_needs_labels(noisy, smoke):
    from effitrain.techniques.pruning import score_rows, select_rows

    cfg, data = noisy
    train = data.train
    scores, cost = score_rows("oracle", train, data, cfg)
    assert cost["flops"] == 0 and torch.equal(scores, train.features["junk_share"].float())
    n_clean = int((train.features["junk"] == 0).sum())  # blocks with a minority of junk tokens count as clean
    kept = select_rows(scores, n_clean / len(train), "easy")
    r = junk_recall(train, kept)
    assert r["precision"] == 1.0 and r["recall"] == 1.0
    run = et.train(cfg.replace(**{"budget": "2steps", "run.evals": 1}), data=data, progress=False,
                   techniques=[et.technique("prune", score="oracle", keep_fraction=0.7)])
    assert run.status == "completed" and run.extra["techniques"]["prune"]["kept"] == round(0.7 * len(train))
    clean_cfg, clean = smoke
    with pytest.raises(et.ConfigError, match="oracle.*sotu-noisy"):
        score_rows("oracle", clean.train, clean, clean_cfg)
