"""Where the games are, and the task ids of each split.

Games live in ALFWorld's folder layout, `<root>/json_2.1.1/<split>/.../<game folder>/` holding `traj_data.json`
and `game.tw-pddl`, for the splits train, valid_seen and valid_unseen. The root is, in order:
- `data_dir=` given to the environment ("generated" forces the shipped games);
- `$ALFWORLD_DATA`, when it holds a `json_2.1.1` folder (the original ALFWorld data, as `alfworld-download`
  leaves it; importing alfworld sets this variable to its default cache folder, so its mere presence says
  nothing);
- the games shipped with turnrl (`games.jsonl.gz`), unpacked on first use into the turnrl cache.

As alfworld does, folders whose path contains "movable" or "Sliced", unknown task types and games marked
unsolvable are skipped. A task id is "<split>/<game folder relative to the split folder>", e.g.
"train/pick_heat_then_place_in_recep-Apple-None-CounterTop-0042" for a shipped game. The ids of a split are
interleaved by task type (one of each type in turn, each type in path order), so the first N tasks of any
split cover the six types evenly. The index of a root is built once per process and shared.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from turnrl.environments.alfworld.catalog import TASK_TYPES
from turnrl.environments.cache import cache_dir

SPLITS = ("train", "valid_seen", "valid_unseen")
BUNDLE = Path(__file__).with_name("games.jsonl.gz")
GENERATED = "generated"


@dataclass(frozen=True)
class GameEntry:
    task_id: str
    path: Path          # the game.tw-pddl file
    task_type: str


@dataclass
class GameIndex:
    root: Path
    games: dict[str, GameEntry]
    splits: dict[str, list[str]]


_INDEXES: dict[str, GameIndex] = {}
_LOCK = threading.Lock()


def shipped_root() -> Path:
    """The shipped games, unpacked into the cache (a folder per bundle content, so a new bundle is a new folder)."""
    from turnrl.environments.alfworld.generator import GENERATOR_VERSION, install_bundle

    if not BUNDLE.is_file():
        raise FileNotFoundError(f"the shipped ALFWorld games are missing ({BUNDLE.name} beside {__file__}); "
                                "reinstall turnrl or regenerate them with "
                                "`python -m turnrl.environments.alfworld.generator games.jsonl.gz`")
    digest = hashlib.sha256(BUNDLE.read_bytes()).hexdigest()[:12]
    return install_bundle(BUNDLE, cache_dir("alfworld") / f"games-{GENERATOR_VERSION}-{digest}")


def resolve_root(data_dir: str | os.PathLike | None) -> Path:
    """The data root for `data_dir` (see the module docstring)."""
    if data_dir is None:
        original = os.environ.get("ALFWORLD_DATA")
        data_dir = original if original and (Path(original) / "json_2.1.1").is_dir() else GENERATED
    if str(data_dir) == GENERATED:
        return shipped_root()
    root = Path(os.path.expandvars(os.path.expanduser(str(data_dir))))
    if (root / "json_2.1.1").is_dir():
        return root
    if root.name == "json_2.1.1" and root.is_dir():
        return root.parent
    raise FileNotFoundError(
        f"ALFWorld data folder {root} has no json_2.1.1/{{train,valid_seen,valid_unseen}} folders "
        "(the layout alfworld-download writes). Point data_dir= or $ALFWORLD_DATA at that folder, "
        f"or pass data_dir={GENERATED!r} for the games turnrl ships."
    )


def _scan_split(split_dir: Path, split: str) -> list[GameEntry]:
    entries = []
    for folder, dirs, files in os.walk(split_dir):
        dirs.sort()
        if "traj_data.json" not in files or "movable" in folder or "Sliced" in folder:
            continue
        game_file = Path(folder) / "game.tw-pddl"
        if not game_file.is_file():
            continue
        try:
            task_type = json.loads((Path(folder) / "traj_data.json").read_text())["task_type"]
            solvable = json.loads(game_file.read_text()).get("solvable", False)
        except (OSError, ValueError, KeyError):
            continue
        if task_type not in TASK_TYPES or not solvable:
            continue
        relative = Path(folder).relative_to(split_dir).as_posix()
        entries.append(GameEntry(f"{split}/{relative}", game_file, task_type))
    return entries


def interleave_by_type(entries: list[GameEntry]) -> list[GameEntry]:
    """One game of each task type in turn (types in TASK_TYPES order, games in path order)."""
    by_type = {task_type: sorted((e for e in entries if e.task_type == task_type), key=lambda e: e.task_id)
               for task_type in TASK_TYPES}
    ordered, round_ = [], 0
    while len(ordered) < len(entries):
        for task_type in TASK_TYPES:
            if round_ < len(by_type[task_type]):
                ordered.append(by_type[task_type][round_])
        round_ += 1
    return ordered


def game_index(data_dir: str | os.PathLike | None = None) -> GameIndex:
    """The (shared, per-process) index of the games under `data_dir`."""
    root = resolve_root(data_dir)
    key = str(root.resolve())
    with _LOCK:
        if key in _INDEXES:
            return _INDEXES[key]
    games, splits = {}, {}
    for split in SPLITS:
        split_dir = root / "json_2.1.1" / split
        entries = interleave_by_type(_scan_split(split_dir, split)) if split_dir.is_dir() else []
        splits[split] = [entry.task_id for entry in entries]
        games.update((entry.task_id, entry) for entry in entries)
    if not games:
        raise FileNotFoundError(f"no playable ALFWorld games under {root / 'json_2.1.1'}")
    index = GameIndex(root, games, splits)
    with _LOCK:
        return _INDEXES.setdefault(key, index)
