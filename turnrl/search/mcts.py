"""Agent Q's guided Monte-Carlo tree search over environment snapshots (Putta et al. 2024, arXiv 2408.07199, §5).

A node is a state reached by a sequence of agent turns: the action history, the environment's snapshot there
(`Environment.snapshot`, a copy of the state for the shipped environments) and the conversation the policy sees
next, kept token by token exactly as `agents/rollout.py` keeps it, so that a path of the tree is an `Episode`
with behaviour log-probs that the trainers accept. One simulation:

1. **Selection** from the root by UCB1 (Eq. 7), not PUCT:
   a* = argmax_a [ Q(h_t, a) + c_exp · sqrt( log N(h_t) / (1 + N(h_{t+1})) ) ], N(h_t) = Σ_i N(h_t, aⁱ),
   with Q the blended value below; log N is taken as log max(N, 1), so the first choice after an expansion
   (N = 0) is by the critic's value alone: "the ranking guides node selection after expansion".
2. **Expansion** of the leaf: K proposals sampled from the policy, deduplicated on the parsed action (all
   responses without an action count as one); up to `expansion_rounds` draws are made to find K distinct ones.
   Each becomes a child (restore the leaf's snapshot, step, snapshot), with Q̃ = 0 and N = 0.
3. **Self-critique** (`critique.py`): the same model ranks the children; the rank gives Q̂.
4. **Rollout** from the selected child with the policy until the episode ends or `max_turns`.
5. **Backup** (Eq. 8) of the return R from each edge of the path: Q̃ ← (Q̃·N + R) / (N + 1); N ← N + 1.
   R is the sum of the environment's rewards from that edge's turn to the end (γ = 1, as in the paper; the
   paper's R ∈ {0, 1} is the same thing for sparse rewards). Invalid-action penalties are not part of Q.

The **blended value** (Eq. 10) Q = α·Q̃ + (1 − α)·Q̂ ranks siblings for selection and for preference pairs
(`preferences.py`); α = 1 is the paper's "outcome-only Q, no AI feedback" ablation and skips the critic.

**Batching.** Each tree's search is a generator that yields generation requests (`Request`) and is sent the
completions; `drive` gathers the requests of every tree in flight (the K proposals of each expanding node,
each rollout's next turn, each critic question) into one `Policy.generate` call per policy and round, so the
expansions and rollouts of many tasks share a batch. `batching="request"` or `"row"` serve one request or one
row per call instead (the baseline of `bench/search.py`).

Constants the paper leaves open, and the defaults chosen (`SearchConfig`):

| constant | default | why |
|---|---|---|
| K proposals per expansion | 4 | not given in the paper; small enough for CPU budgets |
| c_exp | 1.0 | not given in v1; the third-party reimplementation's `w_exp` |
| α | 0.5 | not given; an equal blend of outcome and critic |
| rank → Q̂ | linear | not given; `critique.RANK_VALUES` |
| proposal temperature | the policy's (1.0 by default) | the paper says "high temperature"; 1.0 keeps the recorded behaviour log-probs those of the plain policy |
| simulations per root | 16 | |
| depth limit | `max_turns` | |
| expansion draws | 2 | draws of K samples to find K distinct actions |
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from turnrl.agents.actions import parse_response, without_think
from turnrl.agents.policy import Completion, Policy, keyed_generator
from turnrl.agents.prompts import ChatTokens, HistoryEntry, PromptBuilder, parse_context
from turnrl.agents.rollout import (
    NO_VALID_ACTION,
    EnvFailure,
    act,
    call_env,
    checked_observation,
    checked_result,
    replace_env,
)
from turnrl.environments import Environment, StepResult, make_env
from turnrl.episode import Episode, Turn
from turnrl.search.critique import CRITIC_STOP, RANK_VALUES, ranking_dialogue

BATCHING = ("all", "request", "row")
NO_ACTION_KEY = NO_VALID_ACTION


@dataclass
class SearchConfig:
    """The search's settings; every field is documented with the paper's symbol where it has one."""

    simulations: int = 16           # simulations per root (per task for `search`, per step for `act_by_search`)
    branching: int = 4              # K: distinct actions proposed at each expansion
    expansion_rounds: int = 2       # draws of the missing proposals before settling for fewer than K
    exploration: float = 1.0        # c_exp of UCB1 (Eq. 7)
    alpha: float = 0.5              # α of the blended value (Eq. 10); 1.0 = outcome only, no critic
    rank_value: str = "linear"      # rank → Q̂ mapping: linear or reciprocal (critique.RANK_VALUES)
    max_turns: int = 10             # depth limit of the tree and of rollouts, in agent turns from the start
    context: str = "full"           # full or window:k, as the rollouts (and the trainer that uses the episodes)
    invalid_penalty: float = 0.1    # recorded in Turn.penalty, as rollouts do; not part of Q
    critic_max_new_tokens: int = 16
    batching: str = "all"           # all (across nodes, rollouts and tasks), request or row (baselines)
    step_timeout: float | None = 300.0   # seconds an environment's reset or step may take (None: no limit); a
                                         # failure there (or in snapshot/restore) ends its own tree's search only

    def __post_init__(self):
        problems = []
        if self.simulations < 1:
            problems.append(f"simulations must be >= 1 (got {self.simulations})")
        if self.branching < 1:
            problems.append(f"branching (K) must be >= 1 (got {self.branching})")
        if self.expansion_rounds < 1:
            problems.append(f"expansion_rounds must be >= 1 (got {self.expansion_rounds})")
        if self.exploration < 0:
            problems.append(f"exploration (c_exp) must be >= 0 (got {self.exploration})")
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(f"alpha must be in [0, 1] (got {self.alpha})")
        if self.rank_value not in RANK_VALUES:
            problems.append(f"rank_value must be one of {', '.join(RANK_VALUES)} (got {self.rank_value!r})")
        if self.max_turns < 1:
            problems.append(f"max_turns must be >= 1 (got {self.max_turns})")
        if self.step_timeout is not None and not self.step_timeout > 0:
            problems.append(f"step_timeout must be > 0 seconds or None (got {self.step_timeout})")
        if self.batching not in BATCHING:
            problems.append(f"batching must be one of {', '.join(BATCHING)} (got {self.batching!r})")
        try:
            parse_context(self.context)
        except ValueError as err:
            problems.append(str(err))
        if problems:
            raise ValueError("SearchConfig: " + "; ".join(problems))

    @property
    def uses_critic(self) -> bool:
        return self.alpha < 1.0


# --- the maths: pure functions, tested by hand ------------------------------------------------------------


def ucb1(q: float, parent_visits: int, child_visits: int, exploration: float) -> float:
    """Eq. 7: Q + c_exp · sqrt(log N(h_t) / (1 + N(h_{t+1}))), with log N read as log max(N, 1)."""
    return q + exploration * math.sqrt(math.log(max(parent_visits, 1)) / (1 + child_visits))


def running_mean(q: float, visits: int, value: float) -> float:
    """Eq. 8: (Q·N + R) / (N + 1)."""
    return (q * visits + value) / (visits + 1)


def blended_value(q_mcts: float, q_critic: float | None, alpha: float) -> float:
    """Eq. 10: α·Q̃ + (1 − α)·Q̂; without a critic value (α = 1, or the root) it is Q̃."""
    return q_mcts if q_critic is None or alpha >= 1.0 else alpha * q_mcts + (1.0 - alpha) * q_critic


def action_key(env: Environment, response: str) -> str:
    """What proposals are deduplicated on: the parsed action (whitespace collapsed), or for an environment that
    reads whole responses, the response without its reasoning."""
    if getattr(env, "parses_responses", False):
        return " ".join(without_think(response).split()) or NO_ACTION_KEY
    parsed = parse_response(response)
    return " ".join(parsed.action.split()) if parsed.valid else NO_ACTION_KEY


# --- conversation state: the rollout's token bookkeeping, one turn at a time -----------------------------


@dataclass
class Conversation:
    """What the policy sees at a state, as `rollout` keeps it: full context, the conversation's token ids
    (ending in the generation prompt while the episode goes on) and messages; window context, the history of
    (observation, remembered action) pairs. `prompt` is the next turn's prompt ids."""

    task_observation: str
    observation: str
    depth: int = 0
    messages: list[dict] = field(default_factory=list)
    token_ids: list[int] | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    prompt: list[int] | None = None
    stop_reason: str = ""           # "done", "max_turns" or "context_full" once the episode has ended


