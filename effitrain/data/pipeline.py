"""corpus → split by document → tokenizer → token ids (Arrow cache) → training examples.

`prepare_data(DataConfig)` returns a `PretrainData` with the training examples as a `TrainSet`
(what techniques prune, reorder or replace), fixed validation batches (the same masks for every
run, so runs are comparable) and the unigram counts of the training tokens.
"""
from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import datasets
import numpy as np
import torch
from tokenizers import Tokenizer

from effitrain.config import DataConfig
from effitrain.data.cache import build_lock, cache_dir, map_cached
from effitrain.data.corpus import CorpusError, assign_roles, fingerprint, load_corpus
from effitrain.data.masking import MaskedBatch, mask_tokens
from effitrain.data.noisy import add_junk, block_labels
from effitrain.data.tokenizer import CLS, PAD, SEP, SPECIAL_TOKENS, get_tokenizer, tokenizer_path

DOWNSTREAM_FRACTION = 0.15  # of the documents of a corpus with a downstream task, held out of pre-training
VAL_MASK_SEED = 1234
PIECE_WORDS = 200  # words per piece when a corpus has too few paragraphs to split (see `split_roles`)
ERAS = ((1790, 1860, "1790-1860"), (1861, 1932, "1861-1932"), (1933, 1980, "1933-1980"), (1981, 9999, "1981-"))


def era_of(year: int) -> int:
    for i, (lo, hi, _) in enumerate(ERAS):
        if lo <= year <= hi:
            return i
    return -1


