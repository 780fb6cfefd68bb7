"""Cramming's two data ingredients as config fields: drop rows the tokenizer compresses badly, and
train on the rest in a fixed order, likely rows first.

    tokens_per_char(train)        real tokens / characters covered, per row
    compressible_rows(train, c)   indices of the rows with tokens per character ≤ c   (data.max_tokens_per_char)
    likely_first(train, counts)   all rows, the most likely under the unigram model first   (data.order)
    OrderedSampler(order)         visits rows in that order, every epoch the same

Geiping & Goldstein (2022) drop a sequence when its tokens outnumber 0.3 × its characters
(`trash_cutoff` in JonasGeiping/cramming) and sort the rest by their unigram log-probability
(`_sort_tokenized_dataset_by_unigram`: add-one smoothed counts, log-probabilities summed over the
row and divided by the row length, so a short row is not "likely" just for being short).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from effitrain.config import ORDERS
from effitrain.data.sampler import EpochSampler
from effitrain.data.tokenizer import SPECIAL_TOKENS

if TYPE_CHECKING:
    from effitrain.data.pipeline import TrainSet


def real_tokens(train: "TrainSet") -> torch.Tensor:
    """Non-special tokens per row (no [CLS]/[SEP]/[PAD]/[MASK]/[UNK])."""
    return (train.ids >= len(SPECIAL_TOKENS)).sum(dim=1)


def tokens_per_char(train: "TrainSet") -> torch.Tensor:
    """(N,) real (non-special) tokens per character of text a row covers; high = compresses badly."""
    return real_tokens(train).float() / train.features["chars"].float().clamp(min=1.0)


def compressible_rows(train: "TrainSet", max_tokens_per_char: float) -> torch.Tensor:
    """Indices (ascending) of the rows whose tokens per character are at most the cutoff."""
    return torch.nonzero(tokens_per_char(train) <= max_tokens_per_char).flatten()


def token_surprisal(unigram_counts: torch.Tensor) -> torch.Tensor:
    """(V,) −log p̂(w) from the corpus's unigram counts (add-one smoothed, special tokens cost 0)."""
    counts = unigram_counts.double().clone() + 1.0
    counts[: len(SPECIAL_TOKENS)] = 0.0
    surprisal = -(counts / counts.sum()).log()
    surprisal[: len(SPECIAL_TOKENS)] = 0.0
    return surprisal


def unigram_log_likelihood(train: "TrainSet", unigram_counts: torch.Tensor) -> torch.Tensor:
    """(N,) mean log-probability of a row's real tokens under the add-one smoothed unigram model."""
    total = token_surprisal(unigram_counts)[train.ids].sum(dim=1)  # special tokens cost 0
    return -total / real_tokens(train).clamp(min=1)


def likely_first(train: "TrainSet", unigram_counts: torch.Tensor) -> torch.Tensor:
    """All row indices, highest mean unigram log-likelihood first (ties keep the dataset's order)."""
    return torch.sort(unigram_log_likelihood(train, unigram_counts), descending=True, stable=True).indices


class OrderedSampler(EpochSampler):
    """Visits the rows in a fixed order; when an epoch ends it starts again from the first."""

    def __init__(self, order: torch.Tensor):
        self.order = torch.as_tensor(order, dtype=torch.long)
        super().__init__(len(self.order), seed=0)

    def _permutation(self) -> torch.Tensor:
        return self.order


__all__ = ["ORDERS", "OrderedSampler", "compressible_rows", "likely_first", "real_tokens", "token_surprisal",
           "tokens_per_char", "unigram_log_likelihood"]
