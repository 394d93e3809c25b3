"""Prompt sizes of the two prompt styles (`compact`, `verl-agent`) on expert episodes, in tokens.

    python bench/prompts.py [--episodes 50] [--envs webshop,searchqa,alfworld] [--context window:1,full]
                            [--model smollm2-135m]

Plays the same expert episodes (the first `--episodes` test tasks, seed 0) of each environment through
`turnrl.agents.rollout.evaluate` with the expert as the policy, once per context mode and prompt style, so
the prompts are exactly those a model would get in training. Only the tokenizer of `--model` is loaded;
nothing is generated. Reported per environment, context and style:

- `median`, `max`: tokens per prompt (in `full`, the conversation's length each time the agent is asked,
  which is the prompt of that turn); `by_turn` (full only): the median length at turns 1, 2, ...
- `success_rate`: the expert's, which must not depend on the style;
- `task_repeats`: how often the task text (WebShop's instruction, the question, ALFWorld's task sentence)
  appears in a prompt, on average;
- `hidden_actions`: admissible actions at any step that the prompt neither shows nor lets the agent
  derive (a click's text, a suggested search's keywords or a `go to` target missing from the prompt);
  0 means every action can be read from the prompt.

The last line printed is a JSON object: {env: {context: {style: {...}}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time

# bench/alfworld.py would shadow the alfworld package: keep this folder off the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

MAX_TURNS = {"webshop": 15, "searchqa": 4, "alfworld": 50}   # the environments' own episode limits
# The text that states each environment's task, read from its state.
TASK_TEXT = {
    "webshop": lambda env: env.goal.instruction,
    "searchqa": lambda env: env._question.question,
    "alfworld": lambda env: env._game.task_sentence,
}
_BRACKETED = re.compile(r"(search|click)\[(.*)\]", re.DOTALL)


def hidden_actions(env, text: str) -> list[str]:
    """The admissible actions that `text` neither shows nor lets the agent derive."""
    if getattr(env, "parses_responses", False):
        return []   # its admissible actions are candidate answers, never shown in prompts
    hidden = []
    for action in env.admissible_actions() or []:
        bracketed = _BRACKETED.fullmatch(action)
        if action in text:
            continue
        if bracketed and f"{bracketed.group(1)}[" in text and bracketed.group(2).lower() in text.lower():
            continue   # WebShop: the syntax is given and the click's text (any case) or the search's keywords shown
        if action.startswith("go to ") and "go to any receptacle" in text and action[len("go to "):] in text:
            continue   # ALFWorld: the room's receptacles are listed in the first observation
        hidden.append(action)
    return hidden


class CheckingExpert:
    """The expert policy, which also records, for each prompt it is given, its length, how often the task
    text appears in it and which admissible actions it hides."""

    def __init__(self, tokenizer, env_name: str):
        from turnrl.agents.policy import ExpertPolicy

        self.expert = ExpertPolicy(tokenizer)
        self.tokenizer, self.device, self.max_new_tokens = tokenizer, self.expert.device, self.expert.max_new_tokens
        self.task_text = TASK_TEXT.get(env_name)
        self.task_repeats: list[int] = []
        self.hidden: list[str] = []

    def generate(self, prompts, *, generator=None, envs=None, cache=None):
        for ids, env in zip(prompts, envs):
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            if self.task_text is not None:
                self.task_repeats.append(text.count(self.task_text(env)))
            self.hidden += hidden_actions(env, text)
        return self.expert.generate(prompts, generator=generator, envs=envs)


def measure(tokenizer, env_name: str, tasks: list, context: str, style: str) -> dict:
    from turnrl.agents.prompts import PromptBuilder
    from turnrl.agents.rollout import evaluate

    policy = CheckingExpert(tokenizer, env_name)
    episodes = evaluate(policy, env_name, tasks, context=context, max_turns=MAX_TURNS.get(env_name, 10),
                        prompt_builder=PromptBuilder(style=style), batch_size=16)
    full = context == "full"
    lengths = [turn.span[0] if full else len(turn.prompt_ids) for e in episodes for turn in e.turns]
    out = {"median": statistics.median(lengths), "max": max(lengths), "prompts": len(lengths),
           "success_rate": sum(e.success for e in episodes) / len(episodes), "episodes": len(episodes),
           "task_repeats": round(statistics.fmean(policy.task_repeats), 3) if policy.task_repeats else None,
           "hidden_actions": len(policy.hidden)}
    if full:
        turns = max(len(e.turns) for e in episodes)
        out["by_turn"] = [statistics.median(e.turns[n].span[0] for e in episodes if len(e.turns) > n)
                          for n in range(turns)]
    if policy.hidden:
        out["hidden_examples"] = sorted(set(policy.hidden))[:5]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=50, help="expert episodes per environment (test tasks)")
    parser.add_argument("--envs", default="webshop,searchqa,alfworld", help="comma-separated environments")
    parser.add_argument("--context", default="window:1,full", help="comma-separated context modes")
    parser.add_argument("--model", default="smollm2-135m", help="whose tokenizer counts the tokens")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from turnrl.agents.models import resolve_model_path
    from turnrl.agents.prompts import PROMPT_STYLES, parse_context
    from turnrl.environments import make_env

    contexts = args.context.split(",")
    for context in contexts:
        parse_context(context)   # a bad mode fails before any episode
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model))
    results: dict = {}
    for env_name in args.envs.split(","):
        env = make_env(env_name)
        tasks = env.tasks("test")[: args.episodes]
        env.close()
        for context in contexts:
            for style in reversed(PROMPT_STYLES):   # verl-agent first: the reference, then compact
                start = time.perf_counter()
                row = measure(tokenizer, env_name, tasks, context, style)
                results.setdefault(env_name, {}).setdefault(context, {})[style] = row
                print(f"{env_name:9} {context:9} {style:10} median {row['median']:7.1f}  max {row['max']:6}  "
                      f"success {row['success_rate']:.2f}  task x{row['task_repeats']}  hidden "
                      f"{row['hidden_actions']}  ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
            pair = results[env_name][context]
            pair["compact_over_verl_agent"] = round(pair["compact"]["median"] / pair["verl-agent"]["median"], 3)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
