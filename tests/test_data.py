import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import datasets
import pytest
import torch

import effitrain as et

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
    (b"text,label\n\n", "has a header row but no rows"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "looks binary"),
    ("caf\u00e9 ".encode("latin-1") * 50, "is not valid UTF-8"),
])
def test_bad_corpus_files(tmp_path, fresh_cache, content, words):
    path = tmp_path / ("bad.csv" if content.startswith(b"text,") else "bad.txt")
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


# -- reliability (issue 10): deterministic, concurrent-safe cache; honest splits; CSV --------------
REPO = Path(__file__).resolve().parent.parent
SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "vo", "zu", "pe", "ghi", "qua", "xen", "bly", "dro", "fy",
             "wo", "jax", "cy", "ost", "ump", "el", "ir", "ab")


def _varied_text(paragraphs: int = 240, seed: int = 0) -> str:
    """Made-up words of many letters (so many '##x' continuing characters), paragraphs by blank lines."""
    import random
    rng = random.Random(seed)
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(500)]
    return "\n\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(25, 60))).capitalize() + "."
                       for _ in range(paragraphs)) + "\n"


_TRAIN_SCRIPT = r"""
import json, sys, time
import effitrain as et
import effitrain.data.tokenizer as T
from effitrain.data import prepare_data

trained = T.train_tokenizer
def traced(*a, **k):
    print("TRAINED", flush=True)
    tok = trained(*a, **k)
    time.sleep(3)  # a wide window: a second builder that does not wait would train too
    return tok
T.train_tokenizer = traced
cfg = et.profile_config("smoke", corpus=sys.argv[1], vocab_size=400, seq_len=32, min_words=3, budget="6steps",
                        batch_size=8, evals=1, threads=1, max_val_blocks=8)
run = et.train(cfg, progress=False)
print("LOSSES " + json.dumps([r["train_loss"] for r in run.history.steps]), flush=True)
"""


def _start(corpus: Path, cache: Path, threads: int) -> subprocess.Popen:
    env = {**os.environ, "EFFITRAIN_CACHE": str(cache), "RAYON_NUM_THREADS": str(threads),
           "RAYON_RS_NUM_CPUS": str(threads), "EFFITRAIN_RUN_CACHE": "0",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", _TRAIN_SCRIPT, str(corpus)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[list[float], int]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    losses = [json.loads(line[len("LOSSES "):]) for line in out.splitlines() if line.startswith("LOSSES ")]
    assert len(losses) == 1 and len(losses[0]) == 6, out
    return losses[0], out.splitlines().count("TRAINED")


def _tokenizer_file(cache: Path) -> Path:
    files = list((cache / "tokenizers").glob("*.json"))
    assert len(files) == 1, files
    return files[0]


@pytest.mark.slow
def test_fresh_caches_give_the_same_tokenizer_and_curve_whatever_the_threads(tmp_path):
    corpus = tmp_path / "varied.txt"
    corpus.write_text(_varied_text())
    results = [_finish(_start(corpus, tmp_path / f"cache{n}", n)) for n in (1, 2)]
    first, second = (_tokenizer_file(tmp_path / f"cache{n}") for n in (1, 2))
    assert first.read_bytes() == second.read_bytes()
    assert results[0][0] == results[1][0]
    assert first.name == second.name and first.name.startswith("wordpiece-v2-")  # old files are not reused


@pytest.mark.slow
def test_two_runs_building_one_fresh_cache_at_once_agree(tmp_path, monkeypatch):
    corpus = tmp_path / "varied.txt"
    corpus.write_text(_varied_text(seed=1))
    cache = tmp_path / "cache"
    procs = [_start(corpus, cache, 2), _start(corpus, cache, 2)]
    (losses_a, trained_a), (losses_b, trained_b) = (_finish(p) for p in procs)
    assert trained_a + trained_b == 1, "both runs trained a tokenizer: the second did not wait for the first"
    assert losses_a == losses_b
    # what the cache holds is consistent: its ids are what its tokenizer makes of the training text
    monkeypatch.setenv("EFFITRAIN_CACHE", str(cache))
    prepare_data.cache_clear()
    data = prepare_data(DataConfig(corpus=str(corpus), vocab_size=400, seq_len=32, min_words=3, max_val_blocks=8))
    assert data.tokenizer.get_vocab() == type(data.tokenizer).from_file(str(_tokenizer_file(cache))).get_vocab()
    first = data.corpus.filter(lambda r: r == "train", input_columns="role")[0]["text"]
    expected = data.tokenizer.encode(first, add_special_tokens=False).ids[:31]
    assert data.train.ids[0, 1:1 + len(expected)].tolist() == expected
    assert not list(cache.rglob("*.tmp"))
    prepare_data.cache_clear()


def _assert_val_apart_from_train(data) -> None:
    cols = data.corpus[:]
    train = {t for t, r in zip(cols["text"], cols["role"]) if r == "train"}
    val = {t for t, r in zip(cols["text"], cols["role"]) if r == "val"}
    assert train and val and not train & val
    assert data.val and sum(len(b.labels) for b in data.val) > 0  # evaluation has text of its own


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("make, split", [
    (lambda d: _write(d / "three.txt", " ".join(_varied_text(12).split()[:200]) + "\nand a second line\nthird\n"),
     "piece"),
    (lambda d: _write(d / "long.txt", " ".join(_varied_text(200).split())), "piece"),
    (lambda d: _write(d / "one.jsonl", json.dumps({"text": _varied_text(60)}) + "\n"), "piece"),
    (lambda d: _write(d / "books" / "a.txt", _varied_text(30, seed=2)).parent
     if _write(d / "books" / "b.txt", _varied_text(30, seed=3)) else None, "paragraph"),
], ids=["three-lines", "one-long-line", "one-json-row", "folder-of-two"])
def test_corpora_of_one_or_few_documents_never_validate_on_training_text(tmp_path, fresh_cache, make, split):
    path = make(tmp_path)
    prepare_data.cache_clear()
    data = prepare_data(DataConfig(corpus=str(path), vocab_size=200, seq_len=16, min_words=3))
    _assert_val_apart_from_train(data)
    assert data.split == split
    prepare_data.cache_clear()


def test_a_corpus_too_small_to_split_is_refused_with_one_line(tmp_path, fresh_cache):
    path = tmp_path / "tiny.txt"
    path.write_text("Just a few words on one line,\nand two more lines\nof text here.\n")
    prepare_data.cache_clear()
    with pytest.raises(CorpusError) as err:
        prepare_data(DataConfig(corpus=str(path), vocab_size=200, seq_len=16, min_words=3))
    message = str(err.value)
    assert "\n" not in message and "too small" in message and "words" in message and str(path) in message
    assert "data.val_fraction" in message


def test_csv_is_read_by_its_text_column(tmp_path):
    import csv
    texts = [f"{p}, with a comma and \"quotes\"" for p in TEXT.split("\n\n") if p.strip()]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "text"])
        for i, t in enumerate(texts):
            w.writerow([i % 2, t])
    (tmp_path / "t.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{i}\n" for i, t in enumerate(texts)))
    for name in ("t.csv", "t.tsv"):
        ds = load_corpus(str(tmp_path / name), min_words=3)
        assert ds["text"] == [" ".join(t.split()) for t in texts], name
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "t.csv").write_bytes((tmp_path / "t.csv").read_bytes())
    assert load_corpus(str(folder), min_words=3)["text"] == [" ".join(t.split()) for t in texts]
    (tmp_path / "labels.csv").write_text("label,body\n1,hello there\n")
    with pytest.raises(CorpusError) as err:
        load_corpus(str(tmp_path / "labels.csv"))
    assert "no 'text' column" in str(err.value) and "\n" not in str(err.value)


