"""WebShop's purchase reward, as pure functions (Yao et al. 2022, WebShop, section 3.2 and the original
`engine/goal.py`).

For a purchased product P with price p, chosen option values O, and a goal G with attribute list A,
option list GO and price cap U:

    n_att = #{a in A : some x in P.attributes with token_set_ratio(x, a) > 85,
                       or a is a substring of P's title, bullet points or description (lower-cased)}
    n_opt = #{g in norm(GO) : some o in norm(O) with token_set_ratio(o, g) > 85}
    R     = r_type * (n_att + n_opt + [p <= U]) / (|A| + |GO| + 1)

where `norm` maps an option to the first colour word of `COLORS` it contains (else leaves it), and
`r_type` (`type_reward`) checks that P is the same kind of product as the goal's target: 1.0 when the
search query matches, the category paths share at least two levels or more than 20% of the target
title's nouns are in P's title; 0.5 otherwise; 0.1 when under 10% of the nouns match; 0.0 when none do.

`token_set_ratio` is rapidfuzz's, applied as thefuzz applies it (the original's matcher): both strings
go through rapidfuzz's `default_process` (lower-case, non-alphanumerics to spaces) and the 0-100 score
is rounded to an integer before the `> 85` test.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz, utils

FUZZY_THRESHOLD = 85

# Colour words for option normalisation (our own list). Order matters: an option normalises to the
# first entry it contains, so compound colours come before the base colours they contain.
COLORS = (
    "navy blue", "light blue", "dark blue", "sky blue", "royal blue", "baby blue", "steel blue",
    "light grey", "dark grey", "heather grey", "charcoal grey", "light gray", "dark gray",
    "hot pink", "light pink", "dusty pink", "dark green", "olive green", "army green", "mint green",
    "forest green", "lime green", "sage green", "dark brown", "light brown", "coffee brown", "wine red",
    "dark red", "off white", "rose gold", "space gray", "jet black",
    "black", "white", "grey", "gray", "silver", "gold", "red", "blue", "green", "yellow", "orange",
    "purple", "pink", "brown", "beige", "ivory", "cream", "khaki", "tan", "navy", "teal", "turquoise",
    "aqua", "cyan", "magenta", "maroon", "burgundy", "olive", "coral", "salmon", "lavender", "lilac",
    "violet", "mint", "bronze", "copper", "charcoal", "taupe", "camel", "mustard", "nude", "plum",
    "peach", "fuchsia", "indigo", "denim", "rust", "sand", "champagne", "apricot", "wine", "rose",
    "emerald", "sapphire", "ruby", "amber", "chocolate", "espresso", "walnut", "oak", "mocha",
    "stone", "slate", "graphite", "smoke", "pearl", "multicolor", "clear", "transparent",
)

# Words a product title uses that are not nouns: determiners, prepositions, conjunctions, pronouns,
# and the adjectives product titles use most. Used only by `title_nouns`.
_NOT_NOUN_LINES = (
    "a an the and or nor but with without for from of in on at by to into onto over under up down off out",
    "as per via than then this that these those it its is are be been was were will can may our your their",
    "my his her we you they he she all any each every both some more most less least no not only very so",
    "too just also plus new best great good top premium pro ultra super extra mini max large small big",
    "little medium long short tall wide narrow thick thin light dark heavy soft hard warm cool cold hot",
    "high low fast slow easy quick full half double single multi multiple quality perfect ideal classic",
    "modern vintage retro cute pretty beautiful elegant casual formal stylish fashion fashionable comfy",
    "comfortable natural organic fresh pure real original authentic genuine official compatible universal",
    "portable adjustable durable reusable washable waterproof lightweight breathable non slip anti free",
    "sugar gluten upgraded latest newest improved advanced professional basic simple plain solid clear",
    "smart digital electric wireless automatic manual unisex mens womens kids boys girls xl xxl xs pcs pc",
    "pack count oz fl lb lbs ml mm cm inch inches ft pound pounds",
)
_NOT_NOUNS = frozenset(word for line in _NOT_NOUN_LINES for word in line.split())
_NOT_NOUN_SUFFIXES = ("ly", "able", "ible", "ful", "less", "ous", "ive", "ish", "est")
_COLOR_WORDS = frozenset(word for color in COLORS for word in color.split())


def fuzzy_score(first: str, second: str) -> int:
    """thefuzz's `token_set_ratio` (0-100, an integer) through rapidfuzz."""
    if not utils.default_process(first) or not utils.default_process(second):
        return 0
    return round(fuzz.token_set_ratio(first, second, processor=utils.default_process))


def normalize_color(option: str) -> str:
    """The first colour of `COLORS` that is a substring of `option`, else `option` unchanged."""
    for color in COLORS:
        if color in option:
            return color
    return option


