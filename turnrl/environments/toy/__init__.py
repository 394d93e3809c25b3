"""Tiny deterministic environments for tests and learning checks: `guess-number`, `lights`, `traffic`,
`corridor`."""

from turnrl.environments.registry import register_env
from turnrl.environments.toy.corridor import CorridorEnv
from turnrl.environments.toy.guess_number import GuessNumberEnv
from turnrl.environments.toy.lights import LightsEnv
from turnrl.environments.toy.traffic import TrafficEnv


def register_toy_envs() -> None:
    """Register the toy environments; safe to call more than once."""
    register_env("guess-number", GuessNumberEnv, overwrite=True)
    register_env("lights", LightsEnv, overwrite=True)
    register_env("traffic", TrafficEnv, overwrite=True)
    register_env("corridor", CorridorEnv, overwrite=True)


__all__ = ["CorridorEnv", "GuessNumberEnv", "LightsEnv", "TrafficEnv", "register_toy_envs"]
