"""Search-QA data: the shipped (generated) corpus and questions, and a user's own files.

Formats, the ones Search-R1 and FlashRAG use, so NQ, HotpotQA and a Wikipedia dump work as they are:
- corpus: JSONL, one passage a line, `{"id": ..., "contents": "Title\\ntext"}` (see `retriever.py`);
- questions: JSONL or parquet with `question` and `golden_answers` (a list, or one string; `answers` or
  `answer` are read when `golden_answers` is missing). Optional: `id`; `split`; the supporting passages'
  titles as `supporting_titles` (or HotpotQA's `supporting_facts`, `[[title, sentence], ...]`), which the
  expert searches one after another.

Splits: a `split` field assigns each question to its split (any names, e.g. train/dev/test). Without
one, every question goes to "train" except a deterministic tenth, at least one question, that goes to
"test": the questions with the smallest SHA-1 of their id (or text when there is no id). The choice
does not depend on the file's order, and a file of two questions or more always has both splits.

The shipped data (`knowledge.py`) is generated on first use and written to the turnrl cache, where
anyone can read it as the same two files; it then loads through the same code as a user's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from turnrl.environments.cache import cache_dir
from turnrl.environments.searchqa.knowledge import KB_VERSION, generate_passages, generate_questions

SHIPPED_PASSAGES = 5_000
TEST_FRACTION = 0.1


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    golden_answers: tuple[str, ...]
    supporting_titles: tuple[str, ...] = ()
    split: str = "train"


def _write_jsonl(path: Path, records) -> None:
    """Write atomically: a temporary file in the same folder, renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


_generate_lock = threading.Lock()


def shipped_paths() -> tuple[Path, Path]:
    """(corpus.jsonl, questions.jsonl) of the shipped data, generated on first use."""
    folder = cache_dir("searchqa", f"data-{KB_VERSION}")
    corpus, questions = folder / "corpus.jsonl", folder / "questions.jsonl"
    with _generate_lock:
        if not corpus.exists():
            _write_jsonl(corpus, generate_passages(SHIPPED_PASSAGES))
        if not questions.exists():
            _write_jsonl(questions, generate_questions(n_passages=SHIPPED_PASSAGES))
    return corpus, questions


def generated_corpus(n_passages: int) -> Path:
    """A generated corpus of `n_passages` passages (the latency benchmark uses 100,000), cached."""
    path = cache_dir("searchqa", f"data-{KB_VERSION}") / f"corpus-{n_passages}.jsonl"
    if not path.exists():
        _write_jsonl(path, generate_passages(n_passages))
    return path


def _read_records(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {number}: not JSON ({err})") from None
    return records


def _answers(record: dict) -> list[str] | None:
    for key in ("golden_answers", "answers", "answer"):
        value = record.get(key)
        if value is not None:
            values = [value] if isinstance(value, str | int | float) else list(value)
            return [str(v) for v in values]
    return None


def _supporting_titles(record: dict) -> tuple[str, ...]:
    titles = record.get("supporting_titles")
    if titles is None and record.get("supporting_facts"):
        titles = [fact[0] for fact in record["supporting_facts"]]
    return tuple(dict.fromkeys(str(title) for title in titles or []))  # unique, in order


def _parse_questions(path: Path) -> list[Question]:
    records = _read_records(path)
    questions = []
    for number, record in enumerate(records, start=1):
        answers = _answers(record) if isinstance(record, dict) else None
        if not isinstance(record, dict) or not isinstance(record.get("question"), str) or not answers:
            raise ValueError(f"{path}, record {number}: a question needs 'question' (text) and 'golden_answers' "
                             "(a list of strings, or one string)")
        split, qid = record.get("split"), record.get("id")
        questions.append(Question(str(number - 1 if qid is None else qid), record["question"], tuple(answers),
                                  _supporting_titles(record), str(split) if split is not None else ""))
    if any(q.split for q in questions) and not all(q.split for q in questions):
        raise ValueError(f"{path}: some questions have a 'split' and some do not; give every question one or none")
    if questions and not questions[0].split:
        if len(questions) < 2:
            raise ValueError(f"{path}: a question file without a 'split' field needs at least 2 questions "
                             "(one for test, the rest for train)")
        rank = sorted(range(len(questions)),
                      key=lambda i: (hashlib.sha1((questions[i].id or questions[i].question).encode()).hexdigest(), i))
        test = set(rank[:max(1, round(len(questions) * TEST_FRACTION))])
        questions = [Question(q.id, q.question, q.golden_answers, q.supporting_titles,
                              "test" if i in test else "train") for i, q in enumerate(questions)]
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


_QUESTIONS: dict[tuple, list[Question]] = {}


def load_questions(path: str | os.PathLike) -> list[Question]:
    """The questions of a JSONL or parquet file, with their splits; read once per process."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SearchQAEnv: no questions file {path}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _QUESTIONS:
        _QUESTIONS[key] = _parse_questions(path)
    return _QUESTIONS[key]