class Stepper:
    """Builds prompts and takes turns exactly as `rollout` does (same prompts, same token ids)."""

    def __init__(self, tokenizer, builder: PromptBuilder, context: str, max_turns: int, invalid_penalty: float,
                 max_context_tokens: int | None = None, max_new_tokens: int = 0, step_timeout: float | None = None):
        self.chat, self.builder = ChatTokens(tokenizer), builder
        self.step_timeout = step_timeout
        self.window = parse_context(context)
        self.max_turns, self.invalid_penalty = max_turns, invalid_penalty
        self.max_context_tokens, self.max_new_tokens = max_context_tokens, max_new_tokens

    def start(self, env: Environment, observation: str) -> Conversation:
        state = Conversation(observation, observation)
        if self.window is None:
            state.messages = self.builder.first_message(env, observation)
            state.token_ids = self.chat.prompt_ids(state.messages, tools=env.tool_schemas)
        state.prompt = self._prompt(env, state)
        return state

    def _prompt(self, env: Environment, state: Conversation) -> list[int]:
        if self.window is None:
            return state.token_ids
        messages = self.builder.window_messages(env, state.task_observation, state.history, state.observation,
                                                self.window)
        return self.chat.prompt_ids(messages, tools=env.tool_schemas)

    def take_turn(self, env: Environment, state: Conversation, completion: Completion) -> tuple[Turn, Conversation]:
        """Apply one completion in `env` (which must be in `state`); the turn and the state after it. An environment
        that raises, returns a malformed result or times out raises `EnvFailure`, as in `rollout`."""
        def step(action: str) -> StepResult:
            return checked_result(call_env("step", env.step, action, timeout=self.step_timeout))

        action, result, penalty, remembered = act(env, completion.text, self.invalid_penalty, step)
        turn = Turn(observation=state.observation, response=completion.text, action=action,
                    completion_ids=list(completion.token_ids), logprobs=list(completion.logprobs),
                    reward=float(result.reward), penalty=penalty, done=bool(result.done), info=dict(result.info),
                    next_observation=result.observation)
        after = Conversation(state.task_observation, result.observation, state.depth + 1, state.messages,
                             state.token_ids, state.history)
        if self.window is None:
            start = len(state.token_ids)
            after.token_ids = state.token_ids + completion.token_ids
            turn.span = (start, len(after.token_ids))
        else:
            turn.prompt_ids = state.prompt
            after.history = state.history + [HistoryEntry(state.observation, remembered)]
        if result.done:
            after.stop_reason = "done"
        elif after.depth >= self.max_turns:
            after.stop_reason = "max_turns"
        elif self.window is None:
            next_message = self.builder.observation_message(env, result.observation)
            after.token_ids = after.token_ids + self.chat.continuation_ids(
                state.messages, completion.text, completion.ended_with_eos, next_message, tools=env.tool_schemas)
            after.messages = state.messages + [{"role": "assistant", "content": completion.text}, next_message]
            if self.max_context_tokens and len(after.token_ids) + self.max_new_tokens > self.max_context_tokens:
                after.stop_reason = "context_full"
        if not after.stop_reason:
            after.prompt = self._prompt(env, after)
        return turn, after


