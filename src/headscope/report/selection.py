"""What the report's page shows: which heads each section leads with, and the tables read from them.

Pure functions of a run's tables (no model runs here): the ranking of heads (`head_ranking`), the
heads each section leads with (`section_heads`, `top_heads`, `named_heads`), the per-keyword table,
the per-head card and the comparison of tasks. `report.compute` calls them while building a run,
and `report.merge` when joining runs.
"""

from __future__ import annotations

import pandas as pd

from headscope.models.loading import Model
from headscope.scores.labels import signed_relations
from headscope.tasks.task import Task


def named_heads(tables: dict[str, pd.DataFrame], count: int) -> tuple[tuple[int, int], ...]:
    """The heads the page names before knockouts: labelled heads and each section's leading heads."""
    named = section_heads(tables, count)[["layer", "head"]]
    labels = tables.get("labels", pd.DataFrame(columns=["layer", "head"]))[["layer", "head"]]
    pairs = pd.concat([named, labels]).astype(int).drop_duplicates().sort_values(["layer", "head"])
    return tuple((int(layer), int(head)) for layer, head in pairs.itertuples(index=False))


def head_ranking(tables: dict[str, pd.DataFrame]) -> tuple[str, list[tuple[int, int, str]]]:
    """Every head, largest first, by the measure that ranks the report's heads, and that measure:
    |direct logit attribution|; where DLA is not computed (Gemma 2/3), the knockout's effect
    |% of clean - 100|; without knockouts, the largest OV score. Each head comes with its value."""
    dla = tables.get("dla", pd.DataFrame())
    knockout = tables.get("knockout", pd.DataFrame())
    ov = tables.get("ov_scores", pd.DataFrame())
    if not dla.empty:
        heads = dla[dla["head"].notna()].assign(size=lambda t: t["dla"].abs())
        return "|DLA|", [(int(r.layer), int(r.head), f"|DLA| {r.size:.2f}") for r in _by(heads, "size")]
    if not knockout.empty:
        heads = knockout[knockout["head"].notna()]
        heads = heads[heads["method"] == heads["method"].iloc[0]]
        heads = heads.assign(size=(heads["pct_of_clean"] - 100.0).abs().fillna(0.0))
        ranked = [
            (int(r.layer), int(r.head), f"knockout {r.pct_of_clean:.0f}% of clean")
            for r in _by(heads, "size")
        ]
        return "knockout effect |% of clean - 100|", ranked
    if not ov.empty:
        heads = ov.groupby(["layer", "head"], as_index=False)["score"].max()
        return "OV score", [
            (int(r.layer), int(r.head), f"OV score {r.score:.2f}") for r in _by(heads, "score")
        ]
    return "", []


def top_heads(tables: dict[str, pd.DataFrame], count: int) -> pd.DataFrame:
    """The `count` heads first by `head_ranking`, with the measure that chose them (`by`)."""
    measure, ranked = head_ranking(tables)
    rows = [{"layer": layer, "head": head, "by": measure} for layer, head, _ in ranked[:count]]
    return pd.DataFrame(rows, columns=["layer", "head", "by"])


Section = tuple[str, str, int, tuple[str, ...]]  # (section, score column, sign, labels that lead)


OV_SECTIONS: tuple[Section, ...] = (
    ("copy", "copy", 1, ("name mover",)),
    ("next", "next", 1, ("successor",)),
    ("negative copy", "copy", -1, ("negative name mover", "copy suppression")),
)


MOVER_LABELS = ("name mover", "negative name mover", "copy suppression", "backup name mover", "successor")


def section_heads(tables: dict[str, pd.DataFrame], count: int) -> pd.DataFrame:
    """The heads each section leads with, and why: its labelled heads, then its top scorers.

    Sections: `copy`, `next` and `negative copy` (the per-keyword OV tables: the labels of that
    relation, then the largest scores of that relation and sign), and `scatter` and `viewer`
    (every mover or successor label, then the heads first by `head_ranking`: |DLA| where it exists).
    """
    labels = tables.get("labels", pd.DataFrame(columns=["layer", "head", "label"]))
    ov = tables.get("ov_scores", pd.DataFrame())
    rows = []
    for section, relation, sign, leading in OV_SECTIONS:
        mine = ov[(ov["relation"] == relation) & (ov["sign"] == sign)] if not ov.empty else ov
        if not mine.empty:
            ranked = [
                (int(r.layer), int(r.head), f"{section} score {r.score:.2f}") for r in _by(mine, "score")
            ]
            rows += _lead(section, labels, leading, ranked, count)
    _, ranked = head_ranking(tables)
    if ranked:
        rows += _lead("scatter", labels, MOVER_LABELS, ranked, count)
        rows += _lead("viewer", labels, tuple(labels["label"].unique()), ranked, count)
    return pd.DataFrame(rows, columns=["section", "rank", "layer", "head", "why"])


def _by(table: pd.DataFrame, column: str) -> list:
    order = table.sort_values([column, "layer", "head"], ascending=[False, True, True], kind="stable")
    return list(order.itertuples(index=False))


def _lead(section: str, labels: pd.DataFrame, leading, ranked: list, count: int) -> list[dict]:
    """Labelled heads (in score order), then the best of the rest, `count` in all (all labelled ones)."""
    score_of = {(layer, head): why for layer, head, why in ranked}
    chosen = labels[labels["label"].isin(leading)]
    labelled = {(int(r.layer), int(r.head)): r.label for r in chosen.itertuples(index=False)}
    heads = [(h, f"{labelled[h]}; {score_of.get(h, '')}") for h in score_of if h in labelled]
    heads += [(h, f"top {score_of[h]}") for h in score_of if h not in labelled]
    heads = heads[: max(count, len(labelled))]
    return [
        {"section": section, "rank": rank, "layer": h[0], "head": h[1], "why": why.rstrip("; ")}
        for rank, (h, why) in enumerate(heads)
    ]


