"""WebShop environment benchmark: step, reset and search latency, and scripted policies' scores.

    python bench/webshop.py [--products-100k 100000] [--episodes 500] [--all-goals]
                            [--model smollm2-135m --model-episodes 30 [--sft-episodes 40]]
    python bench/webshop.py --agreement-only


Measures, on the shipped catalogue: the median `step()` and `reset()` time over expert and random
episodes, the median search time (the index itself, no cache) for the test goals' queries, the expert
and random policies' success rate and mean score on the test goals, and a "first result" baseline
(buy the top hit of the instruction's search, with the goal's options chosen, and without them as the
WebShop paper's rule baseline does: how often the task is trivial).
Then it generates a catalogue of `--products-100k` products, builds its index (timed) and times 100
queries (`search_ms_100k`). `--all-goals` also plays the expert on every shipped goal (it must
always succeed). `--model` evaluates a model through `turnrl eval` (window:2, 15 turns) on the first
`--model-episodes` test goals, and with `--sft-episodes N` first behaviour-clones it with `turnrl sft`
on N expert episodes and evaluates the result too.

`reward_agreement` (also alone with `--agreement-only`) compares turnrl's purchase reward with an
independent implementation of the original formula (WebShop's `get_reward`, written here from its
description, with spaCy's `en_core_web_sm` for title nouns as the original) on (goal, product, chosen
options) triples of the shipped catalogue, once per title-noun mode: the share of triples whose rewards
are equal, for the goal's own product and for others, and which part of the reward the differing ones
differ in. It needs the `turnrl[webshop-spacy]` extra (without it the figure is left out, with a note).

The last line printed is a JSON object with every number, among them `step_ms_median` and
`search_ms_100k`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def play(env, task, choose, step_times: list[float]) -> tuple[float, bool]:
    env.reset(task=task, seed=0)
    while True:
        action = choose(env)
        start = time.perf_counter()
        result = env.step(action)
        step_times.append(time.perf_counter() - start)
        if result.done:
            return result.info["score"], result.info["success"]


def policy_scores(env, tasks, choose, step_times) -> dict:
    scores, wins = zip(*(play(env, task, choose, step_times) for task in tasks))
    return {"success_rate": sum(wins) / len(tasks), "mean_score": statistics.fmean(scores), "episodes": len(tasks)}


def first_result_baseline(env, tasks, choose_options: bool) -> dict:
    """Buy the instruction search's top hit, with the goal's options chosen or (the WebShop paper's rule
    baseline) without."""
    scores = []
    for task in tasks:
        env.reset(task=task, seed=0)
        env.step(f"search[{env.suggested_query()}]")
        if not env.hits:
            scores.append(0.0)
            continue
        env.step(f"click[{env.hits[0].lower()}]")
        for value in env._goal_option_values().values() if choose_options else ():
            env.step(f"click[{value}]")
        scores.append(env.step("click[buy now]").info["score"])
    return {"success_rate": sum(s == 1.0 for s in scores) / len(scores), "mean_score": statistics.fmean(scores)}


# --- the original reward, written from its formula (not from turnrl's code) -----------------------------------

# WebShop's COLOR_SET, in its order: repeated here, not imported, so that the comparison checks turnrl's copy.
_ORIGINAL_COLOR_TEXT = (
    "alabaster apricot aqua ash asphalt azure banana beige black blue blush bordeaux bronze brown burgundy camel "
    "camo caramel champagne charcoal cheetah chestnut chocolate christmas coffee cognac copper coral cranberry "
    "cream crystal dark denim eggplant elephant espresso fuchsia gold granite grape graphite grass gray green grey "
    "heather indigo ivory ivy khaki lavender lemon leopard light lilac lime magenta maroon mauve merlot midnight "
    "mint mocha multicolor mushroom mustard natural navy nude olive orange peach pewter pink plum purple rainbow "
    "red rose royal rust sand sapphire seashell silver skull slate steel stone stonewash sunflower tan taupe teal "
    "tiger turquoise violet walnut wheat white wine yellow"
)
ORIGINAL_COLORS = _ORIGINAL_COLOR_TEXT.split()


def original_token_set_ratio(first: str, second: str) -> int:
    """thefuzz.fuzz.token_set_ratio with its defaults: code points 128-255 deleted (force_ascii), rapidfuzz's
    default_process, rapidfuzz's token_set_ratio, int(round(.))."""
    from rapidfuzz import fuzz, utils

    latin1 = dict.fromkeys(range(128, 256))
    return round(fuzz.token_set_ratio(utils.default_process(first.translate(latin1)),
                                      utils.default_process(second.translate(latin1))))


