"""Search-QA: answer scoring, response parsing, the generated knowledge base, BM25 retrieval, user data,
the environment's turns and its expert. The contract tests of tests/test_environments.py cover it too."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnrl.environments import make_env
from turnrl.environments.searchqa import BM25Retriever, Passage, Retriever, SearchQAEnv
from turnrl.environments.searchqa import data as data_module
from turnrl.environments.searchqa import retriever as retriever_module
from turnrl.environments.searchqa.data import load_questions, shipped_paths
from turnrl.environments.searchqa.knowledge import generate_passages, generate_questions
from turnrl.environments.searchqa.retriever import top_k
from turnrl.environments.searchqa.reward import (
    exact_match,
    f1_score,
    normalize_answer,
    parse_search_response,
    substring_match,
)


@pytest.fixture(scope="module")
def env():
    return SearchQAEnv()


@pytest.fixture(scope="module")
def shipped_questions():
    with open(shipped_paths()[1], encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """Indexes of a test's corpora go to its temporary folder, not the user's cache."""
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path / "cache"))


def play(env, responses):
    return [env.step(response) for response in responses]


# --- scoring ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "normal"), [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  an   Apple, a day ", "apple day"),
    ("Theodor", "theodor"),                 # "the" only as a whole word
    ("A.B.C.", "abc"),
    ("Kraidus  Jinaerth\n", "kraidus jinaerth"),
    ("", ""),
])
def test_normalize_answer(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_f1_and_substring_by_hand():
    golds = ["Ilvara Benmoth", "Benmoth"]
    assert exact_match("the ilvara benmoth.", golds) == 1.0
    assert exact_match("Ilvara", golds) == 0.0
    assert exact_match("benmoth", golds) == 1.0
    # "Ilvara" against "Ilvara Benmoth": precision 1, recall 1/2 -> F1 2/3; against "Benmoth": 0.
    assert f1_score("Ilvara", golds) == pytest.approx(2 / 3)
    # "Ilvara Benmoth was born" vs "Ilvara Benmoth": precision 2/4, recall 1 -> 2/3.
    assert f1_score("Ilvara Benmoth was born", ["Ilvara Benmoth"]) == pytest.approx(2 / 3)
    assert f1_score("nothing alike", golds) == 0.0
    assert f1_score("", golds) == 0.0
    assert substring_match("It was Ilvara Benmoth, of course", golds) == 1.0
    assert substring_match("Ilvara", golds) == 0.0
    assert substring_match("anything", [""]) == 0.0        # an empty gold answer matches nothing
    assert exact_match("1843", ["1843"]) == 1.0 and exact_match("1,843", ["1843"]) == 1.0


def test_scoring_edge_cases_against_search_r1():
    # A gold answer that normalises to "" matches nothing (Search-R1's subem counts it contained in anything,
    # and its EM equal to a prediction that also normalises to "").
    for gold in (["the"], ["?!"], [""], ["an", "a"]):
        assert exact_match("the", gold) == 0.0 and substring_match("anything", gold) == 0.0
        assert f1_score("the answer", gold) == 0.0
    assert exact_match("Paris", ["", "paris"]) == 1.0                # the other gold answers still count
    # A bare string is one gold answer, not a list of characters.
    assert exact_match("Paris", "Paris") == 1.0 and exact_match("p", "Paris") == 0.0
    assert substring_match("in paris today", "Paris") == 1.0 and substring_match("a", "Paris") == 0.0
    assert f1_score("Paris France", "Paris") == pytest.approx(2 / 3)
    assert exact_match("paris", ("Lyon", "Paris")) == 1.0           # any other iterable is a collection


@settings(max_examples=100, deadline=None)
@given(prediction=st.text(max_size=30), gold=st.text(max_size=30))
def test_bare_string_gold_is_the_one_element_list(prediction, gold):
    for score in (exact_match, substring_match, f1_score):
        assert score(prediction, gold) == score(prediction, [gold])
    if not normalize_answer(gold):
        assert exact_match(prediction, [gold]) == substring_match(prediction, [gold]) == 0.0


# --- parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("response", "kind", "text"), [
    ("<think>hmm</think><search> Ilvara Benmoth </search>", "search", "Ilvara Benmoth"),
    ("<answer>1843</answer>", "answer", "1843"),
    ("<ANSWER>1843</Answer>", "answer", "1843"),
    ("<answer>first</answer> then <answer>second</answer>", "answer", "second"),       # the last answer counts
    ("<search>q</search><answer>a</answer>", "answer", "a"),                           # closes last: answer
    ("<answer>a</answer><search>q</search>", "search", "q"),                           # closes last: search
    ("<answer><answer>x</answer></answer>", "answer", "x"),                            # nested: innermost
    ("<answer>outer <search>inner</search></answer>", "answer", "outer inner"),       # markup removed
    ("<search>a\n  b</search>", "search", "a b"),
    ("<search>q</search><answer>unclosed", "search", "q"),
    ("<think><answer>draft</answer></think><search>check</search>", "search", "check"),
])
def test_parse_search_response(response, kind, text):
    parsed = parse_search_response(response)
    assert (parsed.kind, parsed.text) == (kind, text)


@pytest.mark.parametrize(("response", "error"), [
    ("just words", "no complete"),
    ("<search>unclosed", "no complete"),
    ("</answer>1843<answer>", "no complete"),
    ("<answer>  </answer>", "empty"),
    ("<search></search>", "empty"),
])
def test_parse_search_response_without_an_action(response, error):
    parsed = parse_search_response(response)
    assert parsed.kind is None and error in parsed.error


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("ab <>/") + ["<search>", "</search>", "<answer>", "</answer>"]), max_size=30)
       .map("".join) | st.text(max_size=80))
def test_parse_never_raises_and_is_deterministic(text):
    parsed = parse_search_response(text)
    assert parsed == parse_search_response(text)
    assert (parsed.kind is None) == bool(parsed.error)
    if parsed.kind:
        assert parsed.text and parsed.text == parsed.text.strip()


# --- the generated knowledge base -----------------------------------------------------------------


def test_shipped_sizes_and_fields(shipped_questions):
    corpus_path, _ = shipped_paths()
    with open(corpus_path, encoding="utf-8") as fh:
        passages = [json.loads(line) for line in fh]
    assert len(passages) >= 5_000
    assert len({p["id"] for p in passages}) == len(passages)
    titles = [p["contents"].split("\n", 1)[0] for p in passages]
    assert len(set(titles)) == len(titles)
    splits = [q["split"] for q in shipped_questions]
    assert splits.count("train") >= 2_000 and splits.count("test") >= 500
    assert {q["type"] for q in shipped_questions} == {"single-hop", "bridge", "comparison"}
    assert len({q["question"] for q in shipped_questions}) == len(shipped_questions)


def test_every_gold_answer_is_in_its_supporting_passages(shipped_questions):
    corpus = {p["id"]: p["contents"] for p in generate_passages()}
    for q in shipped_questions:
        support = " ".join(corpus[pid] for pid in q["supporting_ids"])
        assert [corpus[pid].split("\n")[0] for pid in q["supporting_ids"]] == q["supporting_titles"]
        answer = q["golden_answers"][0]
        if answer in ("yes", "no"):
            assert q["type"] == "comparison"
        else:
            assert answer in support, q
        assert len(q["supporting_ids"]) == (1 if q["type"] == "single-hop" else 2)


def test_generation_is_the_same_in_another_process():
    """No use of hash(): another hash seed gives byte-identical passages and questions."""
    script = ("import hashlib, json; from turnrl.environments.searchqa.knowledge import *; "
              "print(hashlib.sha1(json.dumps([generate_passages(), generate_questions()]).encode()).hexdigest())")
    digests = [subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
                              capture_output=True, text=True, check=True).stdout.strip() for seed in ("1", "2")]
    import hashlib

    here = hashlib.sha1(json.dumps([generate_passages(), generate_questions()]).encode()).hexdigest()
    assert digests == [here, here]


def test_pinned_first_question():
    # Pins the generator: a change here changes every recorded result on this environment.
    first = generate_questions()[0]
    assert first["question"] == "In what year did Drenouneck Katrati die?"
    assert first["golden_answers"] == ["1785"] and first["split"] == "train"


# --- retrieval -------------------------------------------------------------------------------------------


def test_searching_a_supporting_title_finds_its_passage(env, shipped_questions):
    sample = random.Random(0).sample(shipped_questions, 600)
    for q in sample:
        for pid, title in zip(q["supporting_ids"], q["supporting_titles"]):
            passages = env.retriever.search(title, 3)
            assert passages[0].id == pid, (title, [p.title for p in passages])


def test_bm25_search_edge_cases(env):
    retriever = env.retriever
    assert retriever.search("", 3) == [] and retriever.search("the of a", 3) == []
    assert retriever.search("zzzqqq unknownword", 3) == []
    assert retriever.search("Kraidus Jinaerth", 0) == []
    many = retriever.search("river", 10_000_000)
    assert len(many) <= retriever.n_passages
    assert [p.score for p in many] == sorted((p.score for p in many), reverse=True)
    assert all(p.score > 0 for p in many)
    retriever.search("x" * 100_000 + " \x00 🙂", 3)   # long and odd text is fine


def test_top_k_by_hand_and_both_paths_agree():
    scores = np.array([0, 3, 1, 3, 0, 2, 2, 5], dtype=np.float32)
    assert top_k(scores, 3) == [7, 1, 3]                      # ties: the earlier passage first
    assert top_k(scores, 20) == top_k(scores, 10) == [7, 1, 3, 5, 6, 2]   # zero scores never returned
    assert top_k(np.zeros(4, dtype=np.float32), 3) == []
    rng = np.random.default_rng(0)
    for _ in range(100):   # argmax passes (k <= 16) and the partition path give the same order
        scores, k = rng.integers(0, 5, size=60).astype(np.float32), int(rng.integers(1, 16))
        assert top_k(scores, k) == top_k(scores, 40)[:k]


def test_user_corpus_questions_and_index_cache(tmp_path, own_cache, monkeypatch):
    corpus = tmp_path / "corpus.jsonl"
    lines = [{"id": "a1", "contents": '"Zorbulon"\nZorbulon is a moon of the planet Quaxar.'},
             {"id": "a2", "contents": "Quaxar\nQuaxar is a gas giant discovered in 2031."},
             {"id": "a3", "title": "Mirelda", "text": "Mirelda is a lake on Zorbulon."}]
    corpus.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    questions = tmp_path / "questions.jsonl"
    rows = [{"id": "q1", "question": "Zorbulon is a moon of which planet?", "golden_answers": ["Quaxar"],
             "supporting_titles": ["Zorbulon"], "split": "train"},
            {"id": "q2", "question": "When was Quaxar discovered?", "golden_answers": "2031", "split": "test"}]
    questions.write_text("\n".join(json.dumps(row) for row in rows))
    env = SearchQAEnv(corpus=str(corpus), questions=str(questions), top_k=2)
    assert env.tasks("train") == [0] and env.tasks("test") == [1]
    assert "fictional" not in env.instructions
    assert env.reset(task=0) == "Question: Zorbulon is a moon of which planet?"
    result = env.step("<search>Zorbulon moon</search>")
    assert result.observation.startswith("<information>Doc 1(Title: Zorbulon) Zorbulon is a moon of the planet")
    assert "\nDoc 2(Title: Mirelda) Mirelda is a lake on Zorbulon.</information>" in result.observation
    assert env.expert_action() == "<answer>Quaxar</answer>"   # its supporting title was already shown
    # A question without supporting titles: the expert searches the question, then answers.
    env.reset(task=1)
    assert env.expert_action() == "<search>When was Quaxar discovered?</search>"
    env.step(env.expert_action())
    assert env.step(env.expert_action()).info["success"]

    # The index was built once and is loaded from the cache by a fresh retriever.
    monkeypatch.setattr(retriever_module, "build_index", lambda *a, **k: pytest.fail("rebuilt the index"))
    again = BM25Retriever(corpus, show_progress=False)
    assert [p.id for p in again.search("gas giant", 1)] == ["a2"]


def test_user_questions_parquet_and_the_split_rule(tmp_path, own_cache):
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "0", "contents": "Alpha\nAlpha is the first letter."}) + "\n")
    rows = [{"id": f"q{i}", "question": f"Question {i}?", "golden_answers": [f"answer {i}"]} for i in range(30)]
    path = tmp_path / "questions.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    env = SearchQAEnv(corpus=corpus, questions=path)
    train, test = env.tasks("train"), env.tasks("test")
    assert len(test) == 3 and len(train) == 27 and not set(train) & set(test)
    # The same questions in another order and format land in the same splits.
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(json.dumps(row) for row in reversed(rows)))
    other = SearchQAEnv(corpus=corpus, questions=shuffled)
    assert sorted(other.questions[i].id for i in other.tasks("test")) == sorted(env.questions[i].id for i in test)
    with pytest.raises(ValueError, match="valid splits: test, train"):
        env.tasks("dev")


@pytest.mark.parametrize(("content", "message"), [
    ('{"question": "Q?"}\n{"question": "R?", "golden_answers": ["r"]}', "golden_answers"),
    ('{"question": "Q?", "golden_answers": ["q"]}', "at least 2 questions"),
    ('{"question": "Q?", "golden_answers": ["q"], "split": "train"}\n{"question": "R?", "golden_answers": ["r"]}',
     "some questions have a 'split'"),
    ("not json", "not JSON"),
])
def test_bad_question_files(tmp_path, own_cache, content, message):
    path = tmp_path / "questions.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_questions(path)


def test_constructor_errors(tmp_path, own_cache):
    with pytest.raises(ValueError, match="questions="):
        SearchQAEnv(corpus="corpus.jsonl")
    with pytest.raises(FileNotFoundError, match="no corpus file"):
        SearchQAEnv(corpus=tmp_path / "missing.jsonl", questions=shipped_paths()[1])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "body": "no contents"}\n')
    with pytest.raises(ValueError, match="line 1: a corpus record needs 'contents'"):
        SearchQAEnv(corpus=bad, questions=shipped_paths()[1])
    with pytest.raises(ValueError, match="max_turns"):
        SearchQAEnv(max_turns=0)


class _FixedRetriever(Retriever):
    """A stand-in for a dense retriever: the environment needs nothing but `search`."""

    def search(self, query, k):
        return [Passage("x", "Anything", f"You asked for {query}.")][:k]


def test_any_retriever_plugs_in(env):
    custom = SearchQAEnv(retriever=_FixedRetriever())
    assert custom.questions == env.questions
    custom.reset(task=0)
    assert custom.step("<search>hello</search>").observation == (
        "<information>Doc 1(Title: Anything) You asked for hello.</information>")


# --- the environment ------------------------------------------------------------------------------------


def test_an_episode_by_hand(env, shipped_questions):
    task = next(i for i in env.tasks("test") if shipped_questions[i]["type"] == "bridge")
    q = shipped_questions[task]
    assert env.reset(task=task) == f"Question: {q['question']}"
    invalid = env.step("I think the answer is obvious.")
    assert invalid.info == {"success": False, "invalid": True} and invalid.reward == 0.0 and not invalid.done
    assert invalid.observation.startswith("Invalid response: no complete <search>") and "<answer>" in invalid.observation
    found = env.step(f"<think>look it up</think><search>{q['supporting_titles'][0]}</search>")
    assert found.info == {"success": False, "invalid": False}
    docs = re.findall(r"Doc (\d)\(Title: ([^)]*)\)", found.observation)
    assert [d[0] for d in docs] == ["1", "2", "3"] and docs[0][1] == q["supporting_titles"][0]
    assert found.observation.endswith("</information>")
    again = env.step(f"<search>{q['supporting_titles'][1]}</search>")
    assert again.observation.endswith("</information>\nOne turn left: give your answer inside <answer> </answer>.")
    wrong = env.step("<answer>Somebody Else</answer>")
    assert wrong.done and wrong.reward == 0.0
    assert wrong.info == {"success": False, "invalid": False, "score": 0.0, "em": 0.0, "f1": 0.0,
                          "substring_match": 0.0}
    assert q["golden_answers"][0] in wrong.observation
    assert env.step("<answer>again</answer>") == env.step("anything")
    assert env.step("x").done and env.step("x").reward == 0.0


def test_a_correct_answer(env, shipped_questions):
    env.reset(task=0)
    result = env.step(f"<answer> The {shipped_questions[0]['golden_answers'][0]}. </answer>")
    assert result.reward == 1.0 and result.done
    assert result.info == {"success": True, "invalid": False, "score": 1.0, "em": 1.0, "f1": 1.0,
                           "substring_match": 1.0}


def test_out_of_turns(shipped_questions):
    env = SearchQAEnv(max_turns=2)
    env.reset(task=0)
    assert not env.step("<search>anything</search>").done
    last = env.step("<search>more</search>")
    assert last.done and last.reward == 0.0 and last.observation.endswith("No turns left: the episode ends "
                                                                          "without an answer.")
    env.reset(task=0)
    env.step("no tags")
    assert env.expert_action().startswith("<answer>")   # the last turn is kept for the answer
    last = env.step("no tags")
    assert last.done and last.info == {"success": False, "invalid": True}


def test_expert_succeeds_on_every_test_question(env):
    turns = []
    for task in env.tasks("test"):
        env.reset(task=task)
        for turn in range(1, env.max_turns + 1):
            result = env.step(env.expert_action())
            assert not result.info["invalid"]
            if result.done:
                break
        assert result.info["success"], task
        turns.append(turn)
    assert max(turns) <= 3 and env.expert_action() is None


def test_admissible_actions_are_whole_responses(env, shipped_questions):
    env.reset(task=8)   # "Were ... born in the same country?"
    first = env.admissible_actions()
    assert first == [f"<search>{shipped_questions[8]['question']}</search>", "<answer>yes</answer>",
                     "<answer>no</answer>"]
    env.step(f"<search>{shipped_questions[8]['supporting_titles'][0]}</search>")
    later = env.admissible_actions()
    assert len(later) <= 12 and len(set(later)) == len(later)
    assert f"<answer>{shipped_questions[8]['supporting_titles'][0]}</answer>" in later
    for response in later:
        assert parse_search_response(response).kind in ("search", "answer")


def test_task_ids_and_make_env(env):
    assert make_env("searchqa").questions is env.questions          # loaded once per process
    assert make_env("searchqa", top_k=5, max_turns=6).max_turns == 6
    with pytest.raises(ValueError, match="integers"):
        env.reset(task="train-0")
    with pytest.raises(ValueError, match="out of range"):
        env.reset(task=10**6)
    with pytest.raises(RuntimeError, match="reset"):
        SearchQAEnv().step("<answer>x</answer>")
    assert env.reset() == env.reset(task=env.tasks("train")[0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=50) | st.sampled_from(["<search>river</search>", "<answer>yes</answer>",
                                                         "<search>", "</answer>", "<search></search>"]),
                min_size=1, max_size=6))
def test_arbitrary_responses_never_raise(env, responses):
    env.reset(task=3)
    for response in responses:
        result = env.step(response)
        assert isinstance(result.info["success"], bool) and isinstance(result.info["invalid"], bool)


def test_shipped_data_is_written_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path))
    corpus, questions = shipped_paths()
    assert corpus.parent == tmp_path / "searchqa" / "data-v1"
    before = corpus.stat().st_mtime_ns
    monkeypatch.setattr(data_module, "generate_passages", lambda *a: pytest.fail("generated again"))
    assert shipped_paths() == (corpus, questions) and corpus.stat().st_mtime_ns == before
    assert not [p for p in corpus.parent.iterdir() if p.name.startswith(".")]   # no temporary files left


# --- end to end through the CLI (need a model: slow) ---------------------------------------------------


def cli(*args):
    from typer.testing import CliRunner

    from turnrl.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_cli_eval_sft_and_train(tmp_path):
    for policy, episodes in (("expert", 10), ("random", 10)):
        cli("eval", "--env", "searchqa", "--policy", policy, "--episodes", episodes, "--output",
            tmp_path / f"{policy}.json")
    assert json.loads((tmp_path / "expert.json").read_text())["success_rate"] == 1.0
    assert json.loads((tmp_path / "random.json").read_text())["episodes"] == 10
    cli("sft", "--env", "searchqa", "--model", "tiny", "--episodes", "4", "--output-dir", tmp_path / "sft")
    cli("eval", "--env", "searchqa", "--model", tmp_path / "sft" / "final", "--episodes", "2", "--max-new-tokens",
        "16", "--context", "window:2", "--output", tmp_path / "model.json")
    assert json.loads((tmp_path / "model.json").read_text())["episodes"] == 2
    cli("train", "--env", "searchqa", "--iterations", "1", "--tasks_per_iteration", "2", "--group_size", "2",
        "--max_turns", "2", "--max_new_tokens", "8", "--checkpoint_every", "0", "--output_dir", tmp_path / "run")
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
