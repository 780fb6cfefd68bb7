import json
from pathlib import Path

import datasets
import pytest
import torch

from effitrain.config import DataConfig
from effitrain.data import CLS, MASK, PAD, SEP, SPECIAL_TOKENS, CorpusError, load_corpus, mask_tokens, prepare_data
from effitrain.data import corpus as corpus_mod
from effitrain.data.downstream import sotu_era_task

HARBOUR = "The committee met on Tuesday to discuss the harbour and the roads. " * 3
FARMERS = "Farmers asked for lower duties on imported tools and better markets abroad. " * 3
TEXT = (HARBOUR + "\n\n" + FARMERS + "\n\n") * 40


def test_sotu_paragraphs_and_split_by_speech(smoke):
    _, data = smoke
    cols = data.corpus[:]
    assert 15_000 < len(cols["text"]) < 30_000
    assert min(len(t.split()) for t in cols["text"]) >= 20
    roles: dict[str, set] = {}
    for doc, role in zip(cols["doc"], cols["role"]):
        roles.setdefault(doc, set()).add(role)
    assert all(len(r) == 1 for r in roles.values()), "a speech landed in two splits"
    assert {"train", "val", "downstream"} == {next(iter(r)) for r in roles.values()}


def test_training_blocks_are_packed_real_text(smoke):
    cfg, data = smoke
    ids = data.train.ids
    assert ids.shape[1] == cfg.data.seq_len and len(ids) > 10_000
    assert bool((ids[:, 0] == CLS).all()) and not bool((ids == PAD).any())
    assert bool((ids == SEP).any())
    text = data.tokenizer.decode(ids[100].tolist())
    assert len(text.split()) > 20
    # chars: the text each block's tokens cover (tokenizer offsets); the blocks tile the training text,
    # so together they cover all of it but the tails that did not fill a last block (one per 1000
    # paragraphs packed together; a token covers well under 20 characters)
    texts = data.corpus.filter(lambda r: r == "train", input_columns="role")["text"]
    covered = float(data.train.features["chars"].double().sum())
    tails = (len(texts) // 1000 + 1) * cfg.data.seq_len * 20
    assert sum(map(len, texts)) - tails < covered <= sum(map(len, texts))


def test_tokenizer_is_cached_on_disk(fresh_cache, tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    cfg = DataConfig(corpus=str(path), vocab_size=200, seq_len=16, min_words=3)
    prepare_data.cache_clear()
    first = prepare_data(cfg)
    saved = list((fresh_cache / "tokenizers").glob("*.json"))
    assert len(saved) == 1
    prepare_data.cache_clear()
    second = prepare_data(cfg)
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()
    assert torch.equal(first.train.ids, second.train.ids)


def test_mask_exact_count_and_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(len(SPECIAL_TOKENS), 1000, (400, 50))
    ids[:, 0] = CLS
    ids[:, -10:] = PAD
    batch = mask_tokens(ids, 0.2, 1000, g)
    per_row = torch.bincount(batch.positions // 50, minlength=400)
    assert bool((per_row == round(39 * 0.2)).all())  # 39 real tokens per row
    assert torch.equal(batch.labels, ids.flatten()[batch.positions])
    corrupted = batch.input_ids.flatten()[batch.positions]
    share_mask = float((corrupted == MASK).float().mean())
    share_same = float((corrupted == batch.labels).float().mean())
    assert 0.77 < share_mask < 0.83 and 0.07 < share_same < 0.14
    untouched = torch.ones(ids.numel(), dtype=torch.bool)
    untouched[batch.positions] = False
    assert torch.equal(batch.input_ids.flatten()[untouched], ids.flatten()[untouched])
    assert batch.attention_mask is not None and int(batch.attention_mask.sum()) == 400 * 40


def test_mask_is_deterministic():
    ids = torch.randint(5, 100, (4, 32))
    a = mask_tokens(ids, 0.15, 100, torch.Generator().manual_seed(3))
    b = mask_tokens(ids, 0.15, 100, torch.Generator().manual_seed(3))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.positions, b.positions)


def test_unigram_baselines(smoke):
    _, data = smoke
    assert 4.0 < data.unigram_entropy() < data.unigram_val_loss() < 8.0


def test_local_formats(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    rows = [{"text": p} for p in TEXT.split("\n\n") if p.strip()]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "c.parquet"))
    for name in ("a.txt", "b.jsonl", "c.parquet"):
        ds = load_corpus(str(tmp_path / name), min_words=3)
        assert len(ds) == 80 and "harbour" in ds[0]["text"]
    folder = load_corpus(str(tmp_path), min_words=3)
    assert len(folder) == 240
    assert {d.split(":")[0].split("#")[0] for d in folder["doc"]} == {"a.txt", "b.jsonl", "c.parquet"}


@pytest.mark.parametrize("content, words", [
    (b"", "is empty"),
    (b"   \n\n ", "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary"),
    ("caf\u00e9 ".encode("latin-1") * 50, "is not valid UTF-8"),
])
def test_bad_corpus_files(tmp_path, fresh_cache, content, words):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError) as err:
        prepare_data(DataConfig(corpus=str(path)))
    assert words in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    assert not list(fresh_cache.rglob("*.json")) and not list(fresh_cache.rglob("*.arrow"))
    assert not list(fresh_cache.rglob("*.tmp"))


