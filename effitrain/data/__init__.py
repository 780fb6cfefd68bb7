"""Data: corpora, tokenizer, training examples, MLM masking, downstream tasks."""
from effitrain.data.corpus import CorpusError, corpus_names, load_corpus
from effitrain.data.masking import MaskedBatch, mask_tokens
from effitrain.data.noisy import JUNK_KINDS, junk_recall
from effitrain.data.pipeline import ERAS, PretrainData, TrainSet, era_of, prepare_data
from effitrain.data.tokenizer import CLS, MASK, PAD, SEP, SPECIAL_TOKENS, UNK

__all__ = ["CorpusError", "corpus_names", "load_corpus", "MaskedBatch", "mask_tokens", "ERAS",
           "PretrainData", "TrainSet", "era_of", "prepare_data", "CLS", "MASK", "PAD", "SEP",
           "SPECIAL_TOKENS", "UNK", "JUNK_KINDS", "junk_recall"]
