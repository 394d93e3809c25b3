"""Prompt styles: `verl-agent` is pinned as it was; `compact` says nothing twice and hides no action.

The compact checks replay expert episodes and look, at every step, at the prompt the agent would get:
the task text appears once, and every admissible action is shown or can be read from the prompt.
"""

from __future__ import annotations

import re
import statistics

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from turnrl.agents.actions import FORMAT_HINT
from turnrl.agents.models import resolve_model_path
from turnrl.agents.policy import ExpertPolicy
from turnrl.agents.prompts import PROMPT_STYLES, ChatTokens, HistoryEntry, PromptBuilder
from turnrl.agents.rollout import EpisodeSpec, rollout
from turnrl.environments import Environment, StepResult, make_env

GUESS_INSTRUCTIONS = ("Find the hidden number. Each turn reply with `guess N`; the answer says whether N is too low, "
                      "too high or correct.")
GUESS_TASK = "Guess the hidden number between 1 and 16. Reply with the action `guess N`. You have 6 guesses."
GUESS_ACTIONS = "guess 1, guess 2, guess 3, guess 4, guess 5, guess 6, guess 7"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("tiny"))


@pytest.fixture(scope="module")
def webshop():
    return make_env("webshop", progress=False)


def expert_steps(env, task, k: int, style: str = "compact"):
    """Play the expert on `task`; yield (window prompt text, full conversation, env) before each action, the
    env in the state the prompts describe. Ends with the episode's last StepResult in `expert_steps.last`."""
    builder = PromptBuilder(style=style)
    observation = env.reset(task=task, seed=0)
    first, history = observation, []
    conversation = builder.first_message(env, observation)
    while True:
        window = builder.window_messages(env, first, history, observation, k)[1]["content"]
        yield window, conversation, env
        action = env.expert_action()
        result = env.step(action)
        history.append(HistoryEntry(observation, action))
        observation = result.observation
        if result.done:
            expert_steps.last = result
            return
        conversation = conversation + [{"role": "assistant", "content": f"<action>{action}</action>"},
                                       builder.observation_message(env, observation)]


def without_actions(window: str, conversation: list[dict]) -> tuple[str, str]:
    """The prompt text the environment and builder wrote, without the agent's own remembered actions."""
    shown = "\n".join(line for line in window.splitlines() if not line.startswith("Your action: "))
    return shown, "\n".join(m["content"] for m in conversation if m["role"] != "assistant")


def now_part(window: str) -> str:
    """The part of a compact window prompt about the current state (the whole prompt at step 1)."""
    return window.rsplit("(now): ", 1)[-1]


# ---------------------------------------------------------------------------------------- the styles


def test_styles_and_default():
    assert PROMPT_STYLES == ("compact", "verl-agent")
    assert PromptBuilder().style == "compact"
    with pytest.raises(ValueError, match="'short'.*compact, verl-agent"):
        PromptBuilder(style="short")


def test_verl_agent_style_is_pinned():
    env = make_env("guess-number")
    builder = PromptBuilder(style="verl-agent")
    first = env.reset(task=0, seed=0)
    opening = builder.first_message(env, first)
    assert opening[0]["content"].startswith("You are an agent acting in a text environment. Each turn, think")
    assert opening[1]["content"] == (
        f"{GUESS_INSTRUCTIONS}\n{GUESS_TASK}\nAdmissible actions: "
        + ", ".join(f"guess {n}" for n in range(1, 17)) + f"\n{FORMAT_HINT}"
    )
    observation = env.step("guess 8").observation
    assert builder.observation_message(env, observation) == {
        "role": "user", "content": f"Your guess 8 is too high. 5 guesses left.\nAdmissible actions: {GUESS_ACTIONS}"}
    window = builder.window_messages(env, first, [HistoryEntry(first, "guess 8")], observation, 2)
    assert window[1]["content"] == (
        f"{GUESS_INSTRUCTIONS}\nTask: {GUESS_TASK}\n"
        "Prior to this step you took 1 step(s). The last 1 observation(s) and the action you took after each:\n"
        f"[Observation 1: {GUESS_TASK!r}, Action 1: 'guess 8']\n"
        "You are now at step 2. Current observation: Your guess 8 is too high. 5 guesses left.\n"
        f"Admissible actions: {GUESS_ACTIONS}\n{FORMAT_HINT}"
    )


