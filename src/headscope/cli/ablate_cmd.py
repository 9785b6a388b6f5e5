"""`headscope ablate`: the task metric with each head and MLP knocked out, or a circuit kept."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from headscope.analyses import knockouts
from headscope.cli.app import Shared, command, print_table, results, working, wrote
from headscope.cli.common import load, shared_dataset
from headscope.errors import HeadscopeError
from headscope.files import check_table_path, write_table

Method = Literal["zero", "mean", "resample"]


def _items(text: str, option: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    if not items:
        raise HeadscopeError(f"empty {option}: give a comma-separated list")
    return items


@command("ablate", task="seq-digits")
def ablate_command(
    shared: Shared,
    components: Annotated[
        str, typer.Option("--components", help="heads, mlps or heads,mlps.")
    ] = "heads,mlps",
    method: Annotated[
        Method, typer.Option("--method", help="zero, mean or resample (from the corrupted twin).")
    ] = "mean",
    positions: Annotated[
        str, typer.Option("--positions", help="all, end, or role names like S2,end: where to knock out.")
    ] = "all",
    keep: Annotated[
        str | None, typer.Option("--keep", help="Knock out everything but these, e.g. 0.1,4.4,mlp0.")
    ] = None,
    greedy: Annotated[
        bool,
        typer.Option(
            "--greedy", help="Prune components costing under --threshold points; print the circuit."
        ),
    ] = False,
    threshold: Annotated[float, typer.Option("--threshold", help="--greedy: percent points of clean.")] = 1.0,
    exact_top: Annotated[
        int | None,
        typer.Option(
            "--exact-top",
            help="Estimate every head to first order (one forward and backward pass per batch), then "
            "knock out exactly only the N heads it ranks highest and every MLP (column exact).",
        ),
    ] = None,
) -> None:
    """Knockouts: mean logit difference (answer - contrast at end) with each component replaced."""
    out = shared.out
    if out is not None:
        check_table_path(out)  # suffix and folder, before anything is computed
    if keep is not None and greedy:
        raise HeadscopeError("give --keep or --greedy, not both")
    if exact_top is not None and (keep is not None or greedy):
        raise HeadscopeError("--exact-top is for the knockout table; leave it out with --keep or --greedy")
    if exact_top is not None and exact_top < 0:
        raise HeadscopeError(f"--exact-top {exact_top}: give 0 or more heads")
    loaded = load(shared.model)
    dataset = shared_dataset(loaded, shared)
    options = knockouts.ablation_options(
        loaded,
        dataset,
        _items(components, "--components"),
        method,
        _items(positions, "--positions"),
        shared.seed,
        exact_top=exact_top,
    )
    where = ",".join(options.positions)
    if keep is not None or greedy:
        title = f"{method} ablation at {where}, task {shared.task}"
        _circuit(loaded, dataset, options, keep, threshold, out, title)
        return
    with working(f"knocking out each component on {dataset.n} prompts ..."):
        table = knockouts.ablate(loaded, dataset, options)
    results.print(f"clean metric (mean logit diff at end, {dataset.n} prompts): {table.attrs['clean']:.3f}")
    if not table["exact"].all():
        estimated = int((~table["exact"]).sum())
        results.print(
            f"{estimated} heads are first-order estimates (exact = False), the rest exact knockouts"
        )
    ranked = table.sort_values("pct_of_clean", kind="stable")
    ranked = ranked.assign(head=ranked["head"].astype("string").fillna(""))  # empty for MLPs
    print_table(ranked, title=f"{method} ablation at {where}, task {shared.task}: most harmful first")
    if out is not None:
        wrote(write_table(out, table))


def _circuit(loaded, dataset, options, keep, threshold, out, title) -> None:
    if keep is None:
        with working("pruning components one at a time ..."):
            table = knockouts.greedy_circuit(loaded, dataset, options, threshold)
        found = table.attrs["components"]
        results.print(
            f"greedy circuit (each removal cost < {threshold} points): {','.join(found) or '(empty)'}"
        )
    else:
        table = knockouts.keep_circuit(loaded, dataset, _items(keep, "--keep"), options)
    table = table.assign(kept=table["kept"].replace("", "(nothing)"))
    print_table(table, title=f"circuit kept, everything else knocked out: {title}")
    if out is not None:
        wrote(write_table(out, table))
