"""The options of `headscope report`, declared once (typer's Annotated types)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from headscope.report.budget import DEFAULT_BUDGET
from headscope.report.compute import Embedding

TasksOpt = Annotated[
    str | None,
    typer.Option(
        "--tasks",
        "-t",
        help="Comma-separated built-in task names or TOML task files (default: every built-in task the "
        "model does better than chance; the rule is printed on the page).",
    ),
]
ReportOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Folder for index.html, results.json, CSVs (and PNGs: --png).")
]
FromOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--from",
        help="Re-render the page from this folder's results.json, without the model; with more folders "
        "(--from DIR1 DIR2 ...), merge runs of the same model on different tasks into one page.",
    ),
]
MoreOpt = Annotated[
    list[Path] | None,
    typer.Argument(
        help="More report folders to merge with the --from one.", metavar="DIR", show_default=False
    ),
]
KOpt = Annotated[int, typer.Option("--k", help="OV scores: a hit when a target is in the top k logits.")]
EmbeddingOpt = Annotated[
    Embedding, typer.Option("--embedding", help="OV scores: context, token or block0 (docs/methods.md §2).")
]
KnockoutOpt = Annotated[
    int, typer.Option("--knockout-n", help="Knock out each head and MLP on this many prompts (0: skip).")
]
KnockoutExactOpt = Annotated[
    int | None,
    typer.Option(
        "--knockout-exact",
        help="Knockouts: every head is first estimated to first order, then this many heads it ranks "
        "highest, the heads the page names and every MLP are knocked out exactly (default: every head "
        "exactly on a model of at most 48 heads, else 16; the model's head count or more: all exact).",
    ),
]
CircuitNOpt = Annotated[
    int | None,
    typer.Option(
        "--circuit-n",
        help="Edge attribution and the circuit on this many prompts (0: skip; default 32 on a model "
        "of at most 2,000 edges, else skipped with a note).",
    ),
]
CircuitEdgesOpt = Annotated[
    int | None,
    typer.Option(
        "--circuit-edges",
        help="Edges in each task's circuit, the top by |exact| (default: the smallest circuit of MIB's "
        "curve whose normalized faithfulness reaches 0.8).",
    ),
]
PngOpt = Annotated[
    bool,
    typer.Option(
        "--png", help="Also draw a PNG twin of each figure (matplotlib) and link it from the page (slower)."
    ),
]
TopOpt = Annotated[
    int,
    typer.Option(
        "--top", help="Top heads per task (by |direct logit attribution|; without DLA, by knockout effect)."
    ),
]


BudgetOpt = Annotated[
    float | None,
    typer.Option(
        "--budget",
        help=f"Seconds the report may take: the plan fits its sample sizes to this "
        f"(default {DEFAULT_BUDGET:g}; what it cannot afford is left out with a note).",
    ),
]
ExhaustiveOpt = Annotated[
    bool, typer.Option("--exhaustive", help="No budget: every sample size as given (--n, --knockout-n, ...).")
]
PlanOpt = Annotated[
    bool, typer.Option("--plan", help="Print the plan (phases, sample sizes, predicted seconds) and stop.")
]
