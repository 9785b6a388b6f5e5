"""The page's per-head views, built from a Run: the pickers that show one head at a time (OV score
per keyword, the attention-vs-projection scatter, the attention viewer), the top-k categories and
the card of every head in every task."""

from __future__ import annotations

import pandas as pd

from headscope.heads import head_name, head_names
from headscope.report.figures import Scatter
from headscope.report.page_parts import PER_TOKEN_ROWS, Choice, PickBlock, TableView, slug
from headscope.report.qk_views import card_rows
from headscope.run import Run

RANKED_BY = {"|DLA|": "|direct logit attribution|"}


def ranked_by(run: Run, task: str | None = None) -> str:
    """What chose the top heads (of `task`, else of every task): |DLA|, or where DLA is not computed
    the knockout's effect or the OV score (analyses.head_ranking)."""
    top = run.table("top_heads") if task is None else run.for_task("top_heads", task)
    measures = list(dict.fromkeys(top["by"])) if "by" in top.columns else ["|DLA|"]
    return " / ".join(RANKED_BY.get(m, m) for m in measures) or RANKED_BY["|DLA|"]


def _choices(run: Run, task: str, section: str, heads: list[str]) -> list[Choice]:
    """The section's own heads (in its order, with why), then every other head that can be picked."""
    chosen = run.for_task("section_heads", task)
    chosen = chosen[chosen["section"] == section] if not chosen.empty else chosen
    named = [(head_name((r.layer, r.head)), r.why) for r in chosen.itertuples(index=False)]
    lead = [Choice(name, f"{name}: {why}", True) for name, why in named if name in heads]
    shown = {c.head for c in lead}
    return lead + [Choice(h, h, False) for h in heads if h not in shown]


def _heads_of(table: pd.DataFrame) -> list[str]:
    """The table's heads as 'l.h', each once, in layer and head order."""
    pairs = sorted({(int(a), int(b)) for a, b in zip(table["layer"], table["head"], strict=True)})
    return [head_name(pair) for pair in pairs]


KEYWORD_SECTIONS = {"copy": ("copy", 1), "next": ("next", 1), "negative copy": ("copy", -1)}  # relation, sign


def keyword_blocks(run: Run, task: str) -> list[PickBlock]:
    """The per-keyword table, one block per relation: for the head picked, each keyword in
    the task's order with the share of its instances whose target is in the top-k."""
    table = run.for_task("ov_keywords", task)
    blocks = []
    for section, (relation, sign) in KEYWORD_SECTIONS.items():
        mine = table[(table["relation"] == relation) & (table["sign"] == sign)] if not table.empty else table
        if mine.empty:
            continue
        by_head = mine.groupby(["layer", "head"], sort=True)
        tables = {head_name(h): [_keyword_view(task, head_name(h), section, rows)] for h, rows in by_head}
        title = f"{section} score per keyword"
        note = (
            f"The heads listed first are this section's: heads labelled for it, then the largest "
            f"{section} scores. Pick any head; keywords are in the task's order."
        )
        if detail_sample(run):
            note += f" Over {detail_sample(run)} (the OV scores read every prompt)."
        choices = _choices(run, task, section, _heads_of(mine))
        blocks.append(PickBlock(f"{slug(task)}-{slug(section)}", title, note, choices, tables))
    return blocks


def _keyword_view(task: str, head: str, section: str, rows: pd.DataFrame) -> TableView:
    rows = rows.sort_values("order", kind="stable")
    view = pd.DataFrame(
        {
            "keyword": rows["keyword"],
            "instances": rows["n"],
            f"{section} hit share": rows["hit"].astype(float),
            "median rank of target": [f"{v:g}" for v in rows["median_rank"].astype(float)],
            "top-k (first instance)": rows["topk"],
        }
    )
    title = f"head {head}: {section} score per keyword ({task})"
    return TableView.of(title, view, limit=PER_TOKEN_ROWS)


def detail_sample(run: Run) -> str | None:
    """The keyword instances the per-keyword and category tables read where the report took an OV
    detail sample (`ov_detail_n`; the scores read every prompt); None where they read every one."""
    prompts = run.options.get("ov_detail_n")
    return None if prompts is None else f"the keyword instances of the first {prompts} prompts"


def scatter_block(run: Run, task: str) -> PickBlock | None:
    """The attention-vs-projection scatter of the picked head, its per-role r first."""
    points, stats = run.for_task("scatter_points", task), run.for_task("scatter_stats", task)
    if points.empty:
        return None
    figures, tables = {}, {}
    for (layer, head), mine in points.groupby(["layer", "head"], sort=True):
        name = head_name((layer, head))
        head_stats = stats[(stats["layer"] == layer) & (stats["head"] == head)]
        shown = head_stats.drop(columns=["task", "layer", "head"], errors="ignore").reset_index(drop=True)
        shown = shown.astype(
            {c: float for c in ("r", "p", "ci_low", "ci_high", "between_share") if c in shown}
        )
        title = f"{task}: head {name}, attention vs. projection"
        figures[name] = Scatter(
            f"{slug(task)}-scatter-{layer}-{head}", title, mine.reset_index(drop=True), shown
        )
        tables[name] = [_stats_view(name, shown)]
    choices = _choices(run, task, "scatter", list(figures))
    note = (
        f"Heads listed first: labelled movers and successors, then the largest {ranked_by(run, task)}. "
        "Each role is its own cloud with its own r (as in the IOI paper's figure)."
    )
    return PickBlock(f"{slug(task)}-scatter", "Attention vs. projection", note, choices, tables, figures)


STATS_NOTE = (
    "r and two-sided p: Pearson (scipy; p assumes roughly normal data); interval: 95% BCa bootstrap "
    "over prompts (assumes nothing of the kind: where the two disagree near p = 0.05, look at the "
    "cloud). The pooled row "
    "mixes the roles: between_share is the part of its r that comes from the distance between the "
    "roles' means; from 0.5 up it carries a warning and says little about the head."
)


