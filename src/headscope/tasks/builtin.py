"""The built-in tasks: IOI, recency, sequence continuation and induction."""

from __future__ import annotations

import random

from headscope.errors import HeadscopeError
from headscope.tasks import words
from headscope.tasks.prompt import Piece, Prompt, PromptPair, fill, occurrence_roles
from headscope.tasks.task import Family, Task, Twin, WordFilter

IOI_BASE_TEMPLATES: tuple[str, ...] = (
    "Then, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {S} decided to give it to",
    "When {A} and {B} went to the {PLACE}, {S} gave the {OBJECT} to",
    "Afterwards, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {A} and {B} had a long argument, and afterwards {S} said to",
    "While {A} and {B} were working at the {PLACE}, {S} gave a {OBJECT} to",
    "Friends {A} and {B} found a {OBJECT} at the {PLACE}. {S} gave it to",
    "The {PLACE} {A} and {B} went to had a {OBJECT}. {S} gave it to",
    "When {A} and {B} arrived at the {PLACE}, {S} handed the {OBJECT} to",
    "After {A} and {B} met at the {PLACE}, {S} sent a {OBJECT} to",
    "Then, {A} and {B} were thinking about going to the {PLACE}. {S} wanted to give a {OBJECT} to",
    "While {A} and {B} were walking to the {PLACE}, {S} gave a {OBJECT} to",
    "Then, {A} and {B} had a lot of fun at the {PLACE}. {S} gave a {OBJECT} to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {S} gave it to",
    "After the lunch, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
)

# ABBA: the indirect object is named first; BABA: the subject is.
IOI_TEMPLATES: tuple[str, ...] = tuple(
    base.replace("{A}", first).replace("{B}", second)
    for base in IOI_BASE_TEMPLATES
    for first, second in (("{IO}", "{S}"), ("{S}", "{IO}"))
)

SEQUENCE_TEMPLATE = "{W} {V} in {x1}. {W} {V} in {x2}. {W} {V} in {x3}. {W} {V} in {x4}. {W} {V} in"
SEQUENCE_FAMILIES: dict[str, str] = {
    "seq-digits": "digits",
    "seq-numwords": "numwords",
    "seq-months": "months",
    "seq-days": "days",
    "seq-letters": "letters",
}
INDUCTION_LENGTH = 8

IOI_TWINS = (
    Twin(
        "abc",
        "S2 replaced by a third name (the IOI paper's ABC)",
        "what is computed from S2 on: duplicate-token / induction heads at S2 -> S-inhibition heads "
        "(k, v) -> name movers (q) -> logits; IO and S1 are unchanged, so the name movers' value "
        "path from IO (embed -> v) cannot show",
    ),
)
RECENCY_TWINS = (
    Twin(
        "names",
        "every subject replaced by other names (same verbs)",
        "every name-dependent edge: name positions -> the heads that move the latest name (k, v), "
        "their queries at the end (q), -> logits",
    ),
)
SEQUENCE_TWINS = (
    Twin(
        "members",
        "x1..x4 replaced by random members (same frame)",
        "member positions -> the heads that find x4 (k) and move it (v), the successor mapping "
        "(MLPs, head OV) -> logits; the frame before x1 is unchanged",
    ),
)
INDUCTION_TWINS = (
    Twin(
        "first",
        "the first occurrence replaced by other random words (the repeat, and so the current "
        "token, unchanged): the answer is not in the prompt",
        "the key/value side: previous-token heads at the first occurrence -> induction heads' "
        "keys (k, K-composition) and the copied token -> their values (v) -> logits; the query "
        "side (the current token at the end) is unchanged",
    ),
    Twin(
        "repeat",
        "the repeat replaced by other random words (the first occurrence unchanged)",
        "the query side: the current token -> induction heads' queries (q) -> logits; the first "
        "occurrence is unchanged, so no previous-token -> induction key edge can matter",
    ),
)


def _pool(pool: tuple[str, ...], word_ok: WordFilter, need: int, what: str) -> tuple[str, ...]:
    kept = tuple(w for w in pool if word_ok(w))
    if len(kept) < need:
        raise HeadscopeError(
            f"only {len(kept)} of the {what} are single tokens for this tokenizer; the task needs {need}; "
            "use a model whose vocabulary has them"
        )
    return kept


def _opening(word_ok: WordFilter) -> WordFilter:
    """The check for a prompt's first word (no space before it): the filter's `at_start` if it has one.

    `FillerCheck` (tasks.dataset) has one; a plain filter (e.g. `any_word`) treats both alike.
    """
    return getattr(word_ok, "at_start", word_ok)


def _sample_opening(
    rng: random.Random, pool: tuple[str, ...], k: int, opening: tuple[int, ...], opens: WordFilter, what: str
) -> list[str]:
    """`k` distinct words of `pool`; those at the `opening` indices start a prompt (`opens` them).

    When every word opens, this is `rng.sample(pool, k)` exactly (the same prompts as always);
    otherwise the openers are drawn first, then the rest.
    """
    openers = tuple(w for w in pool if opens(w))
    if len(openers) == len(pool):
        return rng.sample(pool, k)
    if len(openers) < len(opening):
        raise HeadscopeError(
            f"only {len(openers)} of the {what} are single tokens as a prompt's first word; "
            f"the task needs {len(opening)}; use a model whose vocabulary has them"
        )
    first = rng.sample(openers, len(opening))
    rest = iter(rng.sample(tuple(w for w in pool if w not in first), k - len(opening)))
    placed = dict(zip(opening, first, strict=True))
    return [placed[i] if i in placed else next(rest) for i in range(k)]


