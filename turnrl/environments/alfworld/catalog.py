"""What generated ALFWorld rooms are made of: ALFRED's object and receptacle types, room templates and the
six task types.

Object and receptacle type names, which receptacle may hold which object (`canContain`), and which
objects can be heated, cooled, cleaned or toggled are ALFRED's, read from the installed alfworld package
(`alfworld.gen.constants`) so that generated games use the same facts as the original ones. The room
templates play the part of ALFRED's floor plans: a template fixes the receptacles of a room (types and
counts); a game places objects in it. Templates marked `unseen` only appear in `valid_unseen`.
"""

from __future__ import annotations

from dataclasses import dataclass

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)

# The room kinds each task type is played in (ALFRED's GOALS_VALID).
TASK_ROOM_KINDS = {
    "pick_and_place_simple": ("kitchen", "bathroom", "bedroom", "livingroom"),
    "look_at_obj_in_light": ("bedroom", "livingroom"),
    "pick_clean_then_place_in_recep": ("kitchen", "bathroom"),
    "pick_heat_then_place_in_recep": ("kitchen",),
    "pick_cool_then_place_in_recep": ("kitchen",),
    "pick_two_obj_and_place": ("kitchen", "bathroom", "bedroom", "livingroom"),
}

# The appliance a task needs, and the property its object must have.
TASK_APPLIANCE = {
    "pick_clean_then_place_in_recep": ("SinkBasin", "Cleanable"),
    "pick_heat_then_place_in_recep": ("Microwave", "Heatable"),
    "pick_cool_then_place_in_recep": ("Fridge", "Coolable"),
}

LAMPS = ("DeskLamp", "FloorLamp")
LAMP_HOLDERS = ("Desk", "SideTable", "Dresser", "CoffeeTable")

# Object types that may appear in each kind of room (pickupable ones; lamps are added separately).
ROOM_OBJECTS = {
    "kitchen": ("Apple", "Bread", "Egg", "Potato", "Tomato", "Lettuce", "Mug", "Cup", "Plate", "Bowl", "Pan", "Pot",
                "Kettle", "Knife", "ButterKnife", "Fork", "Spoon", "Spatula", "Ladle", "DishSponge", "SaltShaker",
                "PepperShaker", "SoapBottle", "WineBottle", "Glassbottle"),
    "bathroom": ("SoapBar", "SoapBottle", "Cloth", "HandTowel", "Towel", "ToiletPaper", "SprayBottle", "Candle",
                 "DishSponge", "TissueBox", "PaperTowel"),
    "bedroom": ("Book", "CellPhone", "Laptop", "Pillow", "AlarmClock", "CD", "CreditCard", "KeyChain", "Pen",
                "Pencil", "BaseballBat", "BasketBall", "TennisRacket", "Watch", "Mug", "Bowl", "Cloth", "Vase",
                "Statue"),
    "livingroom": ("RemoteControl", "Newspaper", "KeyChain", "CreditCard", "Laptop", "Pillow", "Statue", "Vase",
                   "Watch", "Book", "CellPhone", "TissueBox", "WateringCan", "Candle", "Plate", "Bowl"),
}


@dataclass(frozen=True)
class RoomTemplate:
    """A room: its receptacles (type, count) and the lamps it may hold. `unseen` templates are kept out of train."""

    name: str
    kind: str
    receptacles: tuple[tuple[str, int], ...]
    lamps: tuple[str, ...] = ()
    unseen: bool = False

    @property
    def receptacle_types(self) -> tuple[str, ...]:
        return tuple(rtype for rtype, _ in self.receptacles)


def _room(name, kind, receptacles, lamps=(), unseen=False):
    return RoomTemplate(name, kind, tuple(receptacles.items()), tuple(lamps), unseen)


