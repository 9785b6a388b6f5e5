"""`headscope patch`: activation patching per head between clean prompts and corrupted twins."""

from __future__ import annotations

from typing import Annotated, Literal

import pandas as pd
import typer

from headscope.analyses.causal import attribution_patch, patch
from headscope.cli.app import Shared, command, note, print_table, results, working, wrote
from headscope.cli.common import load, shared_dataset
from headscope.errors import HeadscopeError
from headscope.files import check_table_path, write_table

Direction = Literal["denoise", "noise"]
NEAR = 0.05  # |clean - corrupted| below this makes the normalisation meaningless


def grid(table: pd.DataFrame) -> pd.DataFrame:
    """layer x head grid of the normalised values (rows: layers, columns: heads)."""
    wide = table.pivot(index="layer", columns="head", values="value")
    wide.columns = [f"h{h}" for h in wide.columns]
    wide.index = [str(layer) for layer in wide.index]  # a label column, not a number
    return wide.rename_axis("layer").reset_index()


@command("patch", task="seq-digits")
def patch_command(
    shared: Shared,
    direction: Annotated[
        Direction,
        typer.Option("--direction", help="denoise (clean into corrupted) or noise (corrupted into clean)."),
    ] = "denoise",
    by_position: Annotated[
        bool, typer.Option("--by-position", help="One value per head and token position.")
    ] = False,
    approx: Annotated[
        bool,
        typer.Option(
            "--approx", help="Attribution patching: one forward and one backward (an approximation)."
        ),
    ] = False,
) -> None:
    """Head-level activation patching, normalised to (patched - corrupted) / (clean - corrupted)."""
    out = shared.out
    if out is not None:
        check_table_path(out)  # suffix and folder, before anything is computed
    if approx and (by_position or direction != "denoise"):
        raise HeadscopeError("--approx estimates denoising per component: drop --by-position and --direction")
    loaded = load(shared.model)
    dataset = shared_dataset(loaded, shared)
    with working(f"patching every head on {dataset.n} prompts ..."):
        table = (
            attribution_patch(loaded, dataset) if approx else patch(loaded, dataset, direction, by_position)
        )
    results.print(
        f"clean metric {table.attrs['clean']:.3f}, corrupted {table.attrs['corrupted']:.3f} "
        f"(mean logit diff at end, {dataset.n} prompts of {shared.task})"
    )
    if abs(table.attrs["clean"] - table.attrs["corrupted"]) < NEAR:
        note("clean and corrupted metrics nearly agree: the normalised values are unstable")
    _show(table, approx, by_position, direction)
    if out is not None:
        wrote(write_table(out, table))


def _show(table: pd.DataFrame, approx: bool, by_position: bool, direction: str) -> None:
    if approx:
        results.print(
            "[yellow]APPROXIMATION: attribution patching (first order), not exact patching[/yellow]"
        )
        ranked = table.reindex(table["value"].abs().sort_values(ascending=False).index)
        print_table(ranked, title="attribution patching (approximation), denoise, largest first")
    elif by_position:
        ranked = table.reindex(table["value"].abs().sort_values(ascending=False).index)
        print_table(ranked, title=f"{direction} patching per head and position, largest first")
    else:
        print_table(grid(table), title=f"{direction} patching: layer x head", limit=200)
