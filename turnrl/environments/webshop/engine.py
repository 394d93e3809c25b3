"""WebShop's text environment (Yao et al. 2022): the page state machine, observations and the expert.

Pages and actions follow the original `WebAgentTextEnv` in its `text` observation mode:

- search page: `WebShop [SEP] Instruction: [SEP] <instruction> [SEP] Search`; the only action is
  `search[keywords]`.
- results: the top 50 search hits, 10 per page; clickables `Back to Search`, `< Prev` (after page 1),
  `Next >` (when more hits follow) and each product's id (ASIN, clicked lower-case). A result shows
  its id, title and price (a range reads "$x to $y").
- item page: the option groups with their values, title, fixed price and rating; clickables
  `Back to Search`, `< Prev` (back to the results page it came from), every option value (a click
  selects it, overwriting the earlier choice in its group), `Description`, `Features`, `Reviews` (the
  three sub-pages, whose `< Prev` returns to the item) and `Buy Now`.
- `Buy Now` ends the episode on the done page with the reward of `reward.purchase_reward`; every other
  step pays 0.

`click[text]` matches a clickable case-insensitively. An action that is malformed, a search where no
search bar is shown or a click on something not on the page changes nothing: the observation says
why, then repeats the page; reward 0, `info["invalid"] = True`. The episode also ends (reward 0) after
`max_steps` steps, every step counted (verl-agent's GiGPO WebShop runs use 15). `info` always holds
`success` (reward == 1.0, verl-agent's success), `invalid`, `score` (the reward at Buy Now, else 0) and
`title_nouns` (which title-noun mode the reward uses: "spacy" or "heuristic", see `reward.NOUN_MODES`).

Differences from the original, for compact prompts to small models: an item page marks the chosen
value of each option group "(selected)" (the original's `text` mode does not show it; its
`text_rich` mode does), titles on results are cut at `max_title_chars`, description and features at
`max_text_chars`, and reviews are empty (as they are in the original, which does not load them).
"""

from __future__ import annotations

import hashlib
import operator
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from turnrl.environments.base import Environment, StepResult
from turnrl.environments.webshop import catalogue, data, reward, search

RESULTS_PER_PAGE = 10
TOP_HITS = 50
SUB_PAGES = ("description", "features", "reviews")
_ACTION = re.compile(r"\s*(search|click)\s*\[(.*)\]\s*", re.IGNORECASE | re.DOTALL)


@dataclass
class SharedData:
    """Products, goals and the search index of one data set, loaded once per process."""

    data: data.WebShopData
    index: search.SearchIndex
    _searches: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def search(self, query: str) -> tuple[str, ...]:
        """The top hits of a query (cached: a group of episodes searches the same words)."""
        hits = self._searches.get(query)
        if hits is None:
            if len(self._searches) >= 20_000:
                self._searches.clear()
            hits = self._searches[query] = tuple(self.index.search(query, TOP_HITS))
        return hits


_SHARED: dict[tuple, SharedData] = {}


def _index_folder(products_file: Path | None) -> Path:
    from turnrl.environments.cache import cache_dir

    if products_file is None:
        return cache_dir("webshop") / f"index-catalogue-{catalogue.CATALOGUE_VERSION}"
    stat = products_file.stat()
    key = f"{products_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{search.INDEX_FORMAT}"
    return cache_dir("webshop") / f"index-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def shared_data(data_dir: str | Path | None = None, *, use_small: bool | None = None, human_goals: bool = True,
                progress: bool = True) -> SharedData:
    """The data set of `data_dir` (None: the shipped catalogue, generated and indexed on first use)."""
    folder = Path(data_dir).expanduser().resolve() if data_dir is not None else None
    key = (str(folder) if folder else None, use_small, human_goals)
    if key not in _SHARED:
        source = folder or catalogue.shipped_folder()
        loaded = data.load_data(source, use_small=use_small, human=human_goals)
        products_file = data.find_files(source, use_small, human_goals)[0] if folder else None
        asins = list(loaded.products)
        texts = [search.document_text(p.title, p.description, p.bullets, p.options) for p in loaded.products.values()]
        index = search.load_or_build(_index_folder(products_file), asins, texts, progress=progress)
        _SHARED[key] = SharedData(loaded, index)
    return _SHARED[key]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