def test_cache_files_are_readable_like_the_rest_of_the_cache(tmp_path, fresh_cache):
    from effitrain.data.cache import atomic_path
    path = tmp_path / "c.txt"
    path.write_text(TEXT)
    old = os.umask(0o022)
    try:
        prepare_data.cache_clear()
        prepare_data(DataConfig(corpus=str(path), vocab_size=200, seq_len=16, min_words=3))
        with atomic_path(tmp_path / "x.json") as tmp:
            tmp.write_text("{}")
        os.umask(0o027)
        with atomic_path(tmp_path / "y.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
        prepare_data.cache_clear()
    assert _tokenizer_file(fresh_cache).stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "y.json").stat().st_mode & 0o777 == 0o640


# -- a cache that cannot be written (read-only or full) ----------------------------------------------
def _unwritable(monkeypatch):
    """Every write of the data cache fails as on a read-only disk (the tests may run as root, whom a
    read-only mode does not stop): the build lock, the tokenizer file, the Arrow cache files."""
    import contextlib
    import errno

    import datasets

    from effitrain.data import cache as cache_mod
    from effitrain.data import tokenizer as tok_mod

    class ReadOnlyLock:
        def __init__(self, path):
            self.path = path

        def acquire(self):
            raise PermissionError(errno.EROFS, "Read-only file system", self.path)

    @contextlib.contextmanager
    def no_write(target):
        raise OSError(errno.EROFS, "Read-only file system", str(target))
        yield  # noqa: unreachable

    real_map = datasets.Dataset.map

    def map_(self, *args, cache_file_name=None, **kwargs):
        if cache_file_name and not os.path.exists(cache_file_name):
            open(cache_file_name, "wb").write(b"half")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device", cache_file_name)
        return real_map(self, *args, cache_file_name=cache_file_name, **kwargs)

    monkeypatch.setattr(cache_mod, "FileLock", ReadOnlyLock)
    monkeypatch.setattr(tok_mod, "atomic_path", no_write)
    monkeypatch.setattr(datasets.Dataset, "map", map_)


