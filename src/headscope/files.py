"""Atomic output: every file is written to a temporary name in its folder, then renamed.

A folder of outputs (the report) is built whole in a temporary sibling folder and swapped in
for the old one only when complete, so a run killed part-way leaves the earlier folder intact.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import shutil
import sys
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


def check_table_path(path: Path) -> Path:
    """`path` when a table can be written there (.csv or .json, writable folder); check it early."""
    path = Path(path)
    if path.suffix not in (".csv", ".json"):
        raise HeadscopeError(f"cannot write a table to {path}: use a .csv or .json file name")
    return check_writable(path)


def write_table(path: Path, table: pd.DataFrame) -> Path:
    """A DataFrame as .csv, or as .json (a list of records), chosen by the suffix."""
    path = check_table_path(path)
    if path.suffix == ".csv":
        return write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))
    return write_json(path, table.to_dict(orient="records"))


PARTIAL = ".partial-"  # temporary sibling folders: .NAME.partial-PID-RANDOM


def check_folder_replaceable(folder: Path, marker: str) -> Path:
    """`folder`, or a HeadscopeError when it cannot be (re)placed as a whole output folder.

    An existing folder is replaced only when it is empty or holds `marker` (our earlier output),
    so an --out pointing at a folder of other files never deletes them.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise HeadscopeError(f"cannot write to {folder}: it is a file; give a folder name")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / marker).is_file():
        raise HeadscopeError(
            f"{folder} holds files but no {marker}; give a new or empty folder (it is replaced whole)"
        )
    existing = next(p for p in (folder.resolve(), *folder.resolve().parents) if p.exists())
    if existing != folder.resolve() and not _can_create_in(existing):
        raise HeadscopeError(f"cannot create {folder}: folder {existing} is read-only; choose another")
    if existing == folder.resolve():
        check_writable(folder)
    return folder


def write_folder_atomic(folder: Path, write: Callable[[Path], None], marker: str) -> Path:
    """Call `write(tmp)` on a new folder beside `folder`, then swap it in for `folder` whole.

    Killed before the swap, `folder` stays as it was; the swap is one atomic exchange on Linux.
    A temporary folder left by a killed run is removed by the next call for the same folder.
    """
    folder = check_folder_replaceable(folder, marker)
    if folder.is_symlink():  # replace the folder it points to, not the link
        folder = folder.resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(folder)
    prefix = f".{folder.name}{PARTIAL}{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=folder.parent))
    try:
        write(tmp)
        os.chmod(tmp, usual_mode(0o777))  # mkdtemp makes 0700
        _swap_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a swap this is the old folder
    return folder


def _swap_in(new: Path, folder: Path) -> None:
    """Put `new` at `folder`; the old `folder`, if any, ends up at `new`'s path."""
    if not folder.exists():
        os.rename(new, folder)
    elif not _exchange(new, folder):
        previous = folder.with_name(f".{folder.name}.previous-{os.getpid()}")
        os.rename(folder, previous)  # no atomic exchange here: a short window without `folder`
        os.rename(new, folder)
        os.rename(previous, new)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_cwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # old kernel or file system
        return False
    raise OSError(code, os.strerror(code), str(b))


def _remove_dead_partials(folder: Path) -> None:
    """Temporary folders for `folder` left by runs that no longer exist (killed part-way)."""
    pattern = f".{glob.escape(folder.name)}{PARTIAL}*"
    for partial in folder.parent.glob(pattern):
        pid = partial.name[len(f".{folder.name}{PARTIAL}") :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
