"""`headscope scores`: OV relation scores (copy, next, ...) of every head, top heads first."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import typer

from headscope.cli.app import Shared, command, print_table, results, working, wrote
from headscope.cli.common import dataset_for, load
from headscope.errors import HeadscopeError
from headscope.heads import head_name, parse_heads
from headscope.io import check_table_path, write_table
from headscope.models.loading import Model
from headscope.scores.ov import OVOptions, OVResult, keyword_dataset, ov_scores
from headscope.scores.relations import default_relations
from headscope.tasks.dataset import Dataset

Embedding = Literal["context", "token", "block0"]


def _dataset(model: Model, shared: Shared, keywords: str | None) -> Dataset:
    if (shared.task is None) == (keywords is None):
        raise HeadscopeError('give exactly one of --task T or --keywords "a b c ..."')
    if keywords is not None:
        return keyword_dataset(keywords.split(), model.tokens, model.identity.n_ctx)
    return dataset_for(model, shared.task, shared.n, shared.seed)


def _relations(text: str | None, dataset: Dataset) -> tuple[str, ...]:
    """The relations asked for, or by default those the task defines (copy, and next where it can)."""
    if text is None:
        relations = default_relations(dataset.task)
        if not relations:
            raise HeadscopeError(
                f"task {dataset.task.name} has no keyword roles, so no tokens to score; "
                'give --keywords "a b c", or a task with keywords'
            )
        return relations
    relations = tuple(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    if not relations:
        raise HeadscopeError("empty --relation: give e.g. copy,next")
    return relations


def summary(result: OVResult) -> pd.DataFrame:
    """One row per head, a column per relation and sign (e.g. copy, -copy), best head first."""
    table = result.table.assign(
        head_=[head_name((la, h)) for la, h in zip(result.table.layer, result.table["head"], strict=True)],
        column=[
            r if s > 0 else f"-{r}" for r, s in zip(result.table.relation, result.table.sign, strict=True)
        ],
    )
    wide = table.pivot(index="head_", columns="column", values="score")
    wide = wide[list(dict.fromkeys(table.column))]
    wide = wide.assign(best=wide.max(axis=1)).sort_values("best", ascending=False, kind="stable")
    return wide.drop(columns="best").reset_index().rename(columns={"head_": "head"})


@command("scores", task=None)
def scores(
    shared: Shared,
    keywords: Annotated[
        str | None, typer.Option("--keywords", help='Whitespace-separated tokens in order, e.g. "1 2 3 4".')
    ] = None,
    relation: Annotated[
        str | None,
        typer.Option("--relation", help="copy, next, prev or a task mapping (default: the task's own)."),
    ] = None,
    k: Annotated[int, typer.Option("--k", help="A hit when a target is in the top k logits.")] = 5,
    embedding: Annotated[
        Embedding, typer.Option("--embedding", help="context, token or block0.")
    ] = "context",
    negative: Annotated[bool, typer.Option("--negative", help="Also score sign -1 (negative copy).")] = False,
    heads: Annotated[str, typer.Option("--heads", help="all, or heads like 9.1,8.8.")] = "all",
    per_token: Annotated[
        Path | None, typer.Option("--per-token", help="Write the per-token table (.csv or .json).")
    ] = None,
) -> None:
    """OV relation scores of every head: would it write f(t) when attending to keyword t?"""
    for path in (shared.out, per_token):
        if path is not None:
            check_table_path(path)  # suffix and folder, before anything is computed
    loaded = load(shared.model)
    chosen = parse_heads(heads, loaded.n_layers, loaded.n_heads)
    dataset = _dataset(loaded, shared, keywords)
    options = OVOptions(_relations(relation, dataset), k, embedding, negative, tuple(chosen))
    with working(f"scoring {len(chosen)} heads on {', '.join(options.relations)} ..."):
        result = ov_scores(loaded, dataset, options)
    source = f"task {shared.task}" if shared.task else f"{len(dataset.keywords.token)} keywords"
    print_table(summary(result), title=f"OV scores, top-{k}, {embedding} embedding, {source}")
    n_per_relation = result.table.groupby("relation", sort=False).n.first()
    results.print(
        "n (keyword instances with a target): " + ", ".join(f"{r} {v}" for r, v in n_per_relation.items())
    )
    if shared.out is not None:
        wrote(write_table(shared.out, result.table))
    if per_token is not None:
        wrote(write_table(per_token, result.per_token))