def test_compact_style_on_the_same_step():
    env = make_env("guess-number")
    first = env.reset(task=0, seed=0)
    observation = env.step("guess 8").observation
    window = PromptBuilder().window_messages(env, first, [HistoryEntry(first, "guess 8")], observation, 2)
    assert window[1]["content"] == (
        f"{GUESS_INSTRUCTIONS}\nTask: {GUESS_TASK}\nStep 1: (as in Task)\nYour action: guess 8\n"
        f"Step 2 (now): Your guess 8 is too high. 5 guesses left.\nActions: {GUESS_ACTIONS}\n{FORMAT_HINT}"
    )


# -------------------------------------------------------------------------------------------- WebShop


def test_webshop_compact_prompts_show_the_instruction_once_and_every_action(webshop):
    wins = 0
    for task in webshop.tasks("test")[:15]:
        for window, conversation, env in expert_steps(webshop, task, k=1):
            instruction = env.goal.instruction
            shown, full = without_actions(window, conversation)
            assert shown.count(instruction) == 1 and full.count(instruction) == 1
            page_now = conversation[-1]["content"].lower()
            for action in env.admissible_actions():
                verb, text = re.fullmatch(r"(search|click)\[(.*)\]", action).groups()
                assert f"Actions: {verb}[" in window and f"Actions: {verb}[" in conversation[-1]["content"]
                if verb == "search":
                    assert text in instruction     # the suggested keywords: the instruction less its price
                else:
                    assert text in now_part(window).lower() and text in page_now
        wins += expert_steps.last.info["success"]
    assert wins == 15


def test_webshop_compact_prompts_are_shorter(webshop, tokenizer):
    chat = ChatTokens(tokenizer)
    tokens = {}
    for style in PROMPT_STYLES:
        window_sizes, full_sizes = [], []
        for task in webshop.tasks("test")[:10]:
            for window, conversation, env in expert_steps(webshop, task, k=1, style=style):
                system = PromptBuilder(style=style)._system(env)
                window_sizes.append(len(chat.prompt_ids([system, {"role": "user", "content": window}])))
                full_sizes.append(len(chat.prompt_ids(conversation)))
        tokens[style] = (statistics.median(window_sizes), statistics.median(full_sizes))
    assert tokens["compact"][0] < 0.85 * tokens["verl-agent"][0], tokens
    assert tokens["compact"][1] < 0.85 * tokens["verl-agent"][1], tokens


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_webshop_compaction_removes_only_the_repeated_instruction(webshop, before, after):
    webshop.reset(task=webshop.tasks("test")[0], seed=0)
    repeated = f"Instruction: [SEP] {webshop.goal.instruction} [SEP] "
    assume(repeated not in before + after)
    assert webshop.compact_observation(before + after) == before + after
    assert webshop.compact_observation(before + repeated + after) == before + after
    assert webshop.compact_observation(repeated + before + repeated) == before


def test_compact_prompts_do_not_change_what_the_environment_returns(webshop):
    def play(build_prompts: bool):
        builder, seen = PromptBuilder(), []
        observation = webshop.reset(task=webshop.tasks("test")[1], seed=0)
        for action in ["click[nope]", "search[red shirt]", "click[back to search]", None, None, None, None]:
            if build_prompts:
                builder.window_messages(webshop, observation, [], observation, 1)
                builder.observation_message(webshop, observation)
            result = webshop.step(action or webshop.expert_action())
            observation = result.observation
            seen.append((observation, result.reward, webshop.state_key(), webshop.admissible_actions()))
        return seen

    assert play(True) == play(False)


# ------------------------------------------------------------------------------------- search-QA, ALFWorld