def _ioi(n: int, rng: random.Random, word_ok: WordFilter) -> list[PromptPair]:
    names = _pool(words.NAMES, word_ok, 3, "IOI names")
    places = _pool(words.PLACES, word_ok, 1, "places")
    objects = _pool(words.OBJECTS, word_ok, 1, "objects")
    pairs = []
    for _ in range(n):
        template_id = rng.randrange(len(IOI_TEMPLATES))
        template = IOI_TEMPLATES[template_id]
        io, s, c = rng.sample(names, 3)
        common = {"PLACE": rng.choice(places), "OBJECT": rng.choice(objects)}
        roles = occurrence_roles(template)
        clean = fill(template, {"IO": io, "S": s, **common}, roles)
        corrupted = _replace_role(clean, "S2", c)
        pairs.append(PromptPair(Prompt(clean, io, s, template_id), Prompt(corrupted, io, s, template_id)))
    return pairs


def _replace_role(pieces: tuple[Piece, ...], role: str, word: str) -> tuple[Piece, ...]:
    """The same pieces with the filler of `role` swapped for `word` (spacing kept)."""
    return tuple(
        Piece(p.text[: len(p.text) - len(p.text.lstrip())] + word, p.role) if p.role == role else p
        for p in pieces
    )


def _recency_template(count: int) -> str:
    mentions = " ".join(f"{{N{i}}} {{V}}." for i in range(1, count + 1))
    return f"{mentions} The one who {{V}} last is"


def _recency_roles(count: int) -> list[str]:
    """Subject roles by recency: the last-mentioned is S_r1, the one before S_r2, ..."""
    subjects = [f"S_r{count - i}" for i in range(count)]
    verbs = [f"V{i}" for i in range(1, count + 2)]
    roles = []
    for subject, verb in zip(subjects, verbs, strict=False):
        roles += [subject, verb]
    return roles + [verbs[-1]]


def _recency(n: int, rng: random.Random, word_ok: WordFilter) -> list[PromptPair]:
    names = _pool(words.NAMES, word_ok, 8, "recency names")
    verbs = _pool(words.RECENCY_VERBS, word_ok, 1, "recency verbs")
    pairs = []
    for _ in range(n):
        count = rng.randint(2, 4)
        template = _recency_template(count)
        chosen = _sample_opening(rng, names, 2 * count, (0, count), _opening(word_ok), "recency names")
        verb = rng.choice(verbs)
        clean_fill = {f"N{i + 1}": chosen[i] for i in range(count)} | {"V": verb}
        other_fill = {f"N{i + 1}": chosen[count + i] for i in range(count)} | {"V": verb}
        roles = _recency_roles(count)
        latest, previous = chosen[count - 1], chosen[count - 2]
        clean = Prompt(fill(template, clean_fill, roles), latest, previous, count)
        corrupted = Prompt(fill(template, other_fill, roles), latest, previous, count)
        pairs.append(PromptPair(clean, corrupted))
    return pairs


def _sequence_generator(family: Family):
    def generate(n: int, rng: random.Random, word_ok: WordFilter) -> list[PromptPair]:
        opens = _opening(word_ok)
        names = _pool(words.NAMES, lambda w: word_ok(w) and opens(w), 1, "names (as a prompt's first word)")
        verbs = _pool(words.SEQUENCE_VERBS, word_ok, 1, "sequence verbs")
        runs = _member_runs(family, word_ok, 5)
        members = tuple(m for m in family.members if word_ok(m))
        roles = occurrence_roles(SEQUENCE_TEMPLATE)
        pairs = []
        for _ in range(n):
            run = rng.choice(runs)
            frame = {"W": rng.choice(names), "V": rng.choice(verbs)}
            noise = rng.sample(members, 4)
            clean = fill(SEQUENCE_TEMPLATE, frame | _members(run), roles)
            corrupted = fill(SEQUENCE_TEMPLATE, frame | _members(noise), roles)
            pairs.append(PromptPair(Prompt(clean, run[4], run[3]), Prompt(corrupted, run[4], run[3])))
        return pairs

    return generate


def _members(run) -> dict[str, str]:
    return {f"x{i + 1}": run[i] for i in range(4)}


def _member_runs(family: Family, word_ok: WordFilter, length: int) -> list[tuple[str, ...]]:
    """Every run of `length` consecutive members whose words are all single tokens."""
    members = family.members
    starts = range(len(members)) if family.cyclic else range(len(members) - length + 1)
    runs = [tuple(members[(s + i) % len(members)] for i in range(length)) for s in starts]
    kept = [run for run in runs if all(word_ok(w) for w in run)]
    if not kept:
        raise HeadscopeError(
            f"no run of {length} consecutive {family.name} are all single tokens for this tokenizer; "
            "use another task or a model whose vocabulary has them"
        )
    return kept


