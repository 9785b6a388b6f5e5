"""What the page shows, built from a Run alone: tables, figures and viewer data per section."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from headscope.report.curve_plot import CurvePlot
from headscope.report.figures import Figure, Heatmap, Scatter, head_heatmap, head_task_heatmap
from headscope.run import Run
from headscope.scores.circuit import mib

PER_TOKEN_ROWS = 40


@dataclass(frozen=True)
class TableView:
    """A table as strings, ready for the template (which escapes every cell)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""

    @classmethod
    def of(cls, title: str, table: pd.DataFrame, note: str = "", limit: int = 500) -> TableView:
        rows = [[_cell(value) for value in row] for row in table.head(limit).itertuples(index=False)]
        more = f" (first {limit} of {len(table)} rows; all in the CSV)" if len(table) > limit else ""
        return cls(title, [str(c) for c in table.columns], rows, note + more)


@dataclass(frozen=True)
class Choice:
    """One head of a section's head selector: `lead` when the section chose it (labelled or top)."""

    head: str  # "l.h"
    text: str  # the option's text: the head and why the section shows it
    lead: bool


@dataclass(frozen=True)
class PickBlock:
    """A section that shows one head at a time: the reader picks it, the section's heads first."""

    name: str
    title: str
    note: str
    choices: list[Choice]
    tables: dict[str, list[TableView]]  # by head
    figures: dict[str, Figure] = field(default_factory=dict)  # by head


@dataclass(frozen=True)
class CircuitSection:
    """The task's circuit: the diagram's data, the edge table and the circuit's faithfulness."""

    diagram: dict
    faithfulness: TableView
    edges: TableView
    curve: CurvePlot | None = None  # MIB's faithfulness curve of the ranking, CPR and CMD


@dataclass(frozen=True)
class TaskSection:
    name: str
    description: str
    evaluation: TableView
    heatmaps: list[Heatmap]
    labels: TableView
    keywords: list[PickBlock]
    scatter: PickBlock | None
    categories: TableView | None
    prompts: TableView | None
    viewer: dict | None
    not_computed: list[str] = field(default_factory=list)  # "DLA: why" per analysis left out
    circuit: CircuitSection | None = None
    ranked_by: str = "|direct logit attribution|"  # what the scatter's and viewer's other heads follow


@dataclass(frozen=True)
class Page:
    title: str
    facts: TableView
    evaluation: TableView
    labels: TableView
    thresholds: TableView
    comparison: TableView
    head_card: TableView | None
    left_out: TableView | None
    circuits: TableView | None
    overview_figures: list[Heatmap]
    tasks: list[TaskSection]
    versions: TableView
    created: str
    figures: list[Figure] = field(default_factory=list)
    not_computed: list[str] = field(default_factory=list)  # over every task, each reason once
    atlas: object | None = None  # report.atlas_section.AtlasSection: the head atlas, weights only


def _cell(value) -> str:
    if isinstance(value, float):
        return (
            "" if value != value else f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
        )
    return str(value)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def build_page(run: Run) -> Page:
    sections = [task_section(run, task) for task in run.tasks]
    overview = overview_figures(run)
    from headscope.report.atlas_section import atlas_section  # it draws on this module's TableView

    atlas = atlas_section(run.tables)
    figures = (
        overview
        + [f for s in sections for f in [*s.heatmaps, *(s.scatter.figures.values() if s.scatter else ())]]
        + [s.circuit.curve for s in sections if s.circuit and s.circuit.curve]
    )
    return Page(
        title=f"headscope report: {run.model.get('name', '?')}",
        facts=_facts(run),
        evaluation=TableView.of("How well the model does each task", run.table("evaluation")),
        labels=TableView.of("Labelled heads in every task", run.table("labels")),
        thresholds=TableView.of("Label thresholds", pd.DataFrame([run.options.get("thresholds", {})])),
        comparison=TableView.of(
            "Which heads matter in every task, which only in some",
            run.table("comparison"),
            note=f"A head matters in a task when it is one of the task's top heads by {_ranked_by(run)} "
            "or carries a label there.",
        ),
        head_card=head_card_view(run),
        left_out=_left_out_view(run),
        circuits=circuits_view(run),
        overview_figures=overview,
        tasks=sections,
        versions=TableView.of("Package versions", pd.DataFrame([run.versions])),
        created=run.created,
        figures=figures + (atlas.heatmaps if atlas else []),
        atlas=atlas,
        not_computed=list(dict.fromkeys(note for section in sections for note in section.not_computed)),
    )


