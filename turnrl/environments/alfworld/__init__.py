"""ALFWorld on the real alfworld/TextWorld engine, with games turnrl generates and ships (`pip install
'turnrl[alfworld]'`). See env.py for the environment and generator.py for the games."""

from turnrl.environments.alfworld.env import INSTRUCTIONS, ALFWorldEnv

__all__ = ["INSTRUCTIONS", "ALFWorldEnv"]
