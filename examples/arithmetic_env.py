"""A tool environment in your own file: `turnrl eval --env-module examples/arithmetic_env.py --env arithmetic`."""
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
    """Multiply two numbers a and b."""
    return a * b


def make_task(i: int) -> dict:
    a, b, c = 3 + i % 7, 11 + i % 13, 2 + i % 5
    calls = [{"name": "add", "arguments": {"a": a, "b": b}}, {"name": "multiply", "arguments": {"a": a + b, "b": c}}]
    return {"prompt": f"What is ({a} + {b}) * {c}? Use the tools.", "answer": str((a + b) * c),  # the expert's turns:
            "expert": [f"<tool>{json.dumps(call)}</tool>" for call in calls] + [f"<answer>{(a + b) * c}</answer>"]}


def reward(task: dict, answer: str) -> float:
    return float(answer.strip() == task["answer"])


def make_env(max_turns: int = 6) -> ToolEnvironment:
    return ToolEnvironment(tools=[add, multiply], tasks=[make_task(i) for i in range(200)], reward=reward,
                           test_tasks=[make_task(i) for i in range(200, 250)], max_turns=max_turns)


register_env("arithmetic", make_env)
