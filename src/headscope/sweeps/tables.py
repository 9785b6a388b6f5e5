"""The cross-model tables of a sweep, read from each finished run folder.

`heads`: one long table, a row per (model, task, layer, head, analysis) with its score: the OV
scores (`copy`, `next`, `negative_copy`, ...), the attention detectors (`induction`,
`previous_token`, `duplicate_token`), the direct logit attribution (`dla`) and, when knockouts
ran, `knockout_pct` (% of the clean metric left); and where the report computed the atlas (from the
weights, task `atlas`), each relation's within-set score as `atlas_<relation>` (sign -1:
`atlas_negative_<relation>`). `labels` and `evaluation` are the runs' own
tables with the model's columns in front; `first_labels` says at which step each head's label
first appears in a family of checkpoints, and whether it holds to the last one.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from headscope.run import Run
from headscope.scores.labels import signed_relations
from headscope.sweeps.plan import Job

MODEL_COLUMNS = ["family", "model", "name", "step"]
HEAD_COLUMNS = [*MODEL_COLUMNS, "task", "layer", "head", "analysis", "score"]
DETECTORS = ("induction", "previous_token", "duplicate_token")
# The score each label is given for (scores/labels.py): the trajectory that shows it forming.
LABEL_SCORES: dict[str, str] = {
    "induction": "induction",
    "previous-token": "previous_token",
    "duplicate-token": "duplicate_token",
    "successor": "next",
    "name mover": "copy",
    "negative name mover": "negative_copy",
    "copy suppression": "negative_copy",
}


def head_scores(run: Run) -> pd.DataFrame:
    """[task, layer, head, analysis, score] of every head of one run."""
    parts = [_ov_rows(run.table("ov_scores")), _detector_rows(run.table("detectors"))]
    parts += [
        _head_rows(run.table("dla"), "dla", "dla"),
        _head_rows(_one_method(run), "pct_of_clean", "knockout_pct"),
    ]
    parts.append(_atlas_rows(run.table("atlas")))
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=HEAD_COLUMNS[4:])
    table = pd.concat(parts, ignore_index=True).astype({"layer": int, "head": int, "score": float})
    return table[HEAD_COLUMNS[4:]]


def _ov_rows(ov: pd.DataFrame) -> pd.DataFrame:
    if ov.empty:
        return ov
    return ov.assign(analysis=signed_relations(ov))[["task", "layer", "head", "analysis", "score"]]


def _atlas_rows(atlas: pd.DataFrame) -> pd.DataFrame:
    if atlas.empty:
        return atlas
    negative = atlas["sign"] < 0
    names = [
        f"atlas_negative_{r}" if n else f"atlas_{r}" for r, n in zip(atlas["relation"], negative, strict=True)
    ]
    return atlas.assign(task="atlas", analysis=names, score=atlas["within"])[
        ["task", "layer", "head", "analysis", "score"]
    ]


def _detector_rows(detectors: pd.DataFrame) -> pd.DataFrame:
    if detectors.empty:
        return detectors
    present = [c for c in DETECTORS if c in detectors.columns]
    long = detectors.melt(["task", "layer", "head"], present, var_name="analysis", value_name="score")
    return long.sort_values(["task", "layer", "head"], kind="stable")


def _head_rows(table: pd.DataFrame, column: str, analysis: str) -> pd.DataFrame:
    if table.empty:
        return table
    heads = table[table["head"].notna()]
    return heads.assign(analysis=analysis, score=heads[column])[
        ["task", "layer", "head", "analysis", "score"]
    ]


def _one_method(run: Run) -> pd.DataFrame:
    knockout = run.table("knockout")
    if knockout.empty or "method" not in knockout.columns:
        return knockout
    return knockout[knockout["method"] == knockout["method"].iloc[0]]


def with_model(table: pd.DataFrame, job: Job) -> pd.DataFrame:
    """`table` with the job's family, model, name and step in front."""
    front = pd.DataFrame(
        {"family": job.family, "model": job.spec, "name": job.name, "step": job.step}, index=table.index
    ).astype({"step": "Int64"})
    return pd.concat([front, table], axis=1)


def sweep_tables(runs: Sequence[tuple[Job, Run]]) -> dict[str, pd.DataFrame]:
    """heads, labels and evaluation across every finished run, in the plan's order."""
    heads = [with_model(head_scores(run), job) for job, run in runs]
    labels = [with_model(run.table("labels"), job) for job, run in runs if not run.table("labels").empty]
    evaluation = [with_model(run.table("evaluation"), job) for job, run in runs]
    return {
        "heads": _concat(heads, HEAD_COLUMNS),
        "labels": _concat(labels, [*MODEL_COLUMNS, "task", "layer", "head", "label", "evidence"]),
        "evaluation": _concat(evaluation, [*MODEL_COLUMNS, "task", "accuracy", "logit_diff"]),
    }


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)


def first_labels(labels: pd.DataFrame, jobs: Sequence[Job]) -> pd.DataFrame:
    """Per family of checkpoints, task, label and head: the first and last step it is labelled,
    at how many of the family's finished checkpoints, and whether at its last one."""
    columns = [
        "family",
        "task",
        "label",
        "layer",
        "head",
        "first_step",
        "last_step",
        "labelled",
        "of",
        "at_end",
    ]
    stepped = labels[labels["step"].notna()] if not labels.empty else labels
    if stepped.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (family, task, label, layer, head), group in stepped.groupby(
        ["family", "task", "label", "layer", "head"], sort=False
    ):
        steps = sorted({int(j.step) for j in jobs if j.family == family and j.step is not None})
        rows.append(
            {
                "family": family,
                "task": task,
                "label": label,
                "layer": int(layer),
                "head": int(head),
                "first_step": int(group["step"].min()),
                "last_step": int(group["step"].max()),
                "labelled": int(group["step"].nunique()),
                "of": len(steps),
                "at_end": bool(steps and steps[-1] in set(group["step"].astype(int))),
            }
        )
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["family", "task", "first_step", "layer", "head"], kind="stable").reset_index(
        drop=True
    )
