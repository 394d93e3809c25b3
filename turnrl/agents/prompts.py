"""How an episode becomes chat messages and token ids.

Two context modes (DESIGN.md):
- `full`: one growing conversation, system + first observation, then assistant/user turns. The token
  sequence grows by appending the generated ids and then the *segment* of chat-template text that
  follows them (end-of-turn glue, the next user message, the generation prompt), tokenized on its
  own. The segment is found by rendering the conversation with and without the new message and
  taking the difference, which is only sound when the template is prefix-preserving; when it is
  not, `ChatTemplateError` says so (use `window:k`).
- `window:k`: every step is a fresh two-message prompt holding the task, the last k observations
  with the actions taken, the current observation and the admissible actions, in the spirit of
  verl-agent's prompts (only the extracted action is remembered, never the reasoning).

Two styles of text (`PROMPT_STYLES`), the same in both modes:
- `compact` (default): nothing said twice, since prompt tokens are most of the compute. The episode's
  first observation is shown in full once (the `Task:` line, or the first message of `full`); every
  later observation goes through the environment's `compact_observation` (WebShop drops the
  instruction it repeats on every page, search-QA the reply format the prompt already gives);
  a window's remembered first observation is not repeated under the task; the admissible actions come
  from the environment's `compact_actions` where it has one (WebShop: the clickables are on the page;
  ALFWorld: the `go to` targets are the room's receptacles), else as a list; short framing words.
  The hooks are optional (`turnrl/environments/base.py`): an environment without them gets the rest.
- `verl-agent`: verl-agent's wording and layout ("Prior to this step you took ...", every observation
  verbatim, the full admissible list), the reference that the paper-sized configs follow.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from jinja2 import TemplateError

from turnrl.agents.actions import FORMAT_HINT

SYSTEM_PROMPT = (
    "You are an agent acting in a text environment. Each turn, think briefly inside <think> </think>, "
    "then give exactly one action inside <action> </action>."
)
# For environments that read their own tags (`parses_responses`): the format is the environment's `format_hint`.
RESPONSE_SYSTEM_PROMPT = (
    "You are an agent acting in a text environment. Each turn, think briefly inside <think> </think>, "
    "then reply in exactly the format the task asks for."
)


PROMPT_STYLES = ("compact", "verl-agent")


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be extended turn by turn."""


def parse_context(context: str) -> int | None:
    """`"full"` -> None, `"window:k"` -> k. Anything else raises ValueError naming the choices."""
    if context == "full":
        return None
    if context.startswith("window:"):
        k = context.split(":", 1)[1]
        if k.isascii() and k.isdigit():
            return int(k)
    raise ValueError(f"context must be 'full' or 'window:k' with k a non-negative integer, got {context!r}")


@dataclass
class HistoryEntry:
    observation: str
    action: str          # the extracted action, or a note that the response had none


class PromptBuilder:
    """Writes the user messages an agent sees, in one of `PROMPT_STYLES`. Environments may carry an
    `instructions` string and the compact style's hooks (`compact_instructions`, `compact_observation`,
    `compact_actions`)."""

    def __init__(self, system_prompt: str | None = None, show_admissible: bool = True, style: str = "compact"):
        if style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
        self.system_prompt = system_prompt      # None: chosen by the environment's response format
        self.show_admissible = show_admissible
        self.style = style

    @property
    def compact(self) -> bool:
        return self.style == "compact"

    def _system(self, env) -> dict:
        default = RESPONSE_SYSTEM_PROMPT if getattr(env, "parses_responses", False) else SYSTEM_PROMPT
        return {"role": "system", "content": self.system_prompt or default}

    @staticmethod
    def _format_hint(env) -> str:
        return getattr(env, "format_hint", None) or FORMAT_HINT

    def _admissible(self, env) -> str:
        # An environment that reads whole responses lists candidate responses (for the random baseline),
        # not a menu of moves: showing them would put answers in the prompt.
        if not self.show_admissible or getattr(env, "parses_responses", False):
            return ""
        if self.compact:
            hook = getattr(env, "compact_actions", None)
            line = hook() if hook is not None else None
            if line:
                return f"\n{line}"
        actions = env.admissible_actions()
        if not actions:
            return ""
        return f"\n{'Actions' if self.compact else 'Admissible actions'}: {', '.join(actions)}"

    def _instructions(self, env) -> str:
        text = (getattr(env, "compact_instructions", None) if self.compact else None) or getattr(env, "instructions", "")
        return f"{text}\n" if text else ""

    def _later(self, env, observation: str) -> str:
        """An observation after the first one, as this style shows it."""
        if not self.compact:
            return observation
        hook = getattr(env, "compact_observation", None)
        return hook(observation) if hook is not None else observation

    def first_message(self, env, observation: str) -> list[dict]:
        """The opening messages of a `full` conversation."""
        content = f"{self._instructions(env)}{observation}{self._admissible(env)}\n{self._format_hint(env)}"
        return [self._system(env), {"role": "user", "content": content}]

    def observation_message(self, env, observation: str) -> dict:
        """The user message that carries an observation in a `full` conversation."""
        return {"role": "user", "content": f"{self._later(env, observation)}{self._admissible(env)}"}

    def window_messages(self, env, task_observation: str, history: list[HistoryEntry], observation: str,
                        k: int) -> list[dict]:
        """The fresh prompt of one `window:k` step."""
        step = len(history)
        recent = history[-k:] if k > 0 else []
        first = step - len(recent) + 1
        lines = [f"{self._instructions(env)}Task: {task_observation}"]
        if self.compact:
            for n, entry in enumerate(recent, start=first):
                shown = "(as in Task)" if n == 1 and entry.observation == task_observation \
                    else self._later(env, entry.observation)
                lines += [f"Step {n}: {shown}", f"Your action: {entry.action}"]
            if step > 0:
                lines.append(f"Step {step + 1} (now): {self._later(env, observation)}")
        else:
            if recent:
                lines.append(
                    f"Prior to this step you took {step} step(s). "
                    f"The last {len(recent)} observation(s) and the action you took after each:"
                )
                for n, entry in enumerate(recent, start=first):
                    lines.append(f"[Observation {n}: {entry.observation!r}, Action {n}: {entry.action!r}]")
            if step > 0:
                lines.append(f"You are now at step {step + 1}. Current observation: {observation}")
        lines.append(f"{self._admissible(env).lstrip()}\n{self._format_hint(env)}".lstrip())
        return [self._system(env), {"role": "user", "content": "\n".join(lines)}]


