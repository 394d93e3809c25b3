"""Agent Q's tree search: UCB1, backup and blended values by hand; the critique parser on arbitrary text; the
search finding a toy environment's only winning path; pairs only between siblings with |ΔQ| > θ; episodes in the
trainer's format; batching that changes nothing but the number of generate calls."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from turnrl.agents.models import load_model
from turnrl.agents.policy import Completion
from turnrl.episode import Episode, episode_samples
from turnrl.search import (
    SearchConfig,
    TreeSearch,
    act_by_search,
    best_episodes,
    blended_value,
    drive,
    preference_dataset,
    preference_pairs,
    running_mean,
    search_tasks,
    ucb1,
)
from turnrl.search.critique import (
    linear_rank_value,
    parse_choice,
    ranking_dialogue,
    reciprocal_rank_value,
)
from turnrl.search.mcts import Node


@pytest.fixture(scope="module")
def tokenizer():
    return load_model("tiny")[1]


class RandomAdmissible:
    """A stand-in policy: a uniformly random admissible action of each row's environment, written as a model
    would (`<action>…</action>` and the end-of-turn token), with its log-prob spread over the tokens."""

    def __init__(self, tokenizer, seed=0):
        self.tokenizer, self.rng = tokenizer, random.Random(seed)
        self.device, self.max_new_tokens, self.calls, self.rows = torch.device("cpu"), 16, 0, 0

    def generate(self, prompts, *, generator=None, envs=None):
        self.calls, self.rows = self.calls + 1, self.rows + len(prompts)
        out = []
        for env in envs:
            actions = env.admissible_actions()
            text = f"<action>{self.rng.choice(actions)}</action>"
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            out.append(Completion(ids, [math.log(1 / len(actions)) / len(ids)] * len(ids), text, True))
        return out


class LampCritic:
    """A perfect critic for `corridor`: reads the lamp from the prompt and names the right move's number."""

    def __init__(self, tokenizer):
        self.tokenizer, self.device = tokenizer, torch.device("cpu")
        self.moves = {"red": "push", "yellow": "knock", "green": "pull"}

    def generate(self, prompts, *, generator=None, envs=None):
        out = []
        for prompt in prompts:
            text = self.tokenizer.decode(prompt)
            lamp = text.rsplit(" lamp.", 1)[0].split()[-1]
            lines = [line for line in text.splitlines() if line[:1].isdigit() and ". " in line]
            number = next((line.split(".")[0] for line in lines if line.endswith(self.moves.get(lamp, "?"))), "1")
            out.append(Completion([], [], f"<best>{number}</best>", True))
        return out


# --- pure maths -------------------------------------------------------------------------------------------


def test_ucb1_by_hand():
    assert ucb1(0.5, 8, 3, 1.0) == pytest.approx(0.5 + math.sqrt(math.log(8) / 4))
    assert ucb1(0.2, 1, 0, 2.0) == pytest.approx(0.2)       # log 1 = 0: no exploration bonus
    assert ucb1(0.2, 0, 0, 2.0) == pytest.approx(0.2)       # N(h_t) = 0 is read as 1, not log 0
    assert ucb1(0.0, 10, 0, 1.0) > ucb1(0.0, 10, 5, 1.0)     # less visited, larger bonus


def test_running_mean_and_blend_by_hand():
    q = 0.0
    for n, r in enumerate([1.0, 0.0, 1.0, 1.0]):
        q = running_mean(q, n, r)
    assert q == pytest.approx(0.75)
    assert blended_value(0.75, 0.25, 0.5) == pytest.approx(0.5)
    assert blended_value(0.75, 0.25, 0.2) == pytest.approx(0.2 * 0.75 + 0.8 * 0.25)
    assert blended_value(0.75, None, 0.5) == 0.75 and blended_value(0.75, 0.0, 1.0) == 0.75


def test_backup_gives_each_node_the_rewards_from_its_turn_on():
    from turnrl.episode import Turn
    from turnrl.search.mcts import Conversation

    def node(reward):
        turn = Turn("o", "r", "a", [], [], reward=reward)
        return Node(0, None, turn, "a", Conversation("t", "o"), None)

    root, a, b = Node(0, None, None, None, Conversation("t", "o"), None), node(0.25), node(0.5)
    TreeSearch.backup([root, a, b], tail=1.0)
    assert (root.q_mcts, a.q_mcts, b.q_mcts) == (1.75, 1.75, 1.5)
    TreeSearch.backup([root, a], tail=0.0)
    assert (root.visits, a.visits, b.visits) == (2, 2, 1)
    assert a.q_mcts == pytest.approx((1.75 + 0.25) / 2)


