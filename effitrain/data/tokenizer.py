"""A WordPiece tokenizer (`tokenizers`) trained on the training split and cached by content."""
from __future__ import annotations

from typing import Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from effitrain.data.cache import atomic_path, cache_dir
from effitrain.data.corpus import fingerprint

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = range(len(SPECIAL_TOKENS))


def decode_text(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
    """The text of a row: its words and [UNK]s, without [PAD], [CLS], [SEP] or [MASK]."""
    return tokenizer.decode([t for t in ids if t >= len(SPECIAL_TOKENS) or t == UNK])


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                        min_frequency=2, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def get_tokenizer(texts: Sequence[str], vocab_size: int, corpus_key: str | None = None) -> Tokenizer:
    """Load the cached tokenizer for these texts and size, or train and cache it."""
    key = corpus_key or fingerprint(texts)
    path = cache_dir("tokenizers") / f"wordpiece-{key}-{vocab_size}.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    tok = train_tokenizer(texts, vocab_size)
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    return tok
