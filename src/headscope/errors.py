"""The one exception type users see: its message is a single line naming the fix.

A message about one argument starts with it as Python spells it, `k=0: ...`, so a notebook
user reads the name they typed. The command line rewrites that leading `name=` into the flag
it came from (`--k 0: ...`) with `HeadscopeError.naming`, so each side reads its own spelling
while the message itself is written once.
"""

from __future__ import annotations

import re

_LEADING_ARGUMENT = re.compile(r"^([a-z_][a-z0-9_]*)=")


class HeadscopeError(ValueError):
    """A bad input; the CLI prints the message on one line and exits with status 2."""

    @property
    def argument(self) -> str | None:
        """The Python argument the message is about (`k` for 'k=0: ...'), else None."""
        found = _LEADING_ARGUMENT.match(str(self))
        return found.group(1) if found else None

    def naming(self, flags: dict[str, str]) -> str:
        """The message with its leading `name=` written as the flag `flags[name]` ('--k 0: ...')."""
        argument = self.argument
        if argument is None or argument not in flags:
            return str(self)
        rest = str(self)[len(argument) + 1 :]
        if rest.startswith("None:"):  # the argument was left out: 'roles=None: ...'
            return f"{flags[argument]} not given:{rest[len('None:') :]}"
        return f"{flags[argument]} {rest}"