def induction_pool() -> tuple[str, ...]:
    """Words that the random repeated sequences are drawn from."""
    return words.NAMES + words.OBJECTS + words.PLACES


def _induction(n: int, rng: random.Random, word_ok: WordFilter, twin: str = "first") -> list[PromptPair]:
    """Clean: `seq + seq[:-1]`, answer seq[-1], contrast other[-1] (in neither prompt). Twin
    `first`: `other[:-1] + [w] + seq[:-1]` (the first occurrence replaced, so the answer is not
    in the prompt and the key/value side differs; `w`, a word of neither list, stands where the
    answer stood, so the contrast is not what the twin's induction would copy); twin `repeat`:
    `seq + other[:-1]` (the repeat replaced: the query side differs). The clean prompts and the
    random stream do not depend on the twin."""
    pool = _pool(induction_pool(), word_ok, 2 * INDUCTION_LENGTH + 1, "induction words")
    length = INDUCTION_LENGTH
    first_roles = [f"t{i}" for i in range(1, length + 1)]
    repeat_roles = [f"r{i}" for i in range(1, length)]
    pairs = []
    for _ in range(n):
        opening = (0, length)  # seq[0] opens the prompt, other[0] the `first` twin
        chosen = _sample_opening(rng, pool, 2 * length, opening, _opening(word_ok), "induction words")
        seq, other = chosen[:length], chosen[length:]
        clean = _word_pieces(seq + seq[:-1], first_roles + repeat_roles)
        if twin == "first":
            twin_words = other[:-1] + [_stand_in(pool, chosen)] + seq[:-1]
        else:
            twin_words = seq + other[:-1]
        corrupted = _word_pieces(twin_words, first_roles + repeat_roles)
        contrast = other[-1]
        pairs.append(PromptPair(Prompt(clean, seq[-1], contrast), Prompt(corrupted, seq[-1], contrast)))
    return pairs


def _stand_in(pool: tuple[str, ...], chosen: list[str]) -> str:
    """A word of `pool` not in `chosen`, picked by a generator seeded with `chosen` (so the task's
    own random stream, and with it every clean prompt, is the same whatever the twin)."""
    rest = sorted(set(pool) - set(chosen))
    return random.Random(" ".join(chosen)).choice(rest)


def _word_pieces(sequence: list[str], roles: list[str]) -> tuple[Piece, ...]:
    return tuple(
        Piece(word if i == 0 else " " + word, role)
        for i, (word, role) in enumerate(zip(sequence, roles, strict=True))
    )


def _family(name: str) -> Family:
    return Family(name, words.FAMILIES[name], name in words.CYCLIC_FAMILIES)


def _member_categories() -> dict[str, tuple[str, ...]]:
    """Categories of the top-k breakdown: each member family, plus names."""
    return {name: members for name, members in words.FAMILIES.items()} | {"names": words.NAMES}


def _sequence_task(task_name: str, family_name: str) -> Task:
    family = _family(family_name)
    return Task(
        name=task_name,
        description=f"continue a sequence of {family_name}: 'W arrived in x1. ... W arrived in' -> x5",
        generator=_sequence_generator(family),
        keyword_roles=("x1", "x2", "x3", "x4"),
        answer_role=None,
        contrast_role="x4",
        families=(family,),
        relations=("copy", "next"),
        categories=_member_categories(),
        twins=SEQUENCE_TWINS,
    )


def builtin_tasks() -> dict[str, Task]:
    """Every built-in task by name.

    Args:
        (none)

    Returns:
        {name: Task}, in the order the command line lists them.

    Example:
        >>> list(hs.builtin_tasks())
    """
    tasks = [
        Task(
            name="ioi",
            description="indirect object identification: "
            "'When Mary and John ..., John gave a drink to' -> Mary",
            generator=_ioi,
            keyword_roles=("IO", "S1", "S2"),
            answer_role="IO",
            contrast_role="S1",
            role_groups={"S": ("S1", "S2")},
            offsets={"S1+1": ("S1", 1)},
            categories={"names": words.NAMES},
            twins=IOI_TWINS,
        ),
        Task(
            name="recency",
            description="the most recent of 2-4 subjects: "
            "'Mary came. John came. The one who came last is' -> John",
            generator=_recency,
            keyword_roles=("S_r1", "S_r2", "S_r3", "S_r4"),
            answer_role="S_r1",
            contrast_role="S_r2",
            categories={"names": words.NAMES},
            twins=RECENCY_TWINS,
        ),
        *(_sequence_task(task, family) for task, family in SEQUENCE_FAMILIES.items()),
        Task(
            name="induction",
            description=f"a random sequence of {INDUCTION_LENGTH} words, then its repeat",
            generator=_induction,
            keyword_roles=tuple(f"t{i}" for i in range(1, INDUCTION_LENGTH + 1)),
            answer_role=None,
            contrast_role=None,
            twins=INDUCTION_TWINS,
            keep_patterns=True,
        ),
    ]
    return {task.name: task for task in tasks}
