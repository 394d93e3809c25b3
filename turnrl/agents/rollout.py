"""Batched multi-turn rollouts: every live environment advances one turn per batched generation.

`rollout` drives a model policy; `scripted_rollout` drives the expert or a random policy through the
same episode records (without tokens), for evaluation and demonstrations.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from turnrl.agents.actions import invalid_response_observation, parse_response, without_think
from turnrl.agents.policy import Policy, TurnCache, probe_cross_turn_cache
from turnrl.agents.prompts import ChatTokens, HistoryEntry, PromptBuilder, parse_context
from turnrl.environments import Environment, StepResult, make_env
from turnrl.episode import Episode, Turn


@dataclass(frozen=True)
class EpisodeSpec:
    """Which task an episode plays. The G members of a group share task, seed and group_id."""

    task: Any
    seed: Any
    group_id: int


def group_specs(tasks: list, group_size: int, seed: int) -> list[EpisodeSpec]:
    """`group_size` episodes of each task, group ids in task order; every member gets the same seed."""
    return [EpisodeSpec(task, seed, g) for g, task in enumerate(tasks) for _ in range(group_size)]


class EnvFailure(Exception):
    """An environment failed an episode: it raised, returned a malformed result, or took too long."""

    def __init__(self, cause: str, detail: str):
        super().__init__(f"{cause}: {detail}")
        self.cause = cause


def _last_line(err: BaseException) -> str:
    """The exception as the last line of its traceback (type and message), shortened."""
    line = traceback.format_exception_only(type(err), err)[-1].strip()
    return line if len(line) <= 300 else line[:297] + "..."


def call_env(cause: str, fn: Callable, *args, timeout: float | None = None):
    """`fn(*args)` with failures turned into `EnvFailure(cause, ...)`. With `timeout`, the call runs in a daemon
    thread that is abandoned if it has not finished in time (the environment is then not used again)."""
    if timeout is None:
        try:
            return fn(*args)
        except Exception as err:   # a user's environment may raise anything; it costs only its episode
            raise EnvFailure(cause, _last_line(err)) from err
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn(*args)
        except Exception as err:  # noqa: BLE001 (handed to the caller, as in the call without a timeout)
            outcome["error"] = err

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise EnvFailure("timeout", f"{cause} took more than {timeout:g}s (env_step_timeout)")
    if "error" in outcome:
        raise EnvFailure(cause, _last_line(outcome["error"])) from outcome["error"]
    return outcome["value"]


def replace_env(env: Environment, env_name: str, env_kwargs: dict | None) -> Environment:
    """A fresh environment in place of one that failed an episode (a failed or abandoned one may be in any state),
    the old one closed if it lets itself be."""
    with contextlib.suppress(EnvFailure):   # closing a broken environment may fail too; it is dropped either way
        call_env("step", env.close)
    return make_env(env_name, **(env_kwargs or {}))


def checked_result(result) -> StepResult:
    """A `StepResult` whose fields can be trained on: a string observation, a finite numeric reward, a done flag and
    an info dict (None is read as {}); anything else is a malformed result that fails the episode."""
    if not isinstance(result, StepResult):
        raise EnvFailure("malformed", f"step returned {type(result).__name__}, not a StepResult")
    if not isinstance(result.observation, str):
        raise EnvFailure("malformed", f"observation is {type(result.observation).__name__}, not a string")
    if isinstance(result.reward, bool) or not isinstance(result.reward, (int, float)) or \
            not math.isfinite(result.reward):
        raise EnvFailure("malformed", f"reward is {result.reward!r}, not a finite number")
    info = {} if result.info is None else result.info
    if not isinstance(info, dict):
        raise EnvFailure("malformed", f"info is {type(info).__name__}, not a dict")
    return StepResult(result.observation, float(result.reward), bool(result.done), info)


def checked_observation(observation) -> str:
    if not isinstance(observation, str):
        raise EnvFailure("malformed", f"reset returned {type(observation).__name__}, not a string observation")
    return observation


NO_VALID_ACTION = "(no valid action)"   # what the history remembers of a response without a parseable action


def act(env: Environment, response: str, invalid_penalty: float,
        step: Callable[[str], StepResult]) -> tuple[str | None, StepResult, float, str]:
    """Apply an agent's response in `env`: the action taken, the result, the penalty and what the window history
    remembers. An environment that parses responses gets the whole text; otherwise the `<action>` is extracted,
    and a response without one is an invalid turn (an observation saying why, never a call to `step`)."""
    if env.parses_responses:
        result = step(response)
        return (response, result, invalid_penalty if result.info.get("invalid") else 0.0,
                without_think(response) or "(empty response)")
    parsed = parse_response(response)
    if parsed.valid:
        return parsed.action, step(parsed.action), 0.0, parsed.action
    invalid = StepResult(invalid_response_observation(parsed.error), 0.0, False, {"invalid": True})
    return parsed.action, invalid, invalid_penalty, NO_VALID_ACTION


class _Live:
    """The state of one episode during a rollout."""

    def __init__(self, env: Environment, episode: Episode, observation: str):
        self.env = env
        self.episode = episode
        self.task_observation = observation
        self.observation = observation
        self.messages: list[dict] = []
        self.history: list[HistoryEntry] = []
        self.generator = None   # this episode's own sampling generator, where the rollout has one per episode


def rollout(policy: Policy, envs: list[Environment], specs: list[EpisodeSpec], *, env_name: str,
            context: str = "full", max_turns: int = 10, invalid_penalty: float = 0.1,
            prompt_builder: PromptBuilder | None = None, generator=None,
            max_context_tokens: int | None = None, cross_turn_cache: bool = True,
            progress: Callable[[dict], None] | None = None, step_timeout: float | None = None) -> list[Episode]:
    """Play one episode per (environment, spec) pair with one batched generation per turn.

    An environment that raises in `reset` or `step`, returns a malformed result (`checked_result`) or takes longer
    than `step_timeout` seconds fails only its own episode: it ends with stop_reason "failed" and `error`
    ("cause: last line of the traceback"), and the others go on.

    In `full` context with `cross_turn_cache`, each live conversation's KV cache is kept between turns
    and only its new segment is prefilled (`TurnCache`); the tokens and log-probs are the same as
    without it. `generator` is one torch.Generator for all sampling, or a list with one per spec: then an
    episode's samples do not depend on which other episodes share the batch (or the process). `progress`, if given, is called after every turn with {"turn", "live", "tokens"}.
    """
    if len(envs) != len(specs):
        raise ValueError(f"{len(envs)} environments for {len(specs)} episodes")
    window = parse_context(context)
    cache = None
    if window is None and cross_turn_cache and isinstance(policy, Policy):
        probe_cross_turn_cache(policy.model)   # a model whose cache cannot be kept fails here, before any episode
        cache = TurnCache()
    builder = prompt_builder or PromptBuilder()
    chat = ChatTokens(policy.tokenizer)
    per_episode = isinstance(generator, (list, tuple))
    if per_episode and len(generator) != len(specs):
        raise ValueError(f"{len(generator)} generators for {len(specs)} episodes")
    live, episodes = [], []
    for number, (env, spec) in enumerate(zip(envs, specs)):
        episode = Episode(env_name, spec.task, spec.seed, spec.group_id, context)
        episodes.append(episode)
        try:
            observation = checked_observation(call_env("reset", env.reset, spec.task, spec.seed, timeout=step_timeout))
        except EnvFailure as failure:
            episode.stop_reason, episode.error = "failed", str(failure)
            continue
        state = _Live(env, episode, observation)
        state.generator = generator[number] if per_episode else generator
        if window is None:
            state.messages = builder.first_message(env, observation)
            state.episode.token_ids = chat.prompt_ids(state.messages, tools=env.tool_schemas)
        live.append(state)

    turn_number, generated = 0, 0
    while live:
        if window is None:
            prompts = [s.episode.token_ids for s in live]
        else:
            prompts = [
                chat.prompt_ids(builder.window_messages(s.env, s.task_observation, s.history, s.observation, window),
                                tools=s.env.tool_schemas)
                for s in live
            ]
        completions = policy.generate(prompts, generator=[s.generator for s in live] if per_episode else generator,
                                      envs=[s.env for s in live],
                                      **({"cache": cache} if cache is not None else {}))
        still_live, kept_rows = [], []
        for row, (state, prompt, completion) in enumerate(zip(live, prompts, completions)):
            def step(action: str, env: Environment = state.env) -> StepResult:
                return checked_result(call_env("step", env.step, action, timeout=step_timeout))

            try:
                action, result, penalty, remembered = act(state.env, completion.text, invalid_penalty, step)
            except EnvFailure as failure:   # this episode ends here; the batch goes on without it
                state.episode.stop_reason, state.episode.error = "failed", str(failure)
                continue
            turn = Turn(
                observation=state.observation, response=completion.text, action=action,
                completion_ids=completion.token_ids, logprobs=completion.logprobs,
                reward=float(result.reward), penalty=penalty, done=bool(result.done), info=dict(result.info),
                next_observation=result.observation,
            )
            episode = state.episode
            episode.turns.append(turn)
            if window is None:
                start = len(episode.token_ids)
                episode.token_ids = episode.token_ids + completion.token_ids
                turn.span = (start, len(episode.token_ids))
            else:
                turn.prompt_ids = prompt
                state.history.append(HistoryEntry(state.observation, remembered))
            state.observation = result.observation

            if result.done:
                episode.stop_reason = "done"
            elif len(episode.turns) >= max_turns:
                episode.stop_reason = "max_turns"
            elif window is None:
                next_message = builder.observation_message(state.env, result.observation)
                episode.token_ids = episode.token_ids + chat.continuation_ids(
                    state.messages, completion.text, completion.ended_with_eos, next_message,
                    tools=state.env.tool_schemas,
                )
                state.messages = state.messages + [{"role": "assistant", "content": completion.text}, next_message]
                if max_context_tokens and len(episode.token_ids) + policy.max_new_tokens > max_context_tokens:
                    episode.stop_reason = "context_full"
            if not episode.stop_reason:
                still_live.append(state)
                kept_rows.append(row)
        live = still_live
        if cache is not None:
            cache.select(kept_rows)
        turn_number += 1
        generated += sum(len(c.token_ids) for c in completions)
        if progress is not None:
            progress({"turn": turn_number, "live": len(live), "tokens": generated})
    return episodes


def scripted_rollout(envs: list[Environment], specs: list[EpisodeSpec], choose: Callable[[Environment], str | None],
                     *, env_name: str, max_turns: int = 10) -> list[Episode]:
    """Play episodes with a scripted policy (`choose(env) -> action`), one environment after another."""
    episodes = []
    for env, spec in zip(envs, specs):
        episode = Episode(env_name, spec.task, spec.seed, spec.group_id, context="scripted")
        episodes.append(episode)
        try:
            observation = checked_observation(call_env("reset", env.reset, spec.task, spec.seed))
        except EnvFailure as failure:   # costs this episode only, as in `rollout`
            episode.stop_reason, episode.error = "failed", str(failure)
            continue
        while True:
            action = choose(env)
            if action is None:
                raise ValueError(f"environment {env_name!r} gave no action for this policy (no expert or no "
                                 "admissible actions at this state)")
            try:
                result = checked_result(call_env("step", env.step, action))
            except EnvFailure as failure:
                episode.stop_reason, episode.error = "failed", str(failure)
                break
            episode.turns.append(Turn(
                observation=observation, response=action, action=action, completion_ids=[], logprobs=[],
                reward=float(result.reward), done=bool(result.done), info=dict(result.info),
                next_observation=result.observation,
            ))
            observation = result.observation
            if result.done:
                episode.stop_reason = "done"
            elif len(episode.turns) >= max_turns:
                episode.stop_reason = "max_turns"
            if episode.stop_reason:
                break
    return episodes


def expert_choice(env: Environment) -> str | None:
    return env.expert_action()


def random_choice(seed: int) -> Callable[[Environment], str | None]:
    """A policy that picks uniformly among the admissible actions (seeded)."""
    rng = random.Random(seed)

    def choose(env: Environment) -> str | None:
        actions = env.admissible_actions()
        if not actions:
            raise ValueError(f"{type(env).__name__} cannot list admissible actions, which --policy random needs")
        return rng.choice(actions)

    return choose


def evaluate(policy: Policy, env_name: str, tasks: list, *, env_kwargs: dict | None = None, context: str = "full",
             max_turns: int = 10, seed: int = 0, invalid_penalty: float = 0.0,
             prompt_builder: PromptBuilder | None = None, batch_size: int = 32,
             generator: torch.Generator | None = None, cross_turn_cache: bool = True,
             progress: Callable[[dict], None] | None = None, step_timeout: float | None = None) -> list[Episode]:
    """One episode per task with a model policy, in batches of `batch_size` environments. Sampling draws
    from `generator` (default: one seeded with `seed`), so an evaluation is repeatable."""
    if generator is None:
        generator = torch.Generator(device=policy.device).manual_seed(seed)
    specs = [EpisodeSpec(task, seed, g) for g, task in enumerate(tasks)]
    envs = [make_env(env_name, **(env_kwargs or {})) for _ in range(min(batch_size, len(specs)))]
    episodes = []
    for start in range(0, len(specs), batch_size):
        chunk = specs[start: start + batch_size]
        episodes += rollout(policy, envs[: len(chunk)], chunk, env_name=env_name, context=context,
                            max_turns=max_turns, invalid_penalty=invalid_penalty, prompt_builder=prompt_builder,
                            generator=generator, cross_turn_cache=cross_turn_cache, progress=progress,
                            step_timeout=step_timeout)
        if any(e.failure_cause == "timeout" for e in episodes[start:]):   # an abandoned step may still run
            envs = [make_env(env_name, **(env_kwargs or {})) for _ in envs]
    for env in envs:
        env.close()
    return episodes