def test_rank_values():
    assert [linear_rank_value(r, 4) for r in range(4)] == pytest.approx([1, 2 / 3, 1 / 3, 0])
    assert linear_rank_value(0, 1) == 1.0
    assert [reciprocal_rank_value(r, 3) for r in range(3)] == pytest.approx([1, 0.5, 1 / 3])


def test_config_errors_name_the_choices():
    with pytest.raises(ValueError, match="linear, reciprocal"):
        SearchConfig(rank_value="cubic")
    with pytest.raises(ValueError, match="all, request, row"):
        SearchConfig(batching="some")
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        SearchConfig(alpha=1.5)


# --- the critique parser ----------------------------------------------------------------------------------


def test_parse_choice_reads_the_tag_then_any_number():
    assert parse_choice("<think>2 looks bad</think><best>3</best>", 4) == 2
    assert parse_choice("<BEST> #1 </BEST>", 4) == 0
    assert parse_choice("I'd go with 2.", 3) == 1
    assert parse_choice("<best>9</best> or maybe 2", 3) == 1
    assert parse_choice("none of them", 3) is None
    assert parse_choice("<best>0</best>", 3) is None


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=200), st.from_regex(r".{0,20}<best>.{0,10}</best>.{0,20}")),
       n=st.integers(0, 12))
def test_parse_choice_never_crashes_and_stays_in_range(text, n):
    choice = parse_choice(text, n)
    assert choice is None or 0 <= choice < n


@settings(max_examples=100, deadline=None)
@given(replies=st.lists(st.text(max_size=30), min_size=5, max_size=5), n=st.integers(1, 6))
def test_ranking_dialogue_always_gives_a_permutation(replies, n):
    dialogue = ranking_dialogue("", "task", [], "obs", [f"act {i}" for i in range(n)])
    asked = 0
    try:
        messages = next(dialogue)
        while True:
            assert "Candidate next actions" in messages[-1]["content"]
            asked += 1
            messages = dialogue.send(replies[asked % 5])
    except StopIteration as stop:
        ranking, unread = stop.value
    assert sorted(ranking) == list(range(n)) and asked == n - 1 and 0 <= unread <= asked


def test_ranking_removes_the_previous_best():
    dialogue = ranking_dialogue("", "task", [], "obs", ["a", "b", "c"])
    first = next(dialogue)[-1]["content"]
    assert "1. a" in first and "3. c" in first
    second = dialogue.send("<best>2</best>")[-1]["content"]       # b is best; asked again about a and c
    assert [line for line in second.splitlines() if line[:1].isdigit()] == ["1. a", "2. c"]
    with pytest.raises(StopIteration) as stop:
        dialogue.send("<best>2</best>")
    assert stop.value.value == ([1, 2, 0], 0)


# --- search on a toy environment with a known best path -------------------------------------------------


CORRIDOR = {"n_doors": 3, "max_steps": 3}   # one wrong move and the episode cannot be won: 1 winning path of 27


def winning_moves(task):
    from turnrl.environments import make_env

    env = make_env("corridor", **CORRIDOR)
    env.reset(task=task, seed=0)
    moves = []
    while (move := env.expert_action()) is not None:
        moves.append(move)
        env.step(move)
    return moves


def test_search_finds_the_only_winning_path_within_the_budget(tokenizer):
    policy = RandomAdmissible(tokenizer, seed=1)
    config = SearchConfig(simulations=40, branching=3, expansion_rounds=8, alpha=1.0, max_turns=3, context="window:2")
    trees = search_tasks(policy, "corridor", [0, 1], config, env_kwargs=CORRIDOR)
    for tree, task in zip(trees, [0, 1]):
        assert tree.best_return == 1.0
        chosen = tree.mark_chosen()
        assert [node.key for node in chosen[1:]] == winning_moves(task)
        assert tree.simulations == 40 and tree.critic_questions == 0   # alpha = 1: no critic


