"""Search-R1's answer scoring and the parsing of a search agent's response.

Scoring follows the reading-comprehension convention Search-R1 uses (SQuAD's normalisation):
lower-case, strip punctuation, drop the articles a/an/the, collapse whitespace. Exact match (EM) is 1
when the normalised prediction equals any normalised gold answer; F1 is the best token-overlap F1 over
the gold answers; substring match is 1 when a normalised gold answer is contained in the normalised
prediction (Search-R1's `subem`).

Edge cases, against Search-R1's `qa_em.py` (normalisation and EM otherwise identical):

- A gold answer that normalises to the empty string ("the", "?!", "") matches nothing here, in EM, F1 and
  substring match. Search-R1 counts it as contained in every prediction (`"" in s` is true) and as equal to
  a prediction that normalises to "" too, so one such gold in a data set makes those questions free.
- `golden_answers` may be one bare string: it is one gold answer (Search-R1's `em_check` does the same).
  Iterating it would compare the prediction with each character. Any other iterable (a list, a tuple, a
  numpy array from parquet) is a collection of answers.

Parsing (first vs last tag): a response may hold `<think>…</think>` and then `<search>query</search>` or
`<answer>text</answer>`. The action is the complete element that *closes last* in the response, so the
last complete `<answer>` counts when a response answers twice, and a response that searches and then
answers is an answer. Search-R1's rollout loop cuts each response at its first closing `</search>` or
`</answer>` (generation stops there, and the postprocessing truncates after it), so only the first complete
tag of a response is acted on; its reward then reads the last `<answer>` of the whole trajectory, which is
that one. The environment declares the same stop strings, so with them the two agree; they differ only for
text generated without stop strings, e.g. `<search>q</search><answer>a</answer>` searches in Search-R1
and answers here. An element's content is taken from its innermost opening tag:
`<answer><answer>x</answer></answer>` answers "x". Tag names are matched case-insensitively; leftover
`<search>`, `<answer>`, `<think>` and `<information>` markup inside the content is removed.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
# Content cannot contain another opening tag of the same name, so the innermost element matches.
_ELEMENTS = {
    name: re.compile(rf"<{name}>((?:(?!<{name}>).)*?)</{name}>", re.IGNORECASE | re.DOTALL)
    for name in ("search", "answer")
}
_MARKUP = re.compile(r"</?(?:search|answer|think|information)>", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation, drop articles, collapse whitespace."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalized_golds(golden_answers: str | Iterable[str]) -> list[str]:
    """The normalised gold answers that can match: a bare string is one answer; answers that normalise to
    the empty string are left out (module docstring)."""
    if isinstance(golden_answers, str):
        golden_answers = [golden_answers]
    return [gold for gold in (normalize_answer(str(answer)) for answer in golden_answers) if gold]


def exact_match(prediction: str, golden_answers: str | Iterable[str]) -> float:
    """1.0 when the normalised prediction equals a normalised (non-empty) gold answer, else 0.0."""
    predicted = normalize_answer(prediction)
    return float(predicted in normalized_golds(golden_answers))


def substring_match(prediction: str, golden_answers: str | Iterable[str]) -> float:
    """1.0 when a normalised (non-empty) gold answer occurs inside the normalised prediction, else 0.0."""
    predicted = normalize_answer(prediction)
    return float(any(gold in predicted for gold in normalized_golds(golden_answers)))


def f1_score(prediction: str, golden_answers: str | Iterable[str]) -> float:
    """The best token-level F1 between the prediction and any gold answer (normalised tokens)."""
    predicted = normalize_answer(prediction).split()
    best = 0.0
    for gold in normalized_golds(golden_answers):
        expected = gold.split()
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common:
            precision, recall = common / len(predicted), common / len(expected)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


@dataclass(frozen=True)
class SearchAction:
    """What a response asks for: kind "search" or "answer" with its text, or kind None with the error."""

    kind: str | None
    text: str
    error: str = ""


def parse_search_response(response: str) -> SearchAction:
    """The action of one response (see the module docstring for the rules)."""
    if not isinstance(response, str):
        return SearchAction(None, "", "the response is not text")
    last = None  # (end position, kind, content)
    for kind, pattern in _ELEMENTS.items():
        for match in pattern.finditer(response):
            if last is None or match.end() > last[0]:
                last = (match.end(), kind, match.group(1))
    if last is None:
        return SearchAction(None, "", "no complete <search>…</search> or <answer>…</answer> in the response")
    _, kind, content = last
    text = " ".join(_MARKUP.sub(" ", content).split())
    if not text:
        return SearchAction(None, "", f"the <{kind}></{kind}> tags are empty")
    return SearchAction(kind, text)
