"""The environment contract, the registry, and the environments turnrl ships."""

from turnrl.environments.base import Environment, ReplaySnapshot, StepResult
from turnrl.environments.registry import (
    ENTRY_POINT_GROUP,
    list_envs,
    load_env_module,
    make_env,
    register_env,
)
from turnrl.environments.toy import register_toy_envs

register_toy_envs()

__all__ = [
    "ENTRY_POINT_GROUP",
    "Environment",
    "ReplaySnapshot",
    "StepResult",
    "list_envs",
    "load_env_module",
    "make_env",
    "register_env",
]
