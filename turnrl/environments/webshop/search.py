"""The product search engine: BM25 (bm25s) over the text the original indexes.

The original builds a Lucene index (pyserini, BM25 with k1=0.9, b=0.4) over one document per
product: lower-cased title, description, first bullet point and "option name: v1, and v2" texts. We
index the same text with bm25s and the same parameters. Lucene's English analyzer removes its 33
stop words (bm25s's English list is the same set) and stems with Porter; we use the plural rules of
Lucene's English minimal stemmer instead ("shoes" -> "shoe", "batteries" -> "battery"), which needs
no extra package. Only products that share a word with the query are returned, best first; ties go
to the product earlier in the file, so results do not depend on the platform's sort.

The index is built once per data set and kept on disk (bm25s `save`/`load`); `load_or_build` is
the entry point.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

K1, B = 0.9, 0.4
_STOPWORDS = frozenset(STOPWORDS_EN)
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
INDEX_FORMAT = "1"


def stem(word: str) -> str:
    """Lucene's English minimal (plural) stemmer."""
    if len(word) < 3 or word[-1] != "s":
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if not word.endswith(("us", "ss")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lower-cased words of two or more characters, stop words removed, plurals stemmed."""
    return [stem(word) for word in _TOKEN.findall(text.lower()) if word not in _STOPWORDS]


def document_text(title: str, description: str, bullets: list[str], options: dict[str, list[str]]) -> str:
    """The text the original indexes for one product."""
    option_text = ", and ".join(f"{name}: {', and '.join(values)}" for name, values in options.items())
    return " ".join([title, description, bullets[0] if bullets else "", option_text]).lower()


class SearchIndex:
    """BM25 over product documents; `search` returns asins, best first."""

    def __init__(self, retriever: bm25s.BM25, asins: list[str]):
        self.retriever = retriever
        self.asins = asins
        self._vocab = retriever.vocab_dict

    @classmethod
    def build(cls, asins: list[str], texts: list[str], progress: bool = True) -> SearchIndex:
        retriever = bm25s.BM25(k1=K1, b=B)
        corpus = [tokenize(text) for text in _progress(texts, progress, "tokenizing products")]
        retriever.index(corpus, show_progress=progress)
        return cls(retriever, list(asins))

    def save(self, folder: Path) -> None:
        self.retriever.save(str(folder), show_progress=False)
        (folder / "asins.json").write_text(json.dumps(self.asins), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> SearchIndex:
        retriever = bm25s.BM25.load(str(folder), show_progress=False, verbosity=0)
        return cls(retriever, json.loads((folder / "asins.json").read_text(encoding="utf-8")))

    def search(self, query: str, k: int = 50) -> list[str]:
        """The asins of the (at most) k best products that share a word with `query`."""
        tokens = [token for token in tokenize(query) if token in self._vocab]
        if not tokens:
            return []
        scores = self.retriever.get_scores(tokens)
        positive = np.flatnonzero(scores > 0)
        if len(positive) > k:
            threshold = np.partition(scores[positive], len(positive) - k)[len(positive) - k]
            positive = positive[scores[positive] >= threshold]
        order = np.lexsort((positive, -scores[positive]))[:k]
        return [self.asins[i] for i in positive[order]]


def _progress(items, enabled: bool, description: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, leave=False)


def load_or_build(folder: Path, asins: list[str], texts: list[str], progress: bool = True) -> SearchIndex:
    """The index saved in `folder`, or a new one built from the products and saved there (atomically:
    built in a temporary sibling folder, then renamed)."""
    marker = folder / "complete"
    if marker.is_file() and marker.read_text() == INDEX_FORMAT:
        return SearchIndex.load(folder)
    index = SearchIndex.build(asins, texts, progress=progress)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    index.save(staging)
    (staging / "complete").write_text(INDEX_FORMAT)
    try:
        if folder.exists():
            shutil.rmtree(folder)   # an incomplete folder left by an interrupted build
        os.replace(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another process won the race; its index is the same
    return index