# --------------------------------------------------------------------------------------------
@dataclass
class TrainSet:
    """Training examples as a (N, T) id tensor (PAD-padded when unpacked) with per-example facts.

    ``features`` holds tensors of length N that techniques may use: ``length`` (real tokens),
    ``chars`` (characters of text covered); a noisy corpus (``sotu-noisy``) adds ``junk`` (0 = clean,
    else the kind in `effitrain.data.noisy.JUNK_KINDS`; a packed block's majority) and
    ``junk_share`` (share of its tokens from junk rows). ``origin`` maps each row to the index it had in the
    full training set, so a pruned or reordered set still says where its rows came from.
    """

    ids: torch.Tensor
    features: dict[str, torch.Tensor]
    origin: torch.Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.ids.shape[1]

    def select(self, indices: torch.Tensor | list[int] | np.ndarray) -> "TrainSet":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return TrainSet(self.ids[idx], {k: v[idx] for k, v in self.features.items()}, self.origin[idx])

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """The (B, T') ids of these rows, trimmed to the longest row (rounded up to 8)."""
        ids = self.ids[indices]
        longest = int(self.features["length"][indices].max())
        keep = min(self.seq_len, max(8, -(-longest // 8) * 8))
        return ids[:, :keep]


@dataclass
class PretrainData:
    config: DataConfig
    tokenizer: Tokenizer
    train: TrainSet
    val: list[MaskedBatch]
    unigram_counts: torch.Tensor  # (V,) counts of each id in the training examples
    key: str
    corpus: datasets.Dataset = field(repr=False)  # all paragraphs, with a "role" column
    split: str = "document"  # the unit the train/val split kept whole: "document", "paragraph" or "piece"

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def unigram_entropy(self) -> float:
        """Cross-entropy (nats) of predicting a masked token from corpus frequencies alone.

        A model whose MLM loss is below this uses the context; above it, it has not yet learned
        even which words are common.
        """
        counts = self.unigram_counts[len(SPECIAL_TOKENS):].double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())

    def unigram_val_loss(self) -> float:
        """Cross-entropy on the validation targets of a model that knows only training frequencies.

        The honest "learned nothing but word counts" line for val loss (add-one smoothing).
        """
        counts = self.unigram_counts.double() + 1
        counts[: len(SPECIAL_TOKENS)] = 0
        p = counts / counts.sum()
        labels = torch.cat([b.labels for b in self.val])
        return float(-p[labels].log().mean())


# --------------------------------------------------------------------------------------------
def tokenized_path(key: str) -> Path:
    """Where the tokenized corpus of data key `key` is cached."""
    return cache_dir("tokenized") / f"ids-ends-{key}.arrow"


def _tokenize(corpus: datasets.Dataset, tokenizer: Tokenizer, key: str) -> datasets.Dataset:
    def encode(batch: dict) -> dict:
        encs = tokenizer.encode_batch(batch["text"], add_special_tokens=False)
        # ends[i]: characters of the paragraph covered by its first i+1 tokens (tokenizer offsets),
        # so a row cut at any token knows exactly how much text it holds.
        return {"ids": [e.ids for e in encs], "ends": [[o[1] for o in e.offsets] for e in encs]}

    path = tokenized_path(key)
    with build_lock(path):
        return map_cached(corpus, encode, path, "the tokenized corpus", batched=True, batch_size=1000, desc="tokenizing")


def _pack(tokenized: datasets.Dataset, seq_len: int, cache_key: str) -> datasets.Dataset:
    """Concatenate paragraphs ([SEP] between them) and cut into [CLS] + (seq_len - 1) token blocks."""
    body = seq_len - 1
    has_junk = "junk" in tokenized.column_names

    def pack(batch: dict) -> dict:
        stream: list[int] = []
        chars: list[int] = []  # characters each stream token covers (its text and the gap before it)
        kinds: list[int] = []  # junk kind of the row each stream token comes from (noisy corpora)
        for j, (ids, ends) in enumerate(zip(batch["ids"], batch["ends"])):
            stream.extend(ids)
            stream.append(SEP)
            chars.extend(np.diff(ends, prepend=0).tolist() + [0])
            if has_junk:
                kinds.extend([batch["junk"][j]] * (len(ids) + 1))
        n = len(stream) // body
        blocks = [[CLS] + stream[i * body:(i + 1) * body] for i in range(n)]
        block_chars = [sum(chars[i * body:(i + 1) * body]) for i in range(n)]
        out = {"input_ids": blocks, "length": [seq_len] * n, "chars": block_chars}
        if has_junk:
            labels = [block_labels(np.asarray(kinds[i * body:(i + 1) * body])) for i in range(n)]
            out["junk"], out["junk_share"] = [k for k, _ in labels], [f for _, f in labels]
        return out

    path = cache_dir("tokenized") / f"blocks-ends-{cache_key}-{seq_len}.arrow"
    with build_lock(path):
        return map_cached(tokenized, pack, path, "the packed blocks", batched=True, batch_size=1000,
                          remove_columns=tokenized.column_names, desc="packing")


def _examples(tokenized: datasets.Dataset, seq_len: int) -> dict:
    """One paragraph per example: [CLS] ids [SEP], truncated, PAD-padded to seq_len."""
    ids = np.full((len(tokenized), seq_len), PAD, dtype=np.int64)
    lengths = np.zeros(len(tokenized), dtype=np.int64)
    chars = np.zeros(len(tokenized), dtype=np.float32)
    for i, (row, ends) in enumerate(zip(tokenized["ids"], tokenized["ends"])):
        kept = row[: seq_len - 2]
        chars[i] = ends[len(kept) - 1] if kept else 0  # text the kept tokens cover, not the whole paragraph
        row = [CLS] + kept + [SEP]
        ids[i, : len(row)] = row
        lengths[i] = len(row)
    out = {"input_ids": torch.from_numpy(ids), "length": torch.from_numpy(lengths),
           "chars": torch.from_numpy(chars)}
    if "junk" in tokenized.column_names:  # a noisy corpus: each example is one row, junk or not
        junk = np.asarray(tokenized["junk"], dtype=np.int64)
        out["junk"], out["junk_share"] = torch.from_numpy(junk), torch.from_numpy((junk > 0).astype(np.float32))
    return out


def _to_trainset(cols: dict) -> TrainSet:
    ids = torch.as_tensor(cols["input_ids"], dtype=torch.long)
    features = {"length": torch.as_tensor(cols["length"], dtype=torch.long),
                "chars": torch.as_tensor(cols["chars"], dtype=torch.float32)}
    if "junk" in cols:
        features["junk"] = torch.as_tensor(cols["junk"], dtype=torch.long)
        features["junk_share"] = torch.as_tensor(cols["junk_share"], dtype=torch.float32)
    return TrainSet(ids, features, torch.arange(ids.shape[0]))


def _build(cfg: DataConfig, tokenized: datasets.Dataset, role: str, key: str) -> TrainSet:
    path = cache_dir("tokenized") / f"{role}-{key}.arrow"
    with build_lock(path):
        part = map_cached(tokenized, lambda r: r == role, path, f"the {role} split", method="filter",
                          input_columns="role")
    if cfg.pack:
        blocks = _pack(part, cfg.seq_len, f"{role}-{key}").with_format("numpy")
        return _to_trainset(blocks[:])
    return _to_trainset(_examples(part, cfg.seq_len))


def _pieces(text: str, size: int, min_words: int) -> list[str]:
    """`text` cut into pieces of `size` words; a tail shorter than `min_words` joins the piece before it."""
    words = text.split()
    cuts = [words[i:i + size] for i in range(0, len(words), size)]
    if len(cuts) > 1 and len(cuts[-1]) < min_words:
        cuts[-2].extend(cuts.pop())
    return [" ".join(c) for c in cuts]


def split_roles(corpus: datasets.Dataset, cfg: DataConfig) -> tuple[datasets.Dataset, str]:
    """The corpus with a "role" column (train, val, and downstream for dated corpora) and the split's unit.

    Documents stay whole where there are enough of them for the validation fraction to get one.
    A corpus of fewer documents (one file, one text of a table, a folder of a few files) is split
    by paragraph instead, and one of too few paragraphs (a single long line) into pieces of up to
    `PIECE_WORDS` words. Validation text is never training text: a corpus too small even for that
    is refused, saying how much text a split needs.
    """
    cols = corpus[:]  # one read; datasets' column views iterate row by row
    has_years = any(y >= 0 for y in cols["year"])
    groups = [era_of(y) for y in cols["year"]] if has_years else [0] * len(corpus)
    fractions = {"val": cfg.val_fraction, **({"downstream": DOWNSTREAM_FRACTION} if has_years else {})}

    def assign(units: list[str], unit_groups: list[int]) -> list[str] | None:
        roles = assign_roles(units, unit_groups, fractions)
        col = [roles[u] for u in units]
        return col if {"train", "val"} <= set(col) else None

    role_col = assign(cols["doc"], groups)
    if role_col is not None:
        return corpus.add_column("role", role_col), "document"
    seen: dict[str, int] = {}
    paragraphs = []
    for doc in cols["doc"]:
        seen[doc] = seen.get(doc, -1) + 1
        paragraphs.append(f"{doc}#p{seen[doc]}" if not doc.startswith("#p") else doc)
    role_col = assign(paragraphs, groups)
    if role_col is not None:
        return datasets.Dataset.from_dict({**cols, "doc": paragraphs, "role": role_col}), "paragraph"
    words = sum(len(t.split()) for t in cols["text"])
    needed = math.floor(0.5 / cfg.val_fraction) + 1  # units for the validation fraction to get one
    size = max(cfg.min_words, min(PIECE_WORDS, words // needed))
    texts, docs, years, pgroups = [], [], [], []
    for text, doc, year, group in zip(cols["text"], paragraphs, cols["year"], groups):
        for k, piece in enumerate(_pieces(text, size, cfg.min_words)):
            texts.append(piece)
            docs.append(f"{doc}#w{k * size}")
            years.append(year)
            pgroups.append(group)
    role_col = assign(docs, pgroups)
    if role_col is None:
        raise CorpusError(
            f"corpus {cfg.corpus!r} is too small to keep validation text apart from training text: "
            f"{words} words in {len(set(cols['doc']))} document(s) and {len(paragraphs)} paragraph(s); "
            f"data.val_fraction={cfg.val_fraction} needs at least {needed} documents, paragraphs or pieces "
            f"of data.min_words={cfg.min_words} words ({needed * cfg.min_words} words)")
    return datasets.Dataset.from_dict({"text": texts, "doc": docs, "year": years, "role": role_col}), "piece"


# a corpus of more characters than this takes tens of seconds to prepare the first time: say so, with progress bars
LONG_PREPARATION_CHARS = 30_000_000


@contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    """`datasets`' progress bars (off in effitrain: our own say what matters) on within the block."""
    was_off = datasets.are_progress_bars_disabled()
    if show and was_off:
        datasets.enable_progress_bars()
    try:
        yield
    finally:
        if show and was_off:
            datasets.disable_progress_bars()


@lru_cache(maxsize=8)
def prepare_data(cfg: DataConfig) -> PretrainData:
    """Load, split, tokenize and cut the corpus of `cfg`; cached on disk and within the process.

    A corpus of over `LONG_PREPARATION_CHARS` characters says what it prepares, with progress bars
    for the tokenizer's training, the tokenizing and the packing (each cached on disk, so only the
    first preparation of a corpus takes long)."""
    corpus, split = split_roles(load_corpus(cfg.corpus, min_words=cfg.min_words), cfg)
    corpus = add_junk(corpus, cfg.corpus, cfg.min_words)  # noisy corpora only: junk in training documents
    cols = corpus[:]
    role_col = cols["role"]
    train_texts = [t for t, r in zip(cols["text"], role_col) if r == "train"]
    chars = sum(map(len, cols["text"]))
    corpus_key = fingerprint(train_texts)
    big = chars > LONG_PREPARATION_CHARS

    def say() -> None:
        print(f"preparing corpus {cfg.corpus!r}: {len(role_col):,} paragraphs, {chars / 1e6:,.0f} M characters "
              "(tokenizer, tokens and blocks are cached, so only the first preparation takes this long)",
              file=sys.stderr, flush=True)

    new_tokenizer = big and not tokenizer_path(corpus_key, cfg.vocab_size).exists()
    if new_tokenizer:
        say()
    tokenizer = get_tokenizer(train_texts, cfg.vocab_size, corpus_key, progress=new_tokenizer)
    # keyed by the tokenizer's content too: cached ids always belong to the tokenizer in use
    key = fingerprint(cols["text"], role_col, cfg.vocab_size, corpus_key, fingerprint([tokenizer.to_str()]),
                      *([cols["junk"]] if "junk" in cols else []))
    long = new_tokenizer or (big and not tokenized_path(key).exists())
    if long and not new_tokenizer:  # the tokenizer was cached, its tokens are not
        say()
    with _progress_bars(long):
        tokenized = _tokenize(corpus, tokenizer, key)
        train = _build(cfg, tokenized, "train", key)
    if cfg.max_train_examples and len(train) > cfg.max_train_examples:
        train = train.select(torch.arange(cfg.max_train_examples))
    val_set = _build(cfg, tokenized, "val", key)  # split_roles saw to it that there is validation text
    if len(val_set) == 0:
        val_words = sum(len(t.split()) for t, r in zip(cols["text"], role_col) if r == "val")
        raise CorpusError(f"corpus {cfg.corpus!r}: its validation text ({val_words} words) fills no block of "
                          f"data.seq_len={cfg.seq_len} tokens; give more text, a larger data.val_fraction or a "
                          "shorter data.seq_len")
    val_ids = val_set.ids[: cfg.max_val_blocks]
    g = torch.Generator().manual_seed(VAL_MASK_SEED)
    val = [mask_tokens(val_ids[i:i + 32], cfg.mask_prob, tokenizer.get_vocab_size(), g)
           for i in range(0, val_ids.shape[0], 32)]
    counts = torch.bincount(train.ids.flatten(), minlength=tokenizer.get_vocab_size())
    return PretrainData(cfg, tokenizer, train, val, counts, key, corpus, split)
