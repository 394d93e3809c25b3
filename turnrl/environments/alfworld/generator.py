"""The deterministic ALFWorld game generator.

Every game is drawn by `random.Random` seeded with a string (SHA-512 based, the same in every process and on
every machine) from sorted lists, so the same version of this file writes byte-identical games everywhere.

Splits, as in ALFWorld:
- `train`: games in the seen room templates whose goal (object type, receptacle or lamp type) is a seen
  combination;
- `valid_seen`: the same templates and combinations, with new placements;
- `valid_unseen`: only unseen room templates and only unseen combinations (none of them occurs in train).

A combination is unseen when a SHA-256 of "Object|Receptacle" falls in the held-out quarter (`is_unseen_combo`).
Each game is checked solvable by the planner at generation time (`engine.solve_and_verify` plays the plan to a
win) and its plan is stored as the game's walkthrough. Planning takes about a second a game, so the games are
generated once (`python -m turnrl.environments.alfworld.generator games.jsonl.gz`) and ship with the package
as `games.jsonl.gz`; first use unpacks them into the cache in ALFWorld's folder layout (`install_bundle`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from turnrl.environments.alfworld.catalog import (
    LAMP_HOLDERS,
    LAMPS,
    ROOM_OBJECTS,
    ROOM_TEMPLATES,
    TASK_APPLIANCE,
    TASK_ROOM_KINDS,
    TASK_TYPES,
    AlfredFacts,
    RoomTemplate,
)
from turnrl.environments.alfworld.pddl import GameSpec, engine_files, problem_pddl, traj_data

GENERATOR_VERSION = "v1"
# Games per task type in each split: 6 x 50 = 300 train, 6 x 10 = 60 in each validation split.
SPLIT_SIZES = {"train": 50, "valid_seen": 10, "valid_unseen": 10}
SPLITS = tuple(SPLIT_SIZES)

# Receptacles that hold an object only as part of a task, never in the initial placement.
_NOT_INITIAL = frozenset({"StoveBurner", "CoffeeMachine", "Toaster"})


def receptacle_id(rtype: str, k: int) -> str:
    """ALFRED's id form; basins are parts of a sink or bathtub ("Sink_bar_1_bar_SinkBasin" reads "sinkbasin 1")."""
    if rtype.endswith("Basin"):
        return f"{rtype[:-len('Basin')]}_bar_{k}_bar_{rtype}"
    return f"{rtype}_bar_{k}"


def is_unseen_combo(object_type: str, receptacle_type: str) -> bool:
    """Whether a goal combination is held out of train (a quarter of all combinations, by a stable hash)."""
    return hashlib.sha256(f"{object_type}|{receptacle_type}".encode()).digest()[0] % 4 == 0


def _goal_receptacle_types(task_type: str, template: RoomTemplate, facts: AlfredFacts, otype: str) -> list[str]:
    if task_type == "look_at_obj_in_light":
        return sorted(lamp for lamp in template.lamps)
    appliance = TASK_APPLIANCE.get(task_type, (None, None))[0]
    return sorted(rtype for rtype in set(template.receptacle_types)
                  if facts.holds(rtype, otype) and rtype != appliance and rtype not in _NOT_INITIAL)


def _start_receptacles(template: RoomTemplate, facts: AlfredFacts, otype: str, exclude: str) -> list[str]:
    return sorted(rtype for rtype in set(template.receptacle_types)
                  if facts.holds(rtype, otype) and rtype != exclude and rtype not in _NOT_INITIAL)


# Pick-two games only in rooms with at most this many receptacles: fast-downward's search over which two
# objects to bring grows steeply with the room (tens of seconds a game in the 28-receptacle kitchen).
PICK_TWO_MAX_RECEPTACLES = 22


