"""`headscope attention`: chosen heads' patterns on one prompt, role-to-role attention of all heads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import torch
import typer

from headscope.analyses.attention import attention_tables, prompt_tokens, whole_patterns
from headscope.cli.app import Shared, command, print_table, results, working, wrote
from headscope.cli.common import load, shared_dataset
from headscope.errors import HeadscopeError
from headscope.files import check_writable, write_json, write_table
from headscope.heads import head_name, head_names, parse_heads
from headscope.report.attention_plot import pattern_heatmap, write_attention_html
from headscope.scores.attention import DETECTORS, pattern_frame, pattern_records
from headscope.tasks.dataset import Dataset

HeadsOpt = Annotated[str, typer.Option("--heads", help="Heads whose pattern to show: 9.1,8.8 or all.")]
PromptOpt = Annotated[int, typer.Option("--prompt", help="Index of the prompt whose pattern is shown.")]
SUFFIXES = (".csv", ".json", ".html")
TABLE_TITLES = {
    "role_attention": "Role-to-role attention (mean over prompts)",
    "detectors": "Head detectors (share of attention on the ideal pattern)",
}


LABEL_WIDTH = 14


def pattern_lines(frame: pd.DataFrame) -> list[str]:
    """A compact text grid: one row per destination ('i:token'), one 3-wide column per source
    position, attention in hundredths (99 = 0.99, '**' = 1.00), blank above the diagonal."""
    header = " " * LABEL_WIDTH + "".join(f"{column:>4}" for column in range(len(frame.columns)))
    lines = [header]
    for row, label in enumerate(frame.index):
        cells = [_hundredths(v) if column <= row else "" for column, v in enumerate(frame.iloc[row])]
        lines.append(f"{label[: LABEL_WIDTH - 1]:<{LABEL_WIDTH}}" + "".join(f"{c:>4}" for c in cells))
    return lines


def _hundredths(value: float) -> str:
    rounded = round(value * 100)
    return "**" if rounded >= 100 else ("." if rounded == 0 else str(rounded))


def print_pattern(frame: pd.DataFrame, title: str) -> None:
    results.print(f"[bold]{title}[/bold]")
    for line in pattern_lines(frame):
        results.print(line, markup=False, highlight=False, soft_wrap=True)


def top_end_attention(roles: pd.DataFrame) -> pd.DataFrame:
    """Attention from `end` to each other role, the largest first, heads written l.h."""
    from_end = roles[(roles.query_role == "end") & (roles.key_role != "end")]
    ordered = from_end.sort_values("attention", ascending=False, kind="stable")
    heads = head_names(ordered.layer, ordered["head"])
    return pd.DataFrame(
        {"head": heads, "key_role": list(ordered.key_role), "attention": list(ordered.attention)}
    )


def check_out(out: Path | None) -> None:
    if out is not None and out.suffix not in SUFFIXES:
        raise HeadscopeError(f"--out {out}: use a .csv, .json or .html file name")
    if out is not None:
        check_writable(out)


def print_detectors(detectors: pd.DataFrame) -> None:
    strongest = detectors[list(DETECTORS)].max(axis=1).sort_values(ascending=False, kind="stable")
    ordered = detectors.loc[strongest.index]
    heads = head_names(ordered.layer, ordered["head"])
    print_table(
        ordered.drop(columns=["layer", "head"]).assign(head=heads)[["head", *DETECTORS]],
        title="head detectors: share of attention on the ideal pattern",
    )


@command("attention", task="ioi")
def attention(shared: Shared, heads: HeadsOpt, prompt: PromptOpt = 0) -> None:
    """Patterns of chosen heads on one prompt, role-to-role attention of every head (and the
    previous-token, duplicate-token and induction detectors on the induction task)."""
    out = shared.out
    check_out(out)
    loaded = load(shared.model)
    chosen = parse_heads(heads, loaded.n_layers, loaded.n_heads)
    dataset = shared_dataset(loaded, shared)
    if not 0 <= prompt < dataset.n:
        raise HeadscopeError(f"--prompt {prompt} is out of range: the dataset has prompts 0-{dataset.n - 1}")
    with working(f"capturing attention on {dataset.n} prompts ..."):
        tables = attention_tables(loaded, dataset)
        single, patterns = whole_patterns(loaded, dataset, [prompt])
    patterns = patterns[0]
    tokens = prompt_tokens(loaded, single, 0)
    results.print(f"[bold]prompt {prompt}[/bold]: {dataset.prompts[prompt].text!r}", highlight=False)
    for layer, index in chosen:
        frame = pattern_frame(patterns[layer, index], tokens)
        print_pattern(frame, f"head {head_name((layer, index))}: destination rows x source columns, x 0.01")
    roles = tables["role_attention"]
    print_table(top_end_attention(roles), title=f"attention from end, mean over {dataset.n} prompts")
    if "detectors" in tables:
        print_detectors(tables["detectors"])
    if out is not None:
        _write(out, shared.task, dataset, prompt, patterns, chosen, tokens, tables)


def _write(
    out: Path, task: str, dataset: Dataset, prompt: int, patterns: torch.Tensor, chosen, tokens, tables
):
    records = pattern_records(patterns, chosen, tokens)
    if out.suffix == ".csv":
        write_table(out, records)
        for name, table in tables.items():
            write_table(out.with_name(f"{out.stem}_{name}.csv"), table)
        wrote(f"{out} (patterns) and {', '.join(f'{out.stem}_{name}.csv' for name in tables)}")
        return
    if out.suffix == ".json":
        text = dataset.prompts[prompt].text
        body = {"task": task, "prompt_index": prompt, "prompt": text, "tokens": tokens, "n": dataset.n}
        body["patterns"] = records.to_dict("records")
        write_json(out, body | {name: table.to_dict("records") for name, table in tables.items()})
    else:
        figures = [
            pattern_heatmap(
                pattern_frame(patterns[layer, index], tokens), f"head {head_name((layer, index))}"
            )
            for layer, index in chosen
        ]
        titled = {TABLE_TITLES[name]: table for name, table in tables.items()}
        write_attention_html(
            out, f"headscope attention: {task}", dataset.prompts[prompt].text, figures, titled
        )
    wrote(out)
