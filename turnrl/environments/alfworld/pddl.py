"""Writing a game in ALFWorld's file format: `initial_state.pddl` (an ALFRED PDDL problem), `traj_data.json`
(task type and goal parameters) and `game.tw-pddl` (what the TextWorld engine loads: the alfworld wheel's PDDL
domain and text grammar, with the task sentence filled in, plus the problem).

Entity names follow ALFRED's mangling: `Apple_bar_3` is an object of type `AppleType`; the engine's demangler
turns the part before `_bar_` into the name the agent sees ("apple 2"), numbering instances per type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from turnrl.environments.alfworld.catalog import AlfredFacts


@dataclass
class GameSpec:
    """One generated game: what is where, and the goal."""

    name: str                      # folder name, e.g. "pick_heat_then_place_in_recep-Apple-None-CounterTop-0042"
    split: str
    template: str
    task_type: str
    object_target: str
    parent_target: str             # receptacle type of the goal ("" for look_at_obj_in_light)
    toggle_target: str             # lamp type for look_at_obj_in_light, else ""
    task_text: str                 # "put a hot apple in countertop"
    receptacles: list[tuple[str, str]] = field(default_factory=list)    # (id, type)
    objects: list[tuple[str, str, str]] = field(default_factory=list)   # (id, type, receptacle id)


def location_of(index: int) -> str:
    """The location id of the index-th receptacle (each receptacle has its own location)."""
    return f"loc_bar_{index + 1}"


START_LOCATION = "loc_bar_0"


def goal_pddl(spec: GameSpec) -> str:
    """The goal in goal_library's form for the task type (the library writes `#` for PDDL's `-`)."""
    from alfworld.gen import goal_library

    text = goal_library.gdict[spec.task_type]["pddl"]
    text = text.format(obj=spec.object_target, recep=spec.parent_target, toggle=spec.toggle_target)
    return text.replace("#", "-")


def problem_pddl(spec: GameSpec, facts: AlfredFacts) -> str:
    """The PDDL problem (ALFRED's `initial_state.pddl` layout) of a game."""
    receptacle_types = sorted({rtype for _, rtype in spec.receptacles} | ({spec.parent_target} - {""}))
    object_types = sorted({otype for _, otype, _ in spec.objects} | {spec.object_target}
                          | ({spec.toggle_target} - {""}))
    location = {rid: location_of(i) for i, (rid, _) in enumerate(spec.receptacles)}

    declare = ["agent1 - agent", f"{START_LOCATION} - location"]
    declare += [f"{location[rid]} - location" for rid, _ in spec.receptacles]
    declare += [f"{otype}Type - otype" for otype in object_types]
    declare += [f"{rtype}Type - rtype" for rtype in receptacle_types]
    declare += [f"{rid} - receptacle" for rid, _ in spec.receptacles]
    declare += [f"{oid} - object" for oid, _, _ in spec.objects]

    init = [f"(atLocation agent1 {START_LOCATION})"]
    for rid, rtype in spec.receptacles:
        init.append(f"(receptacleType {rid} {rtype}Type)")
        init.append(f"(receptacleAtLocation {rid} {location[rid]})")
        if rtype in facts.openable:
            init.append(f"(openable {rid})")
    for oid, otype, rid in spec.objects:
        init.append(f"(objectType {oid} {otype}Type)")
        init.append(f"(inReceptacle {oid} {rid})")
        init.append(f"(objectAtLocation {oid} {location[rid]})")
        if otype in facts.properties["Toggleable"]:
            init.append(f"(toggleable {oid})")
        else:
            init.append(f"(pickupable {oid})")
        for prop, predicate in (("Cleanable", "cleanable"), ("Heatable", "heatable"), ("Coolable", "coolable")):
            if facts.has(otype, prop):
                init.append(f"({predicate} {oid})")
        if otype in facts.receptacle_objects:
            init.append(f"(isReceptacleObject {oid})")
    for rtype in receptacle_types:
        for otype in object_types:
            if facts.holds(rtype, otype):
                init.append(f"(canContain {rtype}Type {otype}Type)")

    lines = [f"(define (problem {spec.name.replace('-', '_')})", "    (:domain alfred)", "    (:objects"]
    lines += [f"        {line}" for line in declare]
    lines += ["    )", "    (:init"]
    lines += [f"        {line}" for line in init]
    lines += ["    )", goal_pddl(spec).rstrip()]
    return "\n".join(lines) + "\n"


def traj_data(spec: GameSpec) -> dict:
    """The fields of ALFRED's `traj_data.json` that alfworld reads, plus where the game came from."""
    return {
        "task_type": spec.task_type,
        "task_id": spec.name,
        "pddl_params": {
            "object_target": spec.object_target,
            "parent_target": spec.parent_target or spec.toggle_target,
            "toggle_target": spec.toggle_target,
            "mrecep_target": "",
            "object_sliced": False,
        },
        "scene": {"floor_plan": spec.template},
        "turk_annotations": {"anns": [{"task_desc": spec.task_text}]},
        "turnrl": {"split": spec.split, "template": spec.template},
    }


def engine_files() -> tuple[str, str]:
    """The PDDL domain and the text grammar that ship in the alfworld wheel."""
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    return Path(ALFRED_PDDL_PATH).read_text(), Path(ALFRED_TWL2_PATH).read_text()


def game_json(spec: GameSpec, problem: str, walkthrough: list[str] | None) -> dict:
    """The content of `game.tw-pddl`: domain, grammar with the task sentence, problem, solvability, plan."""
    domain, grammar = engine_files()
    return {
        "pddl_domain": domain,
        "grammar": grammar.replace("UNKNOWN GOAL", spec.task_text),
        "pddl_problem": problem,
        "solvable": walkthrough is not None,
        "walkthrough": walkthrough,
    }
