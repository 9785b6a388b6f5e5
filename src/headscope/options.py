"""Option values a user may give as one string or as a sequence of strings.

`"copy"` and `("copy",)` mean the same, as do `"copy,next"` and `["copy", "next"]`: a string
is one name, or a comma-separated list of names, and never a sequence of characters.
"""

from __future__ import annotations

from collections.abc import Iterable

from headscope.errors import HeadscopeError


def names(value: str | Iterable[str], argument: str, allow_empty: bool = False) -> tuple[str, ...]:
    """The names in `value`, stripped, in order, without repeats; an error names `argument`."""
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise HeadscopeError(f"{argument}={value!r}: give a string or a list of strings")
    found = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    if not found and not allow_empty:
        raise HeadscopeError(f"{argument}={value!r} is empty: give at least one name")
    return found