def test_a_cache_that_cannot_be_written_costs_the_cache_not_the_run(fresh_cache, monkeypatch):
    from effitrain.data.cache import CacheWarning
    from effitrain.data.pipeline import prepare_data

    cfg = et.profile_config("smoke")
    built = prepare_data(cfg.data)  # a cache built normally, then made unwritable: every hit still reads
    prepare_data.cache_clear()
    _unwritable(monkeypatch)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        again = prepare_data(cfg.data)
    assert torch.equal(again.train.ids, built.train.ids)
    said = [str(w.message) for w in seen if issubclass(w.category, CacheWarning)]
    assert said and all(m.startswith("cache: cannot lock ") and "\n" not in m for m in said)  # only the locks
    prepare_data.cache_clear()
    # a miss (another vocabulary size): built in memory, used, and nothing half-written is kept
    other = cfg.data.__class__(**{**cfg.data.__dict__, "vocab_size": cfg.data.vocab_size // 2 + 7})
    with pytest.warns(CacheWarning, match=r"cache: cannot write the (tokenizer|tokenized corpus|packed blocks) in "):
        fresh = prepare_data(other)
    prepare_data.cache_clear()
    assert fresh.vocab_size == other.vocab_size and len(fresh.train) > 0
    assert not [p for p in fresh_cache.rglob("*") if p.is_file() and p.read_bytes() == b"half"]
    run = et.train(cfg.replace(budget="2steps", evals=1, vocab_size=other.vocab_size), data=fresh, progress=False)
    assert run.status == "completed"


def test_a_corpus_of_ones_own_says_what_its_reading_dropped_or_merged(tmp_path):
    from effitrain.data.corpus import CorpusWarning

    lines = tmp_path / "reviews.txt"
    lines.write_text("".join(f"review number {i} was good enough for me\n" for i in range(50)))
    with pytest.warns(CorpusWarning, match=r"50 lines read as 1 paragraph\(s\): paragraphs are separated by blank lines"):
        assert len(load_corpus(str(lines))) == 1
    short = tmp_path / "short.txt"
    short.write_text("\n\n".join(["a short one"] * 15 + ["this paragraph has more than enough words to be kept"] * 5))
    with pytest.warns(CorpusWarning, match=r"data.min_words=5 dropped 15 of 20 paragraphs \(75%\)"):
        assert len(load_corpus(str(short), min_words=5)) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorpusWarning)
        load_corpus("sotu", min_words=5)  # the known corpora read as documented: no warning


def test_a_writer_killed_mid_write_leaves_nothing_the_next_write_keeps(tmp_path):
    """kill -9 during an atomic write (a checkpoint save) leaves its hidden .tmp; the next write of the
    same file removes it, and never one whose writer is still alive."""
    import signal
    import subprocess
    import sys

    from effitrain.data.cache import atomic_path
    from effitrain.train.checkpoint import save_checkpoint

    target = tmp_path / "ckpt.pt"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from effitrain.data.cache import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000); print('writing', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    left = list(tmp_path.glob(".ckpt.pt.*.tmp"))
    assert len(left) == 1 and not target.exists()
    with atomic_path(tmp_path / "other.pt") as tmp:  # another file's write leaves it alone
        tmp.write_bytes(b"o")
    assert left[0].exists()
    with atomic_path(target) as tmp:  # a concurrent, live writer of the same file: kept
        live = list(tmp_path.glob(".ckpt.pt.*.tmp"))
        assert tmp in live and not left[0].exists()
        tmp.write_bytes(b"y")
    save_checkpoint(target, {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "other.pt"]


def test_a_long_preparation_says_what_it_prepares_and_a_short_one_stays_quiet(tmp_path, fresh_cache, monkeypatch, capsys):
    import dataclasses

    import datasets

    from effitrain.data import pipeline

    path = tmp_path / "notes.txt"
    path.write_text("\n\n".join(f"note {i}: the committee met on a tuesday and agreed on item {i % 7}" for i in range(400)))
    cfg = et.profile_config("smoke", corpus=str(path), vocab_size=256, min_words=5).data
    monkeypatch.setattr(pipeline, "LONG_PREPARATION_CHARS", 10**9)
    pipeline.prepare_data(cfg)
    assert "preparing corpus" not in capsys.readouterr().err
    monkeypatch.setattr(pipeline, "LONG_PREPARATION_CHARS", 1000)
    pipeline.prepare_data(dataclasses.replace(cfg, vocab_size=300))  # not the lru-cached one
    err = capsys.readouterr().err
    assert f"preparing corpus {str(path)!r}: 400 paragraphs" in err
    pipeline.prepare_data.cache_clear()
    pipeline.prepare_data(dataclasses.replace(cfg, vocab_size=300))  # from the disk cache: nothing to say
    assert "preparing corpus" not in capsys.readouterr().err
    assert datasets.are_progress_bars_disabled()  # effitrain's setting is back


def test_a_run_on_ones_own_corpus_is_labelled_by_it():
    from effitrain.train.run import Run

    cfg = et.profile_config("smoke")
    assert Run(cfg).label == "baseline s0"
    own = Run(cfg.replace(corpus="/data/reviews.txt", seed=2), techniques=[{"name": "layer_drop", "params": {}}])
    assert own.label == "layer_drop on reviews.txt s2" and own.setting == "layer_drop on reviews.txt"
    assert Run(cfg.replace(corpus="/data/reviews.txt"), name="mine s0").label == "mine s0"
