"""Splitting a model: placement arguments, and a split model's numbers against the plain model's.

The organism capped at a few MB of CPU memory has some of its layers offloaded to disk (their
parameters on the `meta` device until accelerate's hook loads them); every analysis must give the
plain run's numbers.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pandas as pd
import pytest
import torch

import headscope as hs
from headscope.models.placement import Placement, PlacementError, parse_max_memory, placement
from headscope.report.compute import ReportOptions
from headscope.report.plan import build_run
from headscope.tasks.registry import get_task
from tests.cli.runner import run_cli

TOLERANCE = 1e-5
HALF_ON_DISK = "cpu=6MB"  # the organism: embeddings and blocks 0-1 on the CPU, blocks 2-3 on disk
ALL_ON_DISK = "cpu=1MB"  # everything offloaded, the embedding included


# ---- arguments ----------------------------------------------------------------------------------


def test_max_memory_parses_into_bytes():
    found = parse_max_memory("cpu=64GiB, disk=512MB,mps=1.5KiB")
    assert found == {"cpu": 64 * 2**30, "disk": 512 * 10**6, "mps": int(1.5 * 2**10)}


def test_max_memory_units_are_bytes_in_any_case():
    # accelerate alone reads '8gb' as gigabits (1e9 / 8 bytes)
    assert parse_max_memory("cpu=8gb") == {"cpu": 8 * 10**9}
    assert parse_max_memory({"cpu": 1234}) == {"cpu": 1234}
    assert parse_max_memory("cpu=1234") == {"cpu": 1234}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("cpu", "is not DEVICE=SIZE"),
        ("", "is not DEVICE=SIZE"),
        ("cpu=3MB,", "is not DEVICE=SIZE"),
        ("gpu=3MB", "'gpu' is not a device"),
        ("cpu=lots", "cpu='lots' is not a size"),
        ("cpu=-3MB", "cpu='-3MB' is not a size"),
        ("cpu=infGB", "cpu='infGB' is not a size"),
        ("cpu=1MB,cpu=2MB", "gives cpu twice"),
    ],
)
def test_bad_max_memory_is_one_line(text, names):
    with pytest.raises(PlacementError, match=names) as caught:
        parse_max_memory(text)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("max_memory=")


def test_a_gpu_this_machine_lacks_is_refused():
    missing = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(PlacementError, match=f"GPU {missing} does not exist"):
        parse_max_memory(f"{missing}=20GiB,cpu=64GiB")


def test_placement_refusals(tmp_path):
    with pytest.raises(PlacementError, match="device_map='everywhere' is not a placement"):
        placement("everywhere")
    with pytest.raises(PlacementError, match="^device='cpu': a split model"):
        placement("auto", device="cpu")
    with pytest.raises(PlacementError, match="^max_memory='cpu=1MB' only applies to a split model"):
        placement(max_memory="cpu=1MB")
    with pytest.raises(PlacementError, match="^offload_folder=.* only applies to a split model"):
        placement(offload_folder=tmp_path)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(PlacementError, match="is a file; give a directory"):
        placement("auto", offload_folder=tmp_path / "a-file")


def test_placement_arguments(tmp_path):
    folder = tmp_path / "new" / "offload"
    split = placement("Balanced", "cpu=2GiB", folder)
    assert split == Placement("balanced", {"cpu": 2 * 2**30}, folder) and folder.is_dir()
    assert split.boot_arguments(torch.device("cpu")) == {
        "device_map": "balanced",
        "max_memory": {"cpu": 2 * 2**30},
        "offload_folder": str(folder),
    }
    assert placement().boot_arguments(torch.device("cpu")) == {"device": torch.device("cpu")}


# ---- a split organism against the plain one -------------------------------------------------------


@pytest.fixture(scope="module")
def plain():
    return hs.load_model("organism", device="cpu")


@pytest.fixture(scope="module", params=[HALF_ON_DISK, ALL_ON_DISK])
def split(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("offload")
    return hs.load_model("organism", device_map="auto", max_memory=request.param, offload_folder=folder)


def _same(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    """Equal labels and numbers within TOLERANCE (NaN where the other has NaN)."""
    assert list(ours.columns) == list(theirs.columns) and len(ours) == len(theirs)
    numbers = ours.select_dtypes("number").columns
    labels = [column for column in ours.columns if column not in numbers]
    pd.testing.assert_frame_equal(ours[labels], theirs[labels])
    np.testing.assert_allclose(
        ours[numbers].to_numpy(float), theirs[numbers].to_numpy(float), atol=TOLERANCE, rtol=0
    )


def test_the_split_offloads_layers_to_disk(split):
    where = split.bridge.original_model.hf_device_map
    assert "disk" in where.values()
    assert split.device == torch.device("cpu")  # the embedding's execution device, never meta
    blocks_on_meta = [
        any(p.device.type == "meta" for p in block.parameters()) for block in split.bridge.blocks
    ]
    assert any(blocks_on_meta)  # loaded only while a block runs or is read


def test_split_weights_equal_plain(split, plain):
    for name in ("ln1_w", "W_V", "b_V", "W_O", "b_O", "lnf_w", "W_U"):
        torch.testing.assert_close(getattr(split.weights, name), getattr(plain.weights, name), rtol=0, atol=0)


def test_split_evaluate_equals_plain(split, plain):
    _same(hs.evaluate(split, "ioi", n=16), hs.evaluate(plain, "ioi", n=16))


@pytest.mark.parametrize("embedding", ["context", "token", "block0"])
def test_split_ov_scores_equal_plain(split, plain, embedding):
    ours = hs.ov_scores(split, "seq-digits", relations="copy,next", embedding=embedding, negative=True, n=16)
    theirs = hs.ov_scores(
        plain, "seq-digits", relations="copy,next", embedding=embedding, negative=True, n=16
    )
    assert set(ours.relation) == {"copy", "next"} and len(ours) == 2 * 2 * plain.n_layers * plain.n_heads
    _same(ours, theirs)
    _same(ours.attrs["per_token"], theirs.attrs["per_token"])


def test_split_ablation_equals_plain(split, plain):
    ours = hs.ablate(split, "ioi", components="heads,mlps", method="mean", n=16)
    theirs = hs.ablate(plain, "ioi", components="heads,mlps", method="mean", n=16)
    assert len(ours) == plain.n_layers * (plain.n_heads + 1)
    _same(ours, theirs)


def test_split_report_tables_equal_plain(split, plain):
    tasks = ("ioi", "seq-digits")
    options = ReportOptions(tasks=tasks, n=12, n_boot=50, knockout_n=6, example_prompts=2)
    runs = [
        build_run(model, [get_task(name) for name in tasks], options, say=lambda message: None)
        for model in (split, plain)
    ]
    ours, theirs = (run.tables for run in runs)
    assert set(ours) == set(theirs) and {"ov_scores", "knockout", "dla", "evaluation"} <= set(ours)
    for name, table in theirs.items():
        _same(ours[name].reset_index(drop=True), table.reset_index(drop=True))


# ---- the command line ------------------------------------------------------------------------------


def test_every_command_that_loads_a_model_takes_the_placement_flags():
    from headscope.cli import COMMAND_MODULES
    from headscope.cli.app import app
    from headscope.cli.tasks_cmd import tasks_app

    for module in COMMAND_MODULES:  # each registers its command on import
        importlib.import_module(f"headscope.cli.{module}")
    commands = [*app.registered_commands, *tasks_app.registered_commands]
    loading = {c.name: inspect.signature(c.callback).parameters for c in commands}
    loading = {name: parameters for name, parameters in loading.items() if "model" in parameters}
    assert {"evaluate", "scores", "attention", "scatter", "ablate", "patch", "report"} <= set(loading)
    for name, parameters in loading.items():
        assert {"device_map", "max_memory", "offload_folder"} <= set(parameters), name


def test_cli_split_scores_write_the_same_table(tmp_path):
    common = ["scores", "--task", "seq-digits", "--relation", "copy,next", "--n", "8"]
    plain = run_cli(*common, "--out", str(tmp_path / "plain.csv"))
    split_flags = ["--device-map", "auto", "--max-memory", ALL_ON_DISK, "--offload-folder", str(tmp_path)]
    split = run_cli(*common, "--out", str(tmp_path / "split.csv"), *split_flags)
    assert plain.returncode == 0 and split.returncode == 0, split.stderr[-2000:]
    ours, theirs = pd.read_csv(tmp_path / "split.csv"), pd.read_csv(tmp_path / "plain.csv")
    assert set(theirs.relation) == {"copy", "next"}
    _same(ours, theirs)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--device-map", "auto", "--device", "cpu"], "error: --device 'cpu': a split model"),
        (
            ["--device-map", "auto", "--max-memory", "cpu=lots"],
            "error: --max-memory 'cpu=lots': cpu='lots' is not a size",
        ),
    ],
)
def test_cli_placement_errors_are_one_line(flags, message):
    result = run_cli("evaluate", "--task", "ioi", "--n", "2", *flags)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