class WebShopEnv(Environment):
    """WebShop with the shipped catalogue, or the original data files in `data_dir`.

    Args:
        data_dir: a folder with the original files (`items_shuffle_1000.json` + `items_ins_v2_1000.json`
            or `items_shuffle.json` + `items_ins_v2.json`, and `items_human_ins.json`); None: the shipped
            catalogue.
        use_small: with `data_dir`, True reads the 1,000-product pair, False the full pair, None the
            1,000-product pair where present.
        human_goals: the goals of `items_human_ins.json` (the benchmark's); False: the synthetic goals of
            `items_ins_v2`.
        max_steps: steps (invalid ones included) before the episode ends unpaid.
        max_title_chars, max_text_chars: where result titles and description/feature pages are cut.
        progress: show a progress bar while a search index is built.
        title_nouns: how the type reward finds title nouns: "auto" (default: spaCy's tagger, exactly as the
            original, when the `turnrl[webshop-spacy]` extra is installed, else the heuristic), "spacy" (an
            error without the extra) or "heuristic". The active one is `noun_mode` and `info["title_nouns"]`.
    """

    instructions = (
        "You are shopping in WebShop, an online store. Buy the product that matches the instruction: the right "
        "kind of product, with every attribute and option it names, under its price limit. Actions: "
        "search[keywords] on the page with a search bar, and click[text] where text is a clickable of the page: "
        "a product id from the results, an option value, or a button (next >, < prev, back to search, "
        "description, features, reviews, buy now). Click each option the instruction names before buy now."
    )
    # Snapshots copy the page state (base.py): products, goals and the search index are shared and never change.
    state_attributes = ("goal", "page", "query", "hits", "page_number", "asin", "options", "steps", "done", "score",
                        "success", "breakdown")

    def __init__(self, data_dir: str | None = None, use_small: bool | None = None, human_goals: bool = True,
                 max_steps: int = 15, max_title_chars: int = 100, max_text_chars: int = 800, progress: bool = True,
                 title_nouns: str = "auto"):
        if max_steps < 1:
            raise ValueError(f"WebShopEnv: max_steps must be >= 1, got {max_steps}")
        self._noun_mode = reward.resolve_noun_mode(title_nouns)
        self.shared = shared_data(data_dir, use_small=use_small, human_goals=human_goals, progress=progress)
        self.products = self.shared.data.products
        self.max_steps, self.max_title_chars, self.max_text_chars = max_steps, max_title_chars, max_text_chars
        self.goal: data.Goal | None = None

    @property
    def noun_mode(self) -> str:
        """The active title-noun mode of the type reward: "spacy" (the original's tagger) or "heuristic"."""
        return self._noun_mode

    # --- the contract ----------------------------------------------------------------------------------

    def tasks(self, split: str = "train") -> list:
        return list(self.shared.data.split(split))

    def reset(self, task=None, seed=None) -> str:
        goals = self.shared.data.goals
        if task is None:
            task = random.Random(f"webshop-task-{seed}").choice(self.tasks("train") or self.tasks("all"))
        try:
            position = None if isinstance(task, bool) else operator.index(task)
        except TypeError:
            position = None
        if position is None or not 0 <= position < len(goals):
            raise ValueError(f"WebShopEnv: task ids are integers from 0 to {len(goals) - 1} "
                             f"(see tasks('train')), got {task!r}")
        self.goal = goals[position]
        self.page, self.query, self.hits, self.page_number = "search", "", (), 1
        self.asin, self.options = None, {}
        self.steps, self.done, self.score, self.success = 0, False, 0.0, False
        return self.page_observation()

    def step(self, action: str) -> StepResult:
        if self.goal is None:
            raise RuntimeError("WebShopEnv: call reset() before step()")
        if self.done:
            return StepResult("The episode is over.", 0.0, True, self._info(invalid=True))
        self.steps += 1
        error = self._apply(action if isinstance(action, str) else "")
        paid = 0.0
        if self.page == "done" and not self.done:
            self.done, paid = True, self.score
        observation = self.page_observation()
        if error:
            observation = f"Invalid action: {error}. {observation}"
        info = self._info(invalid=bool(error))
        if not self.done and self.steps >= self.max_steps:
            self.done = True
            info["truncated"] = True
        return StepResult(observation, paid, self.done, info)

    def admissible_actions(self) -> list[str] | None:
        if self.goal is None:
            raise RuntimeError("WebShopEnv: call reset() before admissible_actions()")
        if self.done:
            return []
        actions = [f"search[{self.suggested_query()}]"] if self.page == "search" else []
        return actions + [f"click[{text}]" for text in self._clickables()]

    def expert_action(self) -> str | None:
        """The oracle's next action: search the instruction (the product's title if the instruction's
        hits miss the target), page to the target, open it, choose the goal's options, buy."""
        if self.goal is None:
            raise RuntimeError("WebShopEnv: call reset() before expert_action()")
        if self.done:
            return None
        target = self.goal.asin
        if self.page == "search":
            query = self.suggested_query()
            if target not in self.shared.search(query):
                query = self.products[target].title.lower()
            return f"search[{query}]"
        if self.page == "results":
            if target not in self.hits:
                return "click[back to search]"
            wanted = self.hits.index(target) // RESULTS_PER_PAGE + 1
            if wanted == self.page_number:
                return f"click[{target.lower()}]"
            return "click[next >]" if wanted > self.page_number else "click[< prev]"
        if self.page in SUB_PAGES or self.asin != target:
            return "click[< prev]"
        for name, value in self._goal_option_values().items():
            if self.options.get(name) != value:
                return f"click[{value}]"
        return "click[buy now]"

    # --- compact prompts (see Environment.compact_observation) -------------------------------------------

    def compact_observation(self, observation: str) -> str:
        """The observation without the instruction every page repeats (the prompt's task line has it)."""
        if self.goal is None:
            return observation
        return observation.replace(f"Instruction: [SEP] {self.goal.instruction} [SEP] ", "")

    def compact_actions(self) -> str | None:
        """The page shows every clickable, so the line gives the syntax instead of listing them; the
        suggested search is the instruction without its price clause, which the task line shows."""
        if self.goal is None:
            raise RuntimeError("WebShopEnv: call reset() before compact_actions()")
        if self.done:
            return None
        if self.page == "search":
            clause = " without its price clause" if self.suggested_query() != self.goal.instruction else ""
            return f"Actions: search[keywords] (suggested: the instruction{clause})"
        selected = ' (an option shown "X (selected)" is chosen)' if self.page == "item" else ""
        return f"Actions: click[X] for X a clickable of this page, in any case{selected}"

    def state_key(self) -> str:
        if self.goal is None:
            raise RuntimeError("WebShopEnv: call reset() before state_key()")
        return f"step {self.steps} | {self.page_observation()}" if self.done else self.page_observation()

    # --- pages -----------------------------------------------------------------------------------------

    def suggested_query(self) -> str:
        """The instruction without its price clause: the search the admissible actions offer."""
        suffix = data.price_text(self.goal.price_upper)
        text = self.goal.instruction
        return text[: len(text) - len(suffix)] if suffix and text.endswith(suffix) else text

    def _clickables(self) -> list[str]:
        """Lower-case clickable texts of the page, in the order the observation shows them."""
        if self.page == "results":
            texts = ["back to search"]
            if self.page_number > 1:
                texts.append("< prev")
            if self.page_number * RESULTS_PER_PAGE < len(self.hits):
                texts.append("next >")
            return texts + [asin.lower() for asin in self._page_hits()]
        if self.page == "item":
            values = dict.fromkeys(v for group in self.products[self.asin].options.values() for v in group)
            return ["back to search", "< prev", *values, *SUB_PAGES, "buy now"]
        if self.page in SUB_PAGES:
            return ["back to search", "< prev"]
        return []

    def _page_hits(self) -> tuple[str, ...]:
        start = (self.page_number - 1) * RESULTS_PER_PAGE
        return self.hits[start: start + RESULTS_PER_PAGE]

    def _apply(self, action: str) -> str | None:
        """Apply a parsed action; return why it is invalid, or None."""
        match = _ACTION.fullmatch(action)
        if match is None:
            return "write search[keywords] or click[text]"
        verb, argument = match.group(1).lower(), match.group(2).strip()
        shown = argument if len(argument) <= 40 else argument[:40] + "..."
        if verb == "search":
            if self.page != "search":
                return "there is no search bar on this page (click[back to search] first)"
            if not search.tokenize(argument):
                return "search[...] needs keywords"
            self.query, self.hits, self.page_number, self.page = argument, self.shared.search(argument), 1, "results"
            return None
        text = argument.lower()
        if text not in self._clickables():
            return f"{shown!r} is not a clickable of this page"
        self._click(text)
        return None

    def _click(self, text: str) -> None:
        if text == "back to search":
            self.page, self.query, self.hits, self.page_number, self.asin, self.options = "search", "", (), 1, None, {}
        elif self.page == "results":
            if text == "next >":
                self.page_number += 1
            elif text == "< prev":
                self.page_number -= 1
            else:
                self.page, self.asin, self.options = "item", text.upper(), {}
        elif self.page in SUB_PAGES:
            self.page = "item"                     # "< prev" is the only other clickable here
        elif text == "< prev":
            self.page, self.asin, self.options = "results", None, {}
        elif text in SUB_PAGES:
            self.page = text
        elif text == "buy now":
            self._buy()
        else:
            for name, values in self.products[self.asin].options.items():
                if text in values:
                    self.options[name] = text
                    break

    def _buy(self) -> None:
        product, goal = self.products[self.asin], self.goal
        self.breakdown = reward.purchase_reward(
            goal_attributes=goal.attributes, goal_options=goal.options, price_upper=goal.price_upper,
            goal_query=goal.query, goal_category_path=goal.product_category, goal_name=goal.name,
            product_attributes=product.attributes, title=product.title, bullets=product.bullets,
            description=product.description, product_query=product.query,
            product_category_path=product.product_category, price=product.price,
            chosen_options=list(self.options.values()), noun_mode=self._noun_mode,
        )
        self.page, self.score = "done", self.breakdown.reward
        self.success = self.score == 1.0

    def _goal_option_values(self) -> dict[str, str]:
        """The target's option value closest to each goal option (by the reward's matcher), by group."""
        chosen = {}
        for wanted in self.goal.options:
            best, best_score = None, reward.FUZZY_THRESHOLD
            for name, values in self.products[self.asin].options.items():
                for value in values:
                    score = 101 if value == wanted.lower() else reward.fuzzy_score(
                        reward.normalize_color(value), reward.normalize_color(wanted))
                    if score > best_score:
                        best, best_score = (name, value), score
            if best is not None:
                chosen[best[0]] = best[1]
        return chosen

    def _info(self, invalid: bool) -> dict:
        return {"success": self.success, "invalid": invalid, "score": self.score, "title_nouns": self._noun_mode}

    def page_observation(self) -> str:
        """The current page in the original's `[SEP]` text."""
        instruction = f"Instruction: [SEP] {self.goal.instruction}"
        if self.page == "search":
            return f"WebShop [SEP] {instruction} [SEP] Search"
        if self.page == "results":
            parts = [instruction, "Back to Search", f"Page {self.page_number} (Total results: {len(self.hits)})"]
            if self.page_number > 1:
                parts.append("< Prev")
            if self.page_number * RESULTS_PER_PAGE < len(self.hits):
                parts.append("Next >")
            for asin in self._page_hits():
                product = self.products[asin]
                parts += [asin, _cut(product.title, self.max_title_chars), product.price_tag]
            return " [SEP] ".join(parts)
        product = self.products[self.asin] if self.asin else None
        if self.page == "item":
            parts = [instruction, "Back to Search", "< Prev"]
            for name, values in product.options.items():
                parts.append(name)
                parts += [f"{v} (selected)" if self.options.get(name) == v else v for v in values]
            parts += [product.title, f"Price: ${product.price:.2f}", "Rating: N.A.", "Description", "Features",
                      "Reviews", "Buy Now"]
            return " [SEP] ".join(parts)
        if self.page == "description":
            return f"{instruction} [SEP] Back to Search [SEP] < Prev [SEP] {_cut(product.description, self.max_text_chars)}"
        if self.page == "features":
            features = _cut(" [SEP] ".join(product.bullets), self.max_text_chars)
            return f"{instruction} [SEP] Back to Search [SEP] < Prev [SEP] {features}"
        if self.page == "reviews":
            return f"{instruction} [SEP] Back to Search [SEP] < Prev"
        chosen = ", ".join(f"{name}: {value}" for name, value in self.options.items()) or "none"
        return (f"Thank you for shopping with us! [SEP] Purchased [SEP] {product.asin} [SEP] {product.title} [SEP] "
                f"Price: ${product.price:.2f} [SEP] Options: {chosen} [SEP] Your score (min 0.0, max 1.0) [SEP] "
                f"{self.score:.2f}")
