"""The one exception type users see: its message is a single line naming the fix."""


class HeadscopeError(ValueError):
    """A bad input; the CLI prints the message on one line and exits with status 2."""
