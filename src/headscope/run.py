"""A Run: every result table of a report with its options, model identity, versions and seed.

A run saves to a folder as `results.json` (every number, plus provenance) and one CSV per
table, and loads back from `results.json` alone, so a report re-renders without the model.
The timestamp sits outside the hashed content: two runs with the same inputs and seed give
byte-identical CSVs and a `results.json` that differs only in its `created` field.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from headscope.errors import HeadscopeError
from headscope.files import write_table, write_text
from headscope.run_tables import ALWAYS, missing_column

RESULTS_FILE = "results.json"
FORMAT_VERSION = 1
RESTORABLE = ("Int64", "bool", "boolean", "string")
PACKAGES = ("headscope", "torch", "transformer-lens", "transformers", "numpy", "pandas", "scipy", "plotly")


class RunError(HeadscopeError):
    """A results folder that cannot be read; the message says what to do."""


@dataclass(frozen=True)
class Run:
    """Result tables by name (each with a `task` column where it is per task) and provenance."""

    tables: dict[str, pd.DataFrame]
    options: dict
    model: dict
    seed: int
    versions: dict[str, str] = field(default_factory=lambda: package_versions())
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def table(self, name: str) -> pd.DataFrame:
        """A table by name; an empty DataFrame when the run has none of that name."""
        return self.tables.get(name, pd.DataFrame())

    def for_task(self, name: str, task: str) -> pd.DataFrame:
        table = self.table(name)
        if table.empty or "task" not in table.columns:
            return table
        return table[table["task"] == task].reset_index(drop=True)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.options.get("tasks", ()))

    def summary(self) -> pd.DataFrame:
        """One row per task: prompts `n`, accuracy and mean logit difference (over those prompts),
        the top heads and the labelled heads."""
        rows = []
        for task in self.tasks:
            evaluation, top = self.for_task("evaluation", task), self.for_task("top_heads", task)
            labels = self.for_task("labels", task)
            row = {"task": task}
            if not evaluation.empty:
                row |= evaluation.iloc[0][["n", "accuracy", "logit_diff"]].to_dict()
            heads = top[["layer", "head"]].to_numpy().tolist() if not top.empty else []
            row["top heads"] = ", ".join(f"{a}.{b}" for a, b in heads)
            named = labels[["label", "layer", "head"]].to_numpy().tolist() if not labels.empty else []
            row["labels"] = ", ".join(f"{label} {a}.{b}" for label, a, b in named)
            rows.append(row)
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        """The summary, shown inline in a notebook."""
        name = self.model.get("name", "")
        return f"<p>headscope run of {name}: {len(self.tasks)} tasks</p>" + self.summary().to_html(
            index=False
        )

    def content(self) -> dict:
        """Everything except the timestamp: what the hash covers."""
        return {
            "format": FORMAT_VERSION,
            "model": self.model,
            "options": self.options,
            "seed": self.seed,
            "versions": self.versions,
            "tables": {name: _table_record(table) for name, table in sorted(self.tables.items())},
        }

    def content_sha256(self) -> str:
        return _sha256(self.content())

    def save(self, folder: Path) -> Path:
        """Write `results.json` and one CSV per table into `folder` (created if missing)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, table in sorted(self.tables.items()):
            write_table(folder / f"{name}.csv", table)
        content = _dumps(self.content(), indent=None)  # built and dumped once: most of the save's time
        sha = hashlib.sha256(content.encode()).hexdigest()
        # the record's keys sorted as _dumps sorts them: content_sha256, created, then the content's
        head = f'{{"content_sha256": {json.dumps(sha)}, "created": {_dumps(self.created, indent=None)}, '
        return write_text(folder / RESULTS_FILE, head + content[1:] + "\n")


