"""Old module names kept for one release after a rename, each with a deprecation warning.

An old module file calls `keep_old_name(__name__, "headscope.new.module")`: importing the old
name warns once and hands back a view of the new module, under which any renamed public names
(`{"OldName": "NewName"}`) still resolve.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings


class _OldName(types.ModuleType):
    """The new module seen under its old name: attributes read through, old names mapped."""

    def __init__(self, old: str, new: types.ModuleType, names: dict[str, str]) -> None:
        super().__init__(old, new.__doc__)
        self._new, self._names = new, names

    def __getattr__(self, name: str):
        return getattr(self._new, self._names.get(name, name))

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._new)) | set(self._names))


def keep_old_name(old: str, new: str, names: dict[str, str] | None = None) -> None:
    """Warn that `old` is now `new` and make `old` an alias of it (renamed names: `names`)."""
    renamed = "".join(f"; {a} is now {b}" for a, b in (names or {}).items())
    warnings.warn(
        f"{old} is renamed {new}{renamed}; the old name goes in the next release",
        DeprecationWarning,
        stacklevel=3,
    )
    sys.modules[old] = _OldName(old, importlib.import_module(new), dict(names or {}))
