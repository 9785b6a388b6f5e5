"""The page's circuit section, built from a Run: the diagram's data, the faithfulness and edge
tables, MIB's faithfulness curve, and the summary of every task's circuit."""

from __future__ import annotations

import pandas as pd

from headscope.heads import head_name
from headscope.report.curve_plot import CurvePlot
from headscope.report.page_parts import CircuitSection, TableView, model_shape, slug
from headscope.run import Run
from headscope.scores.circuit import mib
from headscope.scores.circuit.stability import STABLE, verdict

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
    n_layers, n_heads = model_shape(run)
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
        f"The circuit: {_chosen_by(summary)}. The model run with every other edge patched to "
        "its value on the corrupted prompt (exact, no approximation): its mean logit difference, as % of "
        "the clean one; normalized: (circuit - no edge) / (clean - no edge). On the first "
        f"{int(summary['n'])} prompts. Completeness and minimality: `headscope circuit`."
    ) + stability_sentence(summary)
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
    if str(summary.get("convention", "linear")) == "frozen-norm":
        edges_note += (
            f" Frozen-norm convention ({method}): every norm's scale is held at its clean-run value and "
            "the logits are read before the cap; exact is a real patch of the real model (every norm "
            "recomputed), and so is the circuit's run."
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
        f"{slug(task)}-circuit-curve", title, lines, float(first["m_empty"]), float(first["m_full"]), task
    )


def mechanism_names(edges: pd.DataFrame, labels: pd.DataFrame) -> list[str]:
    """'previous-token 1.1 -> induction 2.1 (k)' for an edge between two labelled heads, else ''."""
    if labels.empty:
        return [""] * len(edges)
    label_of: dict[str, str] = {}
    for row in labels.itertuples(index=False):
        name = head_name((row.layer, row.head))
        label_of[name] = f"{label_of[name]}/{row.label}" if name in label_of else str(row.label)
    named = []
    for source, target, kind in zip(edges["source"], edges["target"], edges["input"], strict=True):
        both = source in label_of and target in label_of and kind in ("q", "k", "v")
        named.append(f"{label_of[source]} {source} -> {label_of[target]} {target} ({kind})" if both else "")
    return named


def _chosen_by(summary: pd.Series) -> str:
    """How the circuit was chosen, from the run's own record (older runs: the top N by |exact|)."""
    if isinstance(summary.get("chosen_by"), str):
        return f"{int(summary['circuit_edges'])} edges, {summary['chosen_by']}"
    return (
        f"the top {int(summary['circuit_edges'])} edges by |exact| among the "
        f"{int(summary['exact_checked'])} patched exactly"
    )


def circuits_view(run: Run) -> TableView | None:
    """Per task: the circuit's size, faithfulness and the approximation's agreement with exact."""
    summary = run.table("circuit")
    if summary.empty:
        return None
    table = summary[["task", "circuit_edges", "nodes", "faithfulness", "normalized", "method", "spearman"]]
    note = (
        "faithfulness: the circuit's mean logit difference as % of the clean model's (exact patching), "
        "which can be negative or above 100 where the clean and corrupted metrics are close; normalized: "
        "(circuit - no edge) / (clean - no edge), 1 = the model, 0 = no edge (read this one); "
        "spearman: the approximation's agreement with exact patching on the edges it ranks highest."
    )
    if "stability" in summary.columns:  # runs written before stability have none
        table = table.assign(**stability_columns(summary))
        note += " " + STABILITY_NOTE
    return TableView.of("Circuits per task", table.rename(columns={"circuit_edges": "edges"}), note=note)


STABILITY_NOTE = (
    "stability: the circuit's mean Jaccard overlap with the top edges of the same count on bootstrap "
    "resamples of its prompts (the ranking that chose it, recomputed on each resample), with the 5th "
    f"percentile of the resamples; stable at {STABLE:g} or above (Méloux et al. 2025, arXiv 2510.00845, "
    "whose IOI circuits on GPT-2 small reach 0.67); below it, which edges the circuit holds depends on "
    "which prompts were sampled."
)


def stability_columns(summary: pd.DataFrame) -> dict[str, list]:
    """The stability, its 5th percentile and the verdict at Méloux et al.'s line, per task."""
    return {
        "stability": list(summary["stability"].astype(float)),
        "stability 5th pct": list(summary["stability_low"].astype(float)),
        "resamples": [int(b) if b == b else 0 for b in summary["stability_resamples"]],  # NaN: merged runs
        "stable?": [
            verdict(float(v), bool(s)) for v, s in zip(summary["stability"], summary["stable"], strict=True)
        ],
    }


def stability_sentence(summary: pd.Series) -> str:
    """The circuit's stability in one sentence for its faithfulness note ('' for older runs)."""
    if "stability" not in summary.index:
        return ""
    value, low = float(summary["stability"]), float(summary["stability_low"])
    said = verdict(value, bool(summary["stable"]))
    if value != value:
        return f" Stability: {said}."
    return (
        f" Stability: mean Jaccard {value:.2f} with the top {int(summary['circuit_edges'])} edges of "
        f"{int(summary['stability_resamples'])} bootstrap resamples of the prompts (5th percentile "
        f"{low:.2f}): {said}."
    )