# --- the tree ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    """A state of the tree: reached from `parent` by `turn` (None at the start of the episode)."""

    id: int
    parent: Node | None
    turn: Turn | None
    key: str | None                 # the deduplicated action that led here
    state: Conversation
    snapshot: Any                   # None for a state where the episode has ended (never expanded)
    children: list[Node] = field(default_factory=list)
    expanded: bool = False
    visits: int = 0                 # N(h_{t-1}, a): simulations through this node
    q_mcts: float = 0.0             # Q̃: the running mean of the returns backed up through this node
    q_critic: float | None = None   # Q̂: the critic's value of the action that led here
    rank: int | None = None         # the critic's rank among its siblings (0 = best)
    chosen: bool = False

    @property
    def terminal(self) -> bool:
        return bool(self.state.stop_reason)

    @property
    def reward(self) -> float:
        return self.turn.reward if self.turn is not None else 0.0

    def value(self, alpha: float) -> float:
        return blended_value(self.q_mcts, self.q_critic, alpha)

    def path(self) -> list[Node]:
        """The nodes from the start of the episode to this one."""
        nodes, node = [], self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def turns(self) -> list[Turn]:
        return [node.turn for node in self.path() if node.turn is not None]


@dataclass
class Request:
    """A batch of prompts for one policy; the tree's generator is sent one completion per prompt. When it is
    yielded, each of `envs` is in the state its prompt shows, so a scripted policy that reads the environment
    (`ExpertPolicy`, or a test's) proposes actions of the right state."""

    policy: Any
    prompts: list[list[int]]
    envs: list | None = None
    generators: list | None = None   # one sampling generator per prompt (its tree's), else drive's shared one


