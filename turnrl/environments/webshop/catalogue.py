"""The catalogue turnrl ships: a deterministic generator of WebShop products and goals, written in the
original file schema (see `data.py`).

Products come from 36 kinds of product in 12 categories (clothing, shoes, beauty, grocery,
electronics, home, kitchen, pet supplies, sports, toys, office, health). Each kind has a search query,
a category path, head nouns, a pool of attributes (alternatives such as "short sleeve|long sleeve"
exclude each other) and option groups. A product draws a brand, three or four attributes, a subset of
each option group and a price (a third of them a price range). Many products of one kind differ only in
attributes, options and price, so the first search result is often not the one a goal asks for.

A goal names one to three of its target's attributes and some of its option values, phrased like
WebShop's crowd-sourced instructions ("i am looking for women's running shoes that are lightweight
and non slip, in black and size 8"); `data.py` adds the price cap as the original does. Goals live in
`items_human_ins.json`, so the original split (seed 233: test = 500, eval = 1,000, train = the rest)
applies unchanged: the shipped 2,400 products carry 4,800 goals, 3,300 of them for training.

Every draw uses `random.Random(<string>)`, seeded from the string's SHA-512, per product: the files are
byte-identical in every process and on every machine, and product i is the same whatever the
catalogue size (the 100,000-product benchmark catalogue starts with the shipped products).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

CATALOGUE_VERSION = "v1"
SHIPPED_PRODUCTS = 2400
GOALS_PER_PRODUCT = 2
_ASIN_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

APPAREL_COLORS = ("black", "white", "navy blue", "heather grey", "red", "pink", "beige", "olive green",
                  "light blue", "burgundy", "khaki", "brown", "purple", "yellow")
GEAR_COLORS = ("black", "white", "grey", "navy blue", "red", "pink", "teal", "purple", "orange", "mint green",
               "silver", "rose gold")
HOME_COLORS = ("white", "ivory", "beige", "grey", "charcoal", "navy blue", "sage green", "blush pink", "mustard",
               "taupe", "teal", "black")
LETTER_SIZES = ("x-small", "small", "medium", "large", "x-large", "xx-large", "3x-large")
SHOE_SIZES = ("6", "6.5", "7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "12")
MEN_SHOE_SIZES = ("8", "8.5", "9", "9.5", "10", "10.5", "11", "11.5", "12", "13")


@dataclass(frozen=True)
class Kind:
    """One kind of product: what its titles, bullets, options and goals are made of."""

    category: str
    query: str
    path: str
    nouns: tuple[str, ...]              # title head nouns; the first is the one goals use
    plural: bool                        # whether nouns[0] is plural (no article in goals)
    attributes: tuple[str, ...]         # "a|b" are alternatives: a product has at most one of them
    options: tuple[tuple[str, tuple[str, ...]], ...]
    price: tuple[float, float]
    use: str                            # "for ..." phrase of descriptions
    audience: str = ""                  # title prefix, e.g. "Women's"


def _k(category, query, path, nouns, plural, attributes, options, price, use, audience=""):
    return Kind(category, query, path, tuple(nouns.split(", ")), plural, tuple(attributes.split(", ")),
                tuple(options), price, use, audience)


CLOTHES = "Clothing, Shoes & Jewelry"
KINDS = (
    # clothing
    _k("clothing", "women's t-shirts", f"{CLOTHES} › Women › Clothing › Tops, Tees & Blouses › T-Shirts",
       "t-shirt, tee, tunic top", False,
       "short sleeve|long sleeve, v neck|crew neck, cotton blend, loose fit|slim fit, moisture wicking, "
       "tie dye|color block, side slit, machine wash",
       [("color", APPAREL_COLORS), ("size", LETTER_SIZES)], (9, 35), "casual wear, work and weekends", "Women's"),
    _k("clothing", "men's jogger pants", f"{CLOTHES} › Men › Clothing › Pants › Joggers", "jogger pants, sweatpants",
       True, "elastic waist, drawstring closure, slim fit|relaxed fit, zipper pockets, quick dry, stretch fabric, "
       "tapered leg, fleece lined",
       [("color", APPAREL_COLORS), ("size", LETTER_SIZES)], (18, 55), "running, training and lounging", "Men's"),
    _k("clothing", "women's summer dresses", f"{CLOTHES} › Women › Clothing › Dresses › Casual",
       "dress, sundress, midi dress", False,
       "sleeveless|short sleeve|long sleeve, a line|bodycon, floral print|polka dot|solid color, high waist, "
       "with pockets, button front, smocked bodice, flowy hem",
       [("color", APPAREL_COLORS), ("size", LETTER_SIZES)], (19, 60), "beach days, parties and vacations", "Women's"),
    # shoes
    _k("shoes", "women's running shoes", f"{CLOTHES} › Women › Shoes › Athletic › Running", "running shoes, sneakers",
       True, "lightweight, non slip, memory foam, breathable mesh, rubber sole, arch support, slip on|lace up, "
       "wide toe box",
       [("color", APPAREL_COLORS), ("size", SHOE_SIZES)], (25, 110), "walking, gym workouts and road running",
       "Women's"),
    _k("shoes", "men's hiking boots", f"{CLOTHES} › Men › Shoes › Outdoor › Hiking Boots", "hiking boots, trail boots",
       True, "waterproof, ankle support, vibram outsole|lug sole, leather upper|suede upper, insulated, "
       "steel shank, padded collar, quick lace",
       [("color", ("black", "brown", "khaki", "grey", "olive green", "dark brown")), ("size", MEN_SHOE_SIZES)],
       (45, 160), "trails, camping and winter walks", "Men's"),
    _k("shoes", "women's sandals", f"{CLOTHES} › Women › Shoes › Sandals › Flat Sandals", "sandals, slides", True,
       "open toe, ankle strap, cushioned footbed, flat heel|wedge heel, faux leather, adjustable buckle, "
       "arch support, beach",
       [("color", ("black", "white", "beige", "brown", "gold", "silver", "pink", "tan")), ("size", SHOE_SIZES)],
       (15, 65), "summer outings and the beach", "Women's"),
    # beauty
    _k("beauty", "long lasting lipstick", "Beauty & Personal Care › Makeup › Lips › Lipstick", "lipstick, lip color",
       False, "long lasting, matte finish|satin finish, cruelty free, paraben free, vegan, moisturizing, "
       "highly pigmented, transfer proof",
       [("color", ("nude", "berry", "coral", "rose", "mauve", "plum", "cherry red", "brick", "fuchsia", "peach")),
        ("item package quantity", ("1", "2", "3"))],
       (6, 28), "everyday and evening looks"),
    _k("beauty", "face serum", "Beauty & Personal Care › Skin Care › Face › Serums", "face serum, facial serum", False,
       "hyaluronic acid|vitamin c|retinol|niacinamide, fragrance free, dermatologist tested, anti aging, "
       "dark spots, sensitive skin, oil free, travel size",
       [("size", ("0.5 fl oz", "1 fl oz", "1.7 fl oz", "2 fl oz")), ("item package quantity", ("1", "2"))],
       (9, 48), "morning and night skin care routines"),
    _k("beauty", "sulfate free shampoo", "Beauty & Personal Care › Hair Care › Shampoo & Conditioner › Shampoos",
       "shampoo, hair shampoo", False,
       "sulfate free, paraben free, color safe, dry scalp|oily hair|curly hair|damaged hair, "
       "argan oil|tea tree|coconut oil|biotin, natural ingredients, salon quality, cruelty free",
       [("size", ("8.5 fl oz", "12 fl oz", "16.9 fl oz", "33.8 fl oz")),
        ("scent", ("unscented", "lavender", "citrus", "eucalyptus", "coconut vanilla"))],
       (7, 36), "daily washing at home"),
    # grocery
    _k("grocery", "whole bean coffee", "Grocery & Gourmet Food › Beverages › Coffee › Whole Coffee Beans",
       "coffee beans, coffee", True,
       "whole bean|ground coffee, medium roast|dark roast|light roast, single origin, fair trade, usda organic, "
       "low acid, kosher, resealable bag",
       [("size", ("12 ounce", "2 pound", "5 pound")),
        ("flavor name", ("original", "french vanilla", "hazelnut", "caramel", "mocha", "breakfast blend"))],
       (8, 45), "drip machines, french press and espresso"),
    _k("grocery", "protein bars", "Grocery & Gourmet Food › Snack Foods › Bars › Protein Bars",
       "protein bars, snack bars", True,
       "gluten free, high protein, low sugar, keto friendly, plant based, non gmo, individually wrapped, "
       "high fiber",
       [("flavor name", ("chocolate chip", "cookie dough", "salted caramel", "birthday cake", "almond butter",
                         "lemon")), ("size", ("pack of 4", "pack of 12", "pack of 24"))],
       (10, 42), "snacks on the go and after workouts"),
    _k("grocery", "herbal tea bags", "Grocery & Gourmet Food › Beverages › Tea › Herbal",
       "tea bags, herbal tea", True,
       "caffeine free, usda organic, non gmo, individually wrapped, compostable bags, kosher, no artificial "
       "flavors, relaxing",
       [("flavor name", ("chamomile", "peppermint", "ginger", "hibiscus", "rooibos", "lemon balm")),
        ("size", ("20 count", "40 count", "100 count"))],
       (5, 24), "a calm cup in the evening"),
    # electronics
    _k("electronics", "wireless earbuds", "Electronics › Headphones, Earbuds & Accessories › Earbuds",
       "wireless earbuds, bluetooth earbuds", True,
       "noise cancelling, bluetooth 5.3, charging case, touch control, long battery life, built in microphone, "
       "sweat resistant, fast charging",
       [("color", GEAR_COLORS)], (19, 130), "calls, commuting and workouts"),
    _k("electronics", "usb c charging cable", "Electronics › Computers & Accessories › Cables › USB Cables",
       "usb c cable, charging cable", False,
       "fast charging, braided nylon, data transfer, aluminum connectors, tangle free, durable, 60w power "
       "delivery, right angle",
       [("color", ("black", "white", "grey", "red", "blue")), ("size", ("3 ft", "6 ft", "10 ft")),
        ("item package quantity", ("1 pack", "2 pack", "3 pack"))],
       (6, 25), "phones, tablets and laptops"),
    _k("electronics", "portable power bank", "Electronics › Cell Phones & Accessories › Chargers › Power Banks",
       "power bank, portable charger", False,
       "10000mah|20000mah|26800mah, usb c, led display, fast charging, slim design, dual output, "
       "airline approved, built in cable",
       [("color", GEAR_COLORS)], (15, 70), "travel, camping and long days out"),
    # home
    _k("home", "throw pillow covers", "Home & Kitchen › Home Décor › Decorative Pillows › Throw Pillow Covers",
       "throw pillow covers, cushion covers", True,
       "velvet|linen|cotton canvas, hidden zipper, double sided, farmhouse style|boho style|modern style, "
       "machine washable, soft texture, no insert, fade resistant",
       [("color", HOME_COLORS), ("size", ("16x16 inch", "18x18 inch", "20x20 inch", "24x24 inch")),
        ("item package quantity", ("set of 2", "set of 4"))],
       (9, 35), "sofas, beds and reading nooks"),
    _k("home", "bed sheet set", "Home & Kitchen › Bedding › Sheets & Pillowcases › Sheet & Pillowcase Sets",
       "sheet set, bed sheets", False,
       "deep pocket, microfiber|egyptian cotton|bamboo viscose, wrinkle free, cooling, hypoallergenic, "
       "fade resistant, 4 piece, breathable",
       [("color", HOME_COLORS), ("size", ("twin", "full", "queen", "king"))], (22, 120),
       "a restful night in every season"),
    _k("home", "blackout curtains", "Home & Kitchen › Home Décor › Window Treatments › Curtains & Drapes",
       "blackout curtains, curtain panels", True,
       "thermal insulated, grommet top|rod pocket, noise reducing, energy saving, machine washable, "
       "room darkening, 2 panels, tiebacks included",
       [("color", HOME_COLORS), ("size", ("42 x 63 inch", "52 x 84 inch", "52 x 95 inch", "52 x 108 inch"))],
       (16, 75), "bedrooms, nurseries and living rooms"),
    # kitchen
    _k("kitchen", "insulated water bottle", "Home & Kitchen › Kitchen & Dining › Storage › Water Bottles",
       "water bottle, insulated bottle", False,
       "vacuum insulated, leak proof, bpa free, wide mouth, dishwasher safe, straw lid|flip lid|chug lid, "
       "stainless steel, powder coated",
       [("color", GEAR_COLORS), ("size", ("20 oz", "32 oz", "40 oz", "64 oz"))], (12, 48),
       "school, the gym and hiking"),
    _k("kitchen", "nonstick frying pan", "Home & Kitchen › Kitchen & Dining › Cookware › Skillets",
       "frying pan, skillet", False,
       "induction compatible, oven safe, pfoa free, granite coating|ceramic coating, stay cool handle, "
       "dishwasher safe, glass lid, heavy duty",
       [("size", ("8 inch", "10 inch", "12 inch")), ("color", ("black", "grey", "cream", "sage green", "blue"))],
       (18, 80), "eggs, pancakes and everyday cooking"),
    _k("kitchen", "kitchen knife set", "Home & Kitchen › Kitchen & Dining › Cutlery › Knife Block Sets",
       "knife set, kitchen knives", False,
       "high carbon steel, wooden block|magnetic block, full tang, ergonomic handle, sharpener included, "
       "rust resistant, steak knives, gift box",
       [("color", ("black", "silver", "walnut", "red", "white")), ("size", ("6 piece", "12 piece", "15 piece"))],
       (25, 150), "home cooks and chefs"),
    # pet supplies
    _k("pet supplies", "orthopedic dog bed", "Pet Supplies › Dogs › Beds & Furniture › Beds", "dog bed, pet bed",
       False, "orthopedic, memory foam, washable cover, non skid bottom, bolster pillow, waterproof liner, "
       "egg crate foam, chew resistant",
       [("color", ("grey", "brown", "navy blue", "beige", "charcoal")),
        ("size", ("small", "medium", "large", "x-large", "jumbo"))],
       (25, 120), "senior dogs and big breeds"),
    _k("pet supplies", "dog chew toys", "Pet Supplies › Dogs › Toys › Chew Toys", "chew toy, dog toy", False,
       "durable, natural rubber, squeaky, teeth cleaning, aggressive chewers, non toxic, treat dispenser, "
       "floats in water",
       [("color", ("red", "blue", "green", "orange", "yellow", "purple")), ("size", ("small", "medium", "large"))],
       (6, 28), "puppies and power chewers"),
    _k("pet supplies", "cat scratching post", "Pet Supplies › Cats › Furniture › Scratching Posts",
       "scratching post, cat scratcher", False,
       "sisal rope, dangling ball, stable base, plush cover, tall design, easy assembly, replaceable pole, "
       "hanging toy",
       [("color", ("beige", "grey", "white", "black", "brown")), ("size", ("24 inch", "32 inch", "34 inch"))],
       (14, 60), "indoor cats and kittens"),
    # sports
    _k("sports", "non slip yoga mat", "Sports & Outdoors › Exercise & Fitness › Yoga › Mats", "yoga mat, exercise mat",
       False, "non slip, extra thick, tpe foam|natural rubber|nbr foam, carrying strap, eco friendly, "
       "alignment lines, sweat proof, double sided",
       [("color", GEAR_COLORS), ("size", ("4mm", "6mm", "8mm", "10mm"))], (14, 70), "yoga, pilates and floor work"),
    _k("sports", "camping tent", "Sports & Outdoors › Outdoor Recreation › Camping & Hiking › Tents",
       "camping tent, dome tent", False,
       "waterproof, easy setup, rainfly, mesh windows, carry bag, 3 season|4 season, instant pop up, "
       "aluminum poles",
       [("color", ("green", "grey", "orange", "blue", "khaki")), ("size", ("2 person", "4 person", "6 person"))],
       (45, 220), "backpacking, festivals and family camping"),
    _k("sports", "adjustable dumbbells", "Sports & Outdoors › Exercise & Fitness › Strength Training › Dumbbells",
       "dumbbells, dumbbell set", True,
       "adjustable, neoprene coated|rubber coated|cast iron, anti roll, non slip grip, hex shape, "
       "quick change, space saving, storage tray",
       [("size", ("5 lb", "10 lb", "15 lb", "20 lb", "25 lb")), ("item package quantity", ("single", "pair"))],
       (19, 150), "home gyms and strength training"),
    # toys
    _k("toys", "building blocks set", "Toys & Games › Building Toys › Building Sets", "building blocks, building set",
       True, "stem educational, storage box, non toxic, compatible with major brands, illustrated instructions, "
       "creative play, ages 6 and up, gift for kids",
       [("style", ("city", "castle", "space", "farm", "dinosaur")),
        ("size", ("300 pieces", "500 pieces", "1000 pieces"))],
       (12, 70), "rainy afternoons and birthdays"),
    _k("toys", "stuffed animal plush toy", "Toys & Games › Stuffed Animals & Plush Toys › Animals",
       "plush toy, stuffed animal", False,
       "super soft, hypoallergenic filling, machine washable, embroidered eyes, huggable, cuddly, "
       "sensory tags, gift ready",
       [("style", ("bear", "bunny", "unicorn", "dinosaur", "puppy", "elephant")),
        ("size", ("8 inch", "12 inch", "16 inch", "24 inch"))],
       (8, 40), "naps, car rides and bedtime"),
    _k("toys", "jigsaw puzzle", "Toys & Games › Puzzles › Jigsaw Puzzles", "jigsaw puzzle, puzzle", False,
       "thick cardboard, poster included, precision cut, glare free, recycled material, family activity, "
       "sturdy box, sorting tray",
       [("pattern name", ("landscape", "animals", "fine art", "city skyline", "flowers")),
        ("size", ("300 piece", "500 piece", "1000 piece", "1500 piece"))],
       (9, 35), "quiet evenings and game nights"),
    # office
    _k("office", "gel pens", "Office Products › Writing & Correction Supplies › Pens › Gel Ink Pens",
       "gel pens, rollerball pens", True,
       "quick dry, fine point|medium point, smooth writing, retractable, comfort grip, refillable, "
       "archival ink, bold colors",
       [("color", ("black", "blue", "red", "assorted")), ("size", ("pack of 6", "pack of 12", "pack of 24"))],
       (5, 25), "journaling, notes and drawing"),
    _k("office", "ergonomic office chair", "Office Products › Furniture › Chairs › Desk Chairs",
       "office chair, desk chair", False,
       "ergonomic, lumbar support, adjustable height, mesh back, padded armrests, 360 swivel, "
       "high back|mid back, headrest",
       [("color", ("black", "grey", "white", "blue", "pink"))], (60, 280), "long days at the desk"),
    _k("office", "spiral notebook", "Office Products › Paper › Notebooks & Writing Pads › Wirebound Notebooks",
       "spiral notebook, notebook", False,
       "college ruled|wide ruled|dot grid, hardcover, perforated pages, thick paper, inner pocket, "
       "elastic closure, 120 sheets, lay flat",
       [("color", ("black", "navy blue", "red", "green", "purple", "pink")),
        ("size", ("a5", "b5", "letter size"))],
       (5, 24), "school, meetings and bullet journaling"),
    # health
    _k("health", "vitamin d3 supplement", "Health & Household › Vitamins & Supplements › Vitamins › Vitamin D",
       "vitamin d3 supplement, vitamin d3", False,
       "gluten free, non gmo, third party tested, easy to swallow, immune support, softgels|gummies|capsules, "
       "5000 iu|2000 iu, made in usa",
       [("size", ("60 count", "120 count", "240 count", "360 count"))], (7, 35), "daily immune and bone support"),
    _k("health", "electric toothbrush", "Health & Household › Oral Care › Toothbrushes › Power Toothbrushes",
       "electric toothbrush, sonic toothbrush", False,
       "rechargeable, pressure sensor, 2 minute timer, travel case, 5 modes, usb charging, whitening, "
       "gentle on gums",
       [("color", ("black", "white", "pink", "blue", "rose gold")),
        ("item package quantity", ("2 brush heads", "4 brush heads", "8 brush heads"))],
       (18, 90), "a dentist-clean feeling at home"),
    _k("health", "electric heating pad", "Health & Household › Health Care › Pain Relief › Hot & Cold Therapies",
       "heating pad, heat pad", False,
       "auto shut off, moist heat, machine washable, fast heating, 6 heat settings, extra large, "
       "soft flannel, neck and shoulder",
       [("color", ("grey", "blue", "beige", "pink")), ("size", ("12 x 24 inch", "20 x 24 inch", "33 x 17 inch"))],
       (16, 55), "sore backs, cramps and cold evenings"),
)

BRANDS = {
    "clothing": ("Mireva", "Northloom", "Calloway & Fig", "Tessaly", "Urbanwren", "Oakhive", "Linnet Lane"),
    "shoes": ("Stridex", "Peakfield", "Solemate", "Trailcrest", "Airlune", "Corvo", "Marlo Step"),
    "beauty": ("Lumiere Lab", "Velvetique", "Purabelle", "Dermaloom", "Rosebay", "Aurelle", "Kindskin"),
    "grocery": ("Harvest Hollow", "Bramblewood", "Sunmill", "Cedar Crate", "Goldleaf", "Maple Ridge", "Nutrea"),
    "electronics": ("Voltaro", "Sonique", "Nexbolt", "Amplio", "Kirotech", "Zentra", "Orbicell"),
    "home": ("Hearthly", "Linden Home", "Cozyloft", "Willowmere", "Nestora", "Brightnook", "Duvara"),
    "kitchen": ("Chefora", "Ironhale", "Kitchora", "Copperly", "Hydrapeak", "Bladeworth", "Panmaster"),
    "pet supplies": ("Pawsome", "Furrow", "Barkley & Co", "Whiskerwood", "Tailtown", "Petlume", "Snugpup"),
    "sports": ("Fitrova", "Summitline", "Kinetix", "Trekwell", "Zenflow", "Ironpeak", "Basecamp Co"),
    "toys": ("Brickly", "Wonderkin", "Playnest", "Cuddlebug", "Puzzlecraft", "Toyvana", "Tinker Town"),
    "office": ("Inkwell", "Deskara", "Scriptly", "Papermoon", "Officio", "Penhaven", "Seatwise"),
    "health": ("Vitalis", "Wellspring", "Nutriva", "Brightsmile", "Soothera", "Healix", "Purevita"),
}

BULLET_ENDINGS = (
    "built for {use}", "tested for everyday use", "a dependable pick for {use}", "easy to care for",
    "made to last season after season", "backed by our 30-day satisfaction promise",
)
GOAL_TEMPLATES = (
    "i am looking for {a}{noun} that {is} {attrs}{opts}",
    "i need {a}{noun} with {attrs}{opts}",
    "i want to buy {a}{noun} which {is} {attrs}{opts}",
    "find me {a}{noun} that {has} {attrs}{opts}",
    "i'm looking for {a}{noun} with {attrs}{opts}",
    "i would like {a}{noun} that {is} {attrs}{opts}",
    "please find {a}{noun} with {attrs}{opts}",
    "i am shopping for {a}{noun} that {has} {attrs}{opts}",
)


def _title_case(text: str) -> str:
    return " ".join(word[:1].upper() + word[1:] for word in text.split())


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _asin(rng: random.Random) -> str:
    return "B0" + "".join(rng.choice(_ASIN_CHARS) for _ in range(8))


def _attributes(kind: Kind, rng: random.Random) -> list[str]:
    groups = rng.sample(range(len(kind.attributes)), rng.randint(3, 4))
    return [rng.choice(kind.attributes[g].split("|")) for g in sorted(groups)]


def _option_subset(name: str, values: tuple[str, ...], rng: random.Random) -> list[str]:
    if name == "size" and len(values) > 4:   # a run of neighbouring sizes, as a real listing has
        length = rng.randint(4, len(values))
        start = rng.randint(0, len(values) - length)
        return list(values[start: start + length])
    count = rng.randint(min(2, len(values)), min(6, len(values)))
    return [values[i] for i in sorted(rng.sample(range(len(values)), count))]


def make_product(index: int, seed: int = 0) -> tuple[dict, list[str]]:
    """Product `index` as an `items_shuffle` record, and its attributes."""
    rng = random.Random(f"webshop-product-{seed}-{index}")
    kind = KINDS[index % len(KINDS)]
    asin = _asin(rng)
    brand = rng.choice(BRANDS[kind.category])
    attributes = _attributes(kind, rng)
    noun = rng.choice(kind.nouns)
    title_attributes = rng.sample(attributes, 2)
    audience = f"{kind.audience} " if kind.audience else ""
    title = f"{brand} {audience}{_title_case(noun)} - {', '.join(_title_case(a) for a in title_attributes)}"
    options = {name: _option_subset(name, values, rng) for name, values in kind.options if rng.random() < 0.9}
    # The search index reads the title, description and first bullet only (as the original's does), so
    # attributes named only in the later bullets must be checked on the Features page.
    bullets = [f"{_title_case(kind.nouns[0])} by {brand}, for {kind.use}"]
    for attribute in attributes:
        ending = rng.choice(BULLET_ENDINGS).format(use=kind.use)
        bullets.append(f"{attribute.upper()}: {ending}")
    rest = [a for a in attributes if a not in title_attributes]
    described = rest[:1] if rest and rng.random() < 0.5 else []
    description = (f"The {brand} {noun} {'are' if noun.endswith('s') else 'is'} made for {kind.use}. "
                   + (f"It comes with {_join(described)}. " if described else "")
                   + f"Choose from {sum(len(v) for v in options.values()) or 'one'} options to suit your needs.")
    low, high = kind.price
    price = round(rng.uniform(low, high)) - 0.01
    pricing = f"${price:.2f}" if rng.random() < 0.7 else f"${price:.2f} - ${price * rng.uniform(1.1, 1.5):.2f}"
    record = {
        "asin": asin, "category": kind.category, "query": kind.query, "product_category": kind.path,
        "name": title, "full_description": description, "small_description": bullets, "pricing": pricing,
        "customization_options": {name: [{"value": v, "image": None} for v in values]
                                  for name, values in options.items()},
        "images": [f"https://images.example.com/{asin}/main.jpg"],
    }
    return record, attributes


def _option_phrase(name: str, value: str) -> str:
    if name == "color":
        return f"in {value}" if value != "assorted" else "in assorted colors"
    if name == "size":   # "size 8", "size medium", but "3 ft", "pack of 12", "16x16 inch", "letter size"
        return value if " " in value and (any(c.isdigit() for c in value) or "size" in value) else f"size {value}"
    if name in ("flavor name", "scent"):
        return f"{value} {'flavor' if name == 'flavor name' else 'scent'}"
    if name == "style":
        return f"{value} style"
    if name == "pattern name":
        return f"with a {value} pattern"
    if name == "item package quantity" and value.isdigit():
        return f"pack of {value}" if value != "1" else "a single pack"
    return value


def make_goal(record: dict, attributes: list[str], number: int, seed: int = 0) -> dict:
    """One `items_human_ins` entry for a product: 1 to 3 of its attributes and some of its options."""
    rng = random.Random(f"webshop-goal-{seed}-{record['asin']}-{number}")
    kind = next(k for k in KINDS if k.query == record["query"])
    # At least one attribute that only the Features page shows, where the product has one: the search
    # cannot rank by it, so the agent has to look.
    indexed = (record["name"] + " " + record["full_description"]).lower()
    hidden = [a for a in attributes if a not in indexed]
    chosen = rng.sample(attributes, rng.choice((1, 2, 2, 3, 3)))
    if hidden and not set(chosen) & set(hidden):
        chosen[rng.randrange(len(chosen))] = rng.choice(hidden)
    chosen = [a for a in attributes if a in chosen]   # in the product's order, without repeats
    option_names = [n for n in record["customization_options"] if rng.random() < 0.8]
    options = {n: rng.choice(record["customization_options"][n])["value"] for n in option_names}
    phrases = [_option_phrase(n, v) for n, v in options.items()]
    audience = f"{kind.audience.lower()} " if kind.audience else ""
    article = "" if kind.plural else ("an " if (audience or kind.nouns[0])[0] in "aeiou" else "a ")
    text = rng.choice(GOAL_TEMPLATES).format(
        a=article, noun=audience + kind.nouns[0], attrs=" and ".join(chosen),
        opts=(", " + " and ".join(phrases)) if phrases else "",
        **{"is": "are" if kind.plural else "is", "has": "have" if kind.plural else "has"},
    )
    # Option values as listed: data.py lower-cases product option values, goal options are compared fuzzily.
    return {"instruction": text, "instruction_attributes": chosen,
            "instruction_options": [v.lower() for v in options.values()]}


def generate(n_products: int = SHIPPED_PRODUCTS, *, goals_per_product: int = GOALS_PER_PRODUCT,
             seed: int = 0) -> tuple[list[dict], dict, dict]:
    """(items_shuffle records, items_ins_v2 mapping, items_human_ins mapping) of a catalogue."""
    records, attributes, human = [], {}, {}
    seen: set[str] = set()
    for index in range(n_products):
        record, product_attributes = make_product(index, seed)
        if record["asin"] in seen:   # astronomically rare; skip rather than renumber the rest
            continue
        seen.add(record["asin"])
        records.append(record)
        goals = [make_goal(record, product_attributes, number, seed) for number in range(goals_per_product)]
        attributes[record["asin"]] = {"attributes": product_attributes, "instruction": goals[0]["instruction"]
                                      if goals else "", "instruction_attributes": goals[0]["instruction_attributes"]
                                      if goals else []}
        if goals:
            human[record["asin"]] = goals
    return records, attributes, human


def write(folder: Path, n_products: int = SHIPPED_PRODUCTS, *, goals_per_product: int = GOALS_PER_PRODUCT,
          seed: int = 0) -> Path:
    """Write a generated catalogue into `folder` under the original file names (atomically)."""
    records, attributes, human = generate(n_products, goals_per_product=goals_per_product, seed=seed)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    for name, content in (("items_shuffle.json", records), ("items_ins_v2.json", attributes),
                          ("items_human_ins.json", human)):
        (staging / name).write_text(json.dumps(content, indent=0), encoding="utf-8")
    try:
        os.replace(staging, folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another process wrote the same files first
    return folder


def shipped_folder() -> Path:
    """The shipped catalogue's folder in the turnrl cache, generated on first use."""
    from turnrl.environments.cache import cache_dir

    folder = cache_dir("webshop") / f"catalogue-{CATALOGUE_VERSION}"
    if not (folder / "items_human_ins.json").is_file():
        write(folder)
    return folder
