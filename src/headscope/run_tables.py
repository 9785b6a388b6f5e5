"""The tables of a Run, by name, with the columns the report reads from each.

One registry for every table a report writes: `load_run` refuses a results.json with a table
that has rows but lacks one of its columns here (a run written by an older headscope), naming the
table and the column, instead of the page failing part-way. The columns are the ones the page
(report/page.py, head_views.py, circuit_views.py, atlas_section.py, the figures), the console
summary and the merging of runs (`report --from A B`) read without checking; a column read only
where present (`exact`, `convention`, `cpr`, `stability`, `note`, `word`, ...) is not listed, nor is
`task` where the page only filters by it (`Run.for_task`).
"""

from __future__ import annotations

from dataclasses import dataclass

HEAD = ("layer", "head")


@dataclass(frozen=True)
class RunTable:
    """A table of a Run: the columns read from it, and whether every report writes it."""

    columns: tuple[str, ...] = ()
    always: bool = False


TABLES: dict[str, RunTable] = {
    # per task: the task, the model's answers, attention
    "tasks": RunTable(always=True),
    "evaluation": RunTable(("accuracy", "logit_diff", "n"), always=True),
    "role_attention": RunTable((*HEAD, "query_role", "key_role", "attention")),
    "detectors": RunTable((*HEAD, "previous_token", "duplicate_token", "induction")),
    "attention_entropy": RunTable(),
    "prompts": RunTable(("prompt", "text")),
    "tokens": RunTable(("prompt", "position", "token")),
    "patterns": RunTable(("prompt", *HEAD, "dest", "attention")),
    # per task: OV scores and their keywords
    "ov_scores": RunTable(("task", *HEAD, "relation", "sign", "k", "embedding", "score"), always=True),
    "ov_per_token": RunTable(),
    "ov_keywords": RunTable(
        (*HEAD, "relation", "sign", "keyword", "order", "n", "hit", "median_rank", "topk")
    ),
    "ov_categories": RunTable((*HEAD, "relation", "sign", "category", "share")),
    # per task: attribution, knockouts, labels, the heads each section shows
    "dla": RunTable(("task", *HEAD, "dla")),
    "knockout": RunTable(("task", *HEAD, "method", "pct_of_clean")),
    "knockout_stops": RunTable(("prompts", "looks", "level", "top", "why")),  # a budgeted run's, in looks
    "labels": RunTable(("task", *HEAD, "label"), always=True),
    "top_heads": RunTable(("task", *HEAD), always=True),
    "section_heads": RunTable(("section", *HEAD, "why"), always=True),
    "scatter_points": RunTable((*HEAD, "prompt", "role", "token", "attention", "projection")),
    "scatter_stats": RunTable((*HEAD, "role", "r", "p", "n", "ci_low", "ci_high")),
    "not_computed": RunTable(("task", "analysis", "why")),
    # per task: the circuit
    "edges": RunTable(
        ("source", "target", "input", "source_layer", "target_layer", "score", "exact", "in_circuit")
    ),
    "circuit": RunTable(
        (
            "task",
            "method",
            "approximation",
            "n",
            "edges_total",
            "exact_checked",
            "spearman",
            "circuit_edges",
            "nodes",
            "clean",
            "no_edges",
            "circuit",
            "faithfulness",
            "normalized",
            "group_size",
        )  # fmt: skip
    ),
    "cast": RunTable(),  # the cast's runs: attention_shift and pair_knockout rows (analyses.cast)
    "circuit_curve": RunTable(("method", "percent", "f", "cpr", "cmd", "m_empty", "m_full")),
    # per task: each labelled head's score from end to its label's key, split over the components
    "qk_attribution": RunTable(
        (
            "task",
            *HEAD,
            "label",
            "query_role",
            "key_role",
            "side",
            "component",
            "exact",
            "n",
            "ci_low",
            "ci_high",
        )
    ),  # fmt: skip
    # across tasks
    "comparison": RunTable(HEAD),
    "head_card": RunTable(("task", *HEAD), always=True),
    # the model alone (weights only)
    "atlas": RunTable((*HEAD, "relation", "sign", "score", "within", "chance")),
    "atlas_cards": RunTable((*HEAD, "kind", "relation", "sign", "within", "chance", "score", "card")),
    "atlas_relations": RunTable(("source",)),
}

ALWAYS: tuple[str, ...] = tuple(name for name, table in TABLES.items() if table.always)


def missing_column(name: str, columns: list[str]) -> str | None:
    """The first column the report reads from table `name` that `columns` lacks (None: none)."""
    known = TABLES.get(name, RunTable())
    return next((column for column in known.columns if column not in columns), None)