RANKED_BY = {"|DLA|": "|direct logit attribution|"}


def _ranked_by(run: Run, task: str | None = None) -> str:
    """What chose the top heads (of `task`, else of every task): |DLA|, or where DLA is not computed
    the knockout's effect or the OV score (analyses.head_ranking)."""
    top = run.table("top_heads") if task is None else run.for_task("top_heads", task)
    measures = list(dict.fromkeys(top["by"])) if "by" in top.columns else ["|DLA|"]
    return " / ".join(RANKED_BY.get(m, m) for m in measures) or RANKED_BY["|DLA|"]


def not_computed(run: Run, task: str) -> list[str]:
    """'DLA: why' for each analysis the task's run left out (the architecture has no such sum)."""
    table = run.for_task("not_computed", task)
    return [f"{r.analysis}: {r.why}" for r in table.itertuples(index=False)] if not table.empty else []


def _facts(run: Run) -> TableView:
    options = {k: v for k, v in run.options.items() if k != "thresholds"}
    rows = {
        **{f"model.{k}": v for k, v in run.model.items()},
        **{f"option.{k}": v for k, v in options.items()},
    }
    rows["seed"] = run.seed
    table = pd.DataFrame({"what": list(rows), "value": [_cell(v) for v in rows.values()]})
    return TableView.of("Model and options", table)


def overview_figures(run: Run) -> list[Heatmap]:
    dla = run.table("dla")
    comparison = run.table("comparison")
    if dla.empty or comparison.empty:
        return []
    heads = dla[dla["head"].notna()].assign(size=lambda t: t["dla"].abs())
    heads = heads.assign(
        share=heads["size"] / heads.groupby("task")["size"].transform("max").clip(lower=1e-12)
    )
    keep = set(zip(comparison["layer"], comparison["head"], strict=True))
    heads = heads[[(layer, head) in keep for layer, head in zip(heads["layer"], heads["head"], strict=True)]]
    title = "|DLA| / task's largest"
    return [head_task_heatmap("overview-dla", title, heads, "share", list(run.tasks))]


def _shape(run: Run) -> tuple[int, int]:
    return int(run.model["n_layers"]), int(run.model["n_heads"])


def task_heatmaps(run: Run, task: str, info: dict) -> list[Heatmap]:
    """Layer x head heatmaps: OV scores, end -> role attention, detectors, DLA, knockout."""
    shape = _shape(run)
    slug = _slug(task)
    maps: list[Heatmap] = []
    ov = run.for_task("ov_scores", task)
    groups = ov.groupby(["relation", "sign"], sort=False) if not ov.empty else []
    for (relation, sign), group in sorted(groups, key=lambda item: (-item[0][1], item[0][0] != "copy")):
        negative = sign in ("negative", -1)
        if negative and relation != "copy":
            continue
        name = f"{'negative ' if negative else ''}{relation} score"
        title = f"{name} (top-{int(group['k'].iloc[0])}, {group['embedding'].iloc[0]})"
        maps.append(head_heatmap(f"{slug}-{_slug(name)}", title, group, "score", shape, context=task))
    detectors = run.for_task("detectors", task)
    for column in ("previous_token", "duplicate_token", "induction") if not detectors.empty else ():
        title = f"{column.replace('_', '-')} score"
        maps.append(head_heatmap(f"{slug}-{_slug(column)}", title, detectors, column, shape, context=task))
    attention = run.for_task("role_attention", task)
    roles = [r for r in str(info.get("attention_roles", "")).split(",") if r] if detectors.empty else []
    for role in roles:
        rows = (
            attention[(attention["query_role"] == "end") & (attention["key_role"] == role)]
            if not attention.empty
            else attention
        )
        if not rows.empty:
            title = f"attention end -> {role}"
            maps.append(
                head_heatmap(f"{slug}-attn-{_slug(role)}", title, rows, "attention", shape, context=task)
            )
    maps += _signed_maps(run, task, slug, shape)
    return maps


