"""`headscope atlas` run as a subprocess: the planted heads named on the console and in the folder."""

from __future__ import annotations

import pandas as pd
import pytest

from headscope.scores.atlas import COLUMNS, PER_SOURCE
from tests.cli.runner import run_cli
from tests.scores.test_atlas import save_planted


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    return save_planted(tmp_path_factory.mktemp("planted_cli"))


def test_atlas_writes_the_folder_and_names_the_planted_heads(planted_dir, tmp_path):
    out = tmp_path / "atlas"
    result = run_cli(
        "atlas", "--model", str(planted_dir), "--relations", "algorithmic", "--k", "10", "--out", str(out),
        "--per-source",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "atlas.csv")
    assert list(table.columns) == list(COLUMNS)
    cards = pd.read_csv(out / "cards.csv").fillna({"kind": ""})
    named = {(r.layer, r["head"]): (r.relation, r.sign, r.kind) for _, r in cards.iterrows()}
    assert named[(0, 0)] == ("number_next", 1, "maps") and named[(0, 3)] == ("day_prev", -1, "maps")
    assert named[(0, 1)][2] == "writes the set"
    per_source = pd.read_csv(out / "per_source.csv")
    pairs = table[(table.layer == 0) & (table["head"] == 0) & (table.sign == 1)].n.sum()
    assert list(per_source.columns) == list(PER_SOURCE) and len(per_source) == 8 * 2 * pairs  # 8 heads
    relations = pd.read_csv(out / "relations.csv")
    assert set(relations.relation) >= {"number_next", "to_upper"} and "dropped" in relations
    page = (out / "index.html").read_text()
    assert "Function cards" in page and 'id="spec-atlas-within"' in page and "<script src=" not in page
    assert "number_next" in result.stdout and "maps" in result.stdout
    assert "not scored" in result.stdout  # number words, ordinals, ...: no token in this vocabulary
    assert f"wrote {out / 'index.html'}" in result.stderr


def test_list_prints_the_library_without_a_model():
    result = run_cli("atlas", "--list", "--model", "no-such-model")
    assert result.returncode == 0, result.stderr
    assert "country_capital" in result.stdout and "english_french" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--relations", "bogus"), "unknown relation 'bogus'"),
        (("--relations", ","), "empty --relations"),
        (("--relations", "nowhere.toml"), "relation file nowhere.toml does not exist"),
        (("--n", "5"), "No such option: --n"),  # the atlas reads the weights only: no prompts
        (("--k", "0"), "--k 0"),
        (("--relations", "english_french"), "none of the relations asked for (english_french)"),
    ],
)
def test_errors_are_one_line(args, message, tmp_path):
    result = run_cli("atlas", "--model", "organism", "--out", str(tmp_path / "a"), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_an_out_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = run_cli("atlas", "--model", "organism", "--out", str(tmp_path))
    assert result.returncode == 2 and "holds files but no atlas.csv" in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_stream_writes_the_same_atlas_as_the_loaded_model(planted_dir, tmp_path):
    """--stream reads the weights from the files layer by layer: the same table and cards."""
    runs = {}
    for name, extra in (("loaded", ()), ("streamed", ("--stream",))):
        out = tmp_path / name
        result = run_cli(
            "atlas", "--model", str(planted_dir), "--relations", "algorithmic", "--out", str(out), *extra
        )
        assert result.returncode == 0, result.stderr
        assert "OV kernel products in float32 (bfloat16 is weighed only for weights streamed" in result.stderr
        runs[name] = (pd.read_csv(out / "atlas.csv"), pd.read_csv(out / "cards.csv"))
    (table, cards), (streamed_table, streamed_cards) = runs["loaded"], runs["streamed"]
    exact = [c for c in table.columns if c not in ("score", "within")]
    pd.testing.assert_frame_equal(table[exact], streamed_table[exact])
    for column in ("score", "within"):
        assert (table[column] - streamed_table[column]).abs().max() <= 1e-6
    assert list(cards["relation"]) == list(streamed_cards["relation"])
    assert "streamed from the checkpoint" in (tmp_path / "streamed" / "index.html").read_text()


def test_bfloat16_weights_have_the_kernel_precision_measured_and_recorded(planted_dir, tmp_path):
    """--stream --dtype bfloat16: the product rates measured at the start, the precision chosen from
    them said on the console and in the page's facts; --kernel-dtype forces it."""
    for extra, said in (
        ((), "x float32's on this processor"),
        (("--kernel-dtype", "bfloat16"), "(asked for)"),
    ):
        out = tmp_path / ("forced" if extra else "auto")
        result = run_cli(
            "atlas", "--model", str(planted_dir), "--relations", "algorithmic", "--out", str(out),
            "--stream", "--dtype", "bfloat16", *extra,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        kernel = [line for line in result.stderr.splitlines() if line.startswith("OV kernel products in")]
        assert len(kernel) == 1 and said in kernel[0], result.stderr
        assert "OV kernel" in (out / "index.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--kernel-dtype", "half"), "--kernel-dtype"),
        (("--device-map", "auto"), "--device-map with --stream"),
        (("--dtype", "float16"), "streaming reads float32 or bfloat16"),
    ],
)
def test_stream_errors_are_one_line(planted_dir, args, message, tmp_path):
    result = run_cli("atlas", "--model", str(planted_dir), "--stream", "--out", str(tmp_path / "a"), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