@dataclass
class SearchTree:
    """The search of one task: the tree, counters, and the best complete trajectory found."""

    task: Any
    seed: Any
    root: Node
    env: Environment
    alpha: float
    nodes: int = 1
    simulations: int = 0
    expansions: int = 0
    env_steps: int = 0               # agent turns simulated (expansions and rollouts)
    critic_questions: int = 0
    critic_unread: int = 0           # critic replies that named no candidate (the fallback order was used)
    best_return: float = -math.inf
    best_turns: list[Turn] | None = None
    best_state: Conversation | None = None
    error: str | None = None         # "cause: last traceback line" when the environment failed this tree's search
    generator: torch.Generator | None = None   # this tree's sampling: its search does not depend on its batch

    def mark_chosen(self, start: Node | None = None) -> list[Node]:
        """Mark the most visited path from `start` (default the root), ties by blended value; return it."""
        node, path = start or self.root, []
        node.chosen = True
        path.append(node)
        while node.children:
            node = max(node.children, key=lambda c: (c.visits, c.value(self.alpha)))
            if node.visits == 0:
                break
            node.chosen = True
            path.append(node)
        return path

    def to_json(self) -> dict:
        """The tree in the report's shape: {"task", ..., "root": {"id", "parent", "action", "visits", "value",
        "q", "q_critic", "rank", "reward", "depth", "done", "chosen", "children": [...]}}."""
        def node_json(node: Node) -> dict:
            return {"id": node.id, "parent": node.parent.id if node.parent else None,
                    "action": node.key, "visits": node.visits, "value": round(node.value(self.alpha), 6),
                    "q": round(node.q_mcts, 6), "q_critic": node.q_critic, "rank": node.rank,
                    "reward": node.reward, "depth": node.state.depth, "done": node.terminal,
                    "chosen": node.chosen, "children": [node_json(child) for child in node.children]}

        return {"task": self.task, "seed": self.seed, "nodes": self.nodes, "simulations": self.simulations,
                "expansions": self.expansions, "env_steps": self.env_steps, "best_return": self.best_return,
                "critic_unread": self.critic_unread, "error": self.error, "root": node_json(self.root)}

    def episode(self, env_name: str, context: str, group_id: Any, turns: list[Turn],
                state: Conversation) -> Episode:
        """An Episode of these turns ending in `state`, in the rollout's record format."""
        return Episode(env_name, self.task, self.seed, group_id, context, turns=copy.deepcopy(turns),
                       token_ids=list(state.token_ids) if state.token_ids is not None else None,
                       stop_reason=state.stop_reason or "max_turns")


