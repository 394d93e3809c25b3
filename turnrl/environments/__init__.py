"""The environment contract, the registry, and the environments turnrl ships."""

from turnrl.environments.base import Environment, ReplaySnapshot, StateSnapshot, StepResult
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
# Adapters of environments from elsewhere: their factories need arguments (a server's URL, a gymnasium id), so
# the contract tests, which build every registered environment without arguments, leave them out.
ADAPTER_ENVS = ("openenv", "gym")
register_env("openenv", lazy_factory("turnrl.environments.openenv", "OpenEnvEnvironment"), overwrite=True)
register_env("gym", lazy_factory("turnrl.environments.gym", "GymEnvironment"), overwrite=True)

__all__ = [
    "ADAPTER_ENVS",
    "ENTRY_POINT_GROUP",
    "Environment",
    "ReplaySnapshot",
    "StateSnapshot",
    "StepResult",
    "ToolEnvironment",
    "lazy_factory",
    "list_envs",
    "load_env_module",
    "make_env",
    "register_env",
]
