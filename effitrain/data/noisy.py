"""A deterministic "web-like" variant of a clean corpus: junk rows among the training paragraphs.

``sotu-noisy`` is the ``sotu`` corpus with junk added to its *training* documents only: for every
three clean training paragraphs one junk row (so junk is `JUNK_FRACTION` = 25 % of the training
rows, and every clean paragraph is still there: dropping exactly the junk leaves the clean
training text). Five kinds in equal shares, each row as long as a real paragraph (its length in
words is drawn from the clean training paragraphs, at least ``data.min_words``):

1. ``duplicate``: an exact copy (half of them) or a near copy (2-4 words replaced, deleted or
   repeated) of another training paragraph;
2. ``boilerplate``: cookie banners, legal notices, navigation and newsletter lines;
3. ``ocr``: a training paragraph garbled as by bad OCR (rn/m, cl/d, l/1, O/0 confusions, swapped
   letters, dropped and stray spaces, stray punctuation);
4. ``numbers``: rows of a numeric table with separators;
5. ``spam``: SEO keyword stuffing, or random tokens mixed with random words.

Junk comes in "pages" of `PAGE_ROWS` consecutive rows of one kind, each page placed after a
training document (its ``doc`` is that document's name + ``/junk-<page>``, its year that
document's), so packed blocks are mostly all junk or all clean. A page follows the document of a
training paragraph drawn uniformly (documents get junk in proportion to their length), so a cap on
the training rows (``data.max_train_examples``, the first rows) keeps about the same junk share.
Junk tokenizes into more tokens per word than prose: 25 % of the rows are about 30 % of the tokens. The junk is added once roles are known
(`add_junk`, called by `prepare_data` after `split_roles`), so validation and downstream rows are
exactly the clean corpus's, and junk is made only from training text (a copy of a validation
paragraph in training would leak it). Everything is drawn from `random.Random(JUNK_SEED).random()`,
whose sequence Python guarantees, through this module's own integer draws: the same bytes on any
machine and Python version.

Labels: the corpus gets a ``junk`` column (0 = clean, else the kind's number in `JUNK_KINDS`),
and the training `TrainSet` the features ``junk`` (an example's kind; for a packed block the kind
of most of its tokens if junk tokens are the majority, else 0) and ``junk_share`` (the share of
its tokens that come from junk rows; 0 or 1 unpacked). `junk_recall` scores a pruning selection.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import datasets
import numpy as np

JUNK_FRACTION = 0.25  # of the training rows (paragraphs) of a noisy corpus
JUNK_SEED = 20240511
PAGE_ROWS = 4  # consecutive junk rows of one kind
MAX_JUNK_WORDS = 200
JUNK_KINDS = {0: "clean", 1: "duplicate", 2: "boilerplate", 3: "ocr", 4: "numbers", 5: "spam"}
NOISY_CORPORA = {"sotu-noisy": "sotu"}  # noisy name -> the clean corpus it is built from


def base_corpus(name: str) -> str | None:
    """The clean corpus a noisy corpus name is built from, or None for any other name."""
    return NOISY_CORPORA.get(name)


# -- deterministic draws ---------------------------------------------------------------------
class _Draw:
    """Integer and choice draws on `random.Random.random()` only (the part Python keeps stable)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def unit(self) -> float:
        return self._rng.random()

    def below(self, n: int) -> int:
        return min(n - 1, int(self._rng.random() * n))

    def pick(self, items: Sequence):
        return items[self.below(len(items))]

    def shuffle(self, items: list) -> list:
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]
        return items