ROOM_TEMPLATES = (
    _room("kitchen-1", "kitchen", {"Cabinet": 6, "Drawer": 3, "CounterTop": 2, "Fridge": 1, "Microwave": 1,
                                   "SinkBasin": 1, "StoveBurner": 4, "GarbageCan": 1, "CoffeeMachine": 1,
                                   "Toaster": 1}),
    _room("kitchen-2", "kitchen", {"Cabinet": 4, "Drawer": 2, "CounterTop": 1, "DiningTable": 1, "Fridge": 1,
                                   "Microwave": 1, "SinkBasin": 1, "StoveBurner": 2, "GarbageCan": 1, "Shelf": 2}),
    _room("kitchen-3", "kitchen", {"Cabinet": 9, "Drawer": 5, "CounterTop": 3, "Fridge": 1, "Microwave": 1,
                                   "SinkBasin": 2, "StoveBurner": 4, "GarbageCan": 1, "CoffeeMachine": 1,
                                   "Toaster": 1}),
    _room("kitchen-4", "kitchen", {"Cabinet": 3, "Drawer": 1, "CounterTop": 1, "DiningTable": 1, "Fridge": 1,
                                   "Microwave": 1, "SinkBasin": 1, "StoveBurner": 2, "GarbageCan": 1,
                                   "SideTable": 1}),
    _room("kitchen-5", "kitchen", {"Cabinet": 5, "Drawer": 4, "CounterTop": 2, "DiningTable": 1, "Fridge": 1,
                                   "Microwave": 1, "SinkBasin": 1, "StoveBurner": 3, "GarbageCan": 1, "Shelf": 3,
                                   "CoffeeMachine": 1}, unseen=True),
    _room("kitchen-6", "kitchen", {"Cabinet": 7, "Drawer": 2, "CounterTop": 1, "Fridge": 1, "Microwave": 1,
                                   "SinkBasin": 1, "StoveBurner": 4, "GarbageCan": 1, "SideTable": 1,
                                   "Toaster": 1}, unseen=True),
    _room("bathroom-1", "bathroom", {"Cabinet": 4, "CounterTop": 1, "Drawer": 2, "SinkBasin": 2, "BathtubBasin": 1,
                                     "Toilet": 1, "ToiletPaperHanger": 1, "TowelHolder": 1, "HandTowelHolder": 1,
                                     "GarbageCan": 1}),
    _room("bathroom-2", "bathroom", {"Cabinet": 2, "CounterTop": 1, "SinkBasin": 1, "Toilet": 1,
                                     "ToiletPaperHanger": 1, "HandTowelHolder": 2, "GarbageCan": 1, "Shelf": 3,
                                     "Drawer": 4}),
    _room("bathroom-3", "bathroom", {"Cabinet": 3, "CounterTop": 1, "Drawer": 2, "SinkBasin": 1, "BathtubBasin": 1,
                                     "Toilet": 1, "ToiletPaperHanger": 1, "TowelHolder": 2, "GarbageCan": 1,
                                     "Shelf": 1}, unseen=True),
    _room("bedroom-1", "bedroom", {"Bed": 1, "Desk": 1, "Drawer": 3, "Dresser": 1, "SideTable": 2, "GarbageCan": 1,
                                   "Shelf": 2, "LaundryHamper": 1}, lamps=("DeskLamp",)),
    _room("bedroom-2", "bedroom", {"Bed": 1, "Drawer": 6, "SideTable": 1, "Dresser": 1, "Safe": 1, "GarbageCan": 1,
                                   "ArmChair": 1, "Desk": 1}, lamps=("DeskLamp", "FloorLamp")),
    _room("bedroom-3", "bedroom", {"Bed": 2, "Desk": 2, "Drawer": 2, "Shelf": 6, "GarbageCan": 1, "SideTable": 1},
          lamps=("DeskLamp",)),
    _room("bedroom-4", "bedroom", {"Bed": 1, "Desk": 1, "Drawer": 4, "Dresser": 1, "SideTable": 2, "Safe": 1,
                                   "ArmChair": 1, "GarbageCan": 1, "Shelf": 2}, lamps=("DeskLamp", "FloorLamp"),
          unseen=True),
    _room("livingroom-1", "livingroom", {"Sofa": 1, "ArmChair": 1, "CoffeeTable": 1, "SideTable": 2, "TVStand": 1,
                                         "Drawer": 2, "Cabinet": 2, "GarbageCan": 1}, lamps=("FloorLamp",)),
    _room("livingroom-2", "livingroom", {"Sofa": 1, "ArmChair": 2, "CoffeeTable": 1, "DiningTable": 1, "Shelf": 4,
                                         "Drawer": 3, "Dresser": 1, "GarbageCan": 1}, lamps=("DeskLamp",)),
    _room("livingroom-3", "livingroom", {"Sofa": 2, "CoffeeTable": 1, "SideTable": 1, "TVStand": 1, "Ottoman": 1,
                                         "Safe": 1, "Cabinet": 4, "Drawer": 2, "GarbageCan": 1},
          lamps=("FloorLamp", "DeskLamp")),
    _room("livingroom-4", "livingroom", {"Sofa": 1, "ArmChair": 1, "CoffeeTable": 2, "SideTable": 2, "Shelf": 3,
                                         "Drawer": 4, "Dresser": 1, "GarbageCan": 1, "Safe": 1},
          lamps=("FloorLamp", "DeskLamp"), unseen=True),
)


class AlfredFacts:
    """ALFRED's type facts, from the installed alfworld package, as sorted tuples and plain dicts."""

    def __init__(self):
        from alfworld.gen import constants

        self.can_contain = {rtype: tuple(sorted(objects)) for rtype, objects in
                            sorted(constants.VAL_RECEPTACLE_OBJECTS.items())}
        self.properties = {name: frozenset(objects) for name, objects in constants.VAL_ACTION_OBJECTS.items()}
        self.openable = frozenset(constants.OPENABLE_CLASS_LIST)
        self.receptacle_objects = frozenset(constants.MOVABLE_RECEPTACLES)

    def holds(self, rtype: str, otype: str) -> bool:
        return otype in self.can_contain.get(rtype, ())

    def has(self, otype: str, prop: str) -> bool:
        return otype in self.properties[prop]