class TreeSearch:
    """Grows `SearchTree`s with a policy (proposals and rollouts) and a critic (the same model, greedy)."""

    def __init__(self, policy: Policy, config: SearchConfig, *, builder: PromptBuilder | None = None,
                 critic: Any = None, max_context_tokens: int | None = None):
        self.policy, self.config = policy, config
        self.stepper = Stepper(policy.tokenizer, builder or PromptBuilder(), config.context, config.max_turns,
                               config.invalid_penalty, max_context_tokens, policy.max_new_tokens, config.step_timeout)
        if critic is None and config.uses_critic:   # the paper's critic: the same model, here greedy
            critic = Policy(policy.model, policy.tokenizer, temperature=0.0, max_new_tokens=config.critic_max_new_tokens,
                            stop_strings=CRITIC_STOP, device=policy.device)
        self.critic = critic if config.uses_critic else None
        self.rank_value = RANK_VALUES[config.rank_value]

    def new_tree(self, env: Environment, task, seed) -> SearchTree:
        """The root of a task's tree; an environment that fails its reset gives a failed tree (`error` set, nothing
        to search), not an exception."""
        try:
            observation = checked_observation(call_env("reset", env.reset, task, seed, timeout=self.config.step_timeout))
            state = self.stepper.start(env, observation)
            snapshot = self.env_call(env.snapshot)
        except EnvFailure as failure:
            dead = Conversation("", "", stop_reason="failed")
            return SearchTree(task, seed, Node(0, None, None, None, dead, None), env, self.config.alpha,
                              error=str(failure))
        return SearchTree(task, seed, Node(0, None, None, None, state, snapshot), env, self.config.alpha)

    @staticmethod
    def env_call(fn: Callable, *args):
        """An environment's snapshot or restore, its failures turned into `EnvFailure` (cause "step"); run in
        place, without step_timeout's worker thread (a copy of state, called three times per simulated turn)."""
        return call_env("step", fn, *args)

    @staticmethod
    def guarded(tree: SearchTree, search: Generator[Request, list[Completion], Any]
                ) -> Generator[Request, list[Completion], Any]:
        """`search` of `tree`, with an environment failure ending this tree's search only (`tree.error` set; the
        result is None); the other trees driven beside it go on."""
        if tree.error is not None:
            return None
        try:
            return (yield from search)
        except EnvFailure as failure:
            tree.error = str(failure)
            return None

    # --- one simulation ---------------------------------------------------------------------------------

    def grow(self, tree: SearchTree, root: Node | None = None,
             simulations: int | None = None) -> Generator[Request, list[Completion], None]:
        """Run `simulations` simulations from `root` (default: the tree's root)."""
        root = root or tree.root
        for _ in range(simulations or self.config.simulations):
            path = self.select(root)
            leaf = path[-1]
            if not leaf.terminal and not leaf.expanded:
                yield from self.expand(tree, leaf)
                if leaf.children:
                    leaf = self.best_child(leaf)
                    path.append(leaf)
            tail = 0.0 if leaf.terminal else (yield from self.rollout(tree, leaf))
            self.backup(path, tail)
            tree.simulations += 1

    def select(self, root: Node) -> list[Node]:
        """Descend by UCB1 through expanded nodes to a leaf (unexpanded or terminal)."""
        path = [root]
        while path[-1].expanded and path[-1].children and not path[-1].terminal:
            path.append(self.best_child(path[-1]))
        return path

    def best_child(self, node: Node) -> Node:
        """UCB1 over the children (Eq. 7) with the blended value as Q; ties go to the critic's better rank."""
        parent_visits = sum(child.visits for child in node.children)
        return max(node.children, key=lambda c: (
            ucb1(c.value(self.config.alpha), parent_visits, c.visits, self.config.exploration),
            -(c.rank if c.rank is not None else 0)))

    @staticmethod
    def backup(path: list[Node], tail: float) -> None:
        """Eq. 8 along the path: each node's return is the rewards from its own turn to the end."""
        returns = tail
        for node in reversed(path):
            returns += node.reward
            node.q_mcts = running_mean(node.q_mcts, node.visits, returns)
            node.visits += 1

    def expand(self, tree: SearchTree, leaf: Node) -> Generator[Request, list[Completion], None]:
        """K distinct proposals from the policy become the leaf's children; the critic ranks them."""
        env, found = tree.env, {}
        for _ in range(self.config.expansion_rounds):
            missing = self.config.branching - len(found)
            self.env_call(env.restore, leaf.snapshot)   # a request's environments are in its prompts' state
            completions = yield Request(self.policy, [leaf.state.prompt] * missing, [env] * missing,
                                        [tree.generator] * missing if tree.generator is not None else None)
            for completion in completions:
                found.setdefault(action_key(env, completion.text), completion)
            if len(found) >= self.config.branching:
                break
        # Listed by the policy's mean token log-prob: the critic's fallback order is the policy's preference.
        ordered = sorted(found.items(), key=lambda kv: -sum(kv[1].logprobs) / max(len(kv[1].logprobs), 1))
        for key, completion in ordered:
            self.env_call(env.restore, leaf.snapshot)
            turn, state = self.stepper.take_turn(env, leaf.state, completion)
            tree.env_steps += 1
            child = Node(tree.nodes, leaf, turn, key, state, None if state.stop_reason else self.env_call(env.snapshot))
            tree.nodes += 1
            leaf.children.append(child)
            if child.terminal:
                self.record(tree, child.turns(), state)
        leaf.expanded = True
        tree.expansions += 1
        if self.critic is not None and leaf.children:
            yield from self.critique(tree, leaf)

    def critique(self, tree: SearchTree, leaf: Node) -> Generator[Request, list[Completion], None]:
        """Rank the leaf's children with the critic and give each its Q̂ (critique.py)."""
        env, state = tree.env, leaf.state
        instructions = (getattr(env, "compact_instructions", None) if self.stepper.builder.compact else None) \
            or getattr(env, "instructions", "")
        past = [node.key or "" for node in leaf.path()[1:]]
        dialogue = ranking_dialogue(instructions, state.task_observation, past, state.observation,
                                    [child.key for child in leaf.children])
        try:
            messages = next(dialogue)
            while True:
                [reply] = yield Request(self.critic, [self.stepper.chat.prompt_ids(messages)])
                tree.critic_questions += 1
                messages = dialogue.send(reply.text)
        except StopIteration as stop:
            ranking, unread = stop.value
        tree.critic_unread += unread
        for rank, index in enumerate(ranking):
            child = leaf.children[index]
            child.rank, child.q_critic = rank, self.rank_value(rank, len(ranking))

    def rollout(self, tree: SearchTree, node: Node) -> Generator[Request, list[Completion], float]:
        """Play the policy from `node` to the end or the depth limit; the rewards collected after `node`."""
        env = tree.env
        self.env_call(env.restore, node.snapshot)
        state, turns, collected = node.state, [], 0.0
        while not state.stop_reason:
            [completion] = yield Request(self.policy, [state.prompt], [env],
                                         [tree.generator] if tree.generator is not None else None)
            turn, state = self.stepper.take_turn(env, state, completion)
            tree.env_steps += 1
            turns.append(turn)
            collected += turn.reward
        self.record(tree, node.turns() + turns, state)
        return collected

    @staticmethod
    def record(tree: SearchTree, turns: list[Turn], state: Conversation) -> None:
        """Keep the complete trajectory with the highest return (the first one found among equals)."""
        total = sum(turn.reward for turn in turns)
        if total > tree.best_return:
            tree.best_return, tree.best_turns, tree.best_state = total, turns, state


