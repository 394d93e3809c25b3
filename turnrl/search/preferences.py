"""Step-level preference pairs from search trees (Agent Q, Putta et al. 2024, §5.2 and Alg. 1).

At every node h_t, each pair of explored children (visited at least `min_visits` times) whose blended values
differ by more than θ gives a pair (h_t, a^w, a^l) with |Q(h_t, a^w) − Q(h_t, a^l)| > θ, a^w the higher. Pairs are
only ever between siblings: the same prompt, two actions. The paper does not give θ; the default 0.1 is a tenth
of the range of the outcome reward R ∈ {0, 1}.

Each pair keeps the exact token ids: `prompt_ids` is the prompt the policy saw at h_t (built by
`agents/prompts.py`, as in rollouts), `chosen_ids`/`rejected_ids` the ids it generated, and
`chosen_logps`/`rejected_logps` the sums of their recorded behaviour log-probs (at `temperature`), which step-level
DPO may use as the reference (`algorithms/dpo.py`). The text columns are decoded from those ids, for reading.
"""

from __future__ import annotations

from turnrl.search.mcts import Node, SearchTree

DEFAULT_THRESHOLD = 0.1


def _nodes(root: Node):
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def preference_pairs(trees: list[SearchTree], tokenizer, *, threshold: float = DEFAULT_THRESHOLD,
                     min_visits: int = 1, temperature: float = 1.0) -> list[dict]:
    """Every sibling pair with |ΔQ| > `threshold`, as dataset rows (see the module docstring); trees whose
    environment failed (`SearchTree.error`) give none."""
    if threshold < 0 or min_visits < 0:
        raise ValueError(f"preference_pairs: threshold and min_visits must be >= 0 (got {threshold}, {min_visits})")
    rows = []
    for tree in trees:
        if tree.error is not None:   # a search its environment failed gives no data
            continue
        for node in _nodes(tree.root):
            explored = [child for child in node.children if child.visits >= min_visits]
            for i, first in enumerate(explored):
                for second in explored[i + 1:]:
                    delta = first.value(tree.alpha) - second.value(tree.alpha)
                    if abs(delta) <= threshold:
                        continue
                    win, lose = (first, second) if delta > 0 else (second, first)
                    rows.append(_row(tree, node, win, lose, abs(delta), tokenizer, temperature))
    return rows


def sibling_pair_count(trees: list[SearchTree], *, min_visits: int = 1) -> int:
    """How many sibling pairs of explored children the trees hold (the denominator of the share with |ΔQ| > θ)."""
    total = 0
    for tree in trees:
        if tree.error is not None:
            continue
        for node in _nodes(tree.root):
            n = sum(child.visits >= min_visits for child in node.children)
            total += n * (n - 1) // 2
    return total


def _row(tree: SearchTree, node: Node, win: Node, lose: Node, delta: float, tokenizer, temperature: float) -> dict:
    prompt = list(node.state.prompt)
    return {
        "task": str(tree.task), "node": node.id, "depth": node.state.depth,
        "prompt": tokenizer.decode(prompt, skip_special_tokens=False),
        "chosen": win.turn.response, "rejected": lose.turn.response,
        "chosen_action": win.key, "rejected_action": lose.key,
        "delta_q": float(delta), "q_chosen": float(win.value(tree.alpha)), "q_rejected": float(lose.value(tree.alpha)),
        "prompt_ids": prompt, "chosen_ids": list(win.turn.completion_ids), "rejected_ids": list(lose.turn.completion_ids),
        "chosen_logps": float(sum(win.turn.logprobs)), "rejected_logps": float(sum(lose.turn.logprobs)),
        "temperature": float(temperature),
    }


def pair_features():
    """The typed columns of a pairs dataset (so that an empty one keeps its schema on disk)."""
    from datasets import Features, Sequence, Value

    text, number, ids = Value("string"), Value("float64"), Sequence(Value("int64"))
    return Features({"task": text, "node": Value("int64"), "depth": Value("int64"), "prompt": text, "chosen": text,
                     "rejected": text, "chosen_action": text, "rejected_action": text, "delta_q": number,
                     "q_chosen": number, "q_rejected": number, "prompt_ids": ids, "chosen_ids": ids,
                     "rejected_ids": ids, "chosen_logps": number, "rejected_logps": number, "temperature": number})


def preference_dataset(rows: list[dict]):
    """The pairs as a `datasets.Dataset` with `pair_features()` (an empty one keeps the columns)."""
    from datasets import Dataset

    features = pair_features()
    if not rows:
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list(rows, features=features)


def save_pairs(dataset, path) -> None:
    """`save_to_disk`, with an empty dataset written as one shard (datasets cannot load zero shards back)."""
    dataset.save_to_disk(str(path), **({"num_shards": 1} if len(dataset) == 0 else {}))