class ChatTokens:
    """Token-in/token-out bookkeeping over a tokenizer's chat template."""

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError("the tokenizer has no chat template; turnrl needs one to build prompts")
        self.tokenizer = tokenizer
        self.eos_text = tokenizer.eos_token or ""

    def render(self, messages: list[dict], add_generation_prompt: bool, tools: list[dict] | None = None) -> str:
        """The chat-template text of `messages`. `tools` (OpenAI function schemas) go to the template where
        it renders them, otherwise into the system message as JSON, one tool per line."""
        if tools and not self.renders_tools:
            messages = _tools_in_system_message(messages, tools)
        kwargs = {"tools": list(tools)} if tools and self.renders_tools else {}
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )

    @functools.cached_property
    def renders_tools(self) -> bool:
        """Whether the chat template writes the `tools=` it is given into the prompt."""
        probe = [{"type": "function", "function": {"name": "turnrl_probe_tool", "description": "probe",
                                                   "parameters": {"type": "object", "properties": {}}}}]
        try:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}], tools=probe, tokenize=False, add_generation_prompt=True
            )
        except (TemplateError, TypeError, ValueError, KeyError):  # a template that fails on tools: use the prompt
            return False
        return "turnrl_probe_tool" in text

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """Ids of a fresh prompt ending in the generation prompt."""
        return self.encode(self.render(messages, add_generation_prompt=True, tools=tools))

    def continuation_ids(self, messages: list[dict], response: str, ended_with_eos: bool,
                         next_message: dict, tools: list[dict] | None = None) -> list[int]:
        """Ids that follow a generated response: the template's end-of-turn glue (less the end-of-turn
        token if the model generated it), the next user message and the generation prompt.

        `messages` is the conversation before the response; `response` the decoded generated text
        without its end-of-turn token.
        """
        assistant = {"role": "assistant", "content": response}
        before = self.render(messages, add_generation_prompt=True, tools=tools)
        with_response = self.render(messages + [assistant], add_generation_prompt=False, tools=tools)
        with_next = self.render(messages + [assistant, next_message], add_generation_prompt=True, tools=tools)
        if not with_next.startswith(with_response):
            raise ChatTemplateError(
                "the chat template is not prefix-preserving: adding a message changes how earlier messages "
                "render, so turns cannot be appended token by token; use context 'window:k'"
            )
        if not with_response.startswith(before + response):
            raise ChatTemplateError(
                "the chat template rewrites the assistant's message (it does not render it verbatim after the "
                "generation prompt), so turns cannot be appended token by token; use context 'window:k'"
            )
        glue = with_response[len(before) + len(response):]
        if ended_with_eos and self.eos_text and glue.startswith(self.eos_text):
            glue = glue[len(self.eos_text):]
        return self.encode(glue + with_next[len(with_response):])


def _tools_in_system_message(messages: list[dict], tools: list[dict]) -> list[dict]:
    """The conversation with the tool descriptions appended to its system message (or a new one)."""
    listing = "Available tools:\n" + "\n".join(json.dumps(tool, sort_keys=True) for tool in tools)
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{listing}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": listing}, *messages]