# --- driving many trees with batched generation ------------------------------------------------------------


def drive(searches: Iterable[Generator[Request, list[Completion], Any]], *, generator: torch.Generator | None = None,
          batching: str = "all", on_round: Callable[[int], None] | None = None) -> list:
    """Run generators that yield `Request`s to the end, serving their requests with batched generation: each
    round, one `generate` call per policy holds every request in flight (`batching="all"`), or one call per
    request or per row (the baselines). Returns each generator's return value, in order."""
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {', '.join(BATCHING)} (got {batching!r})")
    searches = list(searches)
    results: list = [None] * len(searches)
    pending: dict[int, Request] = {}
    for i, search in enumerate(searches):
        _advance(searches, i, None, pending, results)
    rounds = 0
    while pending:
        answers: dict[int, list[Completion]] = {}
        if batching == "all":
            by_policy: dict[int, list[int]] = {}
            for i, request in pending.items():
                by_policy.setdefault(id(request.policy), []).append(i)
            for indices in by_policy.values():
                policy = pending[indices[0]].policy
                prompts = [p for i in indices for p in pending[i].prompts]
                envs = [e for i in indices for e in (pending[i].envs or [None] * len(pending[i].prompts))]
                completions = policy.generate(prompts, generator=_generators([pending[i] for i in indices], generator),
                                              envs=envs, **_shared(policy))
                start = 0
                for i in indices:
                    n = len(pending[i].prompts)
                    answers[i], start = completions[start: start + n], start + n
        else:
            for i, request in pending.items():
                envs = request.envs or [None] * len(request.prompts)
                if batching == "request":
                    answers[i] = request.policy.generate(request.prompts, generator=_generators([request], generator),
                                                         envs=envs, **_shared(request.policy))
                else:
                    rows = request.generators or [None] * len(request.prompts)
                    answers[i] = [c for p, e, g in zip(request.prompts, envs, rows)
                                  for c in request.policy.generate([p], generator=[g] if g is not None else generator,
                                                                   envs=[e])]
        for i, completions in answers.items():
            _advance(searches, i, completions, pending, results)
        rounds += 1
        if on_round is not None:
            on_round(rounds)
    return results


