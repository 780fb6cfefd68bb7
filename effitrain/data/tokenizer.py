"""A WordPiece tokenizer (`tokenizers`) trained on the training split and cached by content.

Training is deterministic: the same texts and size give the same tokenizer file, byte for byte,
in any process and with any number of threads. (`tokenizers`' trainer numbers the "##x"
continuing-subword characters in the order of a hash map that is seeded afresh in every process;
their ids then break ties between equally frequent merges, so two trainings on the same text
gave permuted vocabularies and different curves. Here those characters are numbered up front, in
code-point order, and the vocabulary is written in one canonical order.)
"""
from __future__ import annotations

from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from effitrain.data.cache import WRITE_ERRORS, atomic_path, build_lock, cache_dir, cannot_keep
from effitrain.data.corpus import fingerprint

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(len(SPECIAL_TOKENS))
PREFIX = "##"
# 2: canonical vocabulary order (version 1 files came from a non-deterministic training; never reused)
TOKENIZER_VERSION = 2


def decode_text(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """The text of a row: its words and [UNK]s, without [PAD], [CLS], [SEP] or [MASK]."""
    return tokenizer.decode([t for t in ids if t >= len(SPECIAL_TOKENS) or t == UNK])


def _pipeline(model: models.Model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=PREFIX)
    return tok


def _trained(texts: Iterable[str], length: int, vocab_size: int, special: Sequence[str],
             progress: bool = False) -> Tokenizer:
    tok = _pipeline(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix=PREFIX))
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(special), min_frequency=2,
                                        continuing_subword_prefix=PREFIX, show_progress=progress)
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    return tok


def _is_single(token: str) -> bool:
    return len(token) == 1 or (token.startswith(PREFIX) and len(token) == len(PREFIX) + 1)


def continuing_characters(texts: Sequence[str]) -> list[str]:
    """The "##x" tokens a WordPiece training on `texts` creates (one per character seen after a
    word's first), in code-point order.

    Found by the trainer itself on the distinct space-separated pieces of the texts: normalizing
    and pre-tokenizing act piece by piece, so the pieces hold exactly the words of the texts.
    """
    pieces: set[str] = set()
    for text in texts:
        pieces.update(text.split(" "))
    probe = _trained(sorted(pieces), len(pieces), 0, SPECIAL_TOKENS)
    return sorted(t for t in probe.get_vocab() if t.startswith(PREFIX) and len(t) == len(PREFIX) + 1)


def train_tokenizer(texts: Sequence[str], vocab_size: int, progress: bool = False) -> Tokenizer:
    """Train a WordPiece tokenizer, deterministically (see the module's docstring); `progress` shows
    the trainer's own progress bars (on stderr).

    The continuing characters are given to the trainer as extra special tokens, so they have fixed
    ids before any merge; the tokenizer is then rebuilt from the vocabulary in the canonical order
    [PAD] [UNK] [CLS] [SEP] [MASK], characters, "##" characters (both by code point), merged tokens
    (in the order they were learned), with only the five special tokens special.
    """
    pinned = continuing_characters(texts)
    trained = _trained(texts, len(texts), vocab_size, SPECIAL_TOKENS + tuple(pinned), progress)
    vocab = trained.get_vocab()
    learned = [t for t in sorted(vocab, key=vocab.__getitem__) if t not in SPECIAL_TOKENS]
    singles = sorted((t for t in learned if _is_single(t)), key=lambda t: (t.startswith(PREFIX), t))
    merged = [t for t in learned if not _is_single(t)]
    order = list(SPECIAL_TOKENS) + singles + merged
    tok = _pipeline(models.WordPiece(vocab={t: i for i, t in enumerate(order)}, unk_token="[UNK]",
                                     continuing_subword_prefix=PREFIX))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def tokenizer_path(key: str, vocab_size: int):
    return cache_dir("tokenizers") / f"wordpiece-v{TOKENIZER_VERSION}-{key}-{vocab_size}.json"


def get_tokenizer(texts: Sequence[str], vocab_size: int, corpus_key: str | None = None,
                  progress: bool = False) -> Tokenizer:
    """Load the cached tokenizer for these texts and size, or train and cache it (once, whoever asks at
    once); `progress`: show the training's progress bars."""
    path = tokenizer_path(corpus_key or fingerprint(texts), vocab_size)
    if not path.exists():  # entries are renamed into place whole: an existing file is complete
        with build_lock(path):
            if not path.exists():  # a builder that held the lock before us may have made it
                tok = train_tokenizer(texts, vocab_size, progress)
                try:
                    with atomic_path(path) as tmp:
                        tok.save(str(tmp))
                except WRITE_ERRORS as exc:  # a read-only or full cache costs the cache, not the run
                    cannot_keep("the tokenizer", path.parent, exc)
                    return tok
    return Tokenizer.from_file(str(path))
