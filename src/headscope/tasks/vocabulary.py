"""Every word the built-in tasks can produce: the vocabulary a word-level model needs."""

from __future__ import annotations

import re

from headscope.tasks import words
from headscope.tasks.builtin import builtin_tasks

WORD_PATTERN = re.compile(r"\w+|[^\w\s]+")  # the split of the `Whitespace` pre-tokenizer
PROMPTS_PER_TASK = 3000


def split_words(text: str) -> list[str]:
    return WORD_PATTERN.findall(text)


def task_vocabulary(seed: int = 0) -> list[str]:
    """Sorted words of every built-in task's prompts, pools and member families."""
    found: set[str] = set()
    for task in builtin_tasks().values():
        for pair in task.generate(PROMPTS_PER_TASK, seed):
            found.update(split_words(pair.clean.text))
            found.update(split_words(pair.corrupted.text))
    for pool in (words.NAMES, words.PLACES, words.OBJECTS, *words.FAMILIES.values()):
        found.update(pool)
    return sorted(found)
