"""Reading WebShop data in the original file schema, and the original goal splits.

Files (the names the original uses; `data_dir` holds one products/attributes pair and, for human
goals, the human instructions):

- `items_shuffle_1000.json` / `items_shuffle.json`: a list of products, each
  {asin, category, query, product_category "A › B › C", name, full_description,
   small_description (bullet points: a list, or one string), pricing "$x" or "$x - $y",
   customization_options {option name: [{value, image}]}, images}.
- `items_ins_v2_1000.json` / `items_ins_v2.json`: {asin: {attributes, instruction,
  instruction_attributes}}; `attributes` are the product's attributes used by the reward.
- `items_human_ins.json`: {asin: [{instruction, instruction_attributes, instruction_options}]}.

As in the original loader: products with an asin of "nan" or longer than 10 characters, and repeated
asins, are skipped; option names and values are lower-cased and "/" in a value becomes " | "; a missing
price is 100.0. Two decisions the original leaves to the process's global random state are seeded here
so that every process sees the same episodes:

- a price range "$a - $b" is fixed at `random.Random(f"webshop-price-{asin}").uniform(a, b)` (rounded
  to cents);
- a goal's price cap is the larger of two values drawn with `random.Random(f"webshop-cap-{asin}-{k}")`
  from the first four of 10, 20, ..., 990 strictly above the target's price (k: the instruction's
  position in that asin's list); with fewer than two such values there is no cap (1,000,000) and no
  price text.

Goals: human goals follow the original order (products in file order, each product's instructions in
order; goals without attributes skipped), then `random.Random(233).shuffle` (the same permutation as
the original's `random.seed(233); random.shuffle(goals)`): test = the first 500, eval = the next 1,000,
train = the rest, "all" = every goal. Task ids are positions in that shuffled list.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

PRICE_STEPS = [10.0 * i for i in range(1, 100)]
NO_PRICE_CAP = 1_000_000.0
SPLIT_SEED = 233
SPLITS = ("train", "eval", "test", "all")
FILE_PAIRS = {
    True: ("items_shuffle_1000.json", "items_ins_v2_1000.json"),
    False: ("items_shuffle.json", "items_ins_v2.json"),
}
HUMAN_GOALS_FILE = "items_human_ins.json"


@dataclass
class Product:
    asin: str
    category: str
    query: str
    product_category: str
    title: str
    description: str
    bullets: list[str]
    attributes: list[str]
    options: dict[str, list[str]]      # option name -> values, lower-case, in file order
    price: float                       # the fixed price the reward compares with the cap
    price_tag: str                     # what the results page shows: "$x" or "$x to $y"


@dataclass(frozen=True)
class Goal:
    asin: str                          # the target product
    instruction: str                   # with the price text when there is a cap
    attributes: tuple[str, ...]
    options: tuple[str, ...]
    price_upper: float
    query: str                         # the target's query, category path and name (for r_type)
    product_category: str
    name: str


@dataclass
class WebShopData:
    products: dict[str, Product]       # in file order
    goals: list[Goal]                  # shuffled; task id = position
    splits: dict[str, range] = field(default_factory=dict)

    def split(self, name: str) -> range:
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; valid splits: {', '.join(self.splits)}")
        return self.splits[name]


def parse_prices(pricing) -> list[float]:
    """The one or two dollar amounts of "$x" or "$x - $y" (a missing or unreadable price is [100.0])."""
    if not pricing or not isinstance(pricing, str):
        return [100.0]
    amounts = []
    for part in pricing.split("$")[1:]:
        digits = re.sub(r"[^\d.]", "", part)
        try:
            amounts.append(float(digits))
        except ValueError:
            continue
    return amounts[:2] or [100.0]


def fixed_price(asin: str, prices: list[float]) -> float:
    """One price for a product: its price, or a seeded uniform draw inside its price range."""
    if len(prices) == 1:
        return round(prices[0], 2)
    low, high = prices
    return round(random.Random(f"webshop-price-{asin}").uniform(low, high), 2)


def price_cap(asin: str, position: int, price: float) -> float:
    """The goal's price cap (see the module docstring), or NO_PRICE_CAP."""
    above = [step for step in PRICE_STEPS if step > price][:4]
    if len(above) < 2:
        return NO_PRICE_CAP
    return max(random.Random(f"webshop-cap-{asin}-{position}").sample(above, 2))


def price_text(cap: float) -> str:
    return "" if cap >= NO_PRICE_CAP else f", and price lower than {cap:.2f} dollars"


def _format_amount(amount: float) -> str:
    return f"${amount:.2f}"