def load_run(folder: Path) -> Run:
    """The Run saved in `folder` (its `results.json`): every table of a report, without the model.

    Args:
        folder: a folder written by `headscope report --out folder`.

    Returns:
        The `Run`: `run.table(name)`, `run.for_task(name, task)`, `run.options`, `run.model`.

    Example:
        >>> run = hs.load_run("report")
        >>> run.table("labels")
        >>> hs.plot.report(run)
    """
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        raise RunError(f"{path} does not exist; run `headscope report --out {folder}` first")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunError(f"{path} is not valid JSON ({error.msg}); re-run the report") from error
    if record.get("format") != FORMAT_VERSION:
        raise RunError(f"{path} has format {record.get('format')!r}, expected {FORMAT_VERSION}; re-run it")
    _check_intact(path, record)
    _check_columns(path, record)
    return Run(
        tables={name: _table_from_record(rec) for name, rec in record["tables"].items()},
        options=record["options"],
        model=record["model"],
        seed=record["seed"],
        versions=record["versions"],
        created=record.get("created", ""),
    )


def _check_intact(path: Path, record: dict) -> None:
    """Refuse a results.json changed after it was written (a table removed or edited): its content
    must still hash to the `content_sha256` saved beside it; the message names missing tables."""
    content = {key: value for key, value in record.items() if key not in ("created", "content_sha256")}
    if "content_sha256" in record and _sha256(content) == record["content_sha256"]:
        return
    missing = [name for name in ALWAYS if name not in record.get("tables", {})]
    plural = "s" if len(missing) > 1 else ""
    what = f"it has no {', '.join(map(repr, missing))} table{plural}" if missing else "its content was edited"
    raise RunError(
        f"{path} was changed after headscope wrote it ({what}; its content_sha256 no longer matches): "
        "re-run `headscope report` to rebuild it"
    )


def _check_columns(path: Path, record: dict) -> None:
    """Refuse a results.json with a table that lacks a column the report reads (run_tables.TABLES):
    an older headscope wrote it; name the table, the column and the command that rebuilds it."""
    for name, table in sorted(record["tables"].items()):
        column = missing_column(name, table["columns"]) if table["rows"] else None
        if column is not None:
            raise RunError(
                f"{path} does not fit this headscope's layout: its table {name!r} has no column "
                f"{column!r} (an older headscope wrote it); re-run the report with this version: "
                f"headscope report --out {path.parent} (with its --model and --tasks)"
            )


def _sha256(content: dict) -> str:
    return hashlib.sha256(_dumps(content, indent=None).encode()).hexdigest()


def plain_record(data: dict) -> dict:
    """`data` as results.json will hold it (keys sorted, JSON types), so a loaded run renders alike."""
    return json.loads(_dumps(data, indent=None))


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return dict(sorted(versions.items()))


def _table_record(table: pd.DataFrame) -> dict:
    columns = [_plain_column(table.iloc[:, i]) for i in range(table.shape[1])]
    rows = [list(row) for row in zip(*columns, strict=True)] if columns else [[] for _ in range(len(table))]
    dtypes = [str(dtype) for dtype in table.dtypes]
    return {"columns": [str(c) for c in table.columns], "dtypes": dtypes, "rows": rows}


def _table_from_record(record: dict) -> pd.DataFrame:
    """The table with its column types restored (nullable ints stay nullable, null -> NaN)."""
    table = pd.DataFrame(record["rows"], columns=record["columns"], dtype=object)
    for column, dtype in zip(record["columns"], record.get("dtypes", []), strict=False):
        if dtype in RESTORABLE or dtype.startswith(("int", "uint", "float")):
            table[column] = table[column].astype("float64" if dtype.startswith("float") else dtype)
        else:
            table[column] = table[column].infer_objects()
    return table


def _plain_column(column: pd.Series) -> list:
    """`_plain` of every value of a column, in the order itertuples gives them: numpy numbers
    converted a column at a time (non-finite floats as null), strings likewise, other types value
    by value."""
    if isinstance(column.dtype, pd.StringDtype):  # str or missing: no value needs unwrapping
        return column.to_numpy(dtype=object, na_value=None).tolist()
    values = column.to_numpy() if column.dtype.kind in "fiub" and isinstance(column.dtype, np.dtype) else None
    if values is None:
        return [_plain(value) for value in column]
    plain = values.tolist()
    if values.dtype.kind == "f":
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            plain[i] = None
    return plain


def _plain(value):
    """A JSON-safe Python value: numpy scalars unwrapped, NaN and infinities as null."""
    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(data, indent: int | None) -> str:
    return json.dumps(data, indent=indent, sort_keys=True, allow_nan=False, ensure_ascii=False)
