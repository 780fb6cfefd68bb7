"""Downstream classification tasks, for judging a pre-trained encoder by fine-tuning.

- ``sotu-era`` (offline): which era (1790-1860, 1861-1932, 1933-1980, 1981-) a State of the Union
  paragraph comes from. Built only from the speeches held out of pre-training, and split into
  train / test *by speech*, so no speech is on both sides and none was seen in pre-training.
- ``sst2`` (online): GLUE SST-2 sentiment through `datasets` (``nyu-mll/glue``); test = its
  validation split.
"""
from __future__ import annotations

from dataclasses import dataclass

import datasets
import torch
from tokenizers import Tokenizer

from effitrain.data.cache import cache_dir
from effitrain.data.corpus import CorpusError, assign_roles
from effitrain.data.pipeline import ERAS, PretrainData, era_of
from effitrain.data.tokenizer import CLS, PAD, SEP

TEST_FRACTION = 1 / 3


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


def encode(tokenizer: Tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """[CLS] text [SEP], truncated and PAD-padded to seq_len."""
    out = torch.full((len(texts), seq_len), PAD, dtype=torch.long)
    for i, enc in enumerate(tokenizer.encode_batch(texts, add_special_tokens=False)):
        row = [CLS] + enc.ids[: seq_len - 2] + [SEP]
        out[i, : len(row)] = torch.tensor(row)
    return out


def sotu_era_task(data: PretrainData, seq_len: int | None = None) -> ClassificationTask:
    cols = data.corpus[:]
    if "downstream" not in set(cols["role"]):
        raise CorpusError(f"corpus {data.config.corpus!r} has no held-out documents for a downstream task; use 'sotu'")
    rows = [(t, d, era_of(y)) for t, d, y, r in zip(cols["text"], cols["doc"], cols["year"], cols["role"])
            if r == "downstream"]
    docs = [d for _, d, _ in rows]
    side = assign_roles(docs, [e for _, _, e in rows], {"test": TEST_FRACTION})
    seq_len = seq_len or data.config.seq_len
    train = [(t, d, e) for t, d, e in rows if side[d] == "train"]
    test = [(t, d, e) for t, d, e in rows if side[d] == "test"]
    return ClassificationTask(
        "sotu-era", [name for _, _, name in ERAS],
        encode(data.tokenizer, [t for t, _, _ in train], seq_len), torch.tensor([e for _, _, e in train]),
        encode(data.tokenizer, [t for t, _, _ in test], seq_len), torch.tensor([e for _, _, e in test]),
        [t for t, _, _ in train], [t for t, _, _ in test], [d for _, d, _ in train], [d for _, d, _ in test])


def sst2_task(tokenizer: Tokenizer, seq_len: int) -> ClassificationTask:
    try:
        glue = datasets.load_dataset("nyu-mll/glue", "sst2", cache_dir=str(cache_dir("hub")))
    except Exception as exc:
        raise CorpusError(f"GLUE sst2 could not be loaded from the Hugging Face Hub ({type(exc).__name__}); "
                          "use the offline 'sotu-era' task") from None
    return task_from_splits("sst2", ["negative", "positive"], glue["train"], glue["validation"], tokenizer, seq_len)


def task_from_splits(name: str, labels: list[str], train: datasets.Dataset, test: datasets.Dataset,
                     tokenizer: Tokenizer, seq_len: int, text_column: str = "sentence") -> ClassificationTask:
    """A task from two `datasets` splits with a text column and an integer ``label`` column."""
    tr, te = train[:], test[:]
    return ClassificationTask(name, labels, encode(tokenizer, tr[text_column], seq_len), torch.tensor(tr["label"]),
                              encode(tokenizer, te[text_column], seq_len), torch.tensor(te["label"]),
                              list(tr[text_column]), list(te[text_column]))


TASKS = {"sotu-era": sotu_era_task}
