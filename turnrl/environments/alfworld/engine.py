"""A fast driver over the alfworld/TextWorld PDDL engine.

It plays a `game.tw-pddl` file exactly as `textworld.envs.pddl.PddlEnv` wrapped in alfworld's `AlfredDemangler`
does (same fast-downward state, same grammar, same admissible commands and feedback text, "Nothing happens."
for anything else), with three changes that make resets and steps cheap:

- what does not change during play is computed once per process and game file and shared by every instance
  (`GameData`: the parsed grammar, the PDDL-to-SAS translation, entity names); PddlEnv redoes the translation,
  twice, on every reset;
- the command text of a grounded action depends only on its arguments and on static facts, so it is derived
  once per action and game, not at every step;
- the planner (fast-downward) runs only when the expert's next action is asked for (`replan`), not every step.

The grammar's two parsers (tatsu) are memoised for the process (`_memoise_parsers`): they are pure, and parsing
the same few templates again at every step was most of a step's time.

Each `GameEngine` holds its own copy of fast-downward's shared library (the library keeps one planning task as
global state). Unloading a copy (`fast_downward.close_lib`) crashes the process later, so `close()` returns the
copy to a per-process pool that the next engine reuses: a process holds as many copies as it ever had engines
open at once. `tests/test_alfworld.py` checks this driver against PddlEnv command by
command.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import re
import sys
import threading
from collections import Counter as _Counter
from collections import OrderedDict, defaultdict
from pathlib import Path

try:
    import fast_downward
    import textworld
    from alfworld.agents.utils.misc import Demangler
    from textworld.envs.pddl import logic as pddl_logic
    from textworld.envs.pddl import textgen
    from textworld.generator.game import EntityInfo
    from textworld.logic import Proposition, Variable
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the ALFWorld environment needs the alfworld engine: pip install 'turnrl[alfworld]' "
        f"(alfworld==0.4.2, textworld==1.7.0); import failed with: {err}"
    ) from err

NOTHING_HAPPENS = "Nothing happens."
TASK_PLACEHOLDER = "UNKNOWN GOAL"


def _memoise_parsers() -> None:
    """Cache textworld's grammar-symbol parser (a deep copy per call: callers set fields on the symbols) and
    its conjunctive-query parser (read-only results). Same results, parsed once per distinct string."""
    if getattr(textgen, "_turnrl_memoised", False):
        return
    parse_symbols = textgen._parse_and_convert

    @functools.lru_cache(maxsize=4096)
    def parsed(text, rule_name):
        return parse_symbols(text, rule_name=rule_name)

    def parse_and_convert(text, rule_name="symbols", **kwargs):
        if kwargs or not isinstance(text, str):
            return parse_symbols(text, rule_name=rule_name, **kwargs)
        return copy.deepcopy(parsed(text, rule_name))

    parse_query = textworld.logic.Rule.parse_conjunctive_query.__func__
    queries = functools.lru_cache(maxsize=4096)(lambda cls, expression: parse_query(cls, expression))

    textgen._parse_and_convert = parse_and_convert
    textworld.logic.Rule.parse_conjunctive_query = classmethod(lambda cls, expression: queries(cls, expression))
    textgen._turnrl_memoised = True


_memoise_parsers()

_translate_lock = threading.Lock()


@contextlib.contextmanager
def _argv_kept():
    """fast_downward.pddl2sas overwrites sys.argv (its translator reads options from it): put it back."""
    saved = list(sys.argv)
    try:
        yield
    finally:
        sys.argv[:] = saved


_LOGICS: dict[tuple[str, str], object] = {}
_TASK_RULE = re.compile(r'("task": \[\s*\{\s*"rhs": "Your task is to: )(.*?)(\.?")')


def _game_logic(domain: str, grammar: str):
    """The parsed GameLogic and the task sentence of a game. Games differ in their grammar only by the task
    sentence, so the grammar is parsed once with the placeholder and the sentence is put back in the intro."""
    match = _TASK_RULE.search(grammar)
    sentence = match.group(2) if match else None
    generic = grammar if match is None else grammar[:match.start(2)] + TASK_PLACEHOLDER + grammar[match.end(2):]
    key = (domain, generic)
    with _translate_lock:
        logic = _LOGICS.get(key)
    if logic is None:
        logic = pddl_logic.GameLogic(domain=domain, grammar=generic)
        with _translate_lock:
            logic = _LOGICS.setdefault(key, logic)
    return logic, sentence


class _EntityInfo(EntityInfo):
    """An entity's names. The grammar deep-copies its context (entities included) for every symbol it expands;
    entities are never changed while deriving text, so a copy is the entity itself (most of a step's time
    went to copying them)."""

    __slots__ = ()

    def __deepcopy__(self, memo):
        return self


class _Bindings(dict):
    """The variables and mapping of a derivation context. The grammar deep-copies them for every symbol; their
    values (entities, PDDL variables) are never changed, so a copy of the dict is enough."""

    def __deepcopy__(self, memo):
        return _Bindings(self)


class GameData:
    """Everything about one game that play does not change. Built once per process and file (`load_game`)."""

    def __init__(self, data: dict, path: str | None = None):
        self.path = path
        self.domain, self.problem = data["pddl_domain"], data["pddl_problem"]
        self.solvable = bool(data.get("solvable", True))
        self.walkthrough = data.get("walkthrough") or None
        self.logic, self.task_sentence = _game_logic(self.domain, data["grammar"])
        with _translate_lock, _argv_kept():
            self.task, sas = fast_downward.pddl2sas(self.domain, self.problem)
        self.sas = sas.encode("utf-8")
        self._sas_replan: bytes | None = None
        self.actions = {a.name: a for a in self.task.actions}
        self.name2type = {o.name: o.type_name for o in self.task.objects}
        for type_ in self.task.types:
            with contextlib.suppress(ValueError):
                self.logic.types.add(textworld.logic.Type(type_.name, type_.supertype_names))
        self.init_facts = [fact for fact in map(self._as_proposition, self.task.init) if fact is not None]
        # Receptacles at each location (static): "go to" commands name them.
        self.receptacles_at: dict[str, list[str]] = defaultdict(list)
        for fact in self.init_facts:
            if fact.name == "receptacleatlocation":
                self.receptacles_at[fact.arguments[1].name].append(fact.arguments[0].name)
        self.commands: dict[str, str] = {}   # grounded operator name -> command text
        self.intro: str | None = None         # the first observation (a function of the initial state)
        self.state_facts: list | None = None  # the facts fast-downward reports for the initial state
        self.entity_infos: dict | None = None
        self.lock = threading.Lock()

    def sas_replan(self) -> bytes:
        """The planner's (optimised) translation, made the first time anyone plans in this game."""
        if self._sas_replan is None:
            with _translate_lock, _argv_kept():
                _, sas = fast_downward.pddl2sas(self.domain, self.problem, optimize=True)
            self._sas_replan = sas.encode("utf-8")
        return self._sas_replan

    def _as_proposition(self, atom):
        # The initial facts as PddlState reads them from the translated task.
        if isinstance(atom, fast_downward.translate.pddl.conditions.Atom):
            if atom.predicate == "=":
                return None
            return Proposition(atom.predicate, [Variable(arg, self.name2type[arg]) for arg in atom.args])
        if isinstance(atom, fast_downward.translate.pddl.f_expression.Assign):
            if atom.fluent.symbol == "total-cost":
                return None
            name = f"{atom.expression.value}"
            if str.isdigit(name):
                return None
            return Proposition(name, [Variable(arg, self.name2type[arg]) for arg in atom.fluent.args])
        return None

    def names(self, state: _State) -> dict:
        """Entity infos named as alfworld's AlfredDemangler names them ("apple 1", "sinkbasin 2")."""
        if self.entity_infos is None:
            infos = {v.name: _EntityInfo(v.name, v.type) for fact in state.facts for v in fact.arguments}
            for info in infos.values():
                info.name, info.definite, info.indefinite = info.id, "the", "a"
            demangler = Demangler(game_infos=infos, shuffle=False)
            for info in infos.values():
                info.name = demangler.demangle_alfred_name(info.id)
            self.entity_infos = infos
        return self.entity_infos