def test_a_perfect_critic_finds_the_path_with_few_simulations(tokenizer):
    policy = RandomAdmissible(tokenizer, seed=2)
    config = SearchConfig(simulations=3, branching=3, expansion_rounds=8, alpha=0.5, max_turns=3, context="window:2",
                          exploration=0.1)
    [tree] = search_tasks(policy, "corridor", [4], config, env_kwargs=CORRIDOR, critic=LampCritic(tokenizer))
    assert tree.best_return == 1.0
    assert [node.key for node in tree.mark_chosen()[1:]] == winning_moves(4)
    first = tree.root.children
    assert sorted(child.rank for child in first) == [0, 1, 2]
    best = min(first, key=lambda c: c.rank)
    assert best.q_critic == 1.0 and best.key == winning_moves(4)[0]


def test_expansion_proposes_distinct_actions(tokenizer):
    policy = RandomAdmissible(tokenizer, seed=3)
    config = SearchConfig(simulations=6, branching=3, expansion_rounds=4, alpha=1.0, max_turns=3, context="window:2")
    [tree] = search_tasks(policy, "corridor", [2], config, env_kwargs=CORRIDOR)
    stack = [tree.root]
    while stack:
        node = stack.pop()
        keys = [child.key for child in node.children]
        assert len(keys) == len(set(keys)) <= 3
        stack += node.children


def test_pairs_are_between_siblings_only_and_beyond_the_threshold(tokenizer):
    policy = RandomAdmissible(tokenizer, seed=1)
    config = SearchConfig(simulations=40, branching=3, expansion_rounds=8, alpha=1.0, max_turns=3, context="window:2")
    trees = search_tasks(policy, "corridor", [0], config, env_kwargs=CORRIDOR)
    by_id = {}
    stack = [trees[0].root]
    while stack:
        node = stack.pop()
        by_id[node.id] = node
        stack += node.children
    for threshold in (0.0, 0.3):
        rows = preference_pairs(trees, tokenizer, threshold=threshold)
        assert rows
        for row in rows:
            parent = by_id[row["node"]]
            children = {child.key: child for child in parent.children}
            win, lose = children[row["chosen_action"]], children[row["rejected_action"]]
            assert win.parent is lose.parent is parent and win is not lose
            assert row["delta_q"] == pytest.approx(win.value(1.0) - lose.value(1.0)) and row["delta_q"] > threshold
            assert row["prompt_ids"] == parent.state.prompt and row["chosen_ids"] == win.turn.completion_ids
            assert row["chosen_logps"] == pytest.approx(sum(win.turn.logprobs))
    high = preference_pairs(trees, tokenizer, threshold=0.3)
    assert len(high) <= len(preference_pairs(trees, tokenizer, threshold=0.0))
    dataset = preference_dataset(high)
    assert {"prompt", "chosen", "rejected", "delta_q", "depth"} <= set(dataset.column_names)


@pytest.mark.parametrize("context", ["full", "window:2"])
def test_best_episodes_are_in_the_trainer_format(tokenizer, context):
    policy = RandomAdmissible(tokenizer, seed=1)
    config = SearchConfig(simulations=30, branching=3, expansion_rounds=8, alpha=1.0, max_turns=3, context=context)
    trees = search_tasks(policy, "corridor", [0], config, env_kwargs=CORRIDOR)
    [episode] = best_episodes(trees, "corridor", context)
    assert episode.success and [t.action for t in episode.turns] == winning_moves(0)
    again = Episode.from_json(episode.to_json())
    assert again == episode
    samples = episode_samples(again, [1.0] * len(again.turns), 0)
    for sample in samples:        # every agent token has its behaviour log-prob and the ids are as generated
        agent = [lp for lp, m in zip(sample.behaviour_logprobs, sample.loss_mask) if m]
        assert len(agent) == sum(sample.loss_mask) and all(lp < 0 for lp in agent)
    if context == "full":
        for turn in again.turns:
            assert again.token_ids[turn.span[0]: turn.span[1]] == turn.completion_ids


