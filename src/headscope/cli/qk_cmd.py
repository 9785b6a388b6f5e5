"""`headscope qk`: why a head attends from one role to another, its pre-softmax score split over
the upstream components on the query side and on the key side (first-order and exact)."""

from __future__ import annotations

from typing import Annotated, Literal

import pandas as pd
import typer

from headscope.analyses import qk
from headscope.cli.app import Shared, command, print_table, results, working, wrote
from headscope.cli.common import load, shared_dataset
from headscope.files import check_table_path, write_table

Baseline = Literal["mean", "zero"]


@command("qk", task="induction", n=50)
def qk_command(
    shared: Shared,
    head: Annotated[str, typer.Option("--head", help="The head, LAYER.HEAD (e.g. 2.0).")],
    key: Annotated[str, typer.Option("--key", help="The role it attends to, e.g. t8 on induction.")],
    query: Annotated[str, typer.Option("--query", help="The role it attends from.")] = "end",
    baseline: Annotated[
        Baseline,
        typer.Option("--baseline", help="A component replaced by its mean at the role, or by zero."),
    ] = "mean",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per pass.")] = qk.DEFAULT_BATCH,
) -> None:
    """QK attribution: the head's score from --query to --key, split over the embedding and every
    earlier head and MLP, on the query side and on the key side.

    exact: the score's drop when the component's output at that one position is replaced by the
    baseline and only the head's query (or key) sees it; first_order: its gradient estimate."""
    if shared.out is not None:
        check_table_path(shared.out)
    model = load(shared.model)
    options = qk.qk_options(model, head, key, query, baseline, batch_size)
    dataset = shared_dataset(model, shared)
    with working(f"QK attribution of head {head} on {dataset.n} prompts ..."):
        table = qk.qk_attribution(model, dataset, options)
    _show(table, shared)
    if shared.out is not None:
        wrote(write_table(shared.out, table))


def _show(table: pd.DataFrame, shared: Shared) -> None:
    attrs = table.attrs
    results.print(
        f"head {attrs['head']}, score {attrs['query']} -> {attrs['key']} (pre-softmax, task {shared.task}): "
        f"{attrs['score']:.3f} [{attrs['score_ci_low']:.3f}, {attrs['score_ci_high']:.3f}], mean over "
        f"{int(table['n'].iloc[0]) if len(table) else 0} prompts; share = score(clean) - score(the "
        f"component's output at the position set to its {attrs['baseline']} value, seen by that side only)"
    )
    results.print(
        f"first_order vs exact: Spearman {attrs['spearman']:.2f} over every row "
        f"(query side {attrs['spearman_query']:.2f}, key side {attrs['spearman_key']:.2f})"
    )
    for side in ("key", "query"):
        rows = table[table["side"] == side].sort_values("exact", ascending=False, kind="stable")
        print_table(rows.drop(columns="side"), title=f"{side} side, largest exact share first")
