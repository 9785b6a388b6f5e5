"""The head atlas on a page: the heads x relations heatmaps, the function cards, the relation table.

Used twice: `headscope atlas` writes a page of its own (`report.html.write_atlas_page`), and the
report's page gains an atlas section (`atlas_section`, from the run's `atlas` tables). A heatmap cell is the
stronger sign of the head on the relation: its within-set score above chance,
(within - chance) / (1 - chance), positive for sign +1 and negative for sign -1 (a head that
writes the opposite); the top-k map shows the top-k score of the same sign.
"""

from __future__ import annotations

import pandas as pd

from headscope.heads import head_name, head_names
from headscope.report.figures import Heatmap
from headscope.report.page_parts import AtlasSection, TableView
from headscope.scores.atlas import above_chance

REPORT_HEADS = 32  # heads in the report's heatmaps: the strongest by within-set score above chance
CARD_ROWS = 100  # function cards shown on a page (all in the CSV)


def strongest_sign(table: pd.DataFrame) -> pd.DataFrame:
    """Per head and relation, the row of the sign with the larger within-set score above chance."""
    table = table.assign(strength=above_chance(table))
    table = table.sort_values(["strength", "score"], ascending=False, kind="stable")
    return table.drop_duplicates(["layer", "head", "relation"]).sort_values(["layer", "head"], kind="stable")


def strongest_heads(table: pd.DataFrame, count: int | None) -> list[tuple[int, int]]:
    """The heads by their best within-set score above chance (all, in layer order, when count is None)."""
    best = strongest_sign(table).groupby(["layer", "head"])["strength"].max()
    if count is not None:
        best = best.sort_values(ascending=False, kind="stable").head(count).sort_index()
    return [(int(layer), int(head)) for layer, head in best.index]


def atlas_heatmap(name: str, table: pd.DataFrame, value: str, heads: list[tuple[int, int]], title: str):
    """Relations (rows) x heads (columns): `value` of each head's stronger sign, negative for sign -1."""
    rows = strongest_sign(table)
    relations = list(dict.fromkeys(table["relation"]))
    lookup = {(int(r.layer), int(r.head), r.relation): r for r in rows.itertuples(index=False)}
    z, cells = [], []
    for relation in relations:
        found = [lookup.get((layer, head, relation)) for layer, head in heads]
        z.append([None if r is None else float(getattr(r, value)) * int(r.sign) for r in found])
        cells.append([_cell_text(relation, head, r) for head, r in zip(heads, found, strict=True)])
    x = [head_name(h) for h in heads]
    return Heatmap(name, title, z, x, relations, "head", "relation", cells, diverging=True)


def _cell_text(relation: str, head: tuple[int, int], row) -> str:
    if row is None:
        return f"head {head_name(head)}, {relation}"
    sign = "+" if row.sign > 0 else "-"
    return (
        f"head {head_name(head)}, {relation} (sign {sign}): within {row.within:.2f} "
        f"(chance {row.chance:.2f}), top-k {row.score:.2f}"
    )


def heatmaps(table: pd.DataFrame, heads: list[tuple[int, int]], prefix: str = "atlas") -> list[Heatmap]:
    return [
        atlas_heatmap(
            f"{prefix}-within", table, "strength", heads, "within-set score above chance (sign -1 negative)"
        ),
        atlas_heatmap(f"{prefix}-topk", table, "score", heads, "top-k score of the same sign"),
    ]


def cards_view(cards: pd.DataFrame, limit: int = CARD_ROWS) -> TableView:
    shown = cards.assign(head=head_names(cards["layer"], cards["head"]))
    columns = ["head", "kind", "relation", "sign", "within", "ci_low", "ci_high", "chance", "p_adjusted"]
    shown = shown[[c for c in [*columns, "n", "score", "card"] if c in shown.columns]]
    note = (
        "Each head's strongest relations by within-set score above chance, both signs (-R: sign -1). "
        "kind: maps = its target is the best candidate for at least half the sources and beats chance "
        "(one-sided exact binomial test, Benjamini-Hochberg adjusted p < 0.05 over every head x relation "
        "x sign); writes the set = targets in the top k for half the sources, yet not the best of the "
        "set. ci_low-ci_high: the within-set score's 95% Wilson interval over its n pairs."
    )
    return TableView.of("Function cards: what each head does", shown, note, limit)


def relations_view(relations: pd.DataFrame) -> TableView:
    shown = relations.drop(columns=["source"])
    note = "Pairs kept: the source is one token for this tokenizer (targets read by their first token)."
    return TableView.of("Relation library for this tokenizer", shown, note)


def section(
    table: pd.DataFrame, cards: pd.DataFrame, relations: pd.DataFrame, count: int | None, prefix: str
):
    heads = strongest_heads(table, count)
    shown = f"the {len(heads)} strongest heads" if count is not None and len(heads) == count else "every head"
    note = f"Weights only: no prompts. The heatmaps show {shown}; every head is in the atlas CSV."
    return AtlasSection(heatmaps(table, heads, prefix), cards_view(cards), relations_view(relations), note)


def atlas_section(tables: dict[str, pd.DataFrame]) -> AtlasSection | None:
    """The report's atlas section, from the run's atlas tables (None when the run has none)."""
    table = tables.get("atlas")
    if table is None or table.empty:
        return None
    return section(table, tables["atlas_cards"], tables["atlas_relations"], REPORT_HEADS, "report-atlas")