def original_reward(product, goal, price: float, options: list[str], nouns) -> dict:
    """The original's reward and its parts for human goals, from research notes section 1d."""
    def colour(text: str) -> str:
        return next((c for c in ORIGINAL_COLORS if c in text), text)

    n_att = 0
    for wanted in goal.attributes:
        if any(original_token_set_ratio(have, wanted) > 85 for have in product.attributes) or \
                wanted in product.title.lower() or wanted in " ".join(product.bullets).lower() or \
                wanted in product.description.lower():
            n_att += 1
    chosen = [colour(o) for o in options]
    n_opt = sum(any(original_token_set_ratio(have, wanted) > 85 for have in chosen)
                for wanted in (colour(o) for o in goal.options))
    query_match = product.query == goal.query
    levels = [{x.strip() for x in path.split("›")} for path in (product.product_category, goal.product_category)]
    category_match = len(levels[0] & levels[1]) >= 2
    desired, bought = nouns(goal.name), nouns(product.title)
    score = 0.2 if not desired else len(set(bought) & set(desired)) / len(desired)
    r_type = 1.0
    if not (query_match or category_match or score > 0.2):
        r_type = 0.5
    if score < 0.1:
        r_type = 0.1
    if score == 0.0:
        r_type = 0.0
    total = (n_att + n_opt + (price <= goal.price_upper)) / (len(goal.attributes) + len(goal.options) + 1)
    return {"reward": total * r_type, "n_att": n_att, "n_opt": n_opt, "r_type": r_type}


def agreement_triples(shared, seed: int = 0) -> list[tuple]:
    """(goal, product, chosen options, own product?) for every shipped goal: its own product with the goal's
    option values, with none and with two random draws; four other top hits of its instruction's search and
    two random products of the catalogue, each with a random draw (a value per option group, 80 % of groups)."""
    from turnrl.environments.webshop import data as webshop_data

    rng = random.Random(seed)
    asins = list(shared.data.products)

    def draw(product) -> list[str]:
        return [rng.choice(values) for values in product.options.values() if rng.random() < 0.8]

    triples = []
    for goal in shared.data.goals:
        own = shared.data.products[goal.asin]
        values = {v for vs in own.options.values() for v in vs}
        triples.append((goal, own, [o.lower() for o in goal.options if o.lower() in values], True))
        triples += [(goal, own, [], True), (goal, own, draw(own), True), (goal, own, draw(own), True)]
        suffix = webshop_data.price_text(goal.price_upper)
        query = goal.instruction[: len(goal.instruction) - len(suffix)] if suffix else goal.instruction
        others = [a for a in shared.search(query) if a != goal.asin][:4] + rng.sample(asins, 2)
        triples += [(goal, shared.data.products[a], draw(shared.data.products[a]), a == goal.asin) for a in others]
    return triples


def reward_agreement() -> dict:
    """Agreement of turnrl's reward with `original_reward`, per title-noun mode (see the module docstring)."""
    from turnrl.environments.webshop import reward
    from turnrl.environments.webshop.engine import shared_data

    if not reward.spacy_available():
        return {"skipped": "needs spaCy and en_core_web_sm: pip install 'turnrl[webshop-spacy]'"}
    nlp = reward._spacy_pipeline()
    tagged: dict[str, list[str]] = {}

    def nouns(text: str) -> list[str]:
        if text not in tagged:
            tagged[text] = [t.text.lower() for t in nlp(text) if t.pos_ in ("PNOUN", "NOUN", "PROPN")]
        return tagged[text]

    shared = shared_data(progress=False)
    start = time.perf_counter()
    triples = agreement_triples(shared)
    references = [original_reward(p, g, p.price, o, nouns) for g, p, o, _ in triples]
    out: dict = {"triples": len(triples), "own_product_triples": sum(own for *_, own in triples),
                 "reference_s": round(time.perf_counter() - start, 2)}
    for mode in ("spacy", "heuristic"):
        same = {True: 0, False: 0}
        parts = {"n_att": 0, "n_opt": 0, "r_type": 0}
        for (goal, product, options, own), ref in zip(triples, references):
            got = reward.purchase_reward(
                goal_attributes=goal.attributes, goal_options=goal.options, price_upper=goal.price_upper,
                goal_query=goal.query, goal_category_path=goal.product_category, goal_name=goal.name,
                product_attributes=product.attributes, title=product.title, bullets=product.bullets,
                description=product.description, product_query=product.query,
                product_category_path=product.product_category, price=product.price, chosen_options=options,
                noun_mode=mode)
            if abs(got.reward - ref["reward"]) < 1e-12:
                same[own] += 1
                continue
            for name, value in (("n_att", got.attribute_matches), ("n_opt", got.option_matches),
                                ("r_type", got.r_type)):
                parts[name] += value != ref[name]
        own_total = out["own_product_triples"]
        out[mode] = {"agreement": round((same[True] + same[False]) / len(triples), 6),
                     "agreement_own_product": round(same[True] / own_total, 6),
                     "agreement_other_products": round(same[False] / (len(triples) - own_total), 6),
                     "differing": len(triples) - same[True] - same[False], "differing_in": parts}
    return out