def _signed_maps(run: Run, task: str, slug: str, shape: tuple[int, int]) -> list[Heatmap]:
    maps = []
    dla = run.for_task("dla", task)
    if not dla.empty:
        heads = dla[dla["head"].notna()]
        title = "direct logit attribution"
        maps.append(head_heatmap(f"{slug}-dla", title, heads, "dla", shape, True, task))
    knockout = run.for_task("knockout", task)
    if not knockout.empty:
        heads = knockout[knockout["head"].notna()]
        method = str(heads["method"].iloc[0]) if not heads.empty else ""
        heads = heads[heads["method"] == method].assign(effect=lambda t: t["pct_of_clean"] - 100.0)
        prompts = run.options.get("knockout_n", "")
        title = f"knockout ({method}, n={prompts}): % of clean - 100"
        marks = estimated_marks(heads)
        if marks:
            title += f"\n≈: {len(marks)} of {len(heads)} estimated, rest exact"  # fits a narrow figure
        maps.append(head_heatmap(f"{slug}-knockout", title, heads, "effect", shape, True, task, marks))
    return maps


ESTIMATE_NOTE = "(≈ first-order estimate, not an exact knockout)"


def estimated_marks(heads: pd.DataFrame) -> dict[tuple[int, int], tuple[str, str]]:
    """Knockout rows whose value is the screen's first-order estimate (`exact` False; a run saved
    before the screen existed has no such column: every value exact): '≈' and a hover note."""
    if "exact" not in heads.columns:
        return {}
    estimated = heads[~heads["exact"].astype(bool)]
    return {(int(r.layer), int(r.head)): ("≈", ESTIMATE_NOTE) for r in estimated.itertuples(index=False)}


def task_section(run: Run, task: str) -> TaskSection:
    info_table = run.for_task("tasks", task)
    info = info_table.iloc[0].to_dict() if not info_table.empty else {}
    labels = run.for_task("labels", task).drop(columns="task", errors="ignore")
    return TaskSection(
        name=task,
        description=str(info.get("description", "")),
        evaluation=TableView.of("How well the model does the task", run.for_task("evaluation", task)),
        heatmaps=task_heatmaps(run, task, info),
        labels=TableView.of("Labelled heads", labels, note=_threshold_note(run)),
        keywords=keyword_blocks(run, task),
        scatter=scatter_block(run, task),
        categories=category_view(run, task),
        prompts=_prompts_view(run, task),
        viewer=viewer_data(run, task),
        not_computed=not_computed(run, task),
        circuit=circuit_section(run, task),
        ranked_by=_ranked_by(run, task),
    )


def _threshold_note(run: Run) -> str:
    t = run.options.get("thresholds", {})
    return "Thresholds: " + ", ".join(f"{k} {v}" for k, v in t.items())


def _prompts_view(run: Run, task: str) -> TableView | None:
    prompts = run.for_task("prompts", task).drop(columns="task", errors="ignore")
    return TableView.of("Example prompts", prompts) if not prompts.empty else None


def _left_out_view(run: Run) -> TableView | None:
    left_out = run.options.get("left_out") or {}
    if not left_out:
        return None
    table = pd.DataFrame({"task": list(left_out), "why": list(left_out.values())})
    note = (
        "The default run leaves out a task the model answers correctly (top-1) less than half the "
        "time on its first 32 prompts: its heads would show only noise. Name the task in --tasks "
        "to include it."
    )
    return TableView.of("Tasks left out of this run", table, note=note)


def _head_name(layer, head) -> str:
    return f"{int(layer)}.{int(head)}"


