"""Atomic output: every file is written to a temporary name in its folder, then renamed."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from headscope.errors import HeadscopeError


def check_writable(path: Path) -> Path:
    """The path itself, or a HeadscopeError when its folder is missing or read-only."""
    folder = path.expanduser().resolve().parent
    if not folder.is_dir():
        raise HeadscopeError(f"cannot write {path}: folder {folder} does not exist; create it first")
    if not _can_create_in(folder):
        raise HeadscopeError(f"cannot write {path}: folder {folder} is read-only; choose another --out")
    return path


def _can_create_in(folder: Path) -> bool:
    """Try it: permission bits do not bind root, and a read-only mount shows only on a write."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".headscope-probe-", dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(probe)
    return True


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it onto `path`."""
    path = check_writable(Path(path))
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, usual_mode(0o666))  # mkstemp makes 0600; a plain open() would give 0644
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def usual_mode(requested: int) -> int:
    """The mode open()/mkdir() give a new file/folder: `requested` minus the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return requested & ~mask


def write_text(path: Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_table(path: Path, table: pd.DataFrame) -> Path:
    """A DataFrame as .csv, or as .json (a list of records), chosen by the suffix."""
    path = Path(path)
    if path.suffix == ".csv":
        return write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))
    if path.suffix == ".json":
        return write_json(path, table.to_dict(orient="records"))
    raise HeadscopeError(f"cannot write a table to {path}: use a .csv or .json file name")