def test_full_context_ids_match_a_rollout_of_the_same_actions(tokenizer):
    """A path of the tree holds exactly the token ids `rollout` records for the same responses."""
    from turnrl.agents.rollout import EpisodeSpec, rollout
    from turnrl.environments import make_env

    policy = RandomAdmissible(tokenizer, seed=1)
    config = SearchConfig(simulations=30, branching=3, expansion_rounds=8, alpha=1.0, max_turns=3, context="full")
    [episode] = best_episodes(search_tasks(policy, "corridor", [0], config, env_kwargs=CORRIDOR), "corridor", "full")

    class Replay(RandomAdmissible):
        def __init__(self, turns):
            super().__init__(tokenizer)
            self.turns = list(turns)

        def generate(self, prompts, *, generator=None, envs=None, cache=None):
            turn = self.turns.pop(0)
            return [Completion(turn.completion_ids, turn.logprobs, turn.response, True)]

    [replayed] = rollout(Replay(episode.turns), [make_env("corridor", **CORRIDOR)], [EpisodeSpec(0, 0, 0)],
                         env_name="corridor", context="full", max_turns=3, cross_turn_cache=False)
    assert replayed.token_ids == episode.token_ids
    assert [t.span for t in replayed.turns] == [t.span for t in episode.turns]


def test_batching_changes_only_the_number_of_generate_calls(tokenizer):
    results = {}
    for batching in ("all", "request", "row"):
        policy = RandomAdmissible(tokenizer, seed=5)
        config = SearchConfig(simulations=5, branching=3, alpha=1.0, max_turns=3, context="window:2",
                              batching=batching)
        trees = search_tasks(policy, "corridor", [0, 1, 2], config, env_kwargs=CORRIDOR)
        results[batching] = (policy.calls, policy.rows, [t.nodes for t in trees], [t.env_steps for t in trees])
    assert results["all"][1] == results["request"][1] == results["row"][1]      # the same rows generated
    assert results["all"][0] < results["request"][0] < results["row"][0]        # in fewer calls
    assert results["row"][0] == results["row"][1]


def test_drive_returns_each_generators_value():
    class Echo:
        calls = 0

        def generate(self, prompts, *, generator=None, envs=None):
            Echo.calls += 1
            return [Completion(p, [], str(len(p)), True) for p in prompts]

    policy = Echo()

    def ask(n):
        from turnrl.search.mcts import Request

        replies = yield Request(policy, [[0] * n, [0] * (n + 1)])
        return [c.text for c in replies]

    assert drive([ask(1), ask(3)]) == [["1", "2"], ["3", "4"]]
    assert Echo.calls == 1


def test_act_by_search_wins_the_corridor(tokenizer):
    policy = RandomAdmissible(tokenizer, seed=0)
    config = SearchConfig(simulations=12, branching=3, expansion_rounds=8, alpha=1.0, max_turns=3, context="window:2")
    episodes, trees = act_by_search(policy, "corridor", [0, 1], config, env_kwargs=CORRIDOR)
    assert all(e.success for e in episodes)
    assert [t.action for t in episodes[0].turns] == winning_moves(0)
    assert all(tree.env_steps >= 3 for tree in trees)


def test_search_with_the_tiny_model_and_its_own_critic(tokenizer):
    """The real path: a model proposes, the same model critiques (its replies are noise; the parser copes)."""
    from turnrl.agents.policy import Policy

    model, tok = load_model("tiny")
    policy = Policy(model, tok, temperature=1.0, max_new_tokens=8)
    config = SearchConfig(simulations=3, branching=2, alpha=0.5, max_turns=2, critic_max_new_tokens=4)
    trees = search_tasks(policy, "lights", [0, 1], config)
    assert all(tree.simulations == 3 and tree.nodes >= 2 for tree in trees)
    assert all(tree.critic_questions == tree.critic_unread + (tree.critic_questions - tree.critic_unread)
               for tree in trees)
    tree_json = trees[0].to_json()
    assert tree_json["root"]["visits"] == 3 and tree_json["root"]["chosen"]
    assert {"id", "parent", "action", "visits", "value", "q", "chosen", "children"} <= set(tree_json["root"])


# --- a failing environment costs its own tree, not the search (issue: fault isolation) ---------------------

class FlakyCorridor:
    """The corridor, failing on chosen tasks: `raise` in step, `nan` reward, `hang` (a step that sleeps past
    the search's step_timeout), `reset` (raises in reset) or `restore` (raises in restore)."""

    def __init__(self, failures: dict, **kwargs):
        from turnrl.environments.toy.corridor import CorridorEnv

        self.inner, self.failures, self.task = CorridorEnv(**kwargs), failures, None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def reset(self, task=None, seed=None):
        self.task = task
        if self.failures.get(task) == "reset":
            raise OSError("the simulator did not start")
        return self.inner.reset(task=task, seed=seed)

    def step(self, action):
        how = self.failures.get(self.task)
        if how == "raise" and self.inner._steps >= 1:
            raise RuntimeError("tool crashed")
        if how == "hang":
            import time

            time.sleep(1.0)
        result = self.inner.step(action)
        if how == "nan":
            result.reward = float("nan")
        return result

    def restore(self, snapshot):
        if self.failures.get(self.task) == "restore":
            raise KeyError("snapshot lost")
        return self.inner.restore(snapshot)


