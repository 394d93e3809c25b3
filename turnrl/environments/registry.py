"""Environment registry: `register_env`, `make_env`, `list_envs`, and `load_env_module`.

Environments come from three places: the ones turnrl ships (registered on import of
`turnrl.environments`), packages that declare an entry point in the group `turnrl.environments`
(name = factory), and a user's own file or module imported with `--env-module` before anything else.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

ENTRY_POINT_GROUP = "turnrl.environments"

_FACTORIES: dict[str, Callable] = {}
_entry_points_loaded = False


def register_env(name: str, factory: Callable, *, overwrite: bool = False) -> None:
    """Register `factory(**kwargs) -> Environment` under `name`."""
    if not callable(factory):
        raise TypeError(f"register_env({name!r}, ...): the factory must be callable, got {factory!r}")
    if name in _FACTORIES and _FACTORIES[name] is not factory and not overwrite:
        raise ValueError(f"an environment named {name!r} is already registered; pass overwrite=True to replace it")
    _FACTORIES[name] = factory


def lazy_factory(module: str, name: str) -> Callable:
    """A factory that imports `module` only when an environment is built, so that registering an
    environment with heavy or optional dependencies costs nothing until it is used."""

    def factory(**kwargs):
        return getattr(importlib.import_module(module), name)(**kwargs)

    factory.__qualname__ = f"lazy_factory({module}.{name})"
    return factory


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _FACTORIES:
            _FACTORIES[ep.name] = ep.load()


def list_envs() -> list[str]:
    """Names of every registered environment, entry points included, sorted."""
    _load_entry_points()
    return sorted(_FACTORIES)


def make_env(name: str, **kwargs):
    """Build the environment registered as `name` with `kwargs`."""
    _load_entry_points()
    if name not in _FACTORIES:
        raise ValueError(
            f"unknown environment {name!r}; registered: {', '.join(sorted(_FACTORIES)) or 'none'}. "
            "A user environment is registered by its own module: pass --env-module FILE_OR_MODULE."
        )
    return _FACTORIES[name](**kwargs)


def load_env_module(spec: str) -> None:
    """Import a user's environment module so that it can call `register_env`.

    `spec` is a path to a .py file or a dotted module name.
    """
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"--env-module {spec}: no such file")
        # Named after the resolved path, not only the stem: two users' `env.py` files are different modules.
        resolved = path.resolve()
        digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
        module_name = f"turnrl_user_env_{path.stem}_{digest}"
        if module_name in sys.modules:
            return
        module_spec = importlib.util.spec_from_file_location(module_name, resolved)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except ModuleNotFoundError as err:   # the file is there; something it imports is not
            sys.modules.pop(module_name, None)
            raise ModuleNotFoundError(f"--env-module {spec}: the file exists, but importing it failed: {err} "
                                      "(install what it imports)") from err
        except BaseException:
            # Leave no half-imported module behind, or loading the fixed file again would do nothing.
            sys.modules.pop(module_name, None)
            raise
    else:
        try:
            importlib.import_module(spec)
        except ModuleNotFoundError as err:
            if err.name and not spec.startswith(err.name) and not err.name.startswith(spec):
                raise ModuleNotFoundError(f"--env-module {spec}: the module exists, but importing it failed: {err} "
                                          "(install what it imports)") from err
            raise ModuleNotFoundError(f"--env-module {spec}: neither a .py file nor an importable module ({err})") from err
