"""WebShop: the reward by hand, the page state machine, invalid actions, the original data format and
splits, search, the shipped catalogue's determinism and the expert on every shipped goal."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnrl.environments import make_env
from turnrl.environments.webshop import WebShopEnv, catalogue, data, reward, search

# --- the reward, computed by hand from the formula ----------------------------------------------------

GOAL = {"goal_attributes": ["lightweight", "rubber sole"], "goal_options": ["black", "8"], "price_upper": 40.0,
        "goal_query": "running shoes", "goal_category_path": "Shoes › Athletic › Running",
        "goal_name": "Acme Trail Running Shoes Mesh Sneakers"}
TARGET = {"product_attributes": ["lightweight", "rubber sole", "memory foam"],
          "title": "Acme Trail Running Shoes Mesh Sneakers", "bullets": ["Mesh upper", "Rubber sole"],
          "description": "A light trail shoe.", "product_query": "running shoes",
          "product_category_path": "Shoes › Athletic › Running", "price": 30.0}


def buy(chosen, **changes):
    return reward.purchase_reward(**{**GOAL, **TARGET, "chosen_options": chosen, **changes})


def test_full_match_is_one():
    result = buy(["black", "8"])
    assert result == reward.RewardBreakdown(1.0, 2, 2, True, 1.0)


def test_right_product_wrong_options():
    assert buy(["navy blue", "8"]).reward == pytest.approx((2 + 1 + 1) / 5)
    assert buy([]).reward == pytest.approx((2 + 0 + 1) / 5)   # no option chosen: 0.6, as the original gives


def test_price_above_the_cap():
    assert buy(["black", "8"], price=45.0) == reward.RewardBreakdown(pytest.approx(4 / 5), 2, 2, False, 1.0)
    assert buy(["black", "8"], price=40.0).reward == 1.0   # "lower than" is p <= cap in the original


def test_wrong_category():
    # Another query, one shared category level, 1 of the target's 6 title nouns (the brand counts, as a
    # proper noun does for spaCy): 1/6 is in [0.1, 0.2], so r_type 0.5.
    other = {"product_attributes": ["cotton"], "title": "Cotton Running Socks", "bullets": ["Soft"],
             "description": "Socks.", "product_query": "socks", "product_category_path": "Clothing › Running › Socks"}
    assert reward.title_score(GOAL["goal_name"], other["title"]) == pytest.approx(1 / 6)
    result = buy(["black"], **other)
    # attributes 0 of 2, options 1 of 2 (black), price 1: (0 + 1 + 1) / 5 * 0.5
    assert result == reward.RewardBreakdown(pytest.approx(0.2), 0, 1, True, 0.5)


def test_attribute_found_only_in_the_description():
    elsewhere = {"product_attributes": ["memory foam"], "bullets": ["Mesh upper"]}
    result = buy(["black", "8"], description="Grippy Rubber Sole.", **elsewhere)   # compared lower-cased
    assert result == reward.RewardBreakdown(pytest.approx((1 + 2 + 1) / 5), 1, 2, True, 1.0)
    result = buy(["black", "8"], description="A lightweight shoe with a rubber sole.", **elsewhere)
    assert result.attribute_matches == 2 and result.reward == 1.0


@pytest.mark.parametrize(
    ("goal_name", "product_name", "query_match", "category", "expected"),
    [
        ("trail running shoes mesh sneakers", "running socks", True, "A › B › C", 1.0),       # query match
        ("trail running shoes mesh sneakers", "running socks", False, "X › B › C", 1.0),      # 2 levels shared
        ("trail running shoes mesh sneakers", "running shoes", False, "X › Y › Z", 1.0),      # 2/5 > 0.2
        ("trail running shoes mesh sneakers", "running socks", False, "X › Y › C", 0.5),      # 1/5 = 0.2
        ("acme trail running shoes mesh sneakers laces insoles socks boots straps", "running gloves", True,
         "A › B › C", 0.1),                                                                   # 1/11 < 0.1
        ("trail running shoes mesh sneakers", "coffee beans", True, "A › B › C", 0.0),        # no noun shared
    ],
)
def test_type_reward_thresholds(goal_name, product_name, query_match, category, expected):
    assert reward.type_reward("q", "A › B › C", goal_name, "q" if query_match else "other", category,
                              product_name) == expected


def test_title_score_without_nouns_is_a_fifth():
    assert reward.title_score("for the and of 2", "anything") == 0.2


def test_option_matching_and_colour_normalisation():
    assert reward.option_matches(["grey", "XL", "pack of 12"], ["pack of 12", "blue", "XL"]) == 2   # upstream case
    # Without normalisation the two colours share one word of two (score 62); both normalise to "black".
    assert reward.fuzzy_score("midnight black", "black suede") == 62
    assert reward.option_matches(["midnight black"], ["black suede"]) == 1
    assert reward.normalize_color("size 8") == "size 8"


def test_colour_normalisation_is_the_originals():
    # The original's alphabetical set: the first entry contained wins, so "blue" comes before "light"/"navy".
    assert len(reward.COLORS) == 102 and list(reward.COLORS) == sorted(reward.COLORS)
    assert reward.normalize_color("navy blue") == reward.normalize_color("light blue") == "blue"
    assert reward.option_matches(["navy blue"], ["light blue"]) == 1          # a match, as in the original
    assert reward.normalize_color("dark green") == "dark"                     # "dark" is in the set, before "green"
    assert reward.normalize_color("rose gold") == "gold"
    assert reward.normalize_color("standard") == "tan"                        # substring, not word, matching
    assert reward.normalize_color("Navy Blue") == "Navy Blue"                 # case-sensitive
    # The upstream unit cases of normalize_color.
    for text, expected in [("", ""), ("black forest", "black"), ("violet lavender", "lavender"),
                           ("steelivy fuchsia", "fuchsia"), ("123alabaster", "alabaster"), ("webshop", "webshop")]:
        assert reward.normalize_color(text) == expected


def test_navy_blue_bought_for_light_blue_by_the_formula():
    # Goal options [light blue, 8]; chosen [navy blue, 8]: both colours normalise to "blue", so n_opt = 2 and,
    # with 2 of 2 attributes and the price, R = (2 + 2 + 1) / 5 = 1.0 (turnrl's own list gave 0.8).
    result = buy(["navy blue", "8"], goal_options=["light blue", "8"])
    assert result == reward.RewardBreakdown(1.0, 2, 2, True, 1.0)


def test_coffee_bought_as_another_coffee_by_the_formula():
    # Another query, category paths sharing one level ("Grocery"): r_type rests on the title nouns. Target
    # nouns roastwell, ground, coffee, dark, roast (5); the bought title shares "coffee" only: 1/5 = 0.2,
    # not > 0.2, so r_type 0.5. (Before the fix "coffee" and "dark" were never nouns, being words of the
    # compound colours "coffee brown" and "dark ...", and r_type was 0.0.) Attributes: "arabica" is in the
    # bought product's attributes, "medium roast" nowhere: 1 of 2; no options; price under the cap:
    # R = 0.5 * (1 + 0 + 1) / 3.
    goal = {"goal_attributes": ["arabica", "medium roast"], "goal_options": [], "price_upper": 30.0,
            "goal_query": "ground coffee", "goal_category_path": "Grocery › Coffee › Ground",
            "goal_name": "Roastwell Ground Coffee - Dark Roast"}
    bought = {"product_attributes": ["arabica", "whole bean"], "title": "Beanery Whole Bean Coffee",
              "bullets": ["Single origin"], "description": "Beans.", "product_query": "whole bean coffee",
              "product_category_path": "Grocery › Beans › Whole", "price": 12.0, "chosen_options": []}
    for mode in ("heuristic", *(("spacy",) if reward.spacy_available() else ())):
        assert reward.title_score(goal["goal_name"], bought["title"], mode) == pytest.approx(0.2)
        result = reward.purchase_reward(**goal, **bought, noun_mode=mode)
        assert result == reward.RewardBreakdown(pytest.approx(0.5 * 2 / 3), 1, 0, True, 0.5)


def test_latin1_characters_are_dropped_as_thefuzz_does():
    # thefuzz's force_ascii deletes code points 128-255: "café" is compared as "caf" against "cafe":
    # ratio 2 * 3 / (3 + 4) = 85.7, rounded 86 > 85 (without it: "café" vs "cafe", 2 * 3 / 8 = 75).
    assert reward.fuzzy_score("café", "cafe") == 86
    assert reward.attribute_matches(["cafe"], ["café"], "", [], "") == 1
    assert reward.fuzzy_score("Ωmega", "mega") < 100          # above Latin-1: kept, as thefuzz keeps it
    assert reward.fuzzy_score("ñ", "x") == 0                  # nothing left after deletion


@settings(max_examples=200, deadline=None)
@given(first=st.text(max_size=30), second=st.text(max_size=30))
def test_fuzzy_score_is_the_score_of_the_latin1_free_text(first, second):
    from rapidfuzz import fuzz, utils

    score = reward.fuzzy_score(first, second)
    assert isinstance(score, int) and 0 <= score <= 100
    kept = [utils.default_process("".join(c for c in text if not 128 <= ord(c) <= 255)) for text in (first, second)]
    expected = round(fuzz.token_set_ratio(*kept)) if all(kept) else 0
    assert score == expected


def test_fuzzy_matching_follows_thefuzz():
    assert reward.attribute_matches(["essential oils"], ["essential oil"], "", [], "") == 1
    assert reward.attribute_matches(["powder snow"], ["cool powder snow"], "", [], "") == 1
    assert reward.fuzzy_score("Essential Oil", "essential oils") == 96   # processed and rounded to an integer
    assert reward.fuzzy_score("", "x") == 0 and reward.fuzzy_score("!!", "x") == 0


def test_title_nouns_heuristic():
    # Closed-class words and bare numbers out, punctuation splits tokens, the possessive goes.
    assert reward.title_nouns("Women's Lightweight Running Shoes, Black") == [
        "women", "lightweight", "running", "shoes", "black"]
    assert reward.title_nouns("USB-C Cable for the Car, 2 Pack, 60W") == ["usb", "c", "cable", "car", "pack", "60w"]
    assert reward.title_nouns("Coffee Brown Steel Mug") == ["coffee", "brown", "steel", "mug"]   # colour words count
    assert reward.title_nouns("Batteries Included") == ["batteries"]
    assert reward.title_nouns("Shoes and shoes") == ["shoes", "shoes"]   # duplicates kept (the denominator)
    assert reward.title_score("shoes shoes boots", "shoes") == pytest.approx(1 / 3)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=60))
def test_heuristic_nouns_of_any_text(text):
    nouns = reward.heuristic_title_nouns(text)
    assert all(n and n.isalnum() and not n.isdigit() and n == n.lower() and n not in reward._NOT_NOUNS for n in nouns)
    assert 0.0 <= reward.title_score(text, text) <= 1.0


needs_spacy = pytest.mark.skipif(not reward.spacy_available(),
                                 reason="spaCy's en_core_web_sm is not installed (pip install 'turnrl[webshop-spacy]')")


@needs_spacy
def test_spacy_nouns_are_the_taggers():
    # NOUN and PROPN tokens, lower-cased, as the original keeps them; the tagger reads "Black" after the comma
    # as an adjective and "60W" as a verb, which the heuristic cannot.
    assert reward.title_nouns("Women's Lightweight Running Shoes, Black", "spacy") == [
        "women", "lightweight", "running", "shoes"]
    assert reward.title_nouns("USB-C Cable 60W Fast Charging", "spacy") == ["usb", "c", "cable", "fast", "charging"]
    assert reward.resolve_noun_mode("auto") == "spacy"
    env = WebShopEnv(progress=False)
    assert env.noun_mode == "spacy"
    env.reset(task=env.tasks("test")[0], seed=0)
    assert env.step("search[x]").info["title_nouns"] == "spacy"


def test_noun_modes(monkeypatch):
    env = WebShopEnv(progress=False, title_nouns="heuristic")
    assert env.noun_mode == "heuristic"
    env.reset(task=env.tasks("test")[0], seed=0)
    assert env.step("search[shoes]").info["title_nouns"] == "heuristic"
    assert WebShopEnv(progress=False).noun_mode == ("spacy" if reward.spacy_available() else "heuristic")
    with pytest.raises(ValueError, match="auto.*spacy.*heuristic"):
        WebShopEnv(progress=False, title_nouns="pos")
    # Without the model: "auto" falls back to the heuristic, "spacy" says how to install it.
    monkeypatch.setattr(reward, "_spacy_pipeline", lambda: None)
    assert WebShopEnv(progress=False).noun_mode == "heuristic"
    with pytest.raises(ImportError, match=r"turnrl\[webshop-spacy\]"):
        WebShopEnv(progress=False, title_nouns="spacy")


# --- a small catalogue in the original schema -----------------------------------------------------------

SHOE = "B000000001"


def _record(asin, name, *, description="", bullets=("A bullet",), pricing="$30.00", options=None,
            query="gadgets", path="Home › Gadgets › Widgets"):
    return {"asin": asin, "category": "home", "query": query, "product_category": path, "name": name,
            "full_description": description, "small_description": list(bullets), "pricing": pricing,
            "customization_options": {n: [{"value": v, "image": None} for v in vs] for n, vs in (options or {}).items()},
            "images": [f"https://images.example.com/{asin}.jpg"]}


def write_small_catalogue(folder, small=True):
    """One pair of running shoes and 24 widgets (three result pages for "widget")."""
    products = [_record(SHOE, "Acme Trail Running Shoes - Lightweight", description="A light trail shoe.",
                        bullets=["Running shoes for trails", "RUBBER SOLE: grips"], query="running shoes",
                        path="Shoes › Athletic › Running",
                        options={"Color": ["Black", "Navy/Blue"], "size": ["8", "9"]})]
    products += [_record(f"B1000000{i:02d}", f"Widget Model {i}", description="widget " * (1 + i % 7),
                         pricing="$10.00 - $20.00" if i % 2 else f"${5 + i}.00") for i in range(24)]
    products.append(_record("nan", "skipped: no asin"))
    products.append(_record(SHOE, "skipped: repeated asin"))
    attributes = {SHOE: {"attributes": ["lightweight", "rubber sole"], "instruction": "i want trail running shoes",
                         "instruction_attributes": ["lightweight"]}}
    human = {SHOE: [{"instruction": "i want lightweight running shoes in black and size 8.",
                     "instruction_attributes": ["lightweight", "rubber sole"], "instruction_options": ["black", "8"]},
                    {"instruction": "no attributes: skipped", "instruction_attributes": [], "instruction_options": []}]}
    for i in range(24):
        human[f"B1000000{i:02d}"] = [{"instruction": f"i need widget model {i}",
                                      "instruction_attributes": ["widget"], "instruction_options": []}]
    names = data.FILE_PAIRS[small]
    (folder / names[0]).write_text(json.dumps(products))
    (folder / names[1]).write_text(json.dumps(attributes))
    (folder / data.HUMAN_GOALS_FILE).write_text(json.dumps(human))
    return folder


@pytest.fixture
def small_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path / "cache"))
    write_small_catalogue(tmp_path)
    env = WebShopEnv(data_dir=str(tmp_path), max_steps=100, progress=False)
    shoe_task = next(t for t in env.tasks("all") if env.shared.data.goals[t].asin == SHOE)
    env.reset(task=shoe_task)
    return env


def test_loading_the_original_schema(small_env, tmp_path):
    products = small_env.products
    assert len(products) == 25 and next(iter(products)) == SHOE
    shoe = products[SHOE]
    assert shoe.title == "Acme Trail Running Shoes - Lightweight"        # the first record of a repeated asin
    assert shoe.options == {"color": ["black", "navy | blue"], "size": ["8", "9"]}
    assert shoe.attributes == ["lightweight", "rubber sole"] and shoe.price == 30.0 and shoe.price_tag == "$30.00"
    assert products["B100000000"].attributes == ["DUMMY_ATTR"]             # no items_ins_v2 entry
    ranged = products["B100000001"]
    assert ranged.price_tag == "$10.00 to $20.00" and 10.0 <= ranged.price <= 20.0
    assert ranged.price == data.fixed_price("B100000001", [10.0, 20.0])   # seeded: the same in every load
    goal = small_env.goal
    cap = data.price_cap(SHOE, 0, 30.0)
    assert cap in (50.0, 60.0, 70.0)                                       # the larger of two of 40, 50, 60, 70
    assert goal.instruction == f"i want lightweight running shoes in black and size 8, and price lower than {cap:.2f} dollars"
    assert goal.attributes == ("lightweight", "rubber sole") and goal.options == ("black", "8")
    assert len(small_env.tasks("all")) == 25                               # the goal without attributes is skipped
    assert small_env.tasks("test") == list(range(25)) and small_env.tasks("train") == []


def test_original_splits_seed_233(tmp_path, monkeypatch):
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path / "cache"))
    catalogue.write(tmp_path / "data", n_products=800)                     # 1,600 goals, in the original schema
    env = WebShopEnv(data_dir=str(tmp_path / "data"), progress=False)
    human = json.loads((tmp_path / "data" / data.HUMAN_GOALS_FILE).read_text())
    unshuffled = [entry["instruction"] for entries in human.values() for entry in entries]
    state = random.getstate()
    random.seed(233)          # the original's own calls
    random.shuffle(unshuffled)
    random.setstate(state)
    goals = env.shared.data.goals
    assert [goals[t].instruction.split(", and price lower than")[0] for t in env.tasks("all")] == unshuffled
    assert env.tasks("test") == list(range(500)) and env.tasks("eval") == list(range(500, 1500))
    assert env.tasks("train") == list(range(1500, 1600)) and len(env.tasks("all")) == 1600
    with pytest.raises(ValueError, match="train, eval, test, all"):
        env.tasks("validation")


def test_file_choice_and_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path / "cache"))
    write_small_catalogue(tmp_path / "full" if (tmp_path / "full").mkdir() is None else None, small=False)
    assert len(WebShopEnv(data_dir=str(tmp_path / "full"), progress=False).products) == 25
    with pytest.raises(FileNotFoundError, match="items_shuffle_1000.json"):
        WebShopEnv(data_dir=str(tmp_path / "full"), use_small=True)
    with pytest.raises(FileNotFoundError, match="items_shuffle.json"):
        WebShopEnv(data_dir=str(tmp_path))
    (tmp_path / "nohuman").mkdir()
    write_small_catalogue(tmp_path / "nohuman")
    (tmp_path / "nohuman" / data.HUMAN_GOALS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="human_goals=False"):
        WebShopEnv(data_dir=str(tmp_path / "nohuman"))
    synthetic = WebShopEnv(data_dir=str(tmp_path / "nohuman"), human_goals=False, progress=False)
    texts = sorted(g.instruction.split(", and price")[0] for g in synthetic.shared.data.goals)
    assert texts == [f"i want trail running shoes with color: {c}, and size: {s}"
                     for c in ("black", "navy | blue") for s in ("8", "9")]


# --- the page state machine -------------------------------------------------------------------------------


def page_state(env):
    return env.page_observation(), env.admissible_actions(), env.page, env.page_number, dict(env.options)


def test_every_transition(small_env):
    env = small_env
    assert env.page_observation().startswith("WebShop [SEP] Instruction: [SEP] i want lightweight running shoes")
    assert env.page_observation().endswith(" [SEP] Search")
    assert env.admissible_actions() == ["search[i want lightweight running shoes in black and size 8]"]

    result = env.step("search[widget]")
    assert not result.info["invalid"] and result.reward == 0.0 and not result.done
    assert env.page == "results" and len(env.hits) == 24
    assert "Page 1 (Total results: 24) [SEP] Next > [SEP] B1" in result.observation
    assert "< Prev" not in result.observation
    assert env.admissible_actions()[:2] == ["click[back to search]", "click[next >]"]
    assert len(env.admissible_actions()) == 2 + 10
    # ties broken by file order: widgets with the most "widget" words first
    assert env.hits[:2] == ("B100000006", "B100000013")

    assert "Page 2 (Total results: 24) [SEP] < Prev [SEP] Next >" in env.step("click[Next >]").observation
    third = env.step("click[next >]").observation
    assert "Page 3 (Total results: 24) [SEP] < Prev [SEP] B1" in third and "Next >" not in third
    assert len(env.admissible_actions()) == 2 + 4
    assert "Page 2" in env.step("click[< prev]").observation
    assert "Page 1" in env.step("click[< prev]").observation

    env.step("click[back to search]")
    assert env.page == "search" and env.hits == ()
    observation = env.step("search[running shoes]").observation
    assert "Total results: 1" in observation and f"{SHOE} [SEP] Acme Trail Running Shoes - Lightweight [SEP] $30.00" in observation
    item = env.step(f"click[{SHOE.lower()}]").observation
    assert item.endswith("[SEP] Back to Search [SEP] < Prev [SEP] color [SEP] black [SEP] navy | blue [SEP] size [SEP] 8 "
                         "[SEP] 9 [SEP] Acme Trail Running Shoes - Lightweight [SEP] Price: $30.00 [SEP] Rating: N.A. "
                         "[SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now")
    assert env.admissible_actions() == [f"click[{t}]" for t in ("back to search", "< prev", "black", "navy | blue", "8",
                                                                 "9", "description", "features", "reviews", "buy now")]

    assert "navy | blue (selected)" in env.step("click[NAVY | BLUE]").observation
    overwritten = env.step("click[black]").observation                     # same group: overwrites
    assert "black (selected)" in overwritten and "navy | blue (selected)" not in overwritten
    env.step("click[9]")
    assert env.options == {"color": "black", "size": "9"}

    assert env.step("click[description]").observation.endswith("< Prev [SEP] A light trail shoe.")
    assert env.step("click[< prev]").observation == env.page_observation() and env.page == "item"
    assert env.step("click[features]").observation.endswith("< Prev [SEP] Running shoes for trails [SEP] RUBBER SOLE: grips")
    env.step("click[< prev]")
    assert env.step("click[reviews]").observation.endswith("[SEP] Back to Search [SEP] < Prev")
    env.step("click[< prev]")
    assert env.options == {"color": "black", "size": "9"}                 # sub-pages keep the choices

    assert env.step("click[< prev]").observation.startswith("Instruction:") and env.page == "results"
    env.step(f"click[{SHOE}]")
    assert env.options == {}                                               # opening an item starts afresh
    env.step("click[features]")
    env.step("click[back to search]")
    assert env.page == "search"
    env.step("search[running shoes]")
    env.step(f"click[{SHOE.lower()}]")
    env.step("click[black]")
    env.step("click[9]")
    done = env.step("click[buy now]")
    # lightweight (title) and rubber sole (attributes) match, black matches, 9 is not 8, price is under the cap
    assert done.reward == pytest.approx(4 / 5) and done.done
    assert done.info == {"success": False, "invalid": False, "score": pytest.approx(0.8), "title_nouns": env.noun_mode}
    assert done.observation.startswith(f"Thank you for shopping with us! [SEP] Purchased [SEP] {SHOE}")
    assert env.admissible_actions() == [] and env.expert_action() is None
    over = env.step("click[buy now]")
    assert over.done and over.reward == 0.0 and over.info["invalid"]


def test_prev_from_each_page_and_empty_results(small_env):
    env = small_env
    env.step("search[widget]")
    env.step("click[next >]")
    env.step(f"click[{env.hits[12].lower()}]")
    env.step("click[features]")
    env.step("click[< prev]")
    assert env.page == "item"
    env.step("click[< prev]")
    assert env.page == "results" and env.page_number == 2                 # back to the page it came from
    env.step("click[< prev]")
    assert env.page_number == 1
    env.step("click[back to search]")
    observation = env.step("search[zzzz unknownword]").observation
    assert "Page 1 (Total results: 0)" in observation and env.admissible_actions() == ["click[back to search]"]


def test_expert_and_reward_one_on_the_small_catalogue(small_env):
    env = small_env
    actions = []
    while not env.done:
        actions.append(env.expert_action())
        result = env.step(actions[-1])
        assert not result.info["invalid"]
    assert actions == ["search[i want lightweight running shoes in black and size 8]", f"click[{SHOE.lower()}]",
                       "click[black]", "click[8]", "click[buy now]"]
    assert result.reward == 1.0 and result.info == {"success": True, "invalid": False, "score": 1.0,
                                                    "title_nouns": env.noun_mode}


def _go_to(env, page):
    if page in ("results", "item", "description"):
        env.step("search[running shoes]")
    if page in ("item", "description"):
        env.step(f"click[{SHOE}]")
    if page == "description":
        env.step("click[description]")


@pytest.mark.parametrize("page", ["search", "results", "item", "description"])
@pytest.mark.parametrize("action", ["click[buy now]", "search[shoes]", "search[]", "click[nothing here]", "click[]",
                                    "buy now", "click black", "", "search[the]", "click[b100000003]", "\x00" * 3])
def test_invalid_actions_change_nothing(small_env, page, action):
    env = small_env
    _go_to(env, page)
    if (page, action) in {("search", "search[shoes]"), ("item", "click[buy now]"), ("description", "click[buy now]")}:
        pytest.skip("valid on this page")
    before = page_state(env)
    result = env.step(action)
    assert result.info == {"success": False, "invalid": True, "score": 0.0, "title_nouns": small_env.noun_mode}
    assert result.reward == 0.0 and not result.done
    assert result.observation.startswith("Invalid action: ") and result.observation.endswith(before[0])
    assert page_state(env) == before


def test_max_steps_ends_the_episode(tmp_path, monkeypatch):
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path / "cache"))
    write_small_catalogue(tmp_path)
    env = WebShopEnv(data_dir=str(tmp_path), max_steps=3, progress=False)
    env.reset(task=0)
    assert not env.step("nonsense").done and not env.step("search[widget]").done
    last = env.step("click[next >]")
    assert last.done and last.reward == 0.0 and last.info["truncated"] and not last.info["success"]
    with pytest.raises(ValueError, match="max_steps"):
        WebShopEnv(data_dir=str(tmp_path), max_steps=0)
    for task in ("0", 25, -1, 1.0, True):
        with pytest.raises(ValueError, match="integers from 0 to 24"):
            env.reset(task=task)
    assert env.reset(task=None, seed=3) == env.reset(task=None, seed=3)


NEAR_ACTIONS = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\s*(search|click|CLICK|Search)\s*\[[^\]]{0,25}\]?\s*", fullmatch=True),
    st.sampled_from(["click[next >]", "click[< prev]", "click[back to search]", f"click[{SHOE}]", "click[black]",
                     "click[buy now]", "search[widget]", "search[running shoes]", "click[description]", "click[]]"]),
)


@pytest.fixture(scope="module")
def module_small_env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("webshop")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TURNRL_CACHE", str(folder / "cache"))
        write_small_catalogue(folder)
        yield WebShopEnv(data_dir=str(folder), progress=False)


@settings(max_examples=60, deadline=None)
@given(actions=st.lists(NEAR_ACTIONS, min_size=1, max_size=12))
def test_arbitrary_text_never_raises(module_small_env, actions):
    env = module_small_env
    env.reset(task=0)
    for action in actions:
        result = env.step(action)
        assert isinstance(result.observation, str) and isinstance(result.info["invalid"], bool)
        assert result.reward == 0.0 or result.done
        assert all(isinstance(a, str) for a in env.admissible_actions())


# --- search ------------------------------------------------------------------------------------------------


def test_tokenizer_and_stemmer():
    assert [search.stem(w) for w in ("shoes", "batteries", "glass", "bus", "toes", "is")] == [
        "shoe", "battery", "glass", "bus", "toe", "is"]
    assert search.tokenize("The Running-Shoes, for a 5K!") == ["running", "shoe", "5k"]
    text = search.document_text("Title", "Desc", ["first", "second"], {"color": ["black", "white"], "size": ["8"]})
    assert text == "title desc first color: black, and white, and size: 8"


def test_index_is_cached_on_disk(tmp_path):
    asins, texts = ["A1", "A2", "A3"], ["red shoe", "blue shoe shoe", "green hat"]
    first = search.load_or_build(tmp_path / "index", asins, texts, progress=False)
    assert (tmp_path / "index" / "complete").is_file()
    again = search.load_or_build(tmp_path / "index", [], [], progress=False)   # loaded, not rebuilt
    assert again.asins == asins
    for query in ("shoe", "red shoes", "hat", "purple", ""):
        assert first.search(query) == again.search(query)
    assert first.search("shoes") == ["A2", "A1"] and first.search("purple") == []
    assert first.search("shoe", k=1) == ["A2"]


# --- the shipped catalogue -------------------------------------------------------------------------------


def test_shipped_catalogue_size_and_shape():
    records, attributes, _ = catalogue.generate()
    assert len(records) >= 2000 and len({r["asin"] for r in records}) == len(records)
    assert len({r["category"] for r in records}) >= 10
    assert sum(" - " in r["pricing"] for r in records) > 300                 # price ranges occur
    for record in records:
        values = [v["value"] for vs in record["customization_options"].values() for v in vs]
        assert len(values) == len(set(values)), record["asin"]             # every option click is unambiguous
        assert len(attributes[record["asin"]]["attributes"]) >= 3
    env = make_env("webshop")
    assert len(env.tasks("train")) >= 3000 and len(env.tasks("test")) >= 500
    assert set(env.tasks("train")).isdisjoint(env.tasks("test"))
    assert env.instructions and "search[" in env.instructions


def test_the_cached_files_are_what_the_generator_writes():
    records, attributes, human = catalogue.generate()
    folder = catalogue.shipped_folder()
    for name, content in (("items_shuffle.json", records), ("items_ins_v2.json", attributes),
                          ("items_human_ins.json", human)):
        assert (folder / name).read_text(encoding="utf-8") == json.dumps(content, indent=0)


def test_generator_is_identical_in_other_processes(tmp_path):
    script = textwrap.dedent("""
        import hashlib, sys
        from pathlib import Path
        from turnrl.environments.webshop import catalogue
        folder = catalogue.write(Path(sys.argv[1]), n_products=300)
        print(hashlib.sha256(b"".join((folder / n).read_bytes() for n in sorted(p.name for p in folder.iterdir())))
              .hexdigest())
    """)
    digests = []
    for hash_seed in ("1", "2"):
        environ = {**os.environ, "PYTHONHASHSEED": hash_seed}
        completed = subprocess.run([sys.executable, "-c", script, str(tmp_path / hash_seed)], env=environ,
                                   capture_output=True, text=True, check=True)
        digests.append(completed.stdout.strip())
    records, attributes, human = catalogue.generate(300)
    here = b"".join(json.dumps(c, indent=0).encode() for c in (human, attributes, records))   # sorted file names
    assert digests[0] == digests[1] == hashlib.sha256(here).hexdigest()


def test_a_second_environment_shares_the_data():
    first = make_env("webshop")
    second = make_env("webshop")
    assert first.shared is second.shared


def test_expert_succeeds_on_every_shipped_goal():
    env = make_env("webshop")
    failures = []
    for task in env.tasks("all"):
        env.reset(task=task, seed=0)
        while True:
            result = env.step(env.expert_action())
            if result.info["invalid"] or result.done:
                break
        if not result.info["success"]:
            failures.append(task)
    assert failures == []
