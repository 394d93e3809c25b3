"""Search-QA: retrieval latency and index build time on the shipped corpus and on a generated
100,000-passage corpus, and exact match on the test questions for the expert and random policies
(optionally for models).

    python bench/searchqa.py [--passages 100000] [--queries 1000] [--model smollm2-135m --model-episodes 30]

Latency is the wall time of `BM25Retriever.search(query, k=3)` (bm25s, one thread, passages read back
from the corpus file), averaged over `--queries` queries: the test questions' text and the titles of
their supporting passages, in turn. Index builds run in a fresh temporary cache, so they are cold builds
(tokenise + index + save). The last line printed is a JSON object with `query_ms_100k`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time


def query_ms(retriever, queries: list[str], k: int = 3) -> float:
    retriever.search(queries[0], k)  # warm-up
    start = time.perf_counter()
    for query in queries:
        retriever.search(query, k)
    return (time.perf_counter() - start) / len(queries) * 1000


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=100_000, help="size of the large generated corpus")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random policy")
    parser.add_argument("--model", action="append", default=[],
                        help="also evaluate this model (alias, hub id or path; repeatable)")
    parser.add_argument("--model-episodes", type=int, default=30, help="test questions per model")
    parser.add_argument("--context", default="window:2")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args(argv)

    # Everything built here goes to a fresh cache, removed at the end: cold builds, the user's cache untouched.
    cache = tempfile.mkdtemp(prefix="turnrl-bench-searchqa-")
    os.environ["TURNRL_CACHE"] = cache
    try:
        return run(args)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def run(args) -> dict:
    from turnrl.agents.rollout import EpisodeSpec, expert_choice, random_choice, scripted_rollout
    from turnrl.environments.searchqa import BM25Retriever, SearchQAEnv
    from turnrl.environments.searchqa.data import generated_corpus, shipped_paths
    from turnrl.episode import summarize

    results: dict = {}
    start = time.perf_counter()
    corpus, _ = shipped_paths()
    results["generate_shipped_s"] = time.perf_counter() - start
    start = time.perf_counter()
    shipped = BM25Retriever(corpus, show_progress=False)
    results["index_build_shipped_s"] = time.perf_counter() - start
    results["passages_shipped"] = shipped.n_passages

    env = SearchQAEnv()
    test = env.tasks("test")
    questions = [env.questions[i] for i in test]
    pool = [q.question for q in questions] + [t for q in questions for t in q.supporting_titles]
    queries = [pool[i % len(pool)] for i in range(args.queries)]
    results["query_ms_shipped"] = query_ms(shipped, queries)

    start = time.perf_counter()
    large_corpus = generated_corpus(args.passages)
    results["generate_100k_s"] = time.perf_counter() - start
    start = time.perf_counter()
    large = BM25Retriever(large_corpus, show_progress=False)
    results["index_build_100k_s"] = time.perf_counter() - start
    results["passages_100k"] = large.n_passages
    start = time.perf_counter()
    BM25Retriever(large_corpus, show_progress=False)
    results["index_load_100k_s"] = time.perf_counter() - start
    results["query_ms_100k"] = query_ms(large, queries)
    del large

    specs = [EpisodeSpec(task, 0, g) for g, task in enumerate(test)]
    for name, choose in (("expert", expert_choice), ("random", random_choice(args.seed))):
        start = time.perf_counter()
        played = scripted_rollout([env] * len(specs), specs, choose, env_name="searchqa", max_turns=env.max_turns)
        summary = summarize(played)
        results[f"{name}_em"] = summary["success_rate"]
        results[f"{name}_mean_turns"] = summary["mean_turns"]
        results[f"{name}_s"] = time.perf_counter() - start
    results["test_questions"] = len(test)

    for model_name in args.model:
        from turnrl.agents.models import load_model
        from turnrl.agents.policy import Policy
        from turnrl.agents.rollout import evaluate

        model, tokenizer = load_model(model_name, progress=False)
        policy = Policy(model, tokenizer, temperature=0.0, max_new_tokens=args.max_new_tokens)
        start = time.perf_counter()
        played = evaluate(policy, "searchqa", test[: args.model_episodes], context=args.context,
                          max_turns=env.max_turns, batch_size=args.model_episodes)
        summary = summarize(played)
        key = os.path.basename(os.path.normpath(model_name)).replace("-", "_")
        results[f"{key}_em"] = summary["success_rate"]
        results[f"{key}_invalid_rate"] = summary["invalid_action_rate"]
        results[f"{key}_episodes"] = summary["episodes"]
        results[f"{key}_s"] = time.perf_counter() - start

    for key, value in results.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}", file=sys.stderr)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}))
    return results


if __name__ == "__main__":
    main()