def model_eval(model: str, episodes: int, output: Path) -> dict:
    command = ["turnrl", "eval", "--env", "webshop", "--model", model, "--episodes", str(episodes), "--split", "test",
               "--context", "window:2", "--max-turns", "15", "--output", str(output)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    summary = json.loads(output.read_text())
    return {key: summary[key] for key in ("success_rate", "mean_score", "mean_turns", "invalid_action_rate")
            if key in summary} | {"episodes": episodes, "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=500, help="test goals for the scripted policies")
    parser.add_argument("--products-100k", type=int, default=100_000, help="size of the large search catalogue")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--all-goals", action="store_true", help="play the expert on every shipped goal")
    parser.add_argument("--model", default=None, help="also evaluate this model with `turnrl eval`")
    parser.add_argument("--model-episodes", type=int, default=30)
    parser.add_argument("--sft-episodes", type=int, default=0, help="behaviour-clone the model first (0: skip)")
    parser.add_argument("--sft-epochs", type=float, default=2.0)
    parser.add_argument("--workdir", default=None, help="where model runs write (default: a temporary folder)")
    parser.add_argument("--agreement-only", action="store_true",
                        help="only compare the reward with the original formula (reward_agreement)")
    args = parser.parse_args(argv)
    if args.agreement_only:
        out = {"reward_agreement": reward_agreement()}
        print(json.dumps(out))
        return out

    from turnrl.environments import make_env
    from turnrl.environments.webshop import catalogue, search
    from turnrl.environments.webshop.engine import TOP_HITS

    out: dict = {}
    start = time.perf_counter()
    env = make_env("webshop", progress=False)
    out["first_env_s"] = round(time.perf_counter() - start, 3)   # catalogue + index: generated or loaded
    start = time.perf_counter()
    make_env("webshop")
    out["second_env_ms"] = round((time.perf_counter() - start) * 1000, 3)

    tasks = env.tasks("test")[: args.episodes]
    resets = []
    for task in tasks:
        start = time.perf_counter()
        env.reset(task=task, seed=0)
        resets.append(time.perf_counter() - start)
    out["reset_ms_median"] = round(statistics.median(resets) * 1000, 4)

    step_times: list[float] = []
    out["expert"] = policy_scores(env, tasks, lambda e: e.expert_action(), step_times)
    rng = random.Random(0)
    out["random"] = policy_scores(env, tasks, lambda e: rng.choice(e.admissible_actions()), step_times)
    out["step_ms_median"] = round(statistics.median(step_times) * 1000, 4)
    out["step_ms_p95"] = round(sorted(step_times)[int(0.95 * len(step_times))] * 1000, 4)
    out["first_result_with_options"] = first_result_baseline(env, tasks, choose_options=True)
    out["first_result_rule"] = first_result_baseline(env, tasks, choose_options=False)
    out["reward_agreement"] = reward_agreement()
    if args.all_goals:
        everything = env.tasks("all")
        out["expert_all_goals"] = policy_scores(env, everything, lambda e: e.expert_action(), [])

    queries = [env.shared.data.goals[task].instruction for task in tasks[: args.queries]]
    timings = []
    for query in queries:
        start = time.perf_counter()
        env.shared.index.search(query, TOP_HITS)
        timings.append(time.perf_counter() - start)
    out["search_ms_shipped"] = round(statistics.median(timings) * 1000, 3)
    out["shipped_products"] = len(env.products)
    out["shipped_goals"] = {split: len(env.tasks(split)) for split in ("train", "eval", "test")}

    if args.products_100k:
        start = time.perf_counter()
        records, _, _ = catalogue.generate(args.products_100k, goals_per_product=0)
        out["generate_100k_s"] = round(time.perf_counter() - start, 2)
        texts = [search.document_text(r["name"], r["full_description"], r["small_description"],
                                      {n: [v["value"].lower() for v in vs] for n, vs in
                                       r["customization_options"].items()}) for r in records]
        start = time.perf_counter()
        index = search.SearchIndex.build([r["asin"] for r in records], texts, progress=False)
        out["index_build_100k_s"] = round(time.perf_counter() - start, 2)
        with tempfile.TemporaryDirectory() as folder:
            index.save(Path(folder))
            start = time.perf_counter()
            index = search.SearchIndex.load(Path(folder))
            out["index_load_100k_s"] = round(time.perf_counter() - start, 3)
        timings = []
        for query in queries:
            start = time.perf_counter()
            index.search(query, TOP_HITS)
            timings.append(time.perf_counter() - start)
        out["search_ms_100k"] = round(statistics.median(timings) * 1000, 3)
        out["products_100k"] = len(records)

    if args.model:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="webshop-bench-"))
        out["model"] = {"zero_shot": model_eval(args.model, args.model_episodes, workdir / "zero_shot.json")}
        if args.sft_episodes:
            start = time.perf_counter()
            subprocess.run(["turnrl", "sft", "--env", "webshop", "--model", args.model, "--episodes",
                            str(args.sft_episodes), "--context", "window:2", "--max-turns", "15", "--epochs",
                            str(args.sft_epochs), "--output-dir", str(workdir / "sft")], check=True)
            out["model"]["sft_seconds"] = round(time.perf_counter() - start, 1)
            out["model"]["sft"] = model_eval(str(workdir / "sft" / "final"), args.model_episodes,
                                             workdir / "after_sft.json")
            out["model"]["sft_episodes"], out["model"]["sft_epochs"] = args.sft_episodes, args.sft_epochs

    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