def test_searchqa_compact_prompts_keep_the_question_once_and_the_passages():
    env = make_env("searchqa")
    for task in env.tasks("test")[:10]:
        for window, conversation, live in expert_steps(env, task, k=1):
            question = live._question.question
            shown, full = without_actions(window, conversation)
            assert shown.count(question) == 1 and full.count(question) == 1
            if len(conversation) > 2:
                assert "<information>" in conversation[-1]["content"]
                assert conversation[-1]["content"] in window     # every retrieved passage reaches the prompt
            assert window.count(env.format_hint) == 1 and "<information>" in env.compact_instructions
        assert expert_steps.last.info["success"]
    # A response it cannot use: the feedback keeps its reason and drops the format hint the prompt carries.
    first = env.reset(task=env.tasks("test")[0])
    bad = env.step("no tags here").observation
    assert bad.endswith(env.format_hint)
    window = PromptBuilder().window_messages(env, first, [HistoryEntry(first, "no tags here")], bad, 1)[1]["content"]
    assert bad[: -len(env.format_hint)].strip() in window and window.count(env.format_hint) == 1


def test_alfworld_compact_actions_name_exactly_the_admissible_ones():
    env = make_env("alfworld")
    for task in env.tasks("test")[:3]:
        room = None
        for window, conversation, live in expert_steps(env, task, k=1):
            task_line = window.split("Task: ", 1)[1]
            room = room or set(re.findall(r"an? ([a-z]+ \d+)", task_line.split("Your task is to:")[0]))
            sentence = live._game.task_sentence
            assert window.count(sentence) == 1 and sum(m["content"].count(sentence) for m in conversation) == 1
            line = next(line for line in window.splitlines() if line.startswith("Actions: "))
            assert line == conversation[-1]["content"].splitlines()[-1] or len(conversation) == 2
            listed, _, go = line[len("Actions: "):].rpartition(", or ")
            but = re.fullmatch(r"go to any receptacle of the room(?: but (.+))?", go)
            assert but, line
            actions = live.admissible_actions()
            assert {a[len("go to "):] for a in actions if a.startswith("go to ")} == room - {but.group(1)}
            assert [a for a in actions if not a.startswith("go to ")] == (listed.split(", ") if listed else [])
        assert expert_steps.last.info["success"]


# ---------------------------------------------------------------------------------- user environments


class _Counter(Environment):
    """A user's environment with none of the compact hooks."""

    instructions = "Count up to 3."

    def reset(self, task=None, seed=None) -> str:
        self.n = 0
        return "You are at 0."

    def step(self, action: str) -> StepResult:
        self.n += 1 if action == "up" else -1
        return StepResult(f"You are at {self.n}.", float(self.n == 3), self.n == 3, {"success": self.n == 3})

    def tasks(self, split: str = "train") -> list:
        return [0]

    def admissible_actions(self) -> list[str] | None:
        return ["up", "down"]

    def expert_action(self) -> str | None:
        return "up"


@pytest.mark.parametrize("context", ["full", "window:1"])
def test_an_environment_without_hooks_works_in_compact_style(tokenizer, context):
    [episode] = rollout(ExpertPolicy(tokenizer), [_Counter()], [EpisodeSpec(0, 0, 0)], env_name="counter",
                        context=context, prompt_builder=PromptBuilder(style="compact"))
    assert episode.success and len(episode.turns) == 3
    text = tokenizer.decode(episode.token_ids if context == "full" else episode.turns[-1].prompt_ids)
    assert "Actions: up, down" in text and "You are at 2." in text


class _Plain:
    """Not even an Environment subclass: only what the prompt builder reads."""

    instructions = "Say hi."

    def admissible_actions(self):
        return ["hi"]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_compact_style_shows_a_hookless_observation_unchanged(observation):
    assume(observation != "Start.")   # the first observation, which the window shows as the task
    builder = PromptBuilder()
    for env in (_Counter(), _Plain()):
        actions = f"Actions: {', '.join(env.admissible_actions())}"
        window = builder.window_messages(env, "Start.", [HistoryEntry(observation, "up")], observation, 1)
        assert window[1]["content"] == (f"{env.instructions}\nTask: Start.\nStep 1: {observation}\nYour action: up\n"
                                        f"Step 2 (now): {observation}\n{actions}\n{FORMAT_HINT}")
        assert builder.observation_message(env, observation)["content"] == f"{observation}\n{actions}"
