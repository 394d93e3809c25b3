"""Turns, episodes and token-level training samples: the data that flows from rollouts into trainers.

Token bookkeeping follows one rule: the ids the model generated are the ids it is trained on, and
everything else in a sequence (prompt, chat-template glue, observations) comes from tokenizing that
segment on its own. Nothing is ever re-derived by re-tokenizing a whole conversation.

Two context modes (DESIGN.md, "From model to training samples"):
- `full`: one growing token sequence per episode; each turn's generated tokens sit at `Turn.span`
  inside `Episode.token_ids`. One training sample per episode.
- `window:k`: every turn has its own prompt (`Turn.prompt_ids`) followed by its generated tokens.
  One training sample per turn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Turn:
    """One agent turn: what the agent saw, what it said, and what the environment answered."""

    observation: str                # the raw environment observation seen before acting
    response: str                   # the decoded generated text (without the end-of-turn token)
    action: str | None              # the extracted action; None when the response had none
    completion_ids: list[int]       # generated token ids, end-of-turn token included when generated
    logprobs: list[float]           # behaviour log-prob of each generated token
    reward: float = 0.0             # the environment's reward for this action
    penalty: float = 0.0            # invalid-action penalty (subtracted from the return by trainers)
    done: bool = False
    info: dict = field(default_factory=dict)
    prompt_ids: list[int] | None = None        # window mode: this turn's prompt
    span: tuple[int, int] | None = None        # full mode: [start, end) of completion_ids in Episode.token_ids
    next_observation: str = ""      # what the environment answered

    @property
    def invalid(self) -> bool:
        return bool(self.info.get("invalid", False))


@dataclass
class Episode:
    """A finished (or truncated) episode of one task."""

    env: str
    task: Any
    seed: Any
    group_id: Any                           # rollouts number groups 0..n-1; the trainer makes it
                                            # (iteration, process, index), so groups of different
                                            # iterations or processes never merge when data is mixed
    context: str                            # "full" or "window:k"
    turns: list[Turn] = field(default_factory=list)
    token_ids: list[int] | None = None      # full mode: the whole conversation's ids
    stop_reason: str = ""                   # "done" or "max_turns"
    policy_version: int = 0                 # optimizer updates (iterations) done before it was generated
    error: str | None = None                # why the environment failed it (stop_reason "failed"), e.g.
                                            # "step: ValueError: ..." (cause: reset, step, malformed, timeout)

    @property
    def total_reward(self) -> float:
        return float(sum(turn.reward for turn in self.turns))

    @property
    def total_penalty(self) -> float:
        return float(sum(turn.penalty for turn in self.turns))

    @property
    def failed(self) -> bool:
        return self.stop_reason == "failed"

    @property
    def failure_cause(self) -> str | None:
        """reset, step, malformed or timeout for a failed episode, else None."""
        return self.error.split(":", 1)[0] if self.failed and self.error else None

    @property
    def success(self) -> bool:
        return bool(self.turns and self.turns[-1].info.get("success", False))

    @property
    def score(self) -> float:
        """The environment's graded score at the end where it has one, else the total reward."""
        if self.turns and "score" in self.turns[-1].info:
            return float(self.turns[-1].info["score"])
        return self.total_reward

    def to_json(self) -> dict:
        """A JSON-ready record of the episode (for trajectories files)."""
        record = asdict(self)
        record.update(success=self.success, score=self.score, total_reward=self.total_reward)
        return record

    @classmethod
    def from_json(cls, record: dict) -> Episode:
        """The episode a `to_json` record describes (the derived keys success, score, total_reward are ignored;
        JSON lists become the tuples and ids they were)."""
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in record.items() if k in names}
        turns = []
        for turn in values.pop("turns", []):
            turn = dict(turn)
            if turn.get("span") is not None:
                turn["span"] = tuple(turn["span"])
            turns.append(Turn(**{k: v for k, v in turn.items() if k in Turn.__dataclass_fields__}))
        if isinstance(values.get("group_id"), list):
            values["group_id"] = tuple(values["group_id"])
        return cls(turns=turns, **values)


@dataclass
class Sample:
    """A token-level training sample.

    Per token: `loss_mask` (1 on agent tokens), `turn_index` (which turn generated it, -1 elsewhere),
    `behaviour_logprobs` (recorded at generation, 0 elsewhere) and `advantages`.
    """

    token_ids: list[int]
    loss_mask: list[int]
    turn_index: list[int]
    behaviour_logprobs: list[float]
    advantages: list[float]
    episode_index: int
    episode_agent_tokens: int       # agent tokens in the whole episode (for per-episode loss weighting)
    policy_version: int = 0         # the policy version that generated it (see Episode.policy_version)
    # With a critic (advantage gae), per token: the turn's value at rollout and its GAE value target, read where
    # the turn starts (empty without a critic).
    old_values: list[float] = field(default_factory=list)
    value_targets: list[float] = field(default_factory=list)


def episode_samples(episode: Episode, turn_advantages: list[float], episode_index: int) -> list[Sample]:
    """Cut an episode into training samples, spreading each turn's advantage over its tokens."""
    if len(turn_advantages) != len(episode.turns):
        raise ValueError(f"{len(turn_advantages)} advantages for {len(episode.turns)} turns")
    agent_tokens = sum(len(turn.completion_ids) for turn in episode.turns)
    if episode.context == "full":
        n = len(episode.token_ids)
        loss_mask, turn_index = [0] * n, [-1] * n
        behaviour, advantages = [0.0] * n, [0.0] * n
        for t, (turn, adv) in enumerate(zip(episode.turns, turn_advantages)):
            start, end = turn.span
            for i, lp in zip(range(start, end), turn.logprobs):
                loss_mask[i], turn_index[i], behaviour[i], advantages[i] = 1, t, lp, adv
        return [Sample(list(episode.token_ids), loss_mask, turn_index, behaviour, advantages, episode_index,
                       agent_tokens, episode.policy_version)]

    samples = []
    for t, (turn, adv) in enumerate(zip(episode.turns, turn_advantages)):
        p, c = len(turn.prompt_ids), len(turn.completion_ids)
        samples.append(
            Sample(
                token_ids=list(turn.prompt_ids) + list(turn.completion_ids),
                loss_mask=[0] * p + [1] * c,
                turn_index=[-1] * p + [t] * c,
                behaviour_logprobs=[0.0] * p + list(turn.logprobs),
                advantages=[0.0] * p + [adv] * c,
                episode_index=episode_index,
                episode_agent_tokens=agent_tokens,
                policy_version=episode.policy_version,
            )
        )
    return samples


def summarize(episodes: list[Episode]) -> dict:
    """The evaluation summary: success rate, mean score, mean turns, invalid-action rate, episode count."""
    n = len(episodes)
    turns = [turn for episode in episodes for turn in episode.turns]
    return {
        "success_rate": sum(e.success for e in episodes) / n if n else 0.0,
        "mean_score": sum(e.score for e in episodes) / n if n else 0.0,
        "mean_return": sum(e.total_reward for e in episodes) / n if n else 0.0,
        "mean_turns": len(turns) / n if n else 0.0,
        "invalid_action_rate": sum(turn.invalid for turn in turns) / len(turns) if turns else 0.0,
        "episodes": n,
        "failed_episodes": sum(e.failed for e in episodes),
    }
