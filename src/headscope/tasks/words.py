"""Word pools of the built-in tasks: names, places, objects and ordered member families."""

from __future__ import annotations

NAMES: tuple[str, ...] = (
    "Mary", "John", "Anne", "James", "Tom", "Sarah", "Paul", "Laura", "David", "Emma",
    "Mark", "Lisa", "Peter", "Kate", "Daniel", "Susan", "Michael", "Rachel", "Robert", "Julia",
    "Chris", "Alice", "Steven", "Helen", "Brian", "Amy", "Kevin", "Jessica", "Eric", "Grace",
    "Andrew", "Karen", "Jason", "Nancy", "Ryan", "Lucy", "Adam", "Linda", "Jack", "Sophie",
)  # fmt: skip

PLACES: tuple[str, ...] = (
    "store", "garden", "park", "school", "station", "hospital", "office", "restaurant",
    "house", "beach", "market", "library",
)  # fmt: skip

OBJECTS: tuple[str, ...] = (
    "drink", "book", "ring", "bone", "kiss", "basketball", "computer", "necklace",
    "snack", "letter", "bag", "key",
)  # fmt: skip

NUMBER_WORDS: tuple[str, ...] = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty",
)  # fmt: skip

MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)  # fmt: skip

DAYS: tuple[str, ...] = (
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
)  # fmt: skip

DIGITS: tuple[str, ...] = tuple(str(i) for i in range(1, 21))
LETTERS: tuple[str, ...] = tuple(chr(c) for c in range(ord("A"), ord("Z") + 1))

# Families whose successor wraps around (December -> January); the others end (20, Z have none).
CYCLIC_FAMILIES: frozenset[str] = frozenset({"months", "days"})

FAMILIES: dict[str, tuple[str, ...]] = {
    "digits": DIGITS,
    "numwords": NUMBER_WORDS,
    "months": MONTHS,
    "days": DAYS,
    "letters": LETTERS,
}

# Sequence-task frame: "{W} {verb} in {x1}. ..." (the sequence-continuation format).
SEQUENCE_VERBS: tuple[str, ...] = ("arrived", "left", "won", "lost", "moved", "stayed")

# Subjects of the recency task and its fixed frame.
RECENCY_VERBS: tuple[str, ...] = ("came", "sang", "ran", "spoke")
