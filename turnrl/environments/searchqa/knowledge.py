"""A generated knowledge base of fictional people, places, organisations, works and inventions.

Every entity is invented, so a model cannot answer from memory: what Search-QA on this data measures is
the search skill. The generator draws everything from `random.Random` seeded with fixed strings (which
seed from a SHA-512 of the string), iterates only over lists, and never uses `hash()`, so the same
version gives byte-identical passages and questions on every machine.

Facts are consistent across passages: a person's passage names the works, organisations and inventions
that point back to them, and every question is answered by the facts in its supporting passages.

- Passages: one encyclopedia-style passage per entity, id = its position as a string, `title` = the
  entity's name. Each name's distinctive word (a surname, a place name, the invented word in a title)
  is used by one entity only, so searching an entity's title finds its passage.
- Questions: single-hop (one passage answers it, like NQ), bridge (find an entity in one passage, then
  a fact about it in its own passage) and comparison (two passages; HotpotQA's two kinds). Each has
  `golden_answers` and the ids and titles of its supporting passages, in the order an expert reads them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

KB_VERSION = "v1"

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "br", "dr", "kr", "st",
           "tr", "gl", "sh", "h", "j"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ae", "ou", "ia", "y"]
_CODAS = ["", "", "", "n", "r", "th", "s", "l", "x", "m", "nd", "sk", "rth", "ck"]

OCCUPATIONS = ["painter", "composer", "chemist", "novelist", "engineer", "astronomer", "architect",
               "mathematician", "poet", "explorer", "physician", "film director", "botanist", "sculptor"]
ORG_KINDS = [("Institute", "research"), ("Guild", "weaving"), ("Company", "shipbuilding"), ("Society", "astronomy"),
             ("Foundation", "medicine"), ("Press", "publishing"), ("Works", "glassmaking"), ("Academy", "music"),
             ("Bank", "banking"), ("Observatory", "astronomy"), ("Railway", "transport"), ("Brewery", "brewing")]
# (kind of work, verb for its creator, creator role, what the year means)
WORK_KINDS = [("novel", "wrote", "author", "published"), ("film", "directed", "director", "released"),
              ("symphony", "composed", "composer", "first performed"), ("painting", "painted", "painter", "painted"),
              ("play", "wrote", "playwright", "first staged"), ("poem cycle", "wrote", "poet", "published")]
WORK_NOUNS = ["Tide", "Lantern", "Harvest", "Mirror", "Crossing", "Winter", "Garden", "Archive", "Voyage", "Orchard",
              "Bell", "Silence", "Horizon", "Threshold", "Tapestry", "Ember"]
INVENTION_NOUNS = ["loom", "engine", "lamp", "telescope", "compass", "press", "pump", "clock", "kiln", "valve",
                   "barometer", "lens", "boiler", "sextant"]
INVENTION_USES = ["spinning fine thread", "lifting water from deep wells", "measuring the height of clouds",
                  "sorting grain", "keeping time at sea", "printing maps", "drying clay", "signalling between hills",
                  "grinding lenses", "heating greenhouses", "weighing cargo", "tracing star paths"]
LANDMARKS = ["a walled harbour", "a salt market", "a bell tower", "terraced vineyards", "a stone bridge", "hot springs",
             "a lighthouse", "a paper mill", "an old observatory", "a canal quarter"]


@dataclass
class Entity:
    kind: str                  # person, city, country, organisation, work, invention
    name: str
    facts: dict = field(default_factory=dict)
    notable: list = field(default_factory=list)    # indexes of works/organisations/inventions (people only)
    pid: int = -1              # the passage id (its position)


class _Namer:
    """Invented words, each handed out once (the distinctive word of every name is unique)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, min_syllables: int = 2, max_syllables: int = 3) -> str:
        while True:
            n = self.rng.randint(min_syllables, max_syllables)
            word = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(n))
            word = (word + self.rng.choice(_CODAS)).capitalize()
            # Short words collide with English and with each other's prefixes too easily.
            if len(word) >= 5 and word.lower() not in self.used:
                self.used.add(word.lower())
                return word