def _generators(requests: list[Request], shared):
    """The per-row generators of these requests when every one has them (each tree samples from its own), else
    the shared generator."""
    if all(request.generators is not None for request in requests):
        return [g for request in requests for g in request.generators]
    return shared


def tree_generator(seed: int, index: int, device) -> torch.Generator:
    """The sampling generator of the search of task number `index` (in the task list) under `seed`: the same
    whichever trees are searched beside it and however generation is batched."""
    return keyed_generator(f"search-{seed}-{index}", device)


def _shared(policy) -> dict:
    """A model policy prefills a node's K identical proposal prompts once (`Policy.generate(share_prefill=True)`);
    scripted policies take no such argument."""
    return {"share_prefill": True} if isinstance(policy, Policy) else {}


def _advance(searches, i, completions, pending, results) -> None:
    try:
        pending[i] = searches[i].send(completions) if completions is not None else next(searches[i])
    except StopIteration as stop:
        pending.pop(i, None)
        results[i] = stop.value


# --- the two uses: search a task (training data) and act by search (evaluation) --------------------------


def search_tasks(policy: Policy, env_name: str, tasks: list, config: SearchConfig, *, env_kwargs: dict | None = None,
                 seed: int = 0, batch_size: int = 8, builder: PromptBuilder | None = None, critic: Any = None,
                 generator: torch.Generator | None = None,
                 progress: Callable[[dict], None] | None = None) -> list[SearchTree]:
    """Grow one tree per task (`config.simulations` simulations each), `batch_size` trees at a time with their
    generation batched together; every tree has its chosen path marked. Each tree samples from its own generator
    (`tree_generator`: seed and task number), so a tree does not depend on `batch_size` or `config.batching`;
    `generator` serves requests without one (none of the search's own)."""
    search = TreeSearch(policy, config, builder=builder, critic=critic)
    generator = generator or torch.Generator(device=policy.device).manual_seed(seed)
    envs = [make_env(env_name, **(env_kwargs or {})) for _ in range(min(batch_size, len(tasks)))]
    trees: list[SearchTree] = []
    for start in range(0, len(tasks), batch_size):
        chunk = [search.new_tree(env, task, seed) for env, task in zip(envs, tasks[start: start + batch_size])]
        for offset, tree in enumerate(chunk):
            tree.generator = tree_generator(seed, start + offset, policy.device)
        drive([search.guarded(tree, search.grow(tree)) for tree in chunk], generator=generator,
              batching=config.batching)
        for i, tree in enumerate(chunk):
            tree.mark_chosen()
            tree.env = None   # the environment goes on to the next chunk; the tree keeps its snapshots
            if tree.error is not None:   # a failed (perhaps still busy) environment is not used again
                envs[i] = replace_env(envs[i], env_name, env_kwargs)
        trees += chunk
        if progress is not None:
            progress({"tasks": len(trees), "of": len(tasks)})
    for env in envs:
        env.close()
    return trees


