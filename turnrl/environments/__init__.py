"""The environment contract, the registry, and the environments turnrl ships."""

from turnrl.environments.base import Environment, ReplaySnapshot, StepResult
from turnrl.environments.registry import (
    ENTRY_POINT_GROUP,
    lazy_factory,
    list_envs,
    load_env_module,
    make_env,
    register_env,
)
from turnrl.environments.tools import ToolEnvironment
from turnrl.environments.toy import register_toy_envs

register_toy_envs()
# The benchmark environments import their search engines (and ALFWorld its engine) only when built.
register_env("webshop", lazy_factory("turnrl.environments.webshop", "WebShopEnv"), overwrite=True)
register_env("alfworld", lazy_factory("turnrl.environments.alfworld", "ALFWorldEnv"), overwrite=True)
register_env("searchqa", lazy_factory("turnrl.environments.searchqa", "SearchQAEnv"), overwrite=True)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Environment",
    "ReplaySnapshot",
    "StepResult",
    "ToolEnvironment",
    "lazy_factory",
    "list_envs",
    "load_env_module",
    "make_env",
    "register_env",
]