_FREE_LIBS: list = []
_LIBS_LOCK = threading.Lock()


def _acquire_lib():
    with _LIBS_LOCK:
        if _FREE_LIBS:
            return _FREE_LIBS.pop()
    return fast_downward.load_lib()


def _release_lib(lib) -> None:
    with _LIBS_LOCK:
        _FREE_LIBS.append(lib)


_GAMES: OrderedDict[str, GameData] = OrderedDict()
_GAMES_LOCK = threading.Lock()
GAME_CACHE_SIZE = 1024


def load_game(path: str | Path) -> GameData:
    """The shared GameData of a `game.tw-pddl` file (an LRU cache of GAME_CACHE_SIZE games per process)."""
    key = str(path)
    with _GAMES_LOCK:
        if key in _GAMES:
            _GAMES.move_to_end(key)
            return _GAMES[key]
    game = GameData(json.loads(Path(path).read_text()), key)
    with _GAMES_LOCK:
        game = _GAMES.setdefault(key, game)
        while len(_GAMES) > GAME_CACHE_SIZE:
            _GAMES.popitem(last=False)
    return game


class _State(pddl_logic.PddlState):
    """PddlState built from a GameData's cached translation (the fields PddlState.__init__ sets)."""

    def __init__(self, lib, game: GameData):
        self._facts = defaultdict(set)
        self._vars_by_name = {}
        self._vars_by_type = defaultdict(set)
        self._var_counts = _Counter()
        self._logic = game.logic
        self.downward_lib = lib
        self.pddl_problem = game.problem
        self.task = game.task
        self._actions = game.actions
        self.name2type = game.name2type
        lib.load_sas(game.sas)  # the planner's translation is loaded by GameEngine.replan, when needed
        self.add_facts(game.init_facts)
        if game.state_facts is None:  # the same after every load of the game: read once
            atoms = (pddl_logic.Atom * lib.get_state_size())()
            lib.get_state(atoms)
            facts = [atom.get_fact(self.name2type) for atom in atoms]
            game.state_facts = [fact for fact in facts if not fact.is_negation]
        self.add_facts(game.state_facts)


