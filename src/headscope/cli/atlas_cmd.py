"""`headscope atlas`: what every head does, read from the weights, across the relation library.

Writes a folder: index.html (the heads x relations heatmaps, the function cards, the relation
table), atlas.csv (every head x relation x sign), cards.csv, relations.csv, and with --per-source
per_source.csv (every head x sign x kept pair, with its top-k tokens). `--list` prints the library.
`--stream` reads the weights from the checkpoint's files layer by layer (models/streamed.py) instead
of loading the model whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import typer

from headscope.analyses.atlas import atlas_tables
from headscope.cli.app import Shared, command, line, print_table, results, working, wrote
from headscope.cli.common import load, load_streamed
from headscope.errors import HeadscopeError
from headscope.files import check_folder_replaceable, write_folder_atomic, write_table
from headscope.report.atlas_section import section
from headscope.report.html import write_atlas_page
from headscope.scores.atlas import AtlasOptions
from headscope.tasks.relation_library import choose_relations, library

PAGE = "index.html"
TABLE = "atlas.csv"  # the marker: a folder holding it is an earlier atlas, replaced whole
DEFAULT_OUT = Path("headscope-atlas")


def relation_names(text: str | None) -> tuple[str, ...] | None:
    """The --relations items (names, groups, .toml files), each checked before the model loads."""
    if text is None:
        return None
    names = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    if not names:
        raise HeadscopeError("empty --relations: give names, groups (e.g. knowledge) or a .toml file")
    choose_relations(names)
    return names


def library_table() -> pd.DataFrame:
    rows = [
        (r.group, r.name, len(r.pairs), r.pairs[0][0] + " -> " + r.pairs[0][1]) for r in library().values()
    ]
    return pd.DataFrame(rows, columns=["group", "relation", "pairs", "example"])


@command("atlas", out=False, prompts=False)
def atlas(
    shared: Shared,
    relations: Annotated[
        str | None,
        typer.Option(
            "--relations",
            help="Comma-separated relation names, groups (algorithmic, linguistic, knowledge, "
            "translation) or TOML files of mappings in the task-file format (default: the whole "
            "library; --list shows it).",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for index.html and the CSV tables.")
    ] = DEFAULT_OUT,
    k: Annotated[int, typer.Option("--k", help="Top-k score: a hit when the target is in the top k.")] = 5,
    embedding: Annotated[
        Literal["token", "block0"],
        typer.Option("--embedding", help="token or block0 (methods.md section 2)."),
    ] = "token",
    per_source: Annotated[
        bool, typer.Option("--per-source", help="Also write per_source.csv (every head, sign and pair).")
    ] = False,
    list_: Annotated[bool, typer.Option("--list", help="Print the relation library and stop.")] = False,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Read the weights from the folder's safetensors files (or the .gguf file, a tensor "
            "dequantised at a time) layer by layer instead of loading the model whole (a local folder "
            "or a GGUF file; --dtype float32 or bfloat16).",
        ),
    ] = False,
    kernel_dtype: Annotated[
        Literal["auto", "float32", "bfloat16"],
        typer.Option(
            "--kernel-dtype",
            help="Precision of the OV kernel's vocabulary products: float32, bfloat16 (operands in "
            "bfloat16, accumulated in float32), or auto: bfloat16 only with --stream --dtype bfloat16 "
            "on a processor whose bfloat16 products are at least 1.2x as fast (measured at the start).",
        ),
    ] = "auto",
) -> None:
    """Every head x every relation x both signs: top-k and within-set scores, from the weights alone."""
    if list_:
        print_table(library_table(), title="relation library", limit=1000)
        return
    names = relation_names(relations)
    check_folder_replaceable(out, TABLE)
    loaded = load_streamed(shared.model) if stream else load(shared.model, streamable=True)
    chosen = choose_relations(names)
    with working(f"scoring {loaded.n_layers * loaded.n_heads} heads on {len(chosen)} relations ..."):
        options = AtlasOptions(k=k, embedding=embedding, per_source=per_source, kernel_dtype=kernel_dtype)
        tables = atlas_tables(loaded, names, options)
    table, cards, relations_kept = tables["atlas"], tables["atlas_cards"], tables["atlas_relations"]
    kernel = table.attrs["kernel"]["line"]
    line(kernel)
    part = section(table, cards, relations_kept, None, "atlas")
    facts = {"model": shared.model, "k": k, "embedding": embedding, "relations": ",".join(names or ("all",))}
    facts |= {"weights": "streamed from the checkpoint's files"} if stream else {}
    facts |= {"OV kernel": kernel}

    def write(folder: Path) -> None:
        write_table(folder / TABLE, table)
        write_table(folder / "cards.csv", cards)
        write_table(folder / "relations.csv", relations_kept)
        if per_source:
            write_table(folder / "per_source.csv", tables["atlas_per_source"])
        write_atlas_page(folder / PAGE, f"headscope atlas: {shared.model}", part, facts)

    folder = write_folder_atomic(out, write, TABLE)
    columns = ["layer", "head", "kind", "relation", "sign", "within", "chance", "score"]
    shown = cards[cards["kind"] != ""][columns]
    print_table(shown, title=f"function cards (top-{k} score, {embedding} embedding)")
    left = relations_kept[~relations_kept["scored"]]
    if not left.empty:
        results.print(f"not scored (fewer than 2 distinct targets kept): {', '.join(left['relation'])}")
    wrote(folder / PAGE)
