"""The console summary printed at the end of a report: one row per task."""

from __future__ import annotations

import pandas as pd

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