@pytest.fixture
def flaky_env():
    from turnrl.environments.registry import _FACTORIES, register_env

    failures = {}
    register_env("flaky-corridor", lambda **kw: FlakyCorridor(failures, **kw), overwrite=True)
    yield failures
    _FACTORIES.pop("flaky-corridor", None)


@pytest.mark.parametrize("how, cause", [("raise", "step: RuntimeError: tool crashed"), ("nan", "malformed: reward"),
                                        ("hang", "timeout"), ("reset", "reset: OSError"),
                                        ("restore", "step: KeyError")])
def test_a_failing_environment_costs_its_own_tree_only(tokenizer, flaky_env, how, cause):
    flaky_env[1] = how
    config = SearchConfig(simulations=12, branching=3, expansion_rounds=8, alpha=1.0, max_turns=3, context="window:2",
                          step_timeout=0.3)
    alone = search_tasks(RandomAdmissible(tokenizer, seed=1), "corridor", [0, 2], config, env_kwargs=CORRIDOR)
    trees = search_tasks(RandomAdmissible(tokenizer, seed=1), "flaky-corridor", [0, 1, 2], config,
                         env_kwargs=CORRIDOR, batch_size=2)   # task 2 reuses the failed tree's slot: a fresh env
    assert trees[1].error is not None and trees[1].error.startswith(cause), trees[1].error
    assert trees[0].error is None and trees[2].error is None
    assert [t.best_return for t in (trees[0], trees[2])] == [1.0, 1.0] == [t.best_return for t in alone]
    episodes = best_episodes(trees, "flaky-corridor", "window:2")
    assert [e.task for e in episodes] == [0, 2]
    assert all(row["depth"] >= 0 for row in preference_pairs(trees, tokenizer, threshold=0.0))
    assert not preference_pairs([trees[1]], tokenizer, threshold=0.0)
    assert trees[1].to_json()["error"] == trees[1].error


def test_acting_by_search_records_a_failed_episode_and_goes_on(tokenizer, flaky_env):
    flaky_env[1] = "raise"
    config = SearchConfig(simulations=12, branching=3, expansion_rounds=8, alpha=1.0, max_turns=3, context="window:2")
    episodes, trees = act_by_search(RandomAdmissible(tokenizer, seed=0), "flaky-corridor", [0, 1], config,
                                    env_kwargs=CORRIDOR)
    assert not episodes[0].failed and episodes[0].turns and episodes[0].stop_reason in ("done", "max_turns")
    assert episodes[1].failed and episodes[1].error.startswith("step: RuntimeError: tool crashed")
    assert trees[1].error == episodes[1].error


def test_a_tree_does_not_depend_on_the_trees_beside_it_or_the_batching(tokenizer):
    """Each tree samples from its own generator (seed, task number): the tiny model's trees are the same searched
    4 together, one at a time, or served one node or one row at a time."""
    from turnrl.agents.policy import Policy

    model, _ = load_model("tiny")
    policy = Policy(model, tokenizer, temperature=1.0, max_new_tokens=8)

    def shape(trees):
        return [json.dumps(t.to_json(), sort_keys=True, default=str) for t in trees]

    base = {"simulations": 3, "branching": 2, "alpha": 1.0, "max_turns": 2, "context": "window:2"}
    together = search_tasks(policy, "lights", [0, 1, 2, 3], SearchConfig(**base), batch_size=4)
    alone = search_tasks(policy, "lights", [0, 1, 2, 3], SearchConfig(**base), batch_size=1)
    by_node = search_tasks(policy, "lights", [0, 1, 2, 3], SearchConfig(**base, batching="request"), batch_size=4)
    by_row = search_tasks(policy, "lights", [0, 1, 2, 3], SearchConfig(**base, batching="row"), batch_size=4)
    assert shape(together) == shape(alone) == shape(by_node) == shape(by_row)
    other_seed = search_tasks(policy, "lights", [0, 1, 2, 3], SearchConfig(**base), batch_size=4, seed=1)
    assert shape(other_seed) != shape(together)
