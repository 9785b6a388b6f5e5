"""`headscope circuit`: edge scores of a task, exact patching beside the approximation, and the
circuit of the top edges measured (faithfulness, completeness, minimality); with --curve, MIB's
faithfulness curve, CPR and CMD of the method's ranking; with --mib, the scores in MIB's layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import typer

from headscope.analyses import causal
from headscope.analyses.circuit import find_circuit
from headscope.cli.app import Shared, command, note, print_table, results, working, wrote
from headscope.cli.common import load, shared_dataset
from headscope.errors import HeadscopeError
from headscope.files import check_table_path, write_json, write_table
from headscope.scores.circuit import edges as _edges
from headscope.scores.circuit import faithfulness as _faith
from headscope.scores.circuit import mib as _mib
from headscope.scores.circuit import stability as _stability

Method = Literal["eap", "eap-ig", "exact"]
Donor = Literal["corrupted", "mean"]


@command("circuit", task="induction", n=50)
def circuit_command(
    shared: Shared,
    method: Annotated[
        Method,
        typer.Option("--method", help="eap-ig, eap (approximations) or exact (each edge patched)."),
    ] = "eap-ig",
    edges: Annotated[int, typer.Option("--edges", help="Edges in the circuit: the top N by |score|.")] = 10,
    exact_top: Annotated[
        int, typer.Option("--exact-top", help="Also patch exactly the approximation's top N edges.")
    ] = 50,
    steps: Annotated[int, typer.Option("--steps", help="eap-ig: points on the corrupted-clean path.")] = 5,
    donor: Annotated[
        Donor, typer.Option("--donor", help="corrupted (each prompt's twin) or mean (per-position mean).")
    ] = "corrupted",
    curve: Annotated[
        bool, typer.Option("--curve", help="MIB's faithfulness curve f(k), CPR and CMD of the ranking.")
    ] = False,
    mib: Annotated[
        Path | None,
        typer.Option("--mib", help="Also write the scores in MIB's circuit-track layout (.json)."),
    ] = None,
) -> None:
    """Edge attribution on a task: which component feeds which input (q, k, v, mlp, logits) of which.

    The circuit is the top --edges edges by |exact| among those patched exactly (by |score| when
    --exact-top is 0), run with every other edge patched to the donor value."""
    if shared.out is not None:
        check_table_path(shared.out)
    if edges < 1:
        raise HeadscopeError(f"--edges {edges}: give at least 1")
    if mib is not None and mib.suffix != ".json":
        raise HeadscopeError(f"--mib {mib}: MIB reads a .json importance file; give a name ending in .json")
    if exact_top < 0 or steps < 1:
        raise HeadscopeError(
            f"--exact-top {exact_top} / --steps {steps}: give --exact-top >= 0 and --steps >= 1"
        )
    model = load(shared.model)
    dataset = shared_dataset(model, shared)
    options = causal.edge_options(method, steps, exact_top, donor)
    what = " and the faithfulness curve" if curve else ""
    with working(f"{method} on every edge, {dataset.n} prompts{what} ..."):
        findings = find_circuit(model, dataset, options, edges, curve=curve, seed=shared.seed)
    table = findings.edges
    with working(f"completeness and minimality of the top {edges} edges ..."):
        chosen = _edges.edges_of(findings.chosen, model)
        circuit = _faith.evaluate_circuit(model, dataset, chosen, donor)
    _show(table, circuit, shared, edges)
    show_stability(findings.summary.iloc[0])
    found = findings.curve
    if found is not None:
        show_curve(found, table.attrs["method"])
    if shared.out is not None:
        wrote(_write(shared.out, table, found))
    if mib is not None:
        group = model.arch.group_size
        cfg = {"n_layers": model.n_layers, "n_heads": model.n_heads, "parallel_attn_mlp": model.arch.parallel}
        cfg |= {"d_model": model.bridge.cfg.d_model}
        layout = _mib.mib_graph(_edges.edges_of(table, model), list(table["score"]), set(chosen), cfg, group)
        wrote(write_json(mib, layout))


def _write(path: Path, table: pd.DataFrame, found: _mib.Curve | None) -> Path:
    """The edge table; with a curve, a .json holds {"edges": [...], "curve": {...}} and a .csv
    gets the curve beside it (NAME.curve.csv)."""
    if found is None:
        return write_table(path, table)
    if path.suffix == ".json":
        return write_json(path, {"edges": table.to_dict(orient="records"), "curve": found.as_dict()})
    wrote(write_table(path.with_suffix(".curve.csv"), found.points.assign(cpr=found.cpr, cmd=found.cmd)))
    return write_table(path, table)


def show_curve(found: _mib.Curve, method: str) -> None:
    shown = found.points.assign(percent=found.points["percent"].map(lambda p: f"{p:g}%"))
    print_table(
        shown[["percent", "edges", "metric", "f"]], title=f"faithfulness curve of the {method} ranking"
    )
    results.print(
        f"m(empty) {found.empty:.3f} (every edge patched), m(M) {found.full:.3f} (the model); "
        f"CPR {found.cpr:.3f} (area under f), CMD {found.cmd:.3f} (area under |1 - f|); x: {_mib.X_AXIS}"
    )


def show_stability(row: pd.Series) -> None:
    value, stable = float(row["stability"]), bool(row["stable"])
    results.print(
        f"stability: mean Jaccard {value:.2f} (5th percentile {float(row['stability_low']):.2f}) of the "
        f"circuit with the top {int(row['circuit_edges'])} edges of {int(row['stability_resamples'])} "
        f"bootstrap resamples of the {int(row['n'])} prompts: {_stability.verdict(value, stable)}"
    )


def _show(table: pd.DataFrame, circuit: _faith.CircuitResult, shared: Shared, edges: int) -> None:
    attrs = table.attrs
    twin = f", twin: {attrs['twin']}" if attrs.get("twin") else ""
    results.print(
        f"clean metric {attrs['clean']:.3f}, corrupted {attrs['corrupted']:.3f} (mean logit diff at end, "
        f"{shared.task}{twin}); score = change of the metric when the edge is patched to the "
        f"{attrs['donor']} value"
    )
    if attrs["approximation"]:
        results.print(
            f"[yellow]APPROXIMATION: {attrs['method']} scores; Spearman with exact patching "
            f"{attrs['spearman']:.2f} on the {attrs['n_exact']} edges patched exactly, "
            f"{attrs['spearman_top50']:.2f} on the top 50 by |exact|[/yellow]"
        )
    if attrs.get("convention") == "frozen-norm":
        results.print(f"[yellow]{_edges.FROZEN_NORM_NOTE}[/yellow]")
    shown = table[["source", "target", "input", "score", "exact"]]
    print_table(shown, title=f"edges by |{attrs['method']} score|", limit=max(20, edges))
    results.print(
        f"circuit of the top {edges} edges: {circuit.metric:.3f} = {circuit.faithfulness:.1f}% of the clean "
        f"metric (normalized {circuit.normalized:.2f}; no edge: {circuit.ablated:.3f}); "
        f"nodes {', '.join(circuit.nodes) or '-'}"
    )
    worst = circuit.completeness["incompleteness"].max() if len(circuit.completeness) else float("nan")
    results.print(
        f"completeness: largest |F(C\\K) - F(M\\K)| {worst:.3f} over {len(circuit.completeness)} sets K"
    )
    print_table(circuit.minimality, title="minimality: each node removed from the circuit")
    if attrs["clean"] - attrs["corrupted"] < 0.05:
        note("clean and corrupted metrics nearly agree: edge effects are small by construction")