def _choices(run: Run, task: str, section: str, heads: list[str]) -> list[Choice]:
    """The section's own heads (in its order, with why), then every other head that can be picked."""
    chosen = run.for_task("section_heads", task)
    chosen = chosen[chosen["section"] == section] if not chosen.empty else chosen
    lead = [
        Choice(_head_name(r.layer, r.head), f"{_head_name(r.layer, r.head)}: {r.why}", True)
        for r in chosen.itertuples(index=False)
        if _head_name(r.layer, r.head) in heads
    ]
    shown = {c.head for c in lead}
    return lead + [Choice(h, h, False) for h in heads if h not in shown]


def _heads_of(table: pd.DataFrame) -> list[str]:
    pairs = sorted({(int(a), int(b)) for a, b in zip(table["layer"], table["head"], strict=True)})
    return [_head_name(layer, head) for layer, head in pairs]


KEYWORD_SECTIONS = {"copy": ("copy", (1, "positive")), "next": ("next", (1, "positive"))}
KEYWORD_SECTIONS["negative copy"] = ("copy", (-1, "negative"))


def keyword_blocks(run: Run, task: str) -> list[PickBlock]:
    """The per-keyword table, one block per relation: for the head picked, each keyword in
    the task's order with the share of its instances whose target is in the top-k."""
    table = run.for_task("ov_keywords", task)
    blocks = []
    for section, (relation, signs) in KEYWORD_SECTIONS.items():
        mine = (
            table[(table["relation"] == relation) & table["sign"].isin(signs)] if not table.empty else table
        )
        if mine.empty:
            continue
        by_head = mine.groupby(["layer", "head"], sort=True)
        tables = {_head_name(*h): [_keyword_view(task, _head_name(*h), section, rows)] for h, rows in by_head}
        title = f"{section} score per keyword"
        note = (
            f"The heads listed first are this section's: heads labelled for it, then the largest "
            f"{section} scores. Pick any head; keywords are in the task's order."
        )
        choices = _choices(run, task, section, _heads_of(mine))
        blocks.append(PickBlock(f"{_slug(task)}-{_slug(section)}", title, note, choices, tables))
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


def scatter_block(run: Run, task: str) -> PickBlock | None:
    """The attention-vs-projection scatter of the picked head, its per-role r first."""
    points, stats = run.for_task("scatter_points", task), run.for_task("scatter_stats", task)
    if points.empty:
        return None
    figures, tables = {}, {}
    for (layer, head), mine in points.groupby(["layer", "head"], sort=True):
        name = _head_name(layer, head)
        head_stats = stats[(stats["layer"] == layer) & (stats["head"] == head)]
        shown = head_stats.drop(columns=["task", "layer", "head"], errors="ignore").reset_index(drop=True)
        shown = shown.astype(
            {c: float for c in ("r", "p", "ci_low", "ci_high", "between_share") if c in shown}
        )
        title = f"{task}: head {name}, attention vs. projection"
        figures[name] = Scatter(
            f"{_slug(task)}-scatter-{layer}-{head}", title, mine.reset_index(drop=True), shown
        )
        tables[name] = [_stats_view(name, shown)]
    choices = _choices(run, task, "scatter", list(figures))
    note = (
        f"Heads listed first: labelled movers and successors, then the largest {_ranked_by(run, task)}. "
        "Each role is its own cloud with its own r (as in the IOI paper's figure)."
    )
    return PickBlock(f"{_slug(task)}-scatter", "Attention vs. projection", note, choices, tables, figures)


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
    table = table[table["sign"].isin([1, "positive"]) & (table["relation"] == table["relation"].iloc[0])]
    wide = table.pivot_table(index=["layer", "head"], columns="category", values="share", sort=False)
    wide = wide.reset_index().sort_values(["layer", "head"], kind="stable")
    wide.insert(
        0, "head", [_head_name(a, b) for a, b in zip(wide.pop("layer"), wide.pop("head"), strict=True)]
    )
    families = [c for c in wide.columns[1:] if c not in ("other",)]
    note = (
        "Which kinds of token each head's output promotes: over every keyword instance, the share of "
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
        values = {_head_name(r.layer, r.head): r for r in mine.itertuples(index=False)}
        for measure in [m for m in CARD_MEASURES if m in mine.columns and mine[m].notna().any()]:
            cells = [getattr(values[h], measure) if h in values else float("nan") for h in heads]
            texts = [_card_cell(measure, v) for v in cells]
            if measure == "knockout_pct" and "knockout_exact" in mine.columns:
                exact = [h not in values or _exact(values[h].knockout_exact) for h in heads]
                texts = [t if sure or not t else f"≈{t}" for t, sure in zip(texts, exact, strict=True)]
            rows.append([task, CARD_MEASURES[measure], *texts])
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
    "knockout (large models: only the heads the screen ranks highest and those the page names are exact)."
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
            _head_name(layer, head): [str(w) for w in group["attention"]]
            for (layer, head), group in mine.groupby(["layer", "head"], sort=True)
        }
        ordered = [str(t) for t in words.sort_values("position")["token"]]
        prompts.append({"text": str(text_of.get(prompt, "")), "tokens": ordered, "patterns": rows})
    heads = [{"head": c.head, "text": c.text, "lead": c.lead} for c in choices]
    return {"heads": heads, "prompts": prompts}