class GameEngine:
    """One game being played. `reset(game)`, then `step(command)`; `admissible_commands`, `won`, `replan()`."""

    def __init__(self):
        self._lib = None
        self.game: GameData | None = None
        self.state: _State | None = None
        self.won = False
        self.admissible_commands: list[str] = []
        self._valid: list = []
        self._valid_commands: list[str] = []
        self._replan_loaded = False

    def reset(self, game: GameData) -> str:
        if self._lib is None:
            self._lib = _acquire_lib()
        self.game = game
        self.state = _State(self._lib, game)
        self._replan_loaded = False
        infos = game.names(self.state)
        if game.intro is None:
            intro = game.logic.grammar.derive("#intro#", self._context({}, {}, infos))
            if game.task_sentence is not None:
                intro = intro.replace(TASK_PLACEHOLDER, game.task_sentence, 1)
            game.intro = intro
        self._gather(infos)
        return game.intro

    def _context(self, variables, mapping, infos) -> dict:
        return {"state": self.state, "facts": list(self.state.facts), "variables": _Bindings(variables),
                "mapping": _Bindings(mapping), "entity_infos": infos}

    def _gather(self, infos) -> None:
        game = self.game
        self._valid = self.state.all_applicable_actions()
        commands = []
        for action in self._valid:
            operator = self.state._operators[action.id].name
            command = game.commands.get(operator)
            if command is None:
                command = self._command(action, infos)
                with game.lock:
                    game.commands[operator] = command
            commands.append(command)
        self._valid_commands = commands
        self.admissible_commands = sorted(set(commands))
        self.won = bool(self.state.check_goal())

    _SIMPLE = re.compile(r"[^\[\]#]*")
    _PLACEHOLDER = re.compile(r"\{(\w+)\}")
    _GOTO = "go to [{r.name | receptacleatlocation(r:receptacle, lend:location)}]"

    def _command(self, action, infos) -> str:
        """The command text of a grounded action. The grammar derives it by substituting the arguments' names
        (and, for "go to", listing the receptacles at the destination); the two common forms are written here
        directly (tests/test_alfworld.py checks them against the grammar), anything else goes to the grammar."""
        template = action.command_template
        names = {ph.name: infos[var.name].name for ph, var in action.mapping.items()}
        if template == self._GOTO:
            destination = [var.name for ph, var in action.mapping.items() if ph.name == "lend"]
            here = self.game.receptacles_at.get(destination[0], []) if destination else []
            if len(here) == 1:
                return f"go to {infos[here[0]].name}"
        elif self._SIMPLE.fullmatch(template) and all(m in names for m in self._PLACEHOLDER.findall(template)) \
                and "{" not in self._PLACEHOLDER.sub("", template):
            return self._PLACEHOLDER.sub(lambda m: names[m.group(1)], template)
        return self.grammar_command(action, infos)

    def grammar_command(self, action, infos) -> str:
        """The command text as the engine derives it (PddlEnv._gather_infos)."""
        variables = {ph.name: infos[var.name] for ph, var in action.mapping.items()}
        derived = self.game.logic.grammar.derive(action.command_template,
                                                 self._context(variables, action.mapping, infos))
        return derived.format(**{k: info.name for k, info in infos.items()})

    def step(self, command: str) -> tuple[str, bool]:
        """Apply a command; returns (feedback, valid). An unknown command changes nothing."""
        command = command.strip()
        try:
            index = self._valid_commands.index(command)
        except ValueError:
            return NOTHING_HAPPENS, False
        action = self._valid[index]
        self.state.apply(action)
        infos = self.game.entity_infos
        variables = {ph.name: infos[var.name] for ph, var in action.mapping.items()}
        feedback = self.game.logic.grammar.derive(action.feedback_rule,
                                                  self._context(variables, action.mapping, infos))
        self._gather(infos)
        return feedback, True

    def replan(self) -> list[str]:
        """The planner's plan from the current state (empty when the goal holds or cannot be reached)."""
        if not self._replan_loaded:
            self._lib.load_sas_replan(self.game.sas_replan())
            self._replan_loaded = True
        return self.state.replan(self.game.entity_infos)

    def close(self) -> None:
        if self._lib is not None:
            _release_lib(self._lib)
            self._lib = None
        self.state = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - at interpreter exit the module globals may be gone
            pass


def solve_and_verify(spec, problem: str) -> list[str] | None:
    """Plan a freshly generated game with fast-downward and play the plan to a win; the plan, or None when the
    planner finds none or the plan does not win."""
    from turnrl.environments.alfworld.pddl import game_json

    game = GameData(game_json(spec, problem, walkthrough=[]))
    engine = GameEngine()
    try:
        engine.reset(game)
        plan = engine.replan()
        if not plan:
            return None
        for command in plan:
            _, valid = engine.step(command)
            if not valid:
                return None
        return plan if engine.won else None
    finally:
        engine.close()