# -- the five kinds --------------------------------------------------------------------------
BOILERPLATE = (
    "We use cookies to improve your experience on our website.",
    "By continuing to browse this site you agree to our use of cookies.",
    "Accept all cookies | Manage preferences | Reject non-essential cookies",
    "Click here to subscribe to our newsletter and never miss an update.",
    "Sign up today and get 10% off your first order.",
    "All rights reserved. No part of this page may be reproduced without written permission.",
    "Copyright (c) 2009-2024 Example Media Group, Inc.",
    "Home | About Us | Contact | Privacy Policy | Terms of Use | Sitemap",
    "Skip to main content. Skip to navigation. Skip to footer.",
    "Share this article: Facebook Twitter LinkedIn Email Print",
    "This site is protected by reCAPTCHA and the Privacy Policy and Terms of Service apply.",
    "Your browser is out of date. Please update your browser for the best experience.",
    "Log in | Register | Forgot your password?",
    "Read more >> Previous post << Next post >>",
    "The views expressed in the comments are those of their authors and not of this site.",
    "Advertisement. Continue reading below.",
    "Loading comments... Be the first to comment!",
    "Terms and conditions apply. Offer valid while supplies last.",
    "Follow us on social media for the latest news and offers.",
    "Back to top ^",
    "Please enable JavaScript to view this content.",
    "Posted in Uncategorized | Tagged news, updates, featured | Leave a comment",
    "Powered by WordPress. Theme by Example Themes.",
    "Unsubscribe at any time. We will never share your email address.",
    "This page was last updated on 12 March 2021 at 14:05.",
    "Related articles: Top 10 tips | You may also like | Trending now",
    "Disclaimer: the information on this website is provided as is without warranty of any kind.",
    "Search this site: Go",
)

SPAM_KEYWORDS = (
    "cheap", "best", "buy", "online", "free", "discount", "deal", "deals", "loans", "casino", "bonus",
    "crypto", "bitcoin", "pills", "weight loss", "insurance", "quotes", "replica", "watches", "shoes",
    "sale", "outlet", "click", "win", "prize", "cash", "fast", "now", "top", "rated", "review",
    "2024", "official", "store", "coupon", "promo code", "limited", "offer", "seo", "backlinks",
)
SPAM_TEMPLATES = (
    "buy {a} {b} online", "best {a} {b} {c}", "cheap {a} {b} free shipping", "{a} {b} {a} {b}",
    "top rated {a} {c} 2024", "#{a} #{b} #{c}", "{a} {b} near me", "get {a} {b} now click here",
)

_OCR_SWAPS = (("rn", "m"), ("m", "rn"), ("cl", "d"), ("d", "cl"), ("li", "h"), ("l", "1"), ("I", "l"),
              ("O", "0"), ("o", "0"), ("e", "c"), ("c", "e"), ("h", "b"), ("u", "n"), ("n", "u"),
              ("f", "t"), ("S", "5"), ("i", "1"), ("t", "l"))
_STRAY = ("~", "'", ",", ".", "`", ";", "^", "*")
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _near_copy(text: str, d: _Draw, vocab: Sequence[str], min_words: int) -> str:
    words = text.split()
    for _ in range(2 + d.below(3)):
        i, op = d.below(len(words)), d.below(3)
        if op == 0 or (op == 1 and len(words) <= min_words):
            words[i] = d.pick(vocab)
        elif op == 1:
            del words[i]
        else:
            words.insert(i, words[i])
    return " ".join(words)


def _garble_word(word: str, d: _Draw) -> str:
    r = d.unit()
    if r < 0.22:  # a confusable letter shape
        hits = [(a, b) for a, b in _OCR_SWAPS if a in word]
        if hits:
            a, b = d.pick(hits)
            at = [i for i in range(len(word)) if word.startswith(a, i)]
            i = d.pick(at)
            return word[:i] + b + word[i + len(a):]
    elif r < 0.28 and len(word) > 3:  # two letters swapped
        i = d.below(len(word) - 1)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    elif r < 0.31 and len(word) > 4:  # a stray space inside the word
        i = 1 + d.below(len(word) - 2)
        return word[:i] + " " + word[i:]
    elif r < 0.34:  # stray punctuation
        return word + d.pick(_STRAY) if d.below(2) else d.pick(_STRAY) + word
    return word


def _ocr(text: str, d: _Draw) -> str:
    words = [_garble_word(w, d) for w in text.split()]
    out = words[0]
    for w in words[1:]:
        out += w if d.unit() < 0.10 else " " + w  # dropped space
    return out


def _boilerplate(target: int, d: _Draw) -> str:
    words: list[str] = []
    while len(words) < target:
        words.extend(d.pick(BOILERPLATE).split())
    return " ".join(words)  # whole lines: boilerplate does not stop mid-sentence