def _counts(n_passages: int) -> dict[str, int]:
    """How many entities of each kind make `n_passages` passages (about 5,000 by default)."""
    countries = max(12, min(60, n_passages // 150))
    rest = n_passages - countries
    counts = {"country": countries, "city": rest * 12 // 100, "organisation": rest * 16 // 100,
              "work": rest * 20 // 100, "invention": rest * 12 // 100}
    counts["person"] = n_passages - sum(counts.values())
    return counts


def generate_entities(n_passages: int = 5_000, seed: str = f"searchqa-{KB_VERSION}") -> list[Entity]:
    """The entities of a knowledge base with `n_passages` passages, in passage order."""
    if n_passages < 200:
        raise ValueError(f"generate_entities: n_passages must be >= 200, got {n_passages}")
    rng = random.Random(seed)
    namer = _Namer(rng)
    counts = _counts(n_passages)

    countries = []
    for _ in range(counts["country"]):
        name = namer.word(2, 3)
        demonym = name + ("n" if name[-1] in "aeiouy" else "ian")
        countries.append(Entity("country", name, {"demonym": demonym, "founded": rng.randint(900, 1700)}))
    cities = []
    for _ in range(counts["city"]):
        country = rng.randrange(len(countries))
        cities.append(Entity("city", namer.word(2, 3), {
            "country": country, "founded": rng.randint(800, 1800), "river": f"the {namer.word(2, 2)} river",
            "landmark": rng.choice(LANDMARKS)}))
    first_names = [namer.word(2, 3) for _ in range(max(60, counts["person"] // 8))]
    people = []
    for _ in range(counts["person"]):
        born = rng.randint(1700, 1960)
        city = rng.randrange(len(cities))
        people.append(Entity("person", f"{rng.choice(first_names)} {namer.word(2, 3)}", {
            "born": born, "died": born + rng.randint(45, 95), "birthplace": city,
            "occupation": rng.choice(OCCUPATIONS)}))
    for country in countries:  # a country's capital is its first city (None when it has no city)
        country.facts["capital"] = None
    for i, city in enumerate(cities):
        if countries[city.facts["country"]].facts["capital"] is None:
            countries[city.facts["country"]].facts["capital"] = i

    organisations = []
    for _ in range(counts["organisation"]):
        founder = rng.randrange(len(people))  # born by 1960, so an adult before 1990
        person = people[founder].facts
        suffix, industry = rng.choice(ORG_KINDS)
        organisations.append(Entity("organisation", f"{namer.word(2, 3)} {suffix}", {
            "founder": founder, "founded": rng.randint(person["born"] + 20, min(person["died"], 1990)),
            "headquarters": rng.randrange(len(cities)), "industry": industry}))
        people[founder].notable.append(("organisation", len(organisations) - 1))
    works = []
    for _ in range(counts["work"]):
        author = rng.randrange(len(people))
        person = people[author].facts
        kind = rng.choice(WORK_KINDS)
        title = f"The {namer.word(2, 3)} {rng.choice(WORK_NOUNS)}" if rng.random() < 0.6 else \
            f"{rng.choice(WORK_NOUNS)} of {namer.word(2, 3)}"
        works.append(Entity("work", title, {
            "creator": author, "year": rng.randint(person["born"] + 18, min(person["died"], 2000)),
            "kind": kind[0], "setting": rng.randrange(len(cities))}))
        people[author].notable.append(("work", len(works) - 1))
    inventions = []
    for _ in range(counts["invention"]):
        inventor = rng.randrange(len(people))
        person = people[inventor].facts
        inventions.append(Entity("invention", f"{namer.word(2, 3)} {rng.choice(INVENTION_NOUNS)}", {
            "inventor": inventor, "year": rng.randint(person["born"] + 18, min(person["died"], 1995)),
            "use": rng.choice(INVENTION_USES), "city": rng.randrange(len(cities))}))
        people[inventor].notable.append(("invention", len(inventions) - 1))

    kb = _KB(countries, cities, people, organisations, works, inventions)
    for pid, entity in enumerate(kb.all()):
        entity.pid = pid
    return kb.all()


class _KB:
    """The entities by kind, for rendering and for questions."""

    def __init__(self, countries, cities, people, organisations, works, inventions):
        self.countries, self.cities, self.people = countries, cities, people
        self.organisations, self.works, self.inventions = organisations, works, inventions

    @classmethod
    def from_entities(cls, entities: list[Entity]) -> _KB:
        by_kind = {kind: [e for e in entities if e.kind == kind]
                   for kind in ("country", "city", "person", "organisation", "work", "invention")}
        return cls(by_kind["country"], by_kind["city"], by_kind["person"], by_kind["organisation"], by_kind["work"],
                   by_kind["invention"])

    def all(self) -> list[Entity]:
        return self.countries + self.cities + self.people + self.organisations + self.works + self.inventions

    def notable_entity(self, ref) -> Entity:
        kind, index = ref
        return {"organisation": self.organisations, "work": self.works, "invention": self.inventions}[kind][index]

    def country_of_city(self, city: int) -> Entity:
        return self.countries[self.cities[city].facts["country"]]

    def surname(self, person: Entity) -> str:
        return person.name.split()[-1]


def _work_phrase(work: Entity) -> str:
    return f"the {work.facts['kind']} {work.name} ({work.facts['year']})"


def render_passage(kb: _KB, entity: Entity) -> str:
    """The encyclopedia-style text of one entity (without its title line)."""
    f = entity.facts
    if entity.kind == "country":
        capital = kb.cities[f["capital"]].name if f["capital"] is not None else "no chartered city"
        return (f"{entity.name} is a small fictional country whose people are called {f['demonym']}s. "
                f"{entity.name} was first united in {f['founded']}. The capital of {entity.name} is {capital}.")
    if entity.kind == "city":
        country = kb.countries[f["country"]]
        return (f"{entity.name} is a city in {country.name}, on {f['river']}. {entity.name} was founded in "
                f"{f['founded']} and is known for {f['landmark']}. Visitors to {entity.name} arrive by the river road.")
    if entity.kind == "person":
        city = kb.cities[f["birthplace"]]
        country = kb.country_of_city(f["birthplace"])
        surname = kb.surname(entity)
        text = (f"{entity.name} ({f['born']}–{f['died']}) was a {country.facts['demonym']} {f['occupation']}. "
                f"{surname} was born in {f['born']} in {city.name}, {country.name}, and died in {f['died']}.")
        notable = [kb.notable_entity(ref) for ref in entity.notable[:3]]
        for item in notable:
            if item.kind == "work":
                text += f" {surname} created {_work_phrase(item)}."
            elif item.kind == "organisation":
                text += f" {surname} founded the {item.name} in {item.facts['founded']}."
            else:
                text += f" {surname} invented the {item.name} in {item.facts['year']}."
        return text
    if entity.kind == "organisation":
        founder, hq = kb.people[f["founder"]], kb.cities[f["headquarters"]]
        return (f"The {entity.name} is a {f['industry']} organisation founded in {f['founded']} by {founder.name}. "
                f"The {entity.name} has its headquarters in {hq.name}, {kb.country_of_city(f['headquarters']).name}.")
    if entity.kind == "work":
        creator, setting = kb.people[f["creator"]], kb.cities[f["setting"]]
        kind = next(k for k in WORK_KINDS if k[0] == f["kind"])
        return (f"{entity.name} is a {f['kind']} {kind[3]} in {f['year']}. {creator.name} {kind[1]} "
                f"{entity.name}, which is set in {setting.name}.")
    inventor, city = kb.people[f["inventor"]], kb.cities[f["city"]]
    return (f"The {entity.name} is a device for {f['use']}. {inventor.name} invented the {entity.name} in "
            f"{f['year']}, and it was first shown in {city.name}.")


def generate_passages(n_passages: int = 5_000) -> list[dict]:
    """The corpus as pyserini/Search-R1 records: {"id", "contents": "Title\\ntext"}."""
    entities = generate_entities(n_passages)
    kb = _KB.from_entities(entities)
    return [{"id": str(e.pid), "contents": f"{e.name}\n{render_passage(kb, e)}"} for e in entities]


def _support(*entities: Entity) -> dict:
    return {"supporting_ids": [str(e.pid) for e in entities], "supporting_titles": [e.name for e in entities]}


def _single_hop(kb: _KB, rng: random.Random) -> dict:
    kind = rng.choice(["person", "person", "city", "organisation", "work", "invention", "country"])
    if kind == "person":
        p = rng.choice(kb.people)
        city = kb.cities[p.facts["birthplace"]]
        q, a = rng.choice([(f"In what year was {p.name} born?", str(p.facts["born"])),
                           (f"In which city was {p.name} born?", city.name),
                           (f"In what year did {p.name} die?", str(p.facts["died"])),
                           (f"What was the occupation of {p.name}?", p.facts["occupation"])])
        return {"question": q, "golden_answers": [a], "type": "single-hop", **_support(p)}
    if kind == "city":
        c = rng.choice(kb.cities)
        q, a = rng.choice([(f"In which country is the city of {c.name}?", kb.countries[c.facts["country"]].name),
                           (f"In what year was the city of {c.name} founded?", str(c.facts["founded"]))])
        return {"question": q, "golden_answers": [a], "type": "single-hop", **_support(c)}
    if kind == "country":
        c = rng.choice([c for c in kb.countries if c.facts["capital"] is not None])
        return {"question": f"What is the capital of {c.name}?", "golden_answers": [kb.cities[c.facts["capital"]].name],
                "type": "single-hop", **_support(c)}
    if kind == "organisation":
        o = rng.choice(kb.organisations)
        q, a = rng.choice([(f"Who founded the {o.name}?", kb.people[o.facts["founder"]].name),
                           (f"In which city does the {o.name} have its headquarters?",
                            kb.cities[o.facts["headquarters"]].name),
                           (f"In what year was the {o.name} founded?", str(o.facts["founded"]))])
        return {"question": q, "golden_answers": [a], "type": "single-hop", **_support(o)}
    if kind == "work":
        w = rng.choice(kb.works)
        verb = next(k for k in WORK_KINDS if k[0] == w.facts["kind"])
        q, a = rng.choice([(f"Who {verb[1]} the {w.facts['kind']} {w.name}?", kb.people[w.facts["creator"]].name),
                           (f"In what year was the {w.facts['kind']} {w.name} {verb[3]}?", str(w.facts["year"])),
                           (f"In which city is the {w.facts['kind']} {w.name} set?", kb.cities[w.facts["setting"]].name)])
        return {"question": q, "golden_answers": [a], "type": "single-hop", **_support(w)}
    i = rng.choice(kb.inventions)
    q, a = rng.choice([(f"Who invented the {i.name}?", kb.people[i.facts["inventor"]].name),
                       (f"In what year was the {i.name} invented?", str(i.facts["year"]))])
    return {"question": q, "golden_answers": [a], "type": "single-hop", **_support(i)}


def _bridge(kb: _KB, rng: random.Random) -> dict:
    kind = rng.choice(["work", "organisation", "invention", "org-city"])
    if kind == "org-city":
        o = rng.choice(kb.organisations)
        hq = kb.cities[o.facts["headquarters"]]
        return {"question": f"In which country is the city where the {o.name} has its headquarters?",
                "golden_answers": [kb.country_of_city(o.facts["headquarters"]).name], "type": "bridge",
                **_support(o, hq)}
    if kind == "work":
        first = rng.choice(kb.works)
        role = next(k for k in WORK_KINDS if k[0] == first.facts["kind"])[2]
        lead = f"the {role} of the {first.facts['kind']} {first.name}"
        person = kb.people[first.facts["creator"]]
    elif kind == "organisation":
        first = rng.choice(kb.organisations)
        lead = f"the founder of the {first.name}"
        person = kb.people[first.facts["founder"]]
    else:
        first = rng.choice(kb.inventions)
        lead = f"the inventor of the {first.name}"
        person = kb.people[first.facts["inventor"]]
    city = kb.cities[person.facts["birthplace"]]
    q, a = rng.choice([(f"In what year was {lead} born?", str(person.facts["born"])),
                       (f"In which city was {lead} born?", city.name),
                       (f"In which country was {lead} born?", kb.country_of_city(person.facts["birthplace"]).name),
                       (f"What was the occupation of {lead}?", person.facts["occupation"])])
    return {"question": q[0].upper() + q[1:], "golden_answers": [a], "type": "bridge", **_support(first, person)}


def _comparison(kb: _KB, rng: random.Random) -> dict:
    kind = rng.choice(["born", "founded", "work-year", "same-country"])
    if kind == "founded":
        a, b = rng.sample(kb.organisations, 2)
        if a.facts["founded"] == b.facts["founded"]:
            return _comparison(kb, rng)
        first = a if a.facts["founded"] < b.facts["founded"] else b
        return {"question": f"Which was founded earlier, the {a.name} or the {b.name}?", "golden_answers": [first.name],
                "type": "comparison", **_support(a, b)}
    if kind == "work-year":
        a, b = rng.sample(kb.works, 2)
        if a.facts["year"] == b.facts["year"]:
            return _comparison(kb, rng)
        first = a if a.facts["year"] < b.facts["year"] else b
        return {"question": f"Which came out first, {a.name} or {b.name}?", "golden_answers": [first.name],
                "type": "comparison", **_support(a, b)}
    a, b = rng.sample(kb.people, 2)
    if kind == "same-country":
        same = kb.country_of_city(a.facts["birthplace"]) is kb.country_of_city(b.facts["birthplace"])
        return {"question": f"Were {a.name} and {b.name} born in the same country?",
                "golden_answers": ["yes" if same else "no"], "type": "comparison", **_support(a, b)}
    if a.facts["born"] == b.facts["born"]:
        return _comparison(kb, rng)
    first = a if a.facts["born"] < b.facts["born"] else b
    return {"question": f"Who was born first, {a.name} or {b.name}?", "golden_answers": [first.name],
            "type": "comparison", **_support(a, b)}


def generate_questions(n_train: int = 2_400, n_test: int = 600, n_passages: int = 5_000) -> list[dict]:
    """Questions over `generate_entities(n_passages)`, each with "split" ("train" or "test"), "id",
    "question", "golden_answers", "type" and the supporting passages. 40% single-hop, 40% bridge,
    20% comparison; no question text occurs twice."""
    kb = _KB.from_entities(generate_entities(n_passages))
    rng = random.Random(f"searchqa-questions-{KB_VERSION}")
    makers = [_single_hop, _single_hop, _bridge, _bridge, _comparison]
    questions, seen = [], set()
    while len(questions) < n_train + n_test:
        question = rng.choice(makers)(kb, rng)
        if question["question"] in seen:
            continue
        seen.add(question["question"])
        split = "train" if len(questions) < n_train else "test"
        questions.append({"id": f"{split}-{len(questions)}", "split": split, **question})
    return questions
