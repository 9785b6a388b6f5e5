"""The console's part of a report: the summary printed at the end (one row per task), the notes
of what was not computed, and the progress bar over a plan."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from headscope.heads import head_names
from headscope.run import Run


def _heads_by_label(labels: pd.DataFrame) -> str:
    if labels.empty:
        return "-"
    parts = []
    for label, group in labels.groupby("label", sort=True):
        parts.append(f"{label}: {', '.join(head_names(group['layer'], group['head']))}")
    return "; ".join(parts)


def summary_table(run: Run) -> pd.DataFrame:
    """task, accuracy, logit_diff, n, the top heads and the labelled heads."""
    rows = []
    for task in run.tasks:
        evaluation = run.for_task("evaluation", task)
        top = run.for_task("top_heads", task)
        rows.append(
            {
                "task": task,
                "accuracy": float(evaluation["accuracy"].iloc[0]) if not evaluation.empty else float("nan"),
                "logit_diff": float(evaluation["logit_diff"].iloc[0])
                if not evaluation.empty
                else float("nan"),
                "n": int(evaluation["n"].iloc[0]) if not evaluation.empty else 0,
                "top heads": ", ".join(head_names(top["layer"], top["head"])),
                "labels": _heads_by_label(run.for_task("labels", task)),
            }
        )
    return pd.DataFrame(rows)


def not_computed_notes(run: Run) -> list[str]:
    """'DLA not computed (task a, b): why' per analysis and reason the run left out (Gemma 2/3's DLA)."""
    table = run.table("not_computed")
    if table.empty:
        return []
    groups = table.groupby(["analysis", "why"], sort=False)["task"]
    return [f"{analysis} not computed ({', '.join(tasks)}): {why}" for (analysis, why), tasks in groups]


@contextmanager
def plan_progress(total: float) -> Iterator[Callable[[float], None]]:
    """One progress bar over a plan's predicted seconds, with the time left, on a terminal
    (stderr); elsewhere nothing: the phases' own lines say where the run is. The bar is advanced by
    each phase's predicted seconds as it ends."""
    if not sys.stderr.isatty():
        yield lambda seconds: None
        return
    columns = (TextColumn("report"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("report", total=max(total, 1e-9))
        yield lambda seconds: bar.advance(task, seconds)
