"""`headscope scatter`: one head's attention vs. logit projection, with Pearson r per role."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from headscope.analyses import logits as _logits
from headscope.analyses.record import choice
from headscope.cli.app import Shared, command, print_table, working, wrote
from headscope.cli.common import load, shared_dataset
from headscope.errors import HeadscopeError
from headscope.files import check_writable, write_json, write_table
from headscope.heads import head_name, parse_head
from headscope.report.scatter_plot import scatter_figure, write_scatter_html, write_scatter_png
from headscope.scores.scatter import Scale

HeadOpt = Annotated[str, typer.Option("--head", help="The head, LAYER.HEAD, e.g. 9.9.")]
RolesOpt = Annotated[
    str | None,
    typer.Option("--roles", help="Comma-separated roles or groups (default: answer, contrast group)."),
]
ScaleOpt = Annotated[
    str, typer.Option("--scale", help="none (the IOI definition) or ln_final (divide by the final LN scale).")
]
BootOpt = Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples for the 95% interval of r.")]
SUFFIXES = (".csv", ".json", ".html", ".png")


def check_scale(scale: str) -> Scale:
    return choice(scale, "scale", _logits.SCALES)  # type: ignore[return-value]


def check_out(out: Path | None) -> None:
    if out is not None and out.suffix not in SUFFIXES:
        raise HeadscopeError(f"--out {out}: use a .csv, .json, .html or .png file name")
    if out is not None:
        check_writable(out)


def parse_roles(text: str | None, dataset) -> list[str]:
    """The roles asked for, each checked against the task (an unknown one names the known ones)."""
    roles = None if text is None else [r.strip() for r in text.split(",") if r.strip()]
    if roles == []:
        raise HeadscopeError("--roles is empty: give roles like IO,S")
    return _logits.scatter_roles(dataset, roles)


@command("scatter", task="ioi")
def scatter(
    shared: Shared,
    head: HeadOpt,
    roles: RolesOpt = None,
    scale: ScaleOpt = "none",
    n_boot: BootOpt = 1000,
) -> None:
    """Attention from end to each role's token vs. the head's output projected on that token."""
    chosen_scale = check_scale(scale)
    out = shared.out
    check_out(out)
    loaded = load(shared.model)
    chosen = parse_head(head, loaded.n_layers, loaded.n_heads)
    dataset = shared_dataset(loaded, shared)
    role_list = parse_roles(roles, dataset)
    with working(f"capturing {dataset.n} prompts, bootstrapping r {n_boot} times ..."):
        points, stats = _logits.scatter(loaded, dataset, chosen, role_list, chosen_scale, n_boot, shared.seed)
    title = f"head {head_name(chosen)} on {shared.task}, scale={chosen_scale}"
    print_table(stats, title=title)
    if out is not None:
        meta = {"task": shared.task, "head": head_name(chosen), "seed": shared.seed}
        _write(out, points, stats, title, chosen_scale, meta)


def _write(
    out: Path, points: pd.DataFrame, stats: pd.DataFrame, title: str, scale: Scale, meta: dict
) -> None:
    if out.suffix == ".html":
        write_scatter_html(out, scatter_figure(points, stats, title, scale))
    elif out.suffix == ".png":
        write_scatter_png(out, points, stats, title, scale)
    elif out.suffix == ".csv":
        write_table(out, points)
    else:
        body = meta | {"scale": scale, "stats": stats.to_dict("records"), "points": points.to_dict("records")}
        write_json(out, body)
    wrote(out)