def product_from_record(record: dict, attributes: dict) -> Product:
    """A Product from one `items_shuffle` record and its `items_ins_v2` entry."""
    asin = record["asin"]
    bullets = record.get("small_description") or []
    bullets = [str(b) for b in bullets] if isinstance(bullets, list) else [str(bullets)]
    prices = parse_prices(record.get("pricing"))
    tag = " to ".join(_format_amount(p) for p in prices)
    options = {}
    for name, contents in (record.get("customization_options") or {}).items():
        if not contents:
            continue
        options[str(name).lower()] = [str(c["value"]).strip().replace("/", " | ").lower() for c in contents]
    entry = attributes.get(asin) or {}
    return Product(
        asin=asin,
        category=str(record.get("category") or ""),
        query=str(record.get("query") or "").lower().strip(),
        product_category=str(record.get("product_category") or ""),
        title=str(record.get("name") or ""),
        description=str(record.get("full_description") or ""),
        bullets=bullets,
        attributes=[str(a) for a in entry.get("attributes") or []] or ["DUMMY_ATTR"],
        options=options,
        price=fixed_price(asin, prices),
        price_tag=tag,
    )


def load_products(records: list[dict], attributes: dict) -> dict[str, Product]:
    products = {}
    for record in records:
        asin = str(record.get("asin", "nan"))
        if asin == "nan" or len(asin) > 10 or asin in products:
            continue
        products[asin] = product_from_record(record, attributes)
    return products


def _goal(product: Product, instruction: str, attributes, options, position: int) -> Goal:
    cap = price_cap(product.asin, position, product.price)
    return Goal(
        asin=product.asin, instruction=instruction.strip().strip(".") + price_text(cap),
        attributes=tuple(str(a) for a in attributes), options=tuple(str(o) for o in options), price_upper=cap,
        query=product.query, product_category=product.product_category, name=product.title,
    )


def human_goals(products: dict[str, Product], human: dict) -> list[Goal]:
    """Goals from `items_human_ins.json`, in the original's order (before shuffling)."""
    goals = []
    for asin, product in products.items():
        for position, entry in enumerate(human.get(asin) or []):
            if not entry.get("instruction_attributes"):
                continue
            goals.append(_goal(product, entry["instruction"], entry["instruction_attributes"],
                               entry.get("instruction_options") or [], position))
    return goals


def synthetic_goals(products: dict[str, Product], attributes: dict) -> list[Goal]:
    """The original's synthetic goals: each product's `items_ins_v2` instruction once per combination of
    its option values, " with name: value, and name: value" appended. The reward compares the option
    values (the original passes (name, value) pairs, which its matcher does not handle as text)."""
    goals = []
    for asin, product in products.items():
        entry = attributes.get(asin) or {}
        if not entry.get("instruction") or not entry.get("instruction_attributes"):
            continue
        names = sorted(product.options)
        for position, combination in enumerate(itertools.product(*(product.options[n] for n in names))):
            text = ", and ".join(f"{n}: {v}" for n, v in zip(names, combination))
            instruction = entry["instruction"].strip().strip(".") + (f" with {text}" if text else "")
            goals.append(_goal(product, instruction, entry["instruction_attributes"], combination, position))
    return goals


def original_splits(n_goals: int) -> dict[str, range]:
    return {"train": range(min(1500, n_goals), n_goals), "eval": range(min(500, n_goals), min(1500, n_goals)),
            "test": range(min(500, n_goals)), "all": range(n_goals)}


def find_files(data_dir: Path, use_small: bool | None, human: bool) -> tuple[Path, Path, Path | None]:
    """The products, attributes and human-goal files of `data_dir` (see the module docstring)."""
    choices = [use_small] if use_small is not None else [True, False]
    for small in choices:
        products, attributes = (data_dir / name for name in FILE_PAIRS[small])
        if products.is_file() and attributes.is_file():
            break
    else:
        wanted = " or ".join(" + ".join(FILE_PAIRS[s]) for s in choices)
        raise FileNotFoundError(f"WebShop data_dir {data_dir}: expected {wanted} (the original WebShop file names)")
    goals = data_dir / HUMAN_GOALS_FILE
    if human and not goals.is_file():
        raise FileNotFoundError(f"WebShop data_dir {data_dir}: human goals need {HUMAN_GOALS_FILE}; "
                                "pass human_goals=False to use the synthetic instructions of items_ins_v2")
    return products, attributes, goals if human else None


def load_data(data_dir: Path, *, use_small: bool | None = None, human: bool = True) -> WebShopData:
    """Products and shuffled goals from a folder in the original format."""
    products_file, attributes_file, goals_file = find_files(Path(data_dir), use_small, human)
    attributes = json.loads(attributes_file.read_text(encoding="utf-8"))
    products = load_products(json.loads(products_file.read_text(encoding="utf-8")), attributes)
    if goals_file is not None:
        goals = human_goals(products, json.loads(goals_file.read_text(encoding="utf-8")))
    else:
        goals = synthetic_goals(products, attributes)
    random.Random(SPLIT_SEED).shuffle(goals)
    return WebShopData(products, goals, original_splits(len(goals)))