def _number_cell(d: _Draw, style: int) -> str:
    if style == 0:
        return f"{d.below(10**6):,}"
    if style == 1:
        return f"{d.below(100000) / 100:.2f}"
    if style == 2:
        return f"{d.below(1000) / 10:.1f}%"
    return f"{'-' if d.below(2) else ''}{d.below(10000) / 1000:.3f}"


def _numbers(target: int, d: _Draw) -> str:
    styles = [d.below(4) for _ in range(2 + d.below(5))]  # one kind of number per column
    lines = [" | ".join(["Year"] + [f"Col{c}" for c in range(1, len(styles) + 1)]),
             " + ".join(["----"] * (len(styles) + 1))]
    while sum(len(line.split()) for line in lines) < target:
        lines.append(" | ".join([str(1790 + d.below(235))] + [_number_cell(d, st) for st in styles]))
    return " ".join(lines)


def _spam(target: int, d: _Draw, vocab: Sequence[str]) -> str:
    words: list[str] = []
    stuffing = d.below(2) == 0
    while len(words) < target:
        if stuffing:
            kw = [d.pick(SPAM_KEYWORDS) for _ in range(3)]
            words.extend(d.pick(SPAM_TEMPLATES).format(a=kw[0], b=kw[1], c=kw[2]).split())
        elif d.below(2):
            words.append("".join(d.pick(_ALNUM) for _ in range(2 + d.below(9))))
        else:
            words.append(d.pick(vocab))
    return " ".join(words[:target]) if not stuffing else " ".join(words)


# -- public ----------------------------------------------------------------------------------
def make_junk(texts: Sequence[str], n: int, min_words: int = 20, seed: int = JUNK_SEED) -> list[tuple[str, int]]:
    """`n` junk rows ``(text, kind)`` made from the clean training paragraphs `texts`, deterministically.

    Kinds come in equal shares (by pages of `PAGE_ROWS` rows), in a seeded order; every row has at
    least `min_words` words. `texts` must hold only training text: copies are drawn from it.
    """
    if n <= 0:
        return []
    d = _Draw(seed)
    lengths = [len(t.split()) for t in texts]
    long_enough = [i for i, k in enumerate(lengths) if k >= min_words] or list(range(len(texts)))
    ocr_sources = [i for i in long_enough if lengths[i] >= math.ceil(1.3 * min_words)] or long_enough
    vocab = sorted({w for t in texts for w in t.split() if w.isalpha()}) or ["the"]
    pages = math.ceil(n / PAGE_ROWS)
    kinds = d.shuffle([1 + p % 5 for p in range(pages)])
    rows: list[tuple[str, int]] = []
    for kind in kinds:
        for _ in range(min(PAGE_ROWS, n - len(rows))):
            target = max(min_words, min(MAX_JUNK_WORDS, lengths[d.pick(long_enough)]))
            if kind == 1:
                src = texts[d.pick(long_enough)]
                text = src if d.below(2) else _near_copy(src, d, vocab, min_words)
            elif kind == 2:
                text = _boilerplate(target, d)
            elif kind == 3:
                text = _ocr(texts[d.pick(ocr_sources)], d)
                while len(text.split()) < min_words:  # rare: too many dropped spaces
                    text = _ocr(texts[d.pick(ocr_sources)], d)
            elif kind == 4:
                text = _numbers(target, d)
            else:
                text = _spam(target, d, vocab)
            rows.append((text, kind))
    return rows