def goal_choices(split: str, task_type: str, facts: AlfredFacts) -> list[tuple[str, str, str]]:
    """Every (template, object type, receptacle-or-lamp type) a game of `split` and `task_type` may have."""
    unseen = split == "valid_unseen"
    appliance, prop = TASK_APPLIANCE.get(task_type, (None, None))
    choices = []
    for template in ROOM_TEMPLATES:
        if template.unseen != unseen or template.kind not in TASK_ROOM_KINDS[task_type]:
            continue
        size = sum(count for _, count in template.receptacles)
        if task_type == "pick_two_obj_and_place" and size > PICK_TWO_MAX_RECEPTACLES:
            continue
        if appliance and appliance not in template.receptacle_types:
            continue
        for otype in sorted(ROOM_OBJECTS[template.kind]):
            if prop and not facts.has(otype, prop):
                continue
            for goal in _goal_receptacle_types(task_type, template, facts, otype):
                exclude = "" if task_type == "look_at_obj_in_light" else goal
                if not _start_receptacles(template, facts, otype, exclude):
                    continue
                if is_unseen_combo(otype, goal) == unseen:
                    choices.append((template.name, otype, goal))
    return choices


def _task_text(task_type: str, otype: str, goal: str, rng: random.Random) -> str:
    from alfworld.gen import goal_library

    template = rng.choice(goal_library.gdict[task_type]["templates"])
    return template.format(obj=otype.lower(), recep=goal.lower(), toggle=goal.lower(), mrecep="")


def sample_game(split: str, task_type: str, index: int, facts: AlfredFacts) -> GameSpec:
    """The index-th game of a split and task type (before the solvability check)."""
    rng = random.Random(f"turnrl-alfworld-{GENERATOR_VERSION}-{split}-{task_type}-{index}")
    template_name, otype, goal = rng.choice(goal_choices(split, task_type, facts))
    template = next(t for t in ROOM_TEMPLATES if t.name == template_name)
    look = task_type == "look_at_obj_in_light"
    name = f"{task_type}-{otype}-None-{goal}-{index:04d}"
    spec = GameSpec(name=name, split=split, template=template.name, task_type=task_type, object_target=otype,
                    parent_target="" if look else goal, toggle_target=goal if look else "",
                    task_text=_task_text(task_type, otype, goal, rng))

    by_type: dict[str, list[str]] = {}
    for rtype, count in template.receptacles:
        for k in range(1, count + 1):
            rid = receptacle_id(rtype, k)
            spec.receptacles.append((rid, rtype))
            by_type.setdefault(rtype, []).append(rid)
    counts: dict[str, int] = {}

    def place(object_type: str, receptacle_types: list[str], hide: bool) -> None:
        closed = [r for r in receptacle_types if r in facts.openable]
        pool = closed if hide and closed else receptacle_types
        rid = rng.choice(by_type[rng.choice(pool)])
        counts[object_type] = counts.get(object_type, 0) + 1
        spec.objects.append((f"{object_type}_bar_{counts[object_type]}", object_type, rid))

    # The goal's objects: one or more (two or three for pick-two), never already where the goal wants them,
    # and often hidden in a closed receptacle so that they must be found.
    # (Exactly two for pick-two: a third interchangeable object makes fast-downward's search blow up.)
    pick_two = task_type == "pick_two_obj_and_place"
    n_targets = 2 if pick_two else rng.choice((1, 1, 2))
    start = _start_receptacles(template, facts, otype, "" if look else goal)
    for _ in range(n_targets):
        place(otype, start, hide=rng.random() < 0.4)

    # Lamps: the goal's lamp (look tasks), or the room's lamps as furniture in other games.
    holders = sorted(set(LAMP_HOLDERS) & set(template.receptacle_types))
    lamps = [goal] if look else [lamp for lamp in template.lamps if rng.random() < 0.7]
    for lamp in lamps:
        place(lamp, holders, hide=False)

    # Distractors: other object types of the room.
    others = [o for o in sorted(ROOM_OBJECTS[template.kind]) if o != otype and o not in LAMPS]
    for _ in range(rng.randint(3, 8) if pick_two else rng.randint(5, 14)):
        dtype = rng.choice(others)
        where = _start_receptacles(template, facts, dtype, "")
        if where:
            place(dtype, where, hide=False)
    return spec


