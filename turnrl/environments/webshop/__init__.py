"""WebShop (Yao et al. 2022) offline: the original's pages, actions and reward over the original data
format, with a generated catalogue shipped as the default data and bm25s search. Registered as `webshop`.

Modules: `engine` (page state machine, observations, expert), `reward` (the purchase reward as pure
functions), `data` (the original file schema and goal splits), `catalogue` (the shipped catalogue's
generator), `search` (the bm25s index).
"""

from turnrl.environments.webshop.engine import WebShopEnv

__all__ = ["WebShopEnv"]