def best_episodes(trees: list[SearchTree], env_name: str, context: str) -> list[Episode]:
    """The best complete trajectory of each tree as an Episode (group ids 0..n-1 in task order); a tree whose
    environment failed gives none."""
    return [tree.episode(env_name, context, g, tree.best_turns, tree.best_state)
            for g, tree in enumerate(trees) if tree.best_turns and tree.error is None]


def act_by_search(policy: Policy, env_name: str, tasks: list, config: SearchConfig, *,
                  env_kwargs: dict | None = None, seed: int = 0, batch_size: int = 8,
                  builder: PromptBuilder | None = None, critic: Any = None,
                  generator: torch.Generator | None = None) -> tuple[list[Episode], list[SearchTree]]:
    """Agent Q + MCTS at evaluation time: at every step, `config.simulations` simulations from the current state,
    then the most visited action is taken (its subtree is kept for the next step). Returns the episodes and the
    trees (their `env_steps` count every simulated turn: the environment-step budget the search spent)."""
    search = TreeSearch(policy, config, builder=builder, critic=critic)
    generator = generator or torch.Generator(device=policy.device).manual_seed(seed)
    envs = [make_env(env_name, **(env_kwargs or {})) for _ in range(min(batch_size, len(tasks)))]

    def act(tree: SearchTree) -> Generator[Request, list[Completion], Node]:
        node = tree.root
        while not node.terminal:
            yield from search.grow(tree, node)
            if not node.children:
                break
            node = max(node.children, key=lambda c: (c.visits, c.value(config.alpha)))
            node.chosen = True
        return node

    episodes, trees = [], []
    for start in range(0, len(tasks), batch_size):
        chunk = [search.new_tree(env, task, seed) for env, task in zip(envs, tasks[start: start + batch_size])]
        for offset, tree in enumerate(chunk):
            tree.root.chosen = True
            tree.generator = tree_generator(seed, start + offset, policy.device)
        ends = drive([search.guarded(tree, act(tree)) for tree in chunk], generator=generator,
                     batching=config.batching)
        for offset, (tree, end) in enumerate(zip(chunk, ends)):
            if tree.error is None:
                episodes.append(tree.episode(env_name, config.context, start + offset, end.turns(), end.state))
            else:   # recorded as failed with its error, as `turnrl eval` records a failed episode
                failed = tree.episode(env_name, config.context, start + offset, [], tree.root.state)
                failed.stop_reason, failed.error = "failed", tree.error
                episodes.append(failed)
                envs[offset] = replace_env(envs[offset], env_name, env_kwargs)
            tree.env = None
        trees += chunk
    for env in envs:
        env.close()
    return episodes, trees