def test_missing_corpus_and_unknown_name():
    with pytest.raises(CorpusError, match="neither a known corpus"):
        load_corpus("/no/such/file.txt")
    with pytest.raises(CorpusError, match="neither a known corpus"):
        load_corpus("wikitext-5")


def test_jsonl_without_text_column(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"body": "hello there"}\n')
    with pytest.raises(CorpusError, match="no 'text' column"):
        load_corpus(str(path))


def test_interrupted_tokenizer_build_leaves_nothing(tmp_path, fresh_cache, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text(TEXT)

    def explode(self, path, *a, **k):
        Path(path).write_text("{half")
        raise KeyboardInterrupt
    monkeypatch.setattr("tokenizers.Tokenizer.save", explode)
    prepare_data.cache_clear()
    with pytest.raises(KeyboardInterrupt):
        prepare_data(DataConfig(corpus=str(path), vocab_size=200, seq_len=16, min_words=3))
    assert list((fresh_cache / "tokenizers").iterdir()) == []


def test_wikitext_format_is_read_as_articles():
    lines = [{"text": ""}, {"text": " = Valkyria Chronicles = \n"}, {"text": " The game began development in 2010 . \n"},
             {"text": " = = Gameplay = = \n"}, {"text": " Players control units . \n"},
             {"text": " = Tower Bridge = \n"}, {"text": " It crosses the Thames . \n"}]
    rows = list(corpus_mod._wikitext_rows(lines))
    assert [r["doc"] for r in rows] == ["article-0", "article-0", "article-1"]
    assert rows[0]["text"].startswith("The game")


def test_hub_corpus_code_path_with_local_stand_in(monkeypatch, tmp_path):
    """TinyStories through `datasets.load_dataset`, fed a local DatasetDict of the same format."""
    stories = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["Once upon a time a small dog found a red ball in the park."] * 30}),
        "validation": datasets.Dataset.from_dict({"text": ["Lily liked to sing songs with her friend the bird."] * 5}),
    })
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kw: calls.append((name, config)) or stories)
    ds = load_corpus("roneneldan/TinyStories", min_words=3)
    assert calls == [("roneneldan/TinyStories", None)] and len(ds) == 35


def test_hub_offline_error_is_one_line(monkeypatch):
    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'Salesforce/wikitext' on the Hub\nmore")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(CorpusError) as err:
        load_corpus("wikitext-2-raw-v1")
    assert "\n" not in str(err.value) and "offline" in str(err.value)


def test_sotu_era_task_is_held_out_and_split_by_speech(smoke):
    _, data = smoke
    task = sotu_era_task(data)
    assert task.num_classes == 4 and len(task.train_ids) > 1000 and len(task.test_ids) > 300
    assert set(task.train_y.tolist()) == set(task.test_y.tolist()) == {0, 1, 2, 3}
    cols = data.corpus[:]
    pretrain_speeches = {d for d, r in zip(cols["doc"], cols["role"]) if r in ("train", "val")}
    assert not pretrain_speeches & (set(task.train_docs) | set(task.test_docs))
    assert not set(task.train_docs) & set(task.test_docs)
    assert len(set(task.test_docs)) >= 8
    assert task.majority_accuracy() < 0.5


def test_sst2_code_path_with_local_stand_in(monkeypatch, smoke):
    from effitrain.data.downstream import sst2_task
    _, data = smoke
    glue = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": ["a fine film", "dull and long"] * 10, "label": [1, 0] * 10}),
        "validation": datasets.Dataset.from_dict({"sentence": ["great", "bad"], "label": [1, 0]}),
    })
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kw: glue)
    task = sst2_task(data.tokenizer, 32)
    assert task.labels == ["negative", "positive"] and task.train_ids.shape == (20, 32)
    assert task.test_y.tolist() == [1, 0] and int(task.train_ids[0, 0]) == 2  # [CLS]