def _stats_view(head: str, stats: pd.DataFrame) -> TableView:
    """The per-role rows, then pooled; each row's note (a warning, why r is undefined) below the
    table; a p of 0.0 (below the smallest float) as '< 1e-300', never as an exact zero."""
    notes = stats["note"].fillna("") if "note" in stats else pd.Series([""] * len(stats))
    said = " ".join(f"{role}: {note}." for role, note in zip(stats["role"], notes, strict=True) if note)
    shown = stats.drop(columns="note", errors="ignore")
    shown = shown.assign(p=["< 1e-300" if value == 0 else value for value in shown["p"]])
    return TableView.of(f"head {head}: correlation per role", shown, note=f"{said} {STATS_NOTE}".strip())


def category_view(run: Run, task: str) -> TableView | None:
    """Per head, the share of its top-k slots in each category: once per head (the slots are the
    tokens the head's output promotes, the same whichever relation is scored)."""
    table = run.for_task("ov_categories", task)
    if table.empty:
        return None
    table = table[(table["sign"] == 1) & (table["relation"] == table["relation"].iloc[0])]
    wide = table.pivot_table(index=["layer", "head"], columns="category", values="share", sort=False)
    wide = wide.reset_index().sort_values(["layer", "head"], kind="stable")
    wide.insert(0, "head", head_names(wide.pop("layer"), wide.pop("head")))
    families = [c for c in wide.columns[1:] if c not in ("other",)]
    instances = detail_sample(run) or "every keyword instance"
    note = (
        f"Which kinds of token each head's output promotes: over {instances}, the share of "
        f"its top-k slots that are {', '.join(families)} or other. On a sequence task it answers "
        "questions such as: do number words take part in the digit task? (one row per head: the "
        "slots do not depend on the relation scored)."
    )
    return TableView.of("Top-k slots by category", wide, note=note)


def head_card_view(run: Run) -> TableView | None:
    """Every head's scores in every task, as the organism card of the README: a row per task and
    measure, a column per head (the heads that matter somewhere, for models of more than 16 heads)."""
    card = run.table("head_card")
    if card.empty:
        return None
    heads = _heads_of(card)
    if len(heads) > 16:
        comparison = run.table("comparison")
        heads = [h for h in heads if h in set(_heads_of(comparison))] if not comparison.empty else heads[:16]
    rows = []
    for task in run.tasks:
        mine = card[card["task"] == task]
        values = {head_name((r.layer, r.head)): r for r in mine.itertuples(index=False)}
        for measure in [m for m in CARD_MEASURES if m in mine.columns and mine[m].notna().any()]:
            cells = [getattr(values[h], measure) if h in values else float("nan") for h in heads]
            texts = [_card_cell(measure, v) for v in cells]
            if measure == "knockout_pct" and "knockout_exact" in mine.columns:
                exact = [h not in values or _exact(values[h].knockout_exact) for h in heads]
                texts = [t if sure or not t else f"≈{t}" for t, sure in zip(texts, exact, strict=True)]
            rows.append([task, CARD_MEASURES[measure], *texts])
        rows += card_rows(run, task, heads)
    table = pd.DataFrame(rows, columns=["task", "measure", *heads])
    return TableView.of("Every head in every task", table, note=CARD_NOTE)


CARD_MEASURES = {
    "copy": "copy",
    "next": "next",
    "negative_copy": "negative copy",
    "dla": "DLA",
    "knockout_pct": "knockout % of clean",
}


CARD_NOTE = (
    "copy / next / negative copy: OV scores (share of keyword instances whose target is in the top-k); "
    "DLA: mean direct logit attribution to answer - contrast; knockout: the logit difference left when "
    "the head is mean-ablated, in % of clean (100 = no effect); ≈: a first-order estimate, not an exact "
    "knockout (large models: only the heads the screen ranks highest and those the page names are exact). "
    "QK query->key, key / query side: the components that make a labelled head attend to the key its "
    "label reads, each with its share of that side's exact effect (the table below: intervals and n)."
)


def _exact(flag) -> bool:
    """A knockout value is exact unless flagged False (missing: a run from before the screen)."""
    return flag is None or flag != flag or bool(flag)


def _card_cell(measure: str, value: float) -> str:
    if value != value:
        return ""
    return str(round(value)) if measure == "knockout_pct" else f"{value:.2f}"  # never "-0"


def viewer_data(run: Run, task: str) -> dict | None:
    """{heads: [{head, text, lead}], prompts: [{text, tokens, patterns: {'l.h': ['w0 w1 ...' per dest]}}]}."""
    tokens, patterns = run.for_task("tokens", task), run.for_task("patterns", task)
    if tokens.empty or patterns.empty:
        return None
    choices = _choices(run, task, "viewer", _heads_of(patterns))
    texts = run.for_task("prompts", task)
    text_of = dict(zip(texts["prompt"], texts["text"], strict=True)) if not texts.empty else {}
    prompts = []
    for prompt, words in tokens.groupby("prompt", sort=True):
        mine = patterns[patterns["prompt"] == prompt].sort_values("dest", kind="stable")
        rows = {
            head_name((layer, head)): [str(w) for w in group["attention"]]
            for (layer, head), group in mine.groupby(["layer", "head"], sort=True)
        }
        ordered = [str(t) for t in words.sort_values("position")["token"]]
        prompts.append({"text": str(text_of.get(prompt, "")), "tokens": ordered, "patterns": rows})
    heads = [{"head": c.head, "text": c.text, "lead": c.lead} for c in choices]
    return {"heads": heads, "prompts": prompts}
