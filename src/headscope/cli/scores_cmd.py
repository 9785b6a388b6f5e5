"""`headscope scores`: OV relation scores (copy, next, ...) of every head, top heads first.

`--relation copy,-copy,next` asks for each relation with a sign: `-R` is R's negative score
(sign -1, the head writes the opposite). Every sign asked for comes from one set of logits in
one invocation (the kernel reads sign -1 off sign +1's logits); `--negative` asks for both
signs of every relation. The top-k tokens are computed only for `--per-token`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import typer

from headscope.analyses import ov
from headscope.cli.app import Shared, command, print_table, results, working, wrote
from headscope.cli.common import dataset_for, load
from headscope.errors import HeadscopeError
from headscope.files import check_table_path, write_table
from headscope.heads import head_name, parse_heads
from headscope.models.loading import Model
from headscope.scores.ov import OVResult, keyword_dataset
from headscope.scores.relations import default_relations
from headscope.tasks.dataset import Dataset

Embedding = Literal["context", "token", "block0"]


def _dataset(model: Model, shared: Shared, keywords: str | None) -> Dataset:
    if (shared.task is None) == (keywords is None):
        raise HeadscopeError('give exactly one of --task T or --keywords "a b c ..."')
    if keywords is not None:
        return keyword_dataset(keywords.split(), model.tokens, model.identity.n_ctx)
    return dataset_for(model, shared.task, shared.n, shared.seed)


Signed = tuple[tuple[str, int], ...]  # (relation, sign) pairs, in the order asked


def _relations(text: str | None, dataset: Dataset, negative: bool) -> Signed:
    """The (relation, sign) pairs asked for: `copy,-copy,next`, or by default the relations the task
    defines (copy, and next where it can), positive; `negative` adds sign -1 of every relation."""
    if text is None:
        names = default_relations(dataset.task)
        if not names:
            raise HeadscopeError(
                f"task {dataset.task.name} has no keyword roles, so no tokens to score; "
                'give --keywords "a b c", or a task with keywords'
            )
        signed = tuple((name, 1) for name in names)
    else:
        signed = tuple(dict.fromkeys(_signed(r.strip()) for r in text.split(",") if r.strip()))
        if not signed:
            raise HeadscopeError("empty --relation: give e.g. copy,next (or copy,-copy,next)")
    if negative:
        signed = tuple(dict.fromkeys((name, s) for name, _ in signed for s in (1, -1)))
    return signed


def _signed(item: str) -> tuple[str, int]:
    name = item.removeprefix("-").strip()
    if not name:
        raise HeadscopeError(f"--relation {item!r}: give a relation name after '-', e.g. -copy")
    return name, -1 if item.startswith("-") else 1


def _asked(table: pd.DataFrame, signed: Signed) -> pd.DataFrame:
    """The rows of the (relation, sign) pairs asked for (the kernel scores every sign of each)."""
    keep = pd.Series(list(zip(table.relation, table.sign, strict=True))).isin(set(signed)).to_numpy()
    return table[keep].reset_index(drop=True)


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
        typer.Option(
            "--relation",
            help="copy, next, prev or a task mapping; -R for R's negative score, e.g. copy,-copy,next "
            "(default: the task's own).",
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", help="A hit when a target is in the top k logits.")] = 5,
    embedding: Annotated[
        Embedding, typer.Option("--embedding", help="context, token or block0.")
    ] = "context",
    negative: Annotated[
        bool, typer.Option("--negative", help="Both signs of every relation (as -R for each R).")
    ] = False,
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
    signed = _relations(relation, dataset, negative)
    relations = tuple(dict.fromkeys(name for name, _ in signed))
    both = any(s < 0 for _, s in signed)
    labels = ", ".join(name if s > 0 else f"-{name}" for name, s in signed)
    with working(f"scoring {len(chosen)} heads on {labels} ..."):
        detail = per_token is not None
        result = ov.ov_scores(loaded, dataset, relations, k, embedding, both, chosen, detail=detail)
    result = OVResult(_asked(result.table, signed), _asked(result.per_token, signed), result.categories)
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
