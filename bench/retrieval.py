"""Search-QA retrieval: recall@3 of BM25 vs dense (all-MiniLM-L6-v2) on the shipped test questions, and the
dense retriever's query latency at 100,000 passages.

    python bench/retrieval.py [--latency-passages 100000] [--queries 200] [--threads 1]

Recall@3: the question text is the query; a hit is a supporting passage's title among the top 3 (questions
without supporting titles are left out). Latency: one query at a time (embed the query, one matrix-vector
product over the index, top-k, read 3 passages), median and 95th percentile over `--queries` test questions.
The 100,000-row index repeats the shipped corpus's 5,000 real embeddings (with a little noise): a search's
cost depends only on the index's shape, and embedding 100,000 passages takes an hour on two CPU cores.
The last line printed is a JSON object of the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from turnrl.environments.searchqa.data import load_questions, shipped_paths
from turnrl.environments.searchqa.dense import DenseRetriever
from turnrl.environments.searchqa.retriever import BM25Retriever


def recall_at(retriever, questions, k: int = 3) -> float:
    hits = [bool({p.title for p in retriever.search(q.question, k)} & set(q.supporting_titles)) for q in questions]
    return sum(hits) / len(hits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the query encoder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    corpus, questions_path = shipped_paths()
    test = [q for q in load_questions(questions_path) if q.split == "test" and q.supporting_titles]
    bm25 = BM25Retriever.shared(corpus)
    dense = DenseRetriever.shared(corpus)
    recall = {"bm25": recall_at(bm25, test), "dense": recall_at(dense, test)}
    print(f"recall@3 on {len(test)} test questions: BM25 {recall['bm25']:.3f}, dense {recall['dense']:.3f}")

    base = dense.embeddings
    repeats = -(-args.latency_passages // len(base))
    rng = np.random.default_rng(0)
    big = np.tile(base, (repeats, 1))[:args.latency_passages]
    big = big + rng.normal(0, 1e-3, big.shape).astype(np.float32)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    dense.embeddings = big
    dense.n_passages = args.latency_passages
    # Row i of the big index is passage i mod 5,000 of the corpus file.
    original = dense.passage
    dense.passage = lambda index, score=0.0: original(index % len(base), score)

    queries = [q.question for q in test][:args.queries]
    for query in queries[:5]:  # warm up
        dense.search(query, 3)
    times = []
    for query in queries:
        start = time.perf_counter()
        dense.search(query, 3)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    latency = {"median_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))]}
    print(f"dense query latency at {args.latency_passages:,} passages ({args.threads} thread(s)): "
          f"median {latency['median_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms (target <= 20 ms)")
    print(json.dumps({"test_questions": len(test), "recall_at_3_bm25": round(recall["bm25"], 4),
                      "recall_at_3_dense": round(recall["dense"], 4), "latency_passages": args.latency_passages,
                      "threads": args.threads, "dense_latency_median_ms": round(latency["median_ms"], 2),
                      "dense_latency_p95_ms": round(latency["p95_ms"], 2)}))


if __name__ == "__main__":
    main()
