"""The labelled heads' QK attribution on the page (docs/methods.md §11): on the head card, per task
and key role, the components that make each head attend there; below it, the same with each
component's exact effect, its interval and the prompts it is over.

Read from the run's `qk_attribution` table alone (`analyses.qk.labelled_qk` builds it).
"""

from __future__ import annotations

import pandas as pd

from headscope.heads import head_name
from headscope.report.page_parts import TableView
from headscope.run import Run

SIDES = ("key", "query")
MIN_SHARE = 0.1  # a component the card names holds at least this share of its side's sum of |exact|
SHOWN = 3  # components named per side, at most

QK_NOTE = (
    "QK attribution (docs/methods.md §11): each labelled head's pre-softmax score from end to the key "
    "role its label reads (name movers: the answer; copy suppression: the member of the contrast group "
    "it attends to most; induction, previous-token, duplicate-token: the key the detector marks at end), "
    "split over the components written before the head reads the residual stream, on each side. exact: "
    "the score's drop when that one component's output at that position is replaced by its mean over "
    "the prompts, seen by the head's key only (key side) or query only (query side); mean over the n "
    "prompts [95% t interval]. %: that exact over the sum of |exact| on its side (+ raises the score, "
    f"- lowers it); components of at least {MIN_SHARE:.0%}, at most {SHOWN}, by size. spearman: the "
    "first-order estimate (as EAP) against exact over every component of both sides."
)


def _top(rows: pd.DataFrame) -> pd.DataFrame:
    """The side's components of at least MIN_SHARE of its sum of |exact| (at most SHOWN, the
    largest): those that raise the score, then those that lower it, each largest first; with their
    `share`."""
    total = float(rows["exact"].abs().sum())
    if not total > 0:
        return rows.head(0).assign(share=[])
    rows = rows.assign(share=rows["exact"] / total)
    kept = rows[rows["share"].abs() >= MIN_SHARE]
    kept = kept.assign(size=kept["exact"].abs()).sort_values("size", ascending=False, kind="stable")
    kept = kept.head(SHOWN).assign(lowers=lambda t: t["exact"] < 0)
    return kept.sort_values(["lowers", "size"], ascending=[True, False], kind="stable")


def side_text(rows: pd.DataFrame, detail: bool = False) -> str:
    """'1.1 +40%, 1.0 +30%, mlp0 -31%'; with `detail`, each with its exact and interval:
    '1.1 +40% (7.03 [5.62, 8.45])'; 'none' where no component moves the score."""
    top = _top(rows)
    if top.empty:
        return "none"
    entries = []
    for r in top.itertuples(index=False):
        text = f"{r.component} {r.share:+.0%}"
        entries.append(f"{text} ({r.exact:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}])" if detail else text)
    return ", ".join(entries)


def _by_head(table: pd.DataFrame):
    """(head 'l.h', its rows) per head and key role, in the table's order."""
    keys = ["layer", "head", "key_role"]
    for (layer, head, _), rows in table.groupby(keys, sort=False):
        yield head_name((int(layer), int(head))), rows


def card_rows(run: Run, task: str, heads: list[str]) -> list[list[str]]:
    """The head card's rows of one task: per key role and side, each head's leading components."""
    table = run.for_task("qk_attribution", task)
    rows = []
    for key in dict.fromkeys(table["key_role"]) if not table.empty else ():
        mine = table[table["key_role"] == key]
        query = str(mine["query_role"].iloc[0])
        by_head = dict(_by_head(mine))
        for side in SIDES:
            cells = [side_text(by_head[h][by_head[h]["side"] == side]) if h in by_head else "" for h in heads]
            rows.append([task, f"QK {query}->{key}, {side} side", *cells])
    return rows


def qk_view(run: Run) -> TableView | None:
    """One row per task, labelled head and key role: the score, n, each side's leading components
    with their exact effect and interval, and the first-order estimate's agreement."""
    table = run.table("qk_attribution")
    if table.empty:
        return None
    rows = []
    for task in run.tasks:
        for head, mine in _by_head(run.for_task("qk_attribution", task)):
            first = mine.iloc[0]
            row = {"task": task, "head": head, "label": first["label"]}
            row["score"] = (
                f"{first['query_role']}->{first['key_role']} {first.get('score', float('nan')):.2f}"
            )
            row["n"] = int(first["n"])
            row |= {f"{side} side": side_text(mine[mine["side"] == side], detail=True) for side in SIDES}
            row["spearman"] = float(first.get("spearman", float("nan")))
            rows.append(row)
    title = "Why the labelled heads attend where they do (QK attribution)"
    return TableView.of(title, pd.DataFrame(rows), note=QK_NOTE)
