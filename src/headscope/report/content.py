"""What the page shows, built from a Run alone: tables, figures and viewer data per section."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from headscope.report.figures import Figure, Heatmap, Scatter, head_heatmap, head_task_heatmap
from headscope.run import Run

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
class ScatterView:
    figure: Scatter
    stats: TableView


@dataclass(frozen=True)
class TaskSection:
    name: str
    description: str
    evaluation: TableView
    heatmaps: list[Heatmap]
    labels: TableView
    scatters: list[ScatterView]
    per_token: list[TableView]
    categories: TableView | None
    prompts: TableView | None
    viewer: dict | None


@dataclass(frozen=True)
class Page:
    title: str
    facts: TableView
    evaluation: TableView
    labels: TableView
    thresholds: TableView
    comparison: TableView
    overview_figures: list[Heatmap]
    tasks: list[TaskSection]
    versions: TableView
    created: str
    figures: list[Figure] = field(default_factory=list)


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
    figures = overview + [f for s in sections for f in [*s.heatmaps, *(v.figure for v in s.scatters)]]
    return Page(
        title=f"headscope report: {run.model.get('name', '?')}",
        facts=_facts(run),
        evaluation=TableView.of("How well the model does each task", run.table("evaluation")),
        labels=TableView.of("Labelled heads in every task", run.table("labels")),
        thresholds=TableView.of("Label thresholds", pd.DataFrame([run.options.get("thresholds", {})])),
        comparison=TableView.of(
            "Which heads matter in every task, which only in some",
            run.table("comparison"),
            note="A head matters in a task when it is one of the task's top heads by |direct logit "
            "attribution| or carries a label there.",
        ),
        overview_figures=overview,
        tasks=sections,
        versions=TableView.of("Package versions", pd.DataFrame([run.versions])),
        created=run.created,
        figures=figures,
    )


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
        maps.append(head_heatmap(f"{slug}-knockout", title, heads, "effect", shape, True, task))
    return maps


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
        scatters=scatter_views(run, task),
        per_token=per_token_views(run, task),
        categories=category_view(run, task),
        prompts=_prompts_view(run, task),
        viewer=viewer_data(run, task),
    )


def _threshold_note(run: Run) -> str:
    t = run.options.get("thresholds", {})
    return "Thresholds: " + ", ".join(f"{k} {v}" for k, v in t.items())


def _prompts_view(run: Run, task: str) -> TableView | None:
    prompts = run.for_task("prompts", task).drop(columns="task", errors="ignore")
    return TableView.of("Example prompts", prompts) if not prompts.empty else None


def _top(run: Run, task: str) -> list[tuple[int, int]]:
    top = run.for_task("top_heads", task)
    return (
        [(int(layer), int(head)) for layer, head in zip(top["layer"], top["head"], strict=True)]
        if not top.empty
        else []
    )


def scatter_views(run: Run, task: str) -> list[ScatterView]:
    points, stats = run.for_task("scatter_points", task), run.for_task("scatter_stats", task)
    views = []
    for layer, head in _top(run, task) if not points.empty else []:
        mine = points[(points["layer"] == layer) & (points["head"] == head)]
        head_stats = stats[(stats["layer"] == layer) & (stats["head"] == head)]
        title = f"{task}: head {layer}.{head}, attention vs. projection"
        shown = head_stats.drop(columns=["task", "layer", "head"], errors="ignore").reset_index(drop=True)
        shown = shown.astype({c: float for c in ("r", "p", "ci_low", "ci_high") if c in shown.columns})
        figure = Scatter(f"{_slug(task)}-scatter-{layer}-{head}", title, mine.reset_index(drop=True), shown)
        views.append(ScatterView(figure, TableView.of(f"head {layer}.{head}: correlation per role", shown)))
    return views


def per_token_views(run: Run, task: str) -> list[TableView]:
    """Seed 003's table per top head: each keyword, the share of its instances hit per relation."""
    table = run.for_task("ov_per_token", task)
    if table.empty:
        return []
    table = table[table["sign"].isin(["positive", 1])]
    views = []
    for layer, head in _top(run, task)[:2]:
        mine = table[(table["layer"] == layer) & (table["head"] == head)]
        if mine.empty:
            continue
        hits = mine.pivot_table(index="keyword", columns="relation", values="hit", aggfunc="mean")
        first = mine[mine["relation"] == mine["relation"].iloc[0]].groupby("keyword")["topk"].first()
        view = hits.join(first.rename("top-k (first instance)")).reset_index()
        title = f"head {layer}.{head}: per keyword, share of instances whose target is in the top-k"
        views.append(TableView.of(title, view, limit=PER_TOKEN_ROWS))
    return views


def category_view(run: Run, task: str) -> TableView | None:
    table = run.for_task("ov_categories", task)
    top = _top(run, task)
    if table.empty or not top:
        return None
    table = table[[(layer, head) in top for layer, head in zip(table["layer"], table["head"], strict=True)]]
    wide = table.pivot_table(
        index=["layer", "head", "relation", "sign"], columns="category", values="share"
    ).reset_index()
    return TableView.of("Top-k slots by category (share), top heads", wide)


def viewer_data(run: Run, task: str) -> dict | None:
    """{heads: ['l.h'], prompts: [{tokens: [...], patterns: {'l.h': [[dest][src]]}}]}."""
    tokens, patterns = run.for_task("tokens", task), run.for_task("patterns", task)
    if tokens.empty or patterns.empty:
        return None
    heads = [f"{layer}.{head}" for layer, head in _top(run, task)]
    prompts = []
    for prompt, words in tokens.groupby("prompt", sort=True):
        length = len(words)
        grids = {}
        for (layer, head), rows in patterns[patterns["prompt"] == prompt].groupby(["layer", "head"]):
            grid = [[0.0] * length for _ in range(length)]
            for d, s, a in zip(rows["dest"], rows["src"], rows["attention"], strict=True):
                grid[int(d)][int(s)] = round(float(a), 4)
            grids[f"{layer}.{head}"] = grid
        prompts.append(
            {"tokens": [str(t) for t in words.sort_values("position")["token"]], "patterns": grids}
        )
    return {"heads": heads, "prompts": prompts}
