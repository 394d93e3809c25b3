"""Search-QA in the style of Search-R1: answer a question by searching a corpus, then answering.

Each turn the agent writes a whole response; the environment reads its tags (`parses_responses`):
- `<search>query</search>` returns the top-k passages (default 3) as
  `<information>Doc 1(Title: …) text\\nDoc 2(Title: …) text</information>`, Search-R1's format;
- `<answer>text</answer>` ends the episode. The reward is exact match (EM, 1.0 or 0.0) after the usual
  normalisation against any gold answer; `info` carries "em", "f1", "substring_match", "score" (= EM)
  and "success" (EM == 1).
- A response with neither complete tag is invalid: the observation says what is wrong, reward 0, and
  the episode goes on. Which tag counts when a response holds several: `reward.parse_search_response`
  (the element that closes last).
Every response uses one turn, invalid ones included; after `max_turns` (default 4, as Search-R1) the
episode ends with reward 0 if there was no answer.

Data: the shipped fictional knowledge base (`knowledge.py`, 5,000 passages; 2,400 train and 600 test
questions) by default, or a user's `corpus=` JSONL and `questions=` JSONL/parquet (`data.py`, which also
documents the split rule). `retriever=` replaces the BM25 retriever with any `Retriever`, or names one:
"bm25" (default) or "dense" (`dense.py`, all-MiniLM-L6-v2 over the same corpus).

Expert: searches the titles of the supporting passages one after another (skipping any already shown),
then answers the first gold answer; on the shipped data it succeeds on every question. For questions
without supporting titles it searches the question once and then answers.

Task ids are the questions' positions in the question file (ints). Retrieval is deterministic, so the
seed does not change an episode.
"""

from __future__ import annotations

import operator
import os
import re

from turnrl.environments.base import Environment, StepResult
from turnrl.environments.searchqa.data import Question, load_questions, shipped_paths
from turnrl.environments.searchqa.retriever import BM25Retriever, Passage, Retriever
from turnrl.environments.searchqa.reward import exact_match, f1_score, parse_search_response, substring_match

FORMAT_HINT = ("Think inside <think> </think>, then either search with <search> query </search> or give the final "
               "answer inside <answer> </answer>.")
_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_YES_NO_START = re.compile(r"^(is|are|was|were|do|does|did|can|has|have|had)\b", re.IGNORECASE)
MAX_CANDIDATES = 12


def _dense_retriever(corpus) -> Retriever:
    from turnrl.environments.searchqa.dense import DenseRetriever  # torch and the model load only when chosen

    return DenseRetriever.shared(corpus)


RETRIEVERS = {"bm25": BM25Retriever.shared, "dense": _dense_retriever}  # retriever="dense" selects by name


def format_information(passages: list[Passage]) -> str:
    """Search-R1's rendering of retrieved passages."""
    if not passages:
        return "<information>No passage matches the query.</information>"
    docs = "\n".join(f"Doc {i}(Title: {p.title}) {p.text}" for i, p in enumerate(passages, start=1))
    return f"<information>{docs}</information>"