def add_junk(corpus: datasets.Dataset, name: str, min_words: int = 20) -> datasets.Dataset:
    """`corpus` (with its "role" column) with a "junk" column, plus junk rows if `name` is a noisy corpus.

    Only documents with the train role get junk, as pages after their last paragraph; every other
    row, and the order of the clean rows, is unchanged. For a clean corpus name it returns
    `corpus` as it is (no "junk" column).
    """
    if base_corpus(name) is None:
        return corpus
    cols = corpus[:]
    roles, docs = cols["role"], cols["doc"]
    train_texts = [t for t, r in zip(cols["text"], roles) if r == "train"]
    n_junk = round(len(train_texts) * JUNK_FRACTION / (1 - JUNK_FRACTION))
    junk = make_junk(train_texts, n_junk, min_words)
    # a page goes after the document of a training paragraph drawn uniformly, so documents get
    # junk in proportion to their length and any prefix of the training rows has about the same share
    end_of, end = {}, None
    for i in reversed(range(len(docs))):
        if i + 1 == len(docs) or docs[i + 1] != docs[i]:
            end = i
        end_of[i] = end
    train_rows = [i for i in range(len(docs)) if roles[i] == "train"]
    d = _Draw(JUNK_SEED + 1)
    pages_after: dict[int, list[int]] = {}
    for p in range(math.ceil(len(junk) / PAGE_ROWS)):
        pages_after.setdefault(end_of[train_rows[d.below(len(train_rows))]], []).append(p)
    out: dict[str, list] = {k: [] for k in [*cols, "junk"]}
    for i in range(len(docs)):
        for k in cols:
            out[k].append(cols[k][i])
        out["junk"].append(0)
        for p in pages_after.get(i, ()):
            for text, kind in junk[p * PAGE_ROWS:(p + 1) * PAGE_ROWS]:
                for k in cols:
                    out[k].append(cols[k][i])
                out["text"][-1], out["doc"][-1] = text, f"{docs[i]}/junk-{p}"
                out["junk"].append(kind)
    return datasets.Dataset.from_dict(out)


def block_labels(token_kinds: np.ndarray) -> tuple[int, float]:
    """(kind, share) of a block from the junk kind of each of its tokens (0 = clean)."""
    share = float((token_kinds > 0).mean()) if len(token_kinds) else 0.0
    if share <= 0.5:
        return 0, share
    counts = np.bincount(token_kinds[token_kinds > 0], minlength=len(JUNK_KINDS))
    return int(counts.argmax()), share


def junk_recall(train, kept) -> dict:
    """How well a pruning selection removed the junk of a noisy `train` set.

    `kept`: the indices (into `train`) of the rows kept, or the pruned `TrainSet` itself (matched by
    ``origin``). Returns ``removed`` and ``junk`` (row counts), ``precision`` (share of the removed
    rows that are junk), ``recall`` (share of the junk rows removed), ``base_rate`` (junk share of
    all rows: a random removal's expected precision), ``token_recall`` (share of junk *tokens*
    removed, by ``junk_share``), and per kind ``kinds[name] = {rows, removed, recall,
    share_of_removed}``. Precision is NaN when nothing was removed.
    """
    if "junk" not in train.features:
        raise ValueError("junk_recall needs a training set with a 'junk' feature: use data.corpus='sotu-noisy'")
    n = len(train)
    keep = np.zeros(n, dtype=bool)
    if hasattr(kept, "origin"):
        where = {int(o): i for i, o in enumerate(train.origin.tolist())}
        try:
            keep[[where[int(o)] for o in kept.origin.tolist()]] = True
        except KeyError as exc:
            raise ValueError(f"junk_recall: a kept row (origin {exc.args[0]}) is not in the training set") from None
    else:
        idx = np.asarray(kept, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"junk_recall: kept indices must be in [0, {n}); got {int(idx.min())}..{int(idx.max())}")
        keep[idx] = True
    kind = train.features["junk"].numpy().astype(np.int64)
    share = train.features["junk_share"].numpy().astype(np.float64) if "junk_share" in train.features \
        else (kind > 0).astype(np.float64)
    removed, is_junk = ~keep, kind > 0
    n_removed, n_junk = int(removed.sum()), int(is_junk.sum())
    hit = int((removed & is_junk).sum())
    nan = float("nan")
    out = {"removed": n_removed, "junk": n_junk,
           "precision": hit / n_removed if n_removed else nan,
           "recall": hit / n_junk if n_junk else nan,
           "base_rate": n_junk / n if n else nan,
           "token_recall": float(share[removed].sum() / share.sum()) if share.sum() > 0 else nan,
           "kinds": {}}
    for k, name in JUNK_KINDS.items():
        if k == 0:
            continue
        rows = kind == k
        r = int((rows & removed).sum())
        out["kinds"][name] = {"rows": int(rows.sum()), "removed": r,
                              "recall": r / int(rows.sum()) if rows.any() else nan,
                              "share_of_removed": r / n_removed if n_removed else nan}
    return out
