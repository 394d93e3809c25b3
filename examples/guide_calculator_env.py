"""The calculator tool environment of docs/guides/add-a-tool-environment.md.

`turnrl eval --env-module examples/guide_calculator_env.py --env calculator --policy random --episodes 3`
"""
import json

from turnrl.environments import ToolEnvironment, register_env


def add(a: float, b: float) -> float:
    """Add two numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


def multiply(a: float, b: float) -> float:
    """Multiply two numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a * b


def call(name: str, a: float, b: float) -> str:
    return "<tool>" + json.dumps({"name": name, "arguments": {"a": a, "b": b}}) + "</tool>"


def make_task(i: int) -> dict:
    a, b, c = 2 + i % 9, 3 + i % 7, 1 + i % 11
    answer = a * b + c
    return {
        "prompt": f"What is {a} * {b} + {c}? Use the tools, then give the number.",
        "answer": answer,
        # the expert's whole responses, played in order (for --policy expert and `turnrl sft`)
        "expert": [call("multiply", a, b), call("add", a * b, c), f"<answer>{answer}</answer>"],
        # what --policy random picks from: plausible calls and answers, the right one among them
        "candidates": [call("multiply", a, b), call("add", a, b), call("add", a * b, c),
                       *(f"<answer>{x}</answer>" for x in (answer, a + b + c, (a + b) * c, a * b * c))],
    }


def reward(task: dict, answer: str) -> float:
    try:
        return float(float(answer) == task["answer"])
    except ValueError:   # not a number
        return 0.0


class CalculatorEnv(ToolEnvironment):
    """ToolEnvironment lists no admissible actions; this one lists its task's candidate responses, which
    `--policy random` samples from (they are never shown to the model: the environment reads whole responses)."""

    state_attributes = (*ToolEnvironment.state_attributes, "candidates")   # restored by tree search

    def reset(self, task=None, seed=None) -> str:
        observation = super().reset(task, seed)
        self.candidates = self.task_list[self.tasks("train")[0] if task is None else task]["candidates"]
        return observation

    def admissible_actions(self) -> list[str]:
        return list(self.candidates)


def make_env(max_turns: int = 4) -> CalculatorEnv:
    return CalculatorEnv(tools=[add, multiply], tasks=[make_task(i) for i in range(100)], reward=reward,
                         test_tasks=[make_task(i) for i in range(100, 130)], max_turns=max_turns)


register_env("calculator", make_env)