def attribute_matches(goal_attributes: Sequence[str], product_attributes: Iterable[str], title: str,
                      bullets: Iterable[str], description: str) -> int:
    """How many goal attributes the product has: a fuzzy match (> 85) with one of its attributes, or a
    substring of its title, bullet points or description (compared lower-cased; goal attributes are
    used as given, as the original does)."""
    product_attributes = list(product_attributes)
    title, bullet_text, description = title.lower(), " ".join(bullets).lower(), description.lower()
    count = 0
    for attribute in goal_attributes:
        if (any(fuzzy_score(have, attribute) > FUZZY_THRESHOLD for have in product_attributes)
                or attribute in title or attribute in bullet_text or attribute in description):
            count += 1
    return count


def option_matches(goal_options: Sequence[str], chosen_options: Iterable[str]) -> int:
    """How many goal options one of the chosen options matches (> 85) after colour normalisation."""
    chosen = [normalize_color(option) for option in chosen_options]
    return sum(
        any(fuzzy_score(have, wanted) > FUZZY_THRESHOLD for have in chosen)
        for wanted in (normalize_color(option) for option in goal_options)
    )


def title_nouns(text: str) -> list[str]:
    """The nouns of a product title, by a part-of-speech-free heuristic (duplicates kept).

    The original tags titles with spaCy's `en_core_web_sm` and keeps NOUN and PROPN tokens. That model
    is not available offline, so this keeps every lower-cased alphabetic word of two or more letters
    (possessives split off: "women's" gives "women") that is not a function word, not one of the
    common title adjectives listed in `_NOT_NOUNS`, not a colour word, and does not end in an
    adjective or adverb suffix (-ly, -able, -ible, -ful, -less, -ous, -ive, -ish, -est).

    How it differs from the tagger: it has no context, so a word is a noun everywhere or nowhere. It
    keeps verbs and adjectives it does not list ("running", "insulated", "scented" count as nouns,
    where spaCy would often tag them VERB or ADJ), and drops nouns that look like adjectives
    ("cable" ends in -able, "stylish" is dropped rightly but "radish" too; colour words are never
    nouns). Titles of the same kind of product still share their head nouns ("shoes", "serum",
    "charger"), which is what the type reward asks of it.
    """
    nouns = []
    for word in re.findall(r"[a-z]+", text.lower()):
        if len(word) < 2 or word in _NOT_NOUNS or word in _COLOR_WORDS or word.endswith(_NOT_NOUN_SUFFIXES):
            continue
        nouns.append(word)
    return nouns


def title_score(goal_name: str, product_name: str) -> float:
    """Share of the target title's nouns (duplicates counted) found in the purchased title; 0.2 when
    the target title has no nouns."""
    goal_nouns = title_nouns(goal_name)
    if not goal_nouns:
        return 0.2
    return len(set(title_nouns(product_name)) & set(goal_nouns)) / len(goal_nouns)


def category_overlap(first_path: str, second_path: str) -> int:
    """Shared levels of two "A › B › C" category paths."""
    def levels(path: str) -> set[str]:
        return {level.strip() for level in path.split("›")}

    return len(levels(first_path) & levels(second_path))


def type_reward(goal_query: str, goal_category_path: str, goal_name: str, product_query: str,
                product_category_path: str, product_name: str) -> float:
    """r_type: is the purchased product the same kind of product as the goal's target?"""
    query_match = product_query == goal_query
    category_match = category_overlap(product_category_path, goal_category_path) >= 2
    score = title_score(goal_name, product_name)
    r_type = 1.0
    if not (query_match or category_match or score > 0.2):
        r_type = 0.5
    if score < 0.1:
        r_type = 0.1
    if score == 0.0:
        r_type = 0.0
    return r_type


@dataclass(frozen=True)
class RewardBreakdown:
    """The reward and its parts (counts, the type factor and the price test)."""

    reward: float
    attribute_matches: int
    option_matches: int
    price_ok: bool
    r_type: float


def purchase_reward(*, goal_attributes: Sequence[str], goal_options: Sequence[str], price_upper: float,
                    goal_query: str, goal_category_path: str, goal_name: str, product_attributes: Iterable[str],
                    title: str, bullets: Iterable[str], description: str, product_query: str,
                    product_category_path: str, price: float, chosen_options: Iterable[str]) -> RewardBreakdown:
    """The reward of buying a product with `chosen_options` at `price` for a goal (formula above)."""
    bullets = list(bullets)
    n_att = attribute_matches(goal_attributes, product_attributes, title, bullets, description)
    n_opt = option_matches(goal_options, chosen_options)
    price_ok = price <= price_upper
    r_type = type_reward(goal_query, goal_category_path, goal_name, product_query, product_category_path, title)
    fraction = (n_att + n_opt + int(price_ok)) / (len(goal_attributes) + len(goal_options) + 1)
    return RewardBreakdown(fraction * r_type, n_att, n_opt, price_ok, r_type)