def pickable_heads(sections: pd.DataFrame, model: Model, every_head_up_to: int) -> list[tuple[int, int]]:
    """Heads the reader can pick in the page: every head of a small model, else the sections' heads."""
    if model.n_layers * model.n_heads <= every_head_up_to:
        return [(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]
    return sorted({(int(r.layer), int(r.head)) for r in sections.itertuples(index=False)})


def keyword_order(task: Task) -> dict[str, int]:
    """Each member's place in the task's own order (1, 2, ..., 10; January, February, ...)."""
    words = [m for family in task.families for m in family.members]
    words += [w for members in task.categories.values() for w in members]
    return {word: i for i, word in reversed(list(enumerate(words)))}


def keyword_tables(tables: dict[str, pd.DataFrame], task: Task, picked) -> dict[str, pd.DataFrame]:
    """Per keyword, every picked head: share hit and median target rank per relation and sign;
    the per-instance table is kept for the sections' heads only (it is every instance x head)."""
    per_token = tables.get("ov_per_token")
    if per_token is None or per_token.empty:
        return {}
    shown = {(int(r.layer), int(r.head)) for r in tables["section_heads"].itertuples(index=False)}
    return {
        "ov_keywords": keyword_table(_of_heads(per_token, picked), task),
        "ov_per_token": _of_heads(per_token, sorted(shown)),
    }


def keyword_table(per_token: pd.DataFrame, task: Task) -> pd.DataFrame:
    """[layer, head, relation, sign, keyword] -> order, n, hit share, median rank, top-k of the first."""
    groups = per_token.groupby(["layer", "head", "relation", "sign", "keyword"], sort=False)
    table = groups.agg(
        n=("hit", "size"), hit=("hit", "mean"), median_rank=("rank", "median"), topk=("topk", "first")
    ).reset_index()
    order = keyword_order(task)
    first_seen = {word: i for i, word in reversed(list(enumerate(per_token["keyword"])))}
    table.insert(5, "order", [order.get(w, len(order) + first_seen[w]) for w in table["keyword"]])
    return table.sort_values(["layer", "head", "relation", "sign", "order"], kind="stable").reset_index(
        drop=True
    )


def _of_heads(table: pd.DataFrame, heads: list[tuple[int, int]]) -> pd.DataFrame:
    keep = [
        (int(layer), int(head)) in heads for layer, head in zip(table["layer"], table["head"], strict=True)
    ]
    return table[keep].reset_index(drop=True)


def scatter_roles(task: Task) -> tuple[str, ...]:
    """The roles of the scatter: keyword roles, with grouped roles merged (IOI: IO, S)."""
    grouped = {member: group for group, members in task.role_groups.items() for member in members}
    return tuple(dict.fromkeys(grouped.get(role, role) for role in task.keyword_roles))


def attention_roles(task: Task) -> tuple[str, ...]:
    """Key roles of the end -> role heatmaps: the answer role and the contrast role's group."""
    grouped = {member: group for group, members in task.role_groups.items() for member in members}
    roles = (task.answer_role, grouped.get(task.contrast_role, task.contrast_role))
    return tuple(dict.fromkeys(role for role in roles if role is not None))


def head_card(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per task and head: copy, next and negative copy score, DLA and knockout (% of clean)."""
    parts = []
    ov = tables.get("ov_scores", pd.DataFrame())
    if not ov.empty:
        wide = ov.assign(name=signed_relations(ov)).pivot_table(
            index=["task", "layer", "head"], columns="name", values="score"
        )
        parts.append(wide[[c for c in ("copy", "next", "negative_copy") if c in wide.columns]])
    for name, column, new in (("dla", "dla", "dla"), ("knockout", "pct_of_clean", "knockout_pct")):
        table = tables.get(name, pd.DataFrame())
        if not table.empty:
            heads = table[table["head"].notna()].astype({"layer": int, "head": int})
            if "method" in heads.columns:  # one knockout method per report; the first if ever more
                heads = heads[heads["method"] == heads["method"].iloc[0]]
            kept = [column, "exact"] if name == "knockout" and "exact" in heads.columns else [column]
            renamed = {column: new, "exact": "knockout_exact"}
            parts.append(heads.set_index(["task", "layer", "head"])[kept].rename(columns=renamed))
    if not parts:
        return pd.DataFrame(columns=["task", "layer", "head"])
    return pd.concat(parts, axis=1).reset_index()


def compare_tasks(tables: dict[str, pd.DataFrame], tasks: tuple[str, ...]) -> pd.DataFrame:
    """Per head: in which tasks it matters (a top head by |DLA| or labelled), and whether in all."""
    top = tables.get("top_heads", pd.DataFrame(columns=["task", "layer", "head"]))
    labels = tables.get("labels", pd.DataFrame(columns=["task", "layer", "head"]))
    pairs = pd.concat([top[["task", "layer", "head"]], labels[["task", "layer", "head"]]]).drop_duplicates()
    rows = []
    for (layer, head), group in pairs.groupby(["layer", "head"], sort=True):
        found = [t for t in tasks if t in set(group["task"])]
        scope = "every task" if len(found) == len(tasks) else "some tasks"
        rows.append(
            {
                "layer": int(layer),
                "head": int(head),
                "tasks": ",".join(found),
                "n_tasks": len(found),
                "scope": scope,
            }
        )
    table = pd.DataFrame(rows, columns=["layer", "head", "tasks", "n_tasks", "scope"])
    return table.sort_values(
        ["n_tasks", "layer", "head"], ascending=[False, True, True], kind="stable"
    ).reset_index(drop=True)
