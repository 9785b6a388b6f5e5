"""`headscope circuit` as a user runs it: the table it writes, the labels, one-line errors."""

from __future__ import annotations

import pandas as pd

import headscope as hs
from tests.cli.runner import run_cli


def test_circuit_writes_the_edge_table_with_exact_values(tmp_path):
    out = tmp_path / "edges.csv"
    done = run_cli(
        "circuit", "--task", "seq-digits", "--n", "8", "--edges", "5", "--exact-top", "20", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out)
    assert {"source", "target", "input", "score", "exact"} <= set(table.columns)
    assert set(table["input"]) == {"q", "k", "v", "mlp", "logits"}
    assert table["exact"].notna().sum() == 20
    assert "APPROXIMATION: eap" in done.stdout and "Spearman" in done.stdout
    assert "circuit of the top 5 edges" in done.stdout and "% of the clean" in done.stdout
    assert "stability: mean Jaccard" in done.stdout and "bootstrap resamples of the 8 prompts" in done.stdout
    assert "Méloux et al." in done.stdout
    assert "wrote" in done.stderr and "wrote" not in done.stdout


def test_exact_method_has_no_approximation_label(tmp_path):
    out = tmp_path / "edges.json"
    done = run_cli(
        "circuit", "--task", "ioi", "--n", "4", "--method", "exact", "--edges", "3", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_json(out)
    assert table["exact"].notna().all() and (table["score"] == table["exact"]).all()
    assert "APPROXIMATION" not in done.stdout


def test_bad_options_are_one_line_errors():
    for args in (["--edges", "0"], ["--out", "edges.txt"], ["--method", "acdc"], ["--task", "nope"]):
        done = run_cli("circuit", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error:"), done.stderr


def test_python_api_edge_attribution_and_composition():
    model = hs.load_model("organism")
    table = hs.edge_attribution(model, "seq-digits", method="eap-ig", steps=3, exact_top=10, n=6)
    assert table.attrs["approximation"] and table.attrs["task"] == "seq-digits" and table.attrs["n"] == 6
    assert table["exact"].notna().sum() == 10
    comp = hs.composition_scores(model)
    assert set(comp["kind"]) == {"q", "k", "v"} and (comp.source_layer < comp.target_layer).all()
    assert len(comp) == 3 * sum(2 * layer * 2 for layer in range(4))


def test_curve_and_mib_export(tmp_path):
    """Defaults to eap-ig; --curve prints and writes MIB's curve with m(empty), m(M), CPR and CMD;
    --mib writes the scores in MIB's layout."""
    import json

    out, layout = tmp_path / "edges.json", tmp_path / "mib.json"
    done = run_cli(
        "circuit",
        "--task",
        "seq-digits",
        "--n",
        "6",
        "--exact-top",
        "5",
        "--curve",
        "--out",
        str(out),
        "--mib",
        str(layout),
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # the console wraps long lines
    assert "APPROXIMATION: eap-ig" in text and "twin: members" in text
    assert "faithfulness curve of the eap-ig ranking" in text and "CPR" in text and "m(empty)" in text
    written = json.loads(out.read_text())
    curve = written["curve"]
    assert [p["fraction"] for p in curve["points"]] == [
        0.001,
        0.002,
        0.005,
        0.01,
        0.02,
        0.05,
        0.1,
        0.2,
        0.5,
        1,
    ]
    assert curve["points"][-1]["f"] == 1.0 and curve["points"][0]["edges"] == 0
    assert curve["cmd"] >= 0 and "linear" in curve["x_axis"]
    assert len(written["edges"]) == 175
    mib = json.loads(layout.read_text())
    assert len(mib["edges"]) == 175 and "input->a0.h0<q>" in mib["edges"] and "m3->logits" in mib["edges"]
    assert sum(e["in_graph"] for e in mib["edges"].values()) == 10


def test_mib_needs_a_json_name():
    done = run_cli("circuit", "--mib", "x.csv")
    assert done.returncode == 2 and "--mib x.csv" in done.stderr