DIAGRAM_EDGES = 30  # the diagram draws the circuit's edges and the strongest others, this many in all
EDGE_TABLE_ROWS = 30


def _value(value) -> float | None:
    """A number for the page's JSON; None (null) for NaN: an edge not patched exactly."""
    return None if value != value else float(value)


def circuit_diagram(run: Run, task: str) -> dict | None:
    """{n_layers, n_heads, group_size, method, approximation, edges: [{source, target, input, source_layer,
    target_layer, score, exact, in_circuit}]}: the circuit's edges and the strongest others."""
    edges, summary = run.for_task("edges", task), run.for_task("circuit", task)
    if edges.empty or summary.empty:
        return None
    shown = pd.concat([edges[edges["in_circuit"]], edges[~edges["in_circuit"]]]).head(DIAGRAM_EDGES)
    rows = [
        {
            "source": str(r.source),
            "target": str(r.target),
            "input": str(r.input),
            "source_layer": int(r.source_layer),
            "target_layer": int(r.target_layer),
            "score": _value(r.score),
            "exact": _value(r.exact),
            "in_circuit": bool(r.in_circuit),
        }
        for r in shown.itertuples(index=False)
    ]
    n_layers, n_heads = _shape(run)
    group = int(summary["group_size"].iloc[0])
    method = str(summary["method"].iloc[0])
    approximation = bool(summary["approximation"].iloc[0])
    shape = {"n_layers": n_layers, "n_heads": n_heads, "group_size": group}
    return shape | {"method": method, "approximation": approximation, "edges": rows}


