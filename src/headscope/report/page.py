"""What the page shows, built from a Run alone: the page, each task's section and its heatmaps.

The parts are data (report/page_parts.py); the per-head pickers and the head card are built in
report/head_views.py, the circuit section in report/circuit_views.py.
"""

from __future__ import annotations

import pandas as pd

from headscope.heads import head_names
from headscope.report.atlas_section import atlas_section
from headscope.report.circuit_views import circuit_section, circuits_view
from headscope.report.figures import Heatmap, head_heatmap, head_task_heatmap, interval_notes
from headscope.report.head_views import (
    category_view,
    head_card_view,
    keyword_blocks,
    ranked_by,
    scatter_block,
    viewer_data,
)
from headscope.report.page_parts import Page, TableView, TaskSection, cell, model_shape, slug
from headscope.report.qk_views import qk_view
from headscope.run import Run


def build_page(run: Run) -> Page:
    sections = [task_section(run, task) for task in run.tasks]
    overview = overview_figures(run)
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
        labels=labels_view("Labelled heads in every task", run.table("labels"), _threshold_note(run)),
        thresholds=TableView.of("Label thresholds", pd.DataFrame([run.options.get("thresholds", {})])),
        comparison=TableView.of(
            "Which heads matter in every task, which only in some",
            run.table("comparison"),
            note=f"A head matters in a task when it is one of the task's top heads by {ranked_by(run)} "
            "or carries a label there.",
        ),
        head_card=head_card_view(run),
        qk=qk_view(run),
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
    table = pd.DataFrame({"what": list(rows), "value": [cell(v) for v in rows.values()]})
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


def task_heatmaps(run: Run, task: str, info: dict) -> list[Heatmap]:
    """Layer x head heatmaps: OV scores, end -> role attention, detectors, DLA, knockout."""
    shape = model_shape(run)
    prefix = slug(task)
    maps: list[Heatmap] = []
    ov = run.for_task("ov_scores", task)
    groups = ov.groupby(["relation", "sign"], sort=False) if not ov.empty else []
    for (relation, sign), group in sorted(groups, key=lambda item: (-item[0][1], item[0][0] != "copy")):
        negative = sign < 0
        if negative and relation != "copy":
            continue
        name = f"{'negative ' if negative else ''}{relation} score"
        title = f"{name} (top-{int(group['k'].iloc[0])}, {group['embedding'].iloc[0]})"
        maps.append(head_heatmap(f"{prefix}-{slug(name)}", title, group, "score", shape, context=task))
    detectors = run.for_task("detectors", task)
    for column in ("previous_token", "duplicate_token", "induction") if not detectors.empty else ():
        title = f"{column.replace('_', '-')} score"
        notes = interval_notes(detectors, bounds=(f"{column}_ci_low", f"{column}_ci_high"))
        maps.append(
            head_heatmap(
                f"{prefix}-{slug(column)}", title, detectors, column, shape, context=task, notes=notes
            )
        )
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
                head_heatmap(f"{prefix}-attn-{slug(role)}", title, rows, "attention", shape, context=task)
            )
    maps += _signed_maps(run, task, prefix, shape)
    return maps


def _signed_maps(run: Run, task: str, prefix: str, shape: tuple[int, int]) -> list[Heatmap]:
    maps = []
    dla = run.for_task("dla", task)
    if not dla.empty:
        heads = dla[dla["head"].notna()]
        title = "direct logit attribution"
        if "convention" in dla and (dla["convention"] == "frozen-norm").any():
            title += " (frozen-norm: each norm's scale from the clean run, logits before the cap)"
        maps.append(head_heatmap(f"{prefix}-dla", title, heads, "dla", shape, True, task))
    knockout = run.for_task("knockout", task)
    if not knockout.empty:
        heads = knockout[knockout["head"].notna()]
        method = str(heads["method"].iloc[0]) if not heads.empty else ""
        heads = heads[heads["method"] == method]
        notes = interval_notes(heads, "logit difference change", "effect") if "effect" in heads else {}
        heads = heads.assign(effect=lambda t: t["pct_of_clean"] - 100.0)
        stops = run.for_task("knockout_stops", task)  # a budgeted run's knockouts, in looks
        prompts = int(stops["prompts"].iloc[0]) if not stops.empty else run.options.get("knockout_n", "")
        title = f"knockout ({method}, n={prompts}): % of clean - 100"
        marks = estimated_marks(heads)
        if marks:
            title += f"\n≈: {len(marks)} of {len(heads)} estimated, rest exact"  # fits a narrow figure
        maps.append(
            head_heatmap(f"{prefix}-knockout", title, heads, "effect", shape, True, task, marks, notes)
        )
    return maps


ESTIMATE_NOTE = "(≈ first-order estimate, not an exact knockout)"


def knockout_note(run: Run, task: str) -> str:
    """Where a budgeted run's knockouts stopped, in one sentence ("" for a fixed count)."""
    stops = run.for_task("knockout_stops", task)
    if stops.empty:
        return ""
    stop = stops.iloc[0]
    looks = str(stop["looks"]).split(",")
    return (
        f"Knockouts: prompts added a batch at a time (looks at {', '.join(looks)}) until the order of the "
        f"top {int(stop['top'])} heads by |effect| was settled: {stop['why']}; each look's intervals are at "
        f"{float(stop['level']):.2%} (Bonferroni over the {len(looks)} looks), so the intervals shown hold "
        "95% wherever the run stopped."
    )


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
        knockout_note=knockout_note(run, task),
        labels=labels_view("Labelled heads", labels, _threshold_note(run)),
        keywords=keyword_blocks(run, task),
        scatter=scatter_block(run, task),
        categories=category_view(run, task),
        prompts=_prompts_view(run, task),
        viewer=viewer_data(run, task),
        not_computed=not_computed(run, task),
        circuit=circuit_section(run, task),
        ranked_by=ranked_by(run, task),
    )


LABEL_SHOWN = (
    "task", "head", "label", "support", "weights", "attention", "behaviour", "n", "p_adjusted", "ci_low",
    "ci_high",
)  # fmt: skip
SUPPORT_NOTE = (
    "support: the kinds of evidence that agree — weights (OV top-k and within-set scores), attention "
    "(role attention, detectors), behaviour (knockout effect, |DLA|, |edge| scores: agrees when one "
    "of them reaches its threshold). A label whose behaviour contradicts it (measured, every value "
    "below its threshold) shows as 'weights only', 'attention only' or 'weights+attention': not a "
    "finding. n, p_adjusted, ci_low-ci_high: the share a label is tested on (its hits of n against "
    "chance, one-sided exact binomial test, Benjamini-Hochberg over every test of the run; 95% Wilson "
    "interval); blank where the label reads means only (attention, detectors)."
)


def labels_view(title: str, labels: pd.DataFrame, note: str) -> TableView:
    """The labels with their lines of evidence and `support` (a run saved before support existed
    shows the columns it has)."""
    if "support" not in labels.columns:
        return TableView.of(title, labels, note=note)
    shown = labels.assign(head=head_names(labels["layer"], labels["head"]))
    shown = shown[[c for c in LABEL_SHOWN if c in shown.columns]]
    return TableView.of(title, shown, note=f"{SUPPORT_NOTE} {note}")


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
    note = run.options.get("task_rule") or (
        "This run does not record the rule that left these tasks out (it is from an older headscope)."
    )
    return TableView.of("Tasks left out of this run", table, note=note)
