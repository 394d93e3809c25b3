"""Retrievers: what turns a query into the top-k passages of a corpus.

`Retriever` is the interface the environment uses (`search(query, k) -> list[Passage]`); a dense
retriever (an embedding model over a vector index) is added later by implementing it, with no change to
the environment. `BM25Retriever` is the default: bm25s (Lucene BM25, k1=1.5, b=0.75, English stop-words,
no stemming) over a corpus in the pyserini/Search-R1 JSONL form.

The index is built once per corpus and cached on disk under the turnrl cache folder, keyed by the
corpus file's resolved path, size and modification time (a changed file is indexed again). Beside the
bm25s index it keeps the byte offset of every corpus line, so a search reads only the k passages it
returns from the file (a Wikipedia-sized corpus is never held in memory as text). An index is loaded
once per process and shared by every environment that uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from turnrl.environments.cache import cache_dir

INDEX_VERSION = "bm25s-en-v1"
MAX_QUERY_CHARS = 1_000  # a longer query is cut: it only costs time, and no real query is that long


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str
    score: float = 0.0


class Retriever(ABC):
    """Finds the passages of a corpus that best match a query."""

    @abstractmethod
    def search(self, query: str, k: int) -> list[Passage]:
        """The (at most) `k` best passages for `query`, best first. Never raises on odd text."""


def parse_corpus_record(line: str | bytes) -> tuple[str, str, str]:
    """(id, title, text) of one corpus line: {"id", "contents": "Title\\ntext"} (the title's surrounding
    double quotes, as in the Search-R1 Wikipedia dump, are removed), or {"id", "title", "text"}."""
    record = json.loads(line)
    if "contents" in record:
        title, _, text = str(record["contents"]).partition("\n")
        title = title.strip()
        if len(title) >= 2 and title[0] == title[-1] == '"':
            title = title[1:-1]
    elif "text" in record:
        title, text = str(record.get("title", "")), str(record["text"])
    else:
        raise ValueError(f"a corpus record needs 'contents' (title on its first line) or 'text'; got keys "
                         f"{sorted(record)}")
    return str(record.get("id", "")), title, text.strip()


def read_passages(corpus: Path) -> tuple[list[int], list[str]]:
    """Byte offsets of the non-empty lines (plus the end) and each passage's "title\ntext", for an index."""
    offsets, texts, position = [], [], 0
    with open(corpus, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    _, title, text = parse_corpus_record(line)
                except (ValueError, TypeError) as err:
                    raise ValueError(f"{corpus}, line {number}: {err}") from None
                offsets.append(position)
                texts.append(f"{title}\n{text}")
            position += len(line)
    if not texts:
        raise ValueError(f"{corpus}: the corpus has no passages")
    return [*offsets, position], texts


def _index_key(corpus: Path) -> str:
    stat = corpus.stat()
    raw = f"{INDEX_VERSION}|{corpus.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def build_index(corpus: Path, index_dir: Path, show_progress: bool = True) -> None:
    """Index `corpus` into `index_dir`, written atomically (a temporary folder renamed at the end)."""
    import bm25s

    offsets, texts = read_passages(corpus)
    if show_progress:
        print(f"turnrl searchqa: indexing {len(texts):,} passages of {corpus} (once; cached in {index_dir})",
              file=sys.stderr)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=show_progress), show_progress=show_progress)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=index_dir.parent))
    try:
        retriever.save(str(tmp), show_progress=False)
        np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
        (tmp / "corpus.json").write_text(json.dumps({"corpus": str(corpus.resolve()), "passages": len(texts)}))
        try:
            os.replace(tmp, index_dir)
        except OSError:
            if not (index_dir / "offsets.npy").exists():  # not another process's finished index: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def top_k(scores: np.ndarray, k: int) -> list[int]:
    """Positions of the `k` highest positive scores, best first, ties broken by position (lowest first).

    For a small k, k passes of argmax (which returns the first maximum): a partition of 100,000 scores,
    most of them equal, costs 10-20 ms, an argmax 0.1 ms.
    """
    if k <= 16:
        scores, best = scores.copy(), []
        for _ in range(k):
            doc = int(np.argmax(scores))
            if not scores[doc] > 0:
                break
            best.append(doc)
            scores[doc] = -np.inf
        return best
    k = min(k, len(scores))
    kth = -np.partition(-scores, k - 1)[k - 1]
    candidates = np.flatnonzero(scores >= max(kth, np.finfo(scores.dtype).tiny))
    return [int(doc) for doc in candidates[np.lexsort((candidates, -scores[candidates]))][:k]]


class BM25Retriever(Retriever):
    """bm25s over a JSONL corpus; use `BM25Retriever.shared(path)` to load each corpus once per process."""

    _shared: ClassVar[dict[str, BM25Retriever]] = {}
    _lock = threading.Lock()

    def __init__(self, corpus: str | os.PathLike, index_dir: str | os.PathLike | None = None,
                 show_progress: bool = True):
        import bm25s

        self.corpus = Path(corpus)
        if not self.corpus.is_file():
            raise FileNotFoundError(f"BM25Retriever: no corpus file {self.corpus}")
        self.index_dir = Path(index_dir) if index_dir else cache_dir("searchqa", "index") / _index_key(self.corpus)
        if not (self.index_dir / "offsets.npy").exists():
            build_index(self.corpus, self.index_dir, show_progress=show_progress)
        self.bm25 = bm25s.BM25.load(str(self.index_dir), show_progress=False, verbosity=0)
        self.offsets = np.load(self.index_dir / "offsets.npy")
        self.n_passages = len(self.offsets) - 1
        self._fd = os.open(self.corpus, os.O_RDONLY)

    @classmethod
    def shared(cls, corpus: str | os.PathLike) -> BM25Retriever:
        """The process-wide retriever of `corpus` (built or loaded on first use)."""
        if not Path(corpus).is_file():
            raise FileNotFoundError(f"BM25Retriever: no corpus file {corpus}")
        key = _index_key(Path(corpus))
        with cls._lock:
            if key not in cls._shared:
                cls._shared[key] = cls(corpus)
            return cls._shared[key]

    def passage(self, index: int, score: float = 0.0) -> Passage:
        """The passage on the `index`-th non-empty corpus line."""
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        line = os.pread(self._fd, end - start, start)
        pid, title, text = parse_corpus_record(line)
        return Passage(pid, title, text, score)

    def search(self, query: str, k: int) -> list[Passage]:
        import bm25s

        if not isinstance(query, str) or k < 1:
            return []
        tokens = bm25s.tokenize([query[:MAX_QUERY_CHARS]], stopwords="en", return_ids=False, show_progress=False)
        if not tokens[0]:
            return []
        # get_scores + our own top-k: bm25s's batched `retrieve` costs about 0.7 ms more per single query.
        scores = self.bm25.get_scores(tokens[0])
        return [self.passage(doc, float(scores[doc])) for doc in top_k(scores, min(k, self.n_passages))]

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