def generate_records(split: str, *, facts: AlfredFacts | None = None, count: int | None = None,
                     check: bool = True, progress=None):
    """The games of `split` as records {split, name, traj_data, problem, walkthrough}, task types interleaved
    in file order. `check=False` skips the planner (for determinism tests of the sampling alone)."""
    from turnrl.environments.alfworld.engine import solve_and_verify

    facts = facts or AlfredFacts()
    for index in range(SPLIT_SIZES[split] if count is None else count):
        for task_type in TASK_TYPES:
            spec = sample_game(split, task_type, index, facts)
            problem = problem_pddl(spec, facts)
            walkthrough = solve_and_verify(spec, problem) if check else None
            if check and walkthrough is None:
                raise RuntimeError(f"generated ALFWorld game {split}/{spec.name} is not solvable: a generator bug")
            if progress:
                progress(split, spec.name)
            yield {"split": split, "name": spec.name, "traj_data": traj_data(spec), "problem": problem,
                   "walkthrough": walkthrough}


def _records_of(job: tuple[str, int]) -> list[str]:
    """The games of one index of a split, one per task type, as JSON lines (a unit of work for write_bundle)."""
    from turnrl.environments.alfworld.engine import solve_and_verify

    split, index = job
    facts = AlfredFacts()
    records = []
    for task_type in TASK_TYPES:
        spec = sample_game(split, task_type, index, facts)
        problem = problem_pddl(spec, facts)
        walkthrough = solve_and_verify(spec, problem)
        if walkthrough is None:
            raise RuntimeError(f"generated ALFWorld game {split}/{spec.name} is not solvable: a generator bug")
        records.append(json.dumps({"split": split, "name": spec.name, "traj_data": traj_data(spec),
                                   "problem": problem, "walkthrough": walkthrough}, sort_keys=True))
    return records


def write_bundle(path: Path, *, workers: int = 1, progress=None) -> None:
    """Generate every split and write the games to one gzipped JSON-lines file (byte-identical for a given
    generator version and alfworld/fast-downward version: gzip without a timestamp, keys sorted). The same
    order as `generate_records`, whatever the number of worker processes."""
    jobs = [(split, index) for split in SPLITS for index in range(SPLIT_SIZES[split])]
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            chunks = []
            for job, chunk in zip(jobs, pool.imap(_records_of, jobs)):
                chunks.append(chunk)
                if progress:
                    progress(*job)
    else:
        chunks = []
        for job in jobs:
            chunks.append(_records_of(job))
            if progress:
                progress(*job)
    lines = [line for chunk in chunks for line in chunk]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as fh:
        fh.write(("\n".join(lines) + "\n").encode())
    os.replace(tmp, path)


def read_bundle(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def install_bundle(bundle: Path, root: Path) -> Path:
    """Unpack the shipped games into ALFWorld's folder layout under `root` (atomically; a finished folder is
    reused): root/json_2.1.1/<split>/<game>/{initial_state.pddl, traj_data.json, game.tw-pddl}."""
    done = root / "json_2.1.1"
    if (root / "COMPLETE").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        domain, grammar = engine_files()
        for record in read_bundle(bundle):
            folder = tmp / "json_2.1.1" / record["split"] / record["name"]
            folder.mkdir(parents=True)
            (folder / "initial_state.pddl").write_text(record["problem"])
            (folder / "traj_data.json").write_text(json.dumps(record["traj_data"], indent=1, sort_keys=True))
            task = record["traj_data"]["turk_annotations"]["anns"][0]["task_desc"]
            game = {"pddl_domain": domain, "grammar": grammar.replace("UNKNOWN GOAL", task),
                    "pddl_problem": record["problem"], "solvable": record["walkthrough"] is not None,
                    "walkthrough": record["walkthrough"]}
            (folder / "game.tw-pddl").write_text(json.dumps(game, sort_keys=True))
        (tmp / "COMPLETE").write_text(f"{GENERATOR_VERSION}\n")
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "COMPLETE").exists():  # not a concurrent writer's finished copy
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    assert done.is_dir()
    return root


if __name__ == "__main__":  # python -m turnrl.environments.alfworld.generator OUT.jsonl.gz [WORKERS]
    import sys

    started = time.perf_counter()
    write_bundle(Path(sys.argv[1]), workers=int(sys.argv[2]) if len(sys.argv) > 2 else 1,
                 progress=lambda split, index: print(f"{time.perf_counter() - started:7.1f}s {split} #{index}",
                                                     flush=True))
    print(f"generated in {time.perf_counter() - started:.1f}s")