class SearchQAEnv(Environment):
    """Answer a question with a search engine over a corpus; reward = exact match of the answer."""

    parses_responses = True
    stop_strings = ("</search>", "</answer>")
    format_hint = FORMAT_HINT
    # Snapshots copy the episode state (base.py) instead of replaying the searches.
    state_attributes = ("_question", "_turn", "_done", "_success", "_searched", "_seen_titles", "_last_passages")

    def __init__(self, corpus: str | os.PathLike | None = None, questions: str | os.PathLike | None = None,
                 retriever: Retriever | str | None = None, top_k: int = 3, max_turns: int = 4):
        if top_k < 1 or max_turns < 1:
            raise ValueError(f"SearchQAEnv: top_k and max_turns must be >= 1, got {top_k} and {max_turns}")
        retriever_name = "bm25"
        if isinstance(retriever, str):  # a retriever by name, over the corpus (shipped or corpus=)
            if retriever not in RETRIEVERS:
                raise ValueError(f"SearchQAEnv: unknown retriever {retriever!r}; valid: {', '.join(RETRIEVERS)}")
            retriever_name, retriever = retriever, None
        if corpus is not None and retriever is not None:
            raise ValueError("SearchQAEnv: pass corpus= (indexed with BM25) or retriever=, not both")
        if corpus is not None and questions is None:
            raise ValueError("SearchQAEnv: a user corpus needs its questions too: pass questions=PATH (JSONL or parquet "
                             "with 'question' and 'golden_answers')")
        shipped = corpus is None and questions is None
        if shipped or (corpus is None and retriever is None):
            shipped_corpus, shipped_questions = shipped_paths()
            corpus = shipped_corpus if retriever is None else None
            questions = shipped_questions if questions is None else questions
        self.retriever = retriever or RETRIEVERS[retriever_name](corpus)
        self.questions: list[Question] = load_questions(questions)
        self.top_k, self.max_turns = top_k, max_turns
        self._splits: dict[str, list[int]] = {}
        for i, question in enumerate(self.questions):
            self._splits.setdefault(question.split, []).append(i)
        fictional = ("The knowledge base describes fictional people, places, organisations, works and inventions: "
                     "do not answer from memory. ") if shipped else ""
        self.instructions = (
            f"Answer the question. {fictional}You may search as often as you need: write <search> query </search> "
            f"and the top {top_k} passages come back inside <information> </information>. When you know the "
            "answer, write it inside <answer> </answer> as a short phrase: a name, a year, yes or no. "
            f"You have {max_turns} turns."
        )
        # Compact prompts: the reply format (`format_hint`, in every prompt) already gives the two tags.
        fictional = "The knowledge base is fictional: do not answer from memory. " if shipped else ""
        self.compact_instructions = (
            f"Answer the question. {fictional}Search as often as you need; the top {top_k} passages come back "
            f"inside <information> </information>. Answer with a short phrase: a name, a year, yes or no. "
            f"You have {max_turns} turns."
        )
        self._question: Question | None = None

    # --- the contract ------------------------------------------------------------------------------

    def tasks(self, split: str = "train") -> list:
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(sorted(self._splits))}")
        return list(self._splits[split])

    def reset(self, task=None, seed=None) -> str:
        if task is None:
            task = self._splits.get("train", next(iter(self._splits.values())))[0]
        try:
            index = operator.index(task)
        except TypeError:
            raise ValueError(f"SearchQAEnv: task ids are integers (see tasks('train')), got {task!r}") from None
        if not 0 <= index < len(self.questions):
            raise ValueError(f"SearchQAEnv: task {index} is out of range (0..{len(self.questions) - 1})")
        self._question = self.questions[index]
        self._turn, self._done, self._success = 0, False, False
        self._searched: list[str] = []
        self._seen_titles: list[str] = []
        self._last_passages: list[Passage] = []
        return f"Question: {self._question.question}"

    def step(self, action: str) -> StepResult:
        if self._question is None:
            raise RuntimeError("SearchQAEnv: call reset() before step()")
        if self._done:
            return StepResult("The episode is over.", 0.0, True, {"success": self._success, "invalid": True})
        self._turn += 1
        out_of_turns = self._turn >= self.max_turns
        parsed = parse_search_response(action)
        if parsed.kind == "answer":
            return self._answer(parsed.text)
        if parsed.kind == "search":
            self._searched.append(parsed.text)
            self._last_passages = self.retriever.search(parsed.text, self.top_k)
            for passage in self._last_passages:
                if passage.title not in self._seen_titles:
                    self._seen_titles.append(passage.title)
            observation, invalid = format_information(self._last_passages), False
        else:
            observation, invalid = f"Invalid response: {parsed.error}. {FORMAT_HINT}", True
        if out_of_turns:
            self._done = True
            observation += "\nNo turns left: the episode ends without an answer."
        elif self._turn == self.max_turns - 1:
            observation += "\nOne turn left: give your answer inside <answer> </answer>."
        return StepResult(observation, 0.0, out_of_turns, {"success": False, "invalid": invalid})

    def _answer(self, text: str) -> StepResult:
        golds = list(self._question.golden_answers)
        em = exact_match(text, golds)
        self._done, self._success = True, em == 1.0
        verdict = "correct" if self._success else f"not correct; the expected answer was {golds[0]}"
        info = {"success": self._success, "invalid": False, "score": em, "em": em, "f1": f1_score(text, golds),
                "substring_match": substring_match(text, golds)}
        shown = text if len(text) <= 200 else text[:200] + f"... ({len(text)} characters)"   # never echo 100 KB back
        return StepResult(f"Your answer {shown!r} is {verdict}.", em, True, info)

    def compact_observation(self, observation: str) -> str:
        """The observation without the reply format an invalid response's feedback repeats (every prompt
        carries it as `format_hint`)."""
        return observation.replace(f" {FORMAT_HINT}", "")

    def admissible_actions(self) -> list[str] | None:
        """A short list of whole responses for `--policy random`: search the question, search or answer
        a title shown in the last search, answer a year shown there, or yes/no for a yes/no question."""
        if self._question is None:
            raise RuntimeError("SearchQAEnv: call reset() before admissible_actions()")
        candidates = [f"<search>{self._question.question}</search>"]
        if _YES_NO_START.match(self._question.question):
            candidates += ["<answer>yes</answer>", "<answer>no</answer>"]
        for passage in self._last_passages:
            candidates += [f"<search>{passage.title}</search>", f"<answer>{passage.title}</answer>"]
        for passage in self._last_passages:
            candidates += [f"<answer>{year}</answer>" for year in _YEAR.findall(passage.text)]
        return list(dict.fromkeys(candidates))[:MAX_CANDIDATES]

    def expert_action(self) -> str | None:
        if self._question is None:
            raise RuntimeError("SearchQAEnv: call reset() before expert_action()")
        if self._done:
            return None
        if self._turn < self.max_turns - 1:  # the last turn is kept for the answer
            titles = self._question.supporting_titles
            for title in titles:
                if title not in self._seen_titles and title not in self._searched:
                    return f"<search>{title}</search>"
            if not titles and not self._searched:
                return f"<search>{self._question.question}</search>"
        return f"<answer>{self._question.golden_answers[0]}</answer>"