def circuit_section(run: Run, task: str) -> CircuitSection | None:
    diagram = circuit_diagram(run, task)
    if diagram is None:
        return None
    summary = run.for_task("circuit", task).iloc[0]
    method = str(summary["method"])
    approx = " (an approximation)" if bool(summary["approximation"]) else ""
    faith = pd.DataFrame(
        {
            "edges": [int(summary["circuit_edges"])],
            "nodes": [str(summary["nodes"])],
            "circuit": [float(summary["circuit"])],
            "clean": [float(summary["clean"])],
            "no edge": [float(summary["no_edges"])],
            "faithfulness % of clean": [float(summary["faithfulness"])],
            "normalized": [float(summary["normalized"])],
            **_areas(summary),
        }
    )
    faith_note = (
        f"The circuit: the top {int(summary['circuit_edges'])} edges by |exact| among the "
        f"{int(summary['exact_checked'])} patched exactly. The model run with every other edge patched to "
        "its value on the corrupted prompt (exact, no approximation): its mean logit difference, as % of "
        "the clean one; normalized: (circuit - no edge) / (clean - no edge). On the first "
        f"{int(summary['n'])} prompts. Completeness and minimality: `headscope circuit`."
    )
    edges = run.for_task("edges", task).head(EDGE_TABLE_ROWS)
    table = pd.DataFrame(
        {
            "source": edges["source"],
            "target": edges["target"],
            "input": edges["input"],
            "mechanism": mechanism_names(edges, run.for_task("labels", task)),
            f"{method} score{approx}": edges["score"].astype(float),
            "exact": edges["exact"].astype(float),
            "in circuit": ["yes" if v else "" for v in edges["in_circuit"]],
        }
    )
    edges_note = (
        f"Strongest first by |{method} score| ({int(summary['edges_total'])} edges in all; the strongest "
        f"{len(run.for_task('edges', task))} in edges.csv). Score: the change of the mean logit difference "
        f"when the source's contribution to that one input is patched to its corrupted value; {method} "
        f"estimates it{approx}, exact patches it, for the {int(summary['exact_checked'])} edges {method} "
        f"ranks highest (blank: not patched). Spearman of {method} with exact on those: "
        f"{float(summary['spearman']):.2f}."
    )
    if "cpr" in summary.index:
        faith_note += (
            f" CPR / CMD: MIB's areas under f and |1 - f| of the circuits of the top 0.1 ... 100% of "
            f"edges by |{method} score| (the figure; x: {mib.X_AXIS})."
        )
    return CircuitSection(
        diagram=diagram,
        faithfulness=TableView.of("Faithfulness of the circuit", faith, note=faith_note),
        edges=TableView.of(f"Edges ({method}{approx}, the top ones checked exactly)", table, note=edges_note),
        curve=curve_plot(run, task),
    )


def _areas(summary: pd.Series) -> dict[str, list[float]]:
    if "cpr" not in summary.index or summary["cpr"] != summary["cpr"]:
        return {}
    return {
        f"CPR ({summary['method']})": [float(summary["cpr"])],
        f"CMD ({summary['method']})": [float(summary["cmd"])],
    }


def curve_plot(run: Run, task: str) -> CurvePlot | None:
    """The task's faithfulness curves (one per ranking computed), or None where none was."""
    points = run.for_task("circuit_curve", task)
    if points.empty:
        return None
    lines = {
        str(method): (
            list(rows["percent"]),
            list(rows["f"]),
            float(rows["cpr"].iloc[0]),
            float(rows["cmd"].iloc[0]),
        )
        for method, rows in points.groupby("method", sort=False)
    }
    title = "Faithfulness of the top-k% circuits (MIB)"
    first = points.iloc[0]
    return CurvePlot(
        f"{_slug(task)}-circuit-curve", title, lines, float(first["m_empty"]), float(first["m_full"]), task
    )


def mechanism_names(edges: pd.DataFrame, labels: pd.DataFrame) -> list[str]:
    """'previous-token 1.1 -> induction 2.1 (k)' for an edge between two labelled heads, else ''."""
    if labels.empty:
        return [""] * len(edges)
    label_of: dict[str, str] = {}
    for row in labels.itertuples(index=False):
        name = f"{int(row.layer)}.{int(row.head)}"
        label_of[name] = f"{label_of[name]}/{row.label}" if name in label_of else str(row.label)
    named = []
    for source, target, kind in zip(edges["source"], edges["target"], edges["input"], strict=True):
        both = source in label_of and target in label_of and kind in ("q", "k", "v")
        named.append(f"{label_of[source]} {source} -> {label_of[target]} {target} ({kind})" if both else "")
    return named


def circuits_view(run: Run) -> TableView | None:
    """Per task: the circuit's size, faithfulness and the approximation's agreement with exact."""
    summary = run.table("circuit")
    if summary.empty:
        return None
    table = summary[["task", "circuit_edges", "nodes", "faithfulness", "normalized", "method", "spearman"]]
    note = (
        "faithfulness: the circuit's mean logit difference as % of the clean model's (exact patching); "
        "spearman: the approximation's agreement with exact patching on the edges it ranks highest."
    )
    return TableView.of("Circuits per task", table.rename(columns={"circuit_edges": "edges"}), note=note)
